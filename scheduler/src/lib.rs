//! hstack's resource scheduler, in YARN's shape: the scheduler itself
//! (`sched`: FIFO, capacity and fair policies behind one trait, delay
//! scheduling for locality), and the records it speaks in.

pub mod records;
pub mod sched;

pub use records::{AppId, Ask, AttemptId, ContainerId, Locality, Resource};
pub use sched::{Scheduler, SchedulerConfig, SchedulerKind};
