//! What several test modules share.

use crate::types::{Batch, CreateKind, Entry, MemberNode, NodeId, Txn, WriteOp};

/// A few log entries of every payload kind and every transaction kind,
/// applying cleanly in order: the sample the format fixtures hold.
pub(crate) fn sample_entries() -> Vec<Entry> {
    let id = |index| openraft::LogId::new(openraft::CommittedLeaderId::new(2, 1), index);
    let members: std::collections::BTreeMap<NodeId, MemberNode> = [(
        1,
        MemberNode {
            raft_addr: "127.0.0.1:2888".into(),
            client_addr: "127.0.0.1:2281".into(),
            http_addr: "127.0.0.1:8081".into(),
        },
    )]
    .into();
    vec![
        Entry {
            log_id: id(1),
            payload: openraft::EntryPayload::Blank,
        },
        Entry {
            log_id: id(2),
            payload: openraft::EntryPayload::Membership(openraft::Membership::new(
                vec![[1].into()],
                members,
            )),
        },
        Entry {
            log_id: id(3),
            payload: openraft::EntryPayload::Normal(Batch {
                time_ms: 1_700_000_000_000,
                txns: std::sync::Arc::new(vec![
                    Txn::CreateSession {
                        password: 42,
                        timeout_ms: 10_000,
                    },
                    Txn::Write {
                        session_id: 0,
                        ops: vec![
                            WriteOp::Create {
                                path: "/app".into(),
                                data: b"config v1".to_vec(),
                                kind: CreateKind::Ttl(60_000),
                                sequential: false,
                            },
                            WriteOp::SetData {
                                path: "/app".into(),
                                data: vec![0, 255, 7],
                                version: 0,
                            },
                            WriteOp::Check {
                                path: "/app".into(),
                                version: 1,
                            },
                            WriteOp::Create {
                                path: "/gone".into(),
                                data: vec![],
                                kind: CreateKind::Persistent,
                                sequential: true,
                            },
                        ],
                    },
                    Txn::Write {
                        session_id: 0,
                        ops: vec![WriteOp::Create {
                            path: "/c".into(),
                            data: vec![],
                            kind: CreateKind::Container,
                            sequential: false,
                        }],
                    },
                    Txn::Reap {
                        path: "/c".into(),
                        version: 0,
                        cversion: 0,
                    },
                    Txn::CloseSession {
                        session_id: 99,
                        expired: false,
                    },
                ]),
            }),
        },
    ]
}
