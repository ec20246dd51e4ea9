//! The groups of a caller, as the namenode's own host knows them (HDFS's
//! `ShellBasedUnixGroupsMapping`): a client names its user, never its
//! groups, so no one can name themselves into the supergroup. Lookups are
//! cached for a while, as HDFS caches them (`hadoop.security.groups.cache.secs`).

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::unistd::{getgrouplist, Group, User};

/// HDFS's default cache time.
const CACHE_FOR: Duration = Duration::from_secs(300);

/// A user's groups, and when they were looked up.
type Cached = (Instant, Arc<[String]>);

#[derive(Default)]
pub(crate) struct Groups {
    cache: Mutex<HashMap<String, Cached>>,
}

impl Groups {
    /// `user`'s groups on this host (none for a user it does not know).
    /// The lookup (NSS: files, perhaps LDAP) runs without the cache's lock
    /// held, so one slow lookup does not stall every other caller.
    pub(crate) fn of(&self, user: &str) -> Arc<[String]> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, g)) = cache.get(user) {
                if at.elapsed() < CACHE_FOR {
                    return g.clone();
                }
            }
        }
        let groups: Arc<[String]> = lookup(user).into();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(user.to_string(), (Instant::now(), groups.clone()));
        groups
    }
}

fn lookup(user: &str) -> Vec<String> {
    let Ok(Some(u)) = User::from_name(user) else {
        return vec![];
    };
    let Ok(name) = CString::new(user) else {
        return vec![];
    };
    let gids = getgrouplist(&name, u.gid).unwrap_or_else(|_| vec![u.gid]);
    gids.into_iter()
        .filter_map(|g| Group::from_gid(g).ok().flatten())
        .map(|g| g.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_user_has_its_groups_and_a_stranger_none() {
        let g = Groups::default();
        let me = User::from_uid(nix::unistd::getuid()).unwrap().unwrap();
        let primary = Group::from_gid(me.gid).unwrap().unwrap().name;
        assert!(g.of(&me.name).contains(&primary), "{:?}", g.of(&me.name));
        assert!(g.of("no-such-user-hstack").is_empty());
    }
}
