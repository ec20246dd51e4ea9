//! hstack's resource scheduler, in YARN's shape: the scheduler itself
//! (`sched`: FIFO, capacity and fair policies behind one trait, delay
//! scheduling for locality), the records it speaks in, and the wire
//! conversions, container tokens and exit statuses the resource manager,
//! the node managers and application masters share.

pub mod am;
pub mod client;
pub mod exit;
pub mod records;
pub mod sched;
pub mod token;
pub mod wire;

pub use records::{AppId, Ask, AttemptId, ContainerId, Locality, Resource};
pub use sched::{Scheduler, SchedulerConfig, SchedulerKind};
pub mod nm;
pub mod rm;
pub mod shell;

pub use nm::{NmConfig, NodeManagerRole};
pub use rm::{ResourceManagerRole, RmConfig};
