//! Who may do what: HDFS's permission model (owner, group, other bits,
//! the sticky bit, the superuser and the supergroup).

use super::{Body, Caller, InodeId, Namespace, EXEC, READ, STICKY, WRITE};
use crate::error::{Code, FsError, FsResult};

impl Namespace {
    pub fn is_superuser(&self, c: &Caller) -> bool {
        c.user == self.superuser || c.groups.contains(&self.supergroup)
    }

    /// x on each directory the path passes through (not the target itself).
    pub(super) fn check_traverse(
        &self,
        ids: &[InodeId],
        depth: usize,
        caller: Option<&Caller>,
    ) -> FsResult<()> {
        let Some(c) = caller else { return Ok(()) };
        for (i, id) in ids.iter().enumerate() {
            if i >= depth {
                break;
            }
            let ino = self.get(*id);
            if matches!(ino.body, Body::Dir(_)) {
                self.check(c, *id, EXEC)?;
            }
        }
        Ok(())
    }

    pub(super) fn check(&self, c: &Caller, id: InodeId, want: u16) -> FsResult<()> {
        if self.is_superuser(c) {
            return Ok(());
        }
        let ino = self.get(id);
        let bits = if self.name(ino.owner) == c.user {
            (ino.perm >> 6) & 7
        } else if c.groups.iter().any(|g| g == self.name(ino.group)) {
            (ino.perm >> 3) & 7
        } else {
            ino.perm & 7
        };
        if bits & want == want {
            return Ok(());
        }
        let access = match want {
            READ => "READ",
            WRITE => "WRITE",
            EXEC => "EXECUTE",
            x if x == READ | EXEC => "READ_EXECUTE",
            x if x == WRITE | EXEC => "WRITE_EXECUTE",
            _ => "ALL",
        };
        Err(FsError::new(
            Code::PermissionDenied,
            format!(
                "Permission denied: user={}, access={access}, inode=\"{}\":{}:{}:{}{}",
                c.user,
                self.full_path(id),
                self.name(ino.owner),
                self.name(ino.group),
                if matches!(ino.body, Body::Dir(_)) {
                    'd'
                } else {
                    '-'
                },
                mode_string(ino.perm),
            ),
        ))
    }

    pub(super) fn check_owner(&self, c: &Caller, id: InodeId) -> FsResult<()> {
        if self.is_superuser(c) || self.name(self.get(id).owner) == c.user {
            return Ok(());
        }
        Err(FsError::new(
            Code::PermissionDenied,
            format!(
                "Permission denied: {} is not the owner of {}",
                c.user,
                self.full_path(id)
            ),
        ))
    }

    // ------------------------------------------------------------------
    // Queries
    // ------------------------------------------------------------------

    pub(super) fn check_sticky(&self, c: &Caller, parent: InodeId, child: InodeId) -> FsResult<()> {
        let p = self.get(parent);
        if p.perm & STICKY == 0 || self.is_superuser(c) {
            return Ok(());
        }
        let user = c.user.as_str();
        if self.name(p.owner) == user || self.name(self.get(child).owner) == user {
            return Ok(());
        }
        Err(FsError::new(
            Code::PermissionDenied,
            format!(
                "Permission denied: the sticky bit on {} keeps {} from removing {}",
                self.full_path(parent),
                user,
                self.full_path(child)
            ),
        ))
    }

    /// A recursive delete needs rwx on every directory below.
    pub(super) fn check_subtree(&self, c: &Caller, id: InodeId) -> FsResult<()> {
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            if let Body::Dir(children) = &self.get(id).body {
                if !children.is_empty() {
                    self.check(c, id, READ | WRITE | EXEC)?;
                }
                stack.extend(children.iter().copied());
            }
        }
        Ok(())
    }
}

/// `rwxr-xr-x`, with `t`/`T` for the sticky bit.
pub fn mode_string(perm: u16) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let b = (perm >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    if perm & STICKY != 0 {
        let last = if perm & 1 != 0 { 't' } else { 'T' };
        s.pop();
        s.push(last);
    }
    s
}
