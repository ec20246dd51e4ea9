//! Who may write a block now. A pipeline rebuilt at a new generation stamp
//! and lease recovery both reopen a replica that an earlier pipeline may
//! still be appending to (its writer is gone, but packets it sent can still
//! sit in our socket buffer). HDFS interrupts the old writer thread; here
//! each writer holds a claim on its block, every append and finalize runs
//! under the block's lock after checking the claim is still the newest, and
//! a newer claim (taken under the same lock, before the replica is
//! reopened) makes the old writer stop at its next packet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(crate) struct Fences {
    blocks: Mutex<HashMap<u64, Arc<Mutex<u64>>>>,
    next: AtomicU64,
}

/// A claim on one block: valid until a newer claim on the same block.
pub(crate) struct Claim {
    id: u64,
    token: u64,
    lock: Arc<Mutex<u64>>,
}

impl Fences {
    /// Claims `id` (fencing every earlier claim) and runs `f` under the
    /// block's lock, so no earlier writer is mid-append while `f` reopens
    /// the replica.
    pub(crate) fn claim<T>(&self, id: u64, f: impl FnOnce() -> T) -> (Claim, T) {
        let token = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let lock = self
            .blocks
            .lock()
            .expect("fence map lock")
            .entry(id)
            .or_default()
            .clone();
        let out = {
            let mut owner = lock.lock().expect("block fence lock");
            *owner = token;
            f()
        };
        (Claim { id, token, lock }, out)
    }

    /// Drops a claim; the block's entry goes once nobody holds a claim on it.
    pub(crate) fn release(&self, claim: Claim) {
        let mut blocks = self.blocks.lock().expect("fence map lock");
        if let Some(l) = blocks.get(&claim.id) {
            // Only the map and this claim hold it: no one else to fence.
            // Claims are cloned only under the map lock, so the count cannot
            // grow behind our back.
            if Arc::ptr_eq(l, &claim.lock) && Arc::strong_count(l) == 2 {
                blocks.remove(&claim.id);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.blocks.lock().expect("fence map lock").len()
    }
}

impl Claim {
    /// Runs `f` if this claim is still the newest on its block; `None` if a
    /// newer writer or a recovery took the block over.
    pub(crate) fn run<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let owner = self.lock.lock().expect("block fence lock");
        (*owner == self.token).then(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_claim_fences_the_older_one() {
        let f = Fences::default();
        let (a, ()) = f.claim(7, || ());
        assert_eq!(a.run(|| 1), Some(1));
        let (b, ()) = f.claim(7, || ());
        assert_eq!(a.run(|| 1), None, "fenced");
        assert_eq!(b.run(|| 2), Some(2));
        let (other, ()) = f.claim(8, || ());
        assert_eq!(a.run(|| 1), None);
        f.release(b);
        assert_eq!(f.len(), 2, "a still holds block 7's entry");
        f.release(a);
        assert_eq!(f.len(), 1, "7 goes with its last claim");
        f.release(other);
        assert_eq!(f.len(), 0);
        // A fresh claim after that starts a new entry that still fences.
        let (c, ()) = f.claim(8, || ());
        let (d, ()) = f.claim(8, || ());
        assert_eq!(c.run(|| ()), None);
        f.release(d);
        f.release(c);
        assert_eq!(f.len(), 0);
    }
}
