//! The coordination service's errors: the one error model of every hstack
//! RPC, as the client library names it.

pub use hstack_coord_client::error::{no_node, Code, CoordError, Result};
