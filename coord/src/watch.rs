//! Watches registered on this member by the sessions connected to it.
//!
//! Watches are local, not replicated: a client that moves to another member
//! re-registers them (`SetWatches`) with the last zxid it saw, and anything
//! it missed fires at once. Events are pushed into the session's outbound
//! channel while the state machine lock is held, so an event is always queued
//! before the reply of any read that observes the change.

use std::collections::{HashMap, HashSet};

use hstack_proto::coord as pb;
use tokio::sync::mpsc;

use crate::path;
use crate::tree::{Change, DataTree};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// getData, or exists on an existing node: data changes and deletion.
    Data,
    /// exists on a missing node: creation.
    Exist,
    /// getChildren: child list changes and deletion.
    Child,
    /// addWatch PERSISTENT: every event on the node, never removed.
    Persistent,
    /// addWatch PERSISTENT_RECURSIVE: every event but child changes on the
    /// node and its descendants, never removed.
    Recursive,
}

const KINDS: [WatchKind; 5] = [
    WatchKind::Data,
    WatchKind::Exist,
    WatchKind::Child,
    WatchKind::Persistent,
    WatchKind::Recursive,
];

pub type Sink = mpsc::UnboundedSender<pb::ServerFrame>;

#[derive(Default)]
pub struct Watches {
    by_kind: HashMap<WatchKind, HashMap<String, HashSet<u64>>>,
    sinks: HashMap<u64, Sink>,
}

impl Watches {
    pub fn attach(&mut self, session: u64, sink: Sink) {
        self.sinks.insert(session, sink);
    }

    /// Forgets a session's sink and watches (it disconnected or closed).
    pub fn detach(&mut self, session: u64, sink: &Sink) {
        // Only if the sink is still the one this connection attached: the
        // session may already have reconnected on a new stream.
        if self
            .sinks
            .get(&session)
            .is_some_and(|s| s.same_channel(sink))
        {
            self.sinks.remove(&session);
            for map in self.by_kind.values_mut() {
                map.retain(|_, set| {
                    set.remove(&session);
                    !set.is_empty()
                });
            }
        }
    }

    pub fn sink(&self, session: u64) -> Option<&Sink> {
        self.sinks.get(&session)
    }

    pub fn add(&mut self, session: u64, p: &str, kind: WatchKind) {
        self.by_kind
            .entry(kind)
            .or_default()
            .entry(p.to_string())
            .or_default()
            .insert(session);
    }

    /// Removes (or with `check_only`, looks for) `session`'s watches of
    /// `kinds` on `p`; whether there were any.
    pub fn remove(&mut self, session: u64, p: &str, kinds: &[WatchKind], check_only: bool) -> bool {
        let mut found = false;
        for kind in kinds {
            let Some(map) = self.by_kind.get_mut(kind) else {
                continue;
            };
            let Some(set) = map.get_mut(p) else { continue };
            if check_only {
                found |= set.contains(&session);
                continue;
            }
            found |= set.remove(&session);
            if set.is_empty() {
                map.remove(p);
            }
        }
        found
    }

    pub fn count(&self) -> usize {
        self.by_kind
            .values()
            .flat_map(|m| m.values())
            .map(HashSet::len)
            .sum()
    }

    /// Delivers the events for one transaction's changes: at most one event
    /// per (session, path, type).
    pub fn trigger(&mut self, changes: &[Change], zxid: u64) {
        use pb::EventType as E;
        let mut sent: HashSet<(u64, String, i32)> = HashSet::new();
        for change in changes {
            match change {
                Change::Created(p) => {
                    self.fire(
                        p,
                        E::NodeCreated,
                        zxid,
                        &[WatchKind::Exist, WatchKind::Persistent],
                        &mut sent,
                    );
                    self.fire_recursive(p, E::NodeCreated, zxid, &mut sent);
                    let parent = path::parent(p);
                    self.fire(
                        parent,
                        E::NodeChildrenChanged,
                        zxid,
                        &[WatchKind::Child, WatchKind::Persistent],
                        &mut sent,
                    );
                }
                Change::Deleted(p) => {
                    let kinds = [
                        WatchKind::Data,
                        WatchKind::Exist,
                        WatchKind::Child,
                        WatchKind::Persistent,
                    ];
                    self.fire(p, E::NodeDeleted, zxid, &kinds, &mut sent);
                    self.fire_recursive(p, E::NodeDeleted, zxid, &mut sent);
                    let parent = path::parent(p);
                    self.fire(
                        parent,
                        E::NodeChildrenChanged,
                        zxid,
                        &[WatchKind::Child, WatchKind::Persistent],
                        &mut sent,
                    );
                }
                Change::DataChanged(p) => {
                    let kinds = [WatchKind::Data, WatchKind::Exist, WatchKind::Persistent];
                    self.fire(p, E::NodeDataChanged, zxid, &kinds, &mut sent);
                    self.fire_recursive(p, E::NodeDataChanged, zxid, &mut sent);
                }
            }
        }
    }

    fn fire(
        &mut self,
        p: &str,
        ty: pb::EventType,
        zxid: u64,
        kinds: &[WatchKind],
        sent: &mut HashSet<(u64, String, i32)>,
    ) {
        for kind in kinds {
            let Some(map) = self.by_kind.get_mut(kind) else {
                continue;
            };
            let sessions: Vec<u64> = if *kind == WatchKind::Persistent {
                map.get(p)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default()
            } else {
                map.remove(p)
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default()
            };
            for s in sessions {
                self.deliver(s, p, ty, zxid, sent);
            }
        }
    }

    fn fire_recursive(
        &mut self,
        p: &str,
        ty: pb::EventType,
        zxid: u64,
        sent: &mut HashSet<(u64, String, i32)>,
    ) {
        let Some(map) = self.by_kind.get(&WatchKind::Recursive) else {
            return;
        };
        let mut targets = Vec::new();
        for anc in path::self_and_ancestors(p) {
            if let Some(set) = map.get(anc) {
                targets.extend(set.iter().copied());
            }
        }
        for s in targets {
            self.deliver(s, p, ty, zxid, sent);
        }
    }

    fn deliver(
        &self,
        session: u64,
        p: &str,
        ty: pb::EventType,
        zxid: u64,
        sent: &mut HashSet<(u64, String, i32)>,
    ) {
        if !sent.insert((session, p.to_string(), ty as i32)) {
            return;
        }
        if let Some(sink) = self.sinks.get(&session) {
            let ev = pb::WatchEvent {
                r#type: ty as i32,
                path: p.to_string(),
                zxid,
            };
            let _ = sink.send(pb::ServerFrame {
                frame: Some(pb::server_frame::Frame::Event(ev)),
            });
        }
    }

    /// Re-registers a reconnected session's watches; those whose node changed
    /// after `relative_zxid` fire at once instead (ZooKeeper's SetWatches).
    pub fn set_watches(&mut self, session: u64, req: &pb::SetWatches, tree: &DataTree) {
        use pb::EventType as E;
        let rel = req.relative_zxid;
        let mut sent = HashSet::new();
        for p in &req.data {
            match tree.stat(p) {
                None => self.deliver(session, p, E::NodeDeleted, rel, &mut sent),
                Some(st) if st.mzxid > rel => {
                    self.deliver(session, p, E::NodeDataChanged, st.mzxid, &mut sent)
                }
                Some(_) => self.add(session, p, WatchKind::Data),
            }
        }
        for p in &req.exist {
            match tree.stat(p) {
                Some(st) => self.deliver(session, p, E::NodeCreated, st.czxid, &mut sent),
                None => self.add(session, p, WatchKind::Exist),
            }
        }
        for p in &req.child {
            match tree.stat(p) {
                None => self.deliver(session, p, E::NodeDeleted, rel, &mut sent),
                Some(st) if st.pzxid > rel => {
                    self.deliver(session, p, E::NodeChildrenChanged, st.pzxid, &mut sent)
                }
                Some(_) => self.add(session, p, WatchKind::Child),
            }
        }
        for p in &req.persistent {
            self.add(session, p, WatchKind::Persistent);
        }
        for p in &req.persistent_recursive {
            self.add(session, p, WatchKind::Recursive);
        }
    }

    /// After a snapshot replaced the tree, every one-shot watch whose node
    /// changed since `old_zxid` fires (the changes themselves were not seen).
    pub fn after_snapshot(&mut self, tree: &DataTree, old_zxid: u64) {
        let mut regs = Vec::new();
        for kind in KINDS {
            if let Some(map) = self.by_kind.get(&kind) {
                for (p, set) in map {
                    for s in set {
                        regs.push((kind, p.clone(), *s));
                    }
                }
            }
        }
        let mut per_session: HashMap<u64, pb::SetWatches> = HashMap::new();
        for (kind, p, s) in regs {
            let e = per_session.entry(s).or_insert_with(|| pb::SetWatches {
                relative_zxid: old_zxid,
                ..Default::default()
            });
            match kind {
                WatchKind::Data => e.data.push(p),
                WatchKind::Exist => e.exist.push(p),
                WatchKind::Child => e.child.push(p),
                WatchKind::Persistent | WatchKind::Recursive => {}
            }
        }
        for kind in [WatchKind::Data, WatchKind::Exist, WatchKind::Child] {
            self.by_kind.remove(&kind);
        }
        for (s, req) in per_session {
            self.set_watches(s, &req, tree);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CreateKind, Txn, WriteOp};

    fn events(rx: &mut mpsc::UnboundedReceiver<pb::ServerFrame>) -> Vec<(i32, String)> {
        let mut out = vec![];
        while let Ok(f) = rx.try_recv() {
            if let Some(pb::server_frame::Frame::Event(e)) = f.frame {
                out.push((e.r#type, e.path));
            }
        }
        out
    }

    fn setup() -> (Watches, mpsc::UnboundedReceiver<pb::ServerFrame>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut w = Watches::default();
        w.attach(1, tx);
        (w, rx)
    }

    #[test]
    fn one_shot_watches_fire_once() {
        let (mut w, mut rx) = setup();
        w.add(1, "/a", WatchKind::Data);
        w.trigger(&[Change::DataChanged("/a".into())], 5);
        w.trigger(&[Change::DataChanged("/a".into())], 6);
        assert_eq!(
            events(&mut rx),
            vec![(pb::EventType::NodeDataChanged as i32, "/a".into())]
        );
        assert_eq!(w.count(), 0);
    }

    #[test]
    fn trigger_rules() {
        use pb::EventType as E;
        let (mut w, mut rx) = setup();
        w.add(1, "/new", WatchKind::Exist);
        w.add(1, "/", WatchKind::Child);
        w.trigger(&[Change::Created("/new".into())], 2);
        assert_eq!(
            events(&mut rx),
            vec![
                (E::NodeCreated as i32, "/new".into()),
                (E::NodeChildrenChanged as i32, "/".into())
            ]
        );
        // a data watch and a child watch on a deleted node: one NodeDeleted
        w.add(1, "/new", WatchKind::Data);
        w.add(1, "/new", WatchKind::Child);
        w.trigger(&[Change::Deleted("/new".into())], 3);
        assert_eq!(
            events(&mut rx),
            vec![(E::NodeDeleted as i32, "/new".into())]
        );
        // data changes do not fire child watches
        w.add(1, "/x", WatchKind::Child);
        w.trigger(&[Change::DataChanged("/x".into())], 4);
        assert!(events(&mut rx).is_empty());
    }

    #[test]
    fn persistent_and_recursive_watches_stay() {
        use pb::EventType as E;
        let (mut w, mut rx) = setup();
        w.add(1, "/p", WatchKind::Persistent);
        w.add(1, "/r", WatchKind::Recursive);
        w.trigger(&[Change::DataChanged("/p".into())], 1);
        w.trigger(&[Change::DataChanged("/p".into())], 2);
        w.trigger(&[Change::Created("/r/a/b".into())], 3);
        w.trigger(&[Change::Created("/p/c".into())], 4);
        assert_eq!(
            events(&mut rx),
            vec![
                (E::NodeDataChanged as i32, "/p".into()),
                (E::NodeDataChanged as i32, "/p".into()),
                (E::NodeCreated as i32, "/r/a/b".into()),
                (E::NodeChildrenChanged as i32, "/p".into()),
            ]
        );
        assert_eq!(w.count(), 2);
    }

    #[test]
    fn set_watches_fires_missed_changes() {
        use pb::EventType as E;
        let mut t = DataTree::default();
        let mk = |p: &str| WriteOp::Create {
            path: p.into(),
            data: vec![],
            kind: CreateKind::Persistent,
            sequential: false,
        };
        t.apply(
            &Txn::Write {
                session_id: 0,
                ops: vec![mk("/a"), mk("/b")],
            },
            0,
            &mut vec![],
        );
        let seen = t.last_zxid();
        t.apply(
            &Txn::Write {
                session_id: 0,
                ops: vec![WriteOp::SetData {
                    path: "/a".into(),
                    data: vec![1],
                    version: -1,
                }],
            },
            0,
            &mut vec![],
        );
        let (mut w, mut rx) = setup();
        let req = pb::SetWatches {
            relative_zxid: seen,
            data: vec!["/a".into(), "/b".into(), "/gone".into()],
            exist: vec!["/b".into(), "/c".into()],
            ..Default::default()
        };
        w.set_watches(1, &req, &t);
        assert_eq!(
            events(&mut rx),
            vec![
                (E::NodeDataChanged as i32, "/a".into()),
                (E::NodeDeleted as i32, "/gone".into()),
                (E::NodeCreated as i32, "/b".into()),
            ]
        );
        // /b's data watch and /c's exist watch are registered
        assert_eq!(w.count(), 2);
    }

    #[test]
    fn detach_forgets_watches() {
        let (mut w, _rx) = setup();
        let sink = w.sink(1).unwrap().clone();
        w.add(1, "/a", WatchKind::Data);
        w.detach(1, &sink);
        assert_eq!(w.count(), 0);
        assert!(w.sink(1).is_none());
    }
}
