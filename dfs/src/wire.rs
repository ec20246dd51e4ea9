//! Conversions between the file system's own types and its protobuf
//! messages, in one place for the namenode, the datanode and the client.

use hstack_proto::dfs as pb;

use crate::blockmap::NodeState;
use crate::error::{FsError, FsResult};
use crate::namespace::BlockRec;

impl From<BlockRec> for pb::Block {
    fn from(b: BlockRec) -> Self {
        pb::Block {
            id: b.id,
            gen_stamp: b.gen_stamp,
            len: b.len,
        }
    }
}

impl From<pb::Block> for BlockRec {
    fn from(b: pb::Block) -> Self {
        BlockRec {
            id: b.id,
            gen_stamp: b.gen_stamp,
            len: b.len,
        }
    }
}

/// A datanode's state on the wire.
pub fn node_state(s: NodeState) -> pb::DatanodeState {
    match s {
        NodeState::Live => pb::DatanodeState::Live,
        NodeState::Dead => pb::DatanodeState::Dead,
        NodeState::Decommissioning => pb::DatanodeState::Decommissioning,
        NodeState::Decommissioned => pb::DatanodeState::Decommissioned,
    }
}

/// The name reports print for a datanode state (`live`, `dead`, …).
pub fn node_state_name(s: pb::DatanodeState) -> &'static str {
    match s {
        pb::DatanodeState::Live => "live",
        pb::DatanodeState::Dead => "dead",
        pb::DatanodeState::Decommissioning => "decommissioning",
        pb::DatanodeState::Decommissioned => "decommissioned",
        pb::DatanodeState::Unknown => "unknown",
    }
}

/// A block a message must carry.
pub fn block(b: Option<pb::Block>) -> FsResult<BlockRec> {
    b.map(BlockRec::from)
        .ok_or_else(|| FsError::invalid("the request names no block"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_and_a_missing_one_is_refused() {
        let b = BlockRec {
            id: 7,
            gen_stamp: 9,
            len: 512,
        };
        assert_eq!(block(Some(pb::Block::from(b))).unwrap(), b);
        let e = block(None).unwrap_err();
        assert_eq!(e.code, crate::Code::InvalidArgument);
    }
}
