//! Who may speak to a member, until authentication exists: peer traffic
//! (Raft, forwarded proposals, session liveness) only from the hosts of
//! configured members, and membership changes only from this host or a
//! member's. A member's hosts are those of its Raft address in the current
//! membership, and those of `initial_members`; a member in no ensemble yet,
//! with no initial members, hears only this host. "This host" is
//! 127.0.0.1, ::1, and the addresses this member binds and advertises —
//! not every loopback address, so that members on 127.0.0.1 and a stranger
//! on 127.0.0.9 can be told apart (the tests do exactly that). No empty
//! value widens the check, and a bootstrap is no exception: it comes from
//! this host or an `initial_members` host, never from a host merely named
//! in the request. IPv4-mapped IPv6 addresses count as the IPv4 address.
//! A caller that is not admitted makes the member resolve its members'
//! names again (one may have moved), at most once a second.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::error::{Code, CoordError};
use crate::node::Node;

/// The IP addresses `addr` (`host:port`) stands for; none if it does not
/// resolve.
async fn ips_of(addr: &str) -> Vec<IpAddr> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return vec![a.ip()];
    }
    match tokio::net::lookup_host(addr).await {
        Ok(found) => found.map(|a| a.ip().to_canonical()).collect(),
        Err(_) => vec![],
    }
}

/// How often a refused caller may make a member resolve names again.
const RERESOLVE_EVERY: Duration = Duration::from_secs(1);

/// The member hosts peer traffic is admitted from, for one membership.
pub(crate) struct Admitted {
    /// The Raft addresses they were resolved from, sorted.
    addrs: Vec<String>,
    ips: HashSet<IpAddr>,
    resolved: Instant,
}

impl Node {
    /// The hosts of the configured members (membership and
    /// `initial_members`), resolved again when the membership changes or
    /// `fresh` asks (a host that moved).
    async fn member_ips(&self, fresh: bool) -> HashSet<IpAddr> {
        let mut addrs: Vec<String> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .nodes()
                .map(|(_, n)| n.raft_addr.clone())
                .collect()
        };
        if let Ok(initial) = self.cfg.parse_initial_members() {
            addrs.extend(initial.into_iter().map(|(_, n)| n.raft_addr));
        }
        addrs.sort();
        {
            let cache = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(known) = cache.as_ref() {
                let recent = known.resolved.elapsed() < RERESOLVE_EVERY;
                if known.addrs == addrs && (!fresh || recent) {
                    return known.ips.clone();
                }
            }
        }
        let mut ips = HashSet::new();
        for a in &addrs {
            ips.extend(ips_of(a).await);
        }
        *self.admitted.lock().unwrap_or_else(|p| p.into_inner()) = Some(Admitted {
            addrs,
            ips: ips.clone(),
            resolved: Instant::now(),
        });
        ips
    }

    async fn is_member_host(&self, ip: IpAddr) -> (bool, bool) {
        let members = self.member_ips(false).await;
        if members.contains(&ip) {
            return (true, false);
        }
        let members = self.member_ips(true).await;
        (members.contains(&ip), members.is_empty())
    }

    /// This host's addresses: 127.0.0.1, ::1, and what this member binds
    /// and advertises.
    async fn own_ips(&self) -> HashSet<IpAddr> {
        let mut ips: HashSet<IpAddr> = [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ]
        .into();
        for a in [&self.cfg.client_addr, &self.cfg.raft_addr] {
            if let Ok(a) = a.parse::<SocketAddr>() {
                if !a.ip().is_unspecified() {
                    ips.insert(a.ip().to_canonical());
                }
            }
        }
        if !self.cfg.advertise_host.is_empty() {
            ips.extend(ips_of(&format!("{}:0", self.cfg.advertise_host)).await);
        }
        ips
    }

    /// Admits peer traffic from `remote` only if it is a configured
    /// member's host (this host, for a member in no ensemble yet).
    pub(crate) async fn admit_peer(&self, remote: Option<SocketAddr>) -> Result<(), CoordError> {
        let Some(ip) = remote.map(|a| a.ip().to_canonical()) else {
            return Err(refused("peer traffic from an unknown address"));
        };
        let (member, none) = self.is_member_host(ip).await;
        if member || (none && self.own_ips().await.contains(&ip)) {
            return Ok(());
        }
        tracing::warn!(%ip, "refused peer traffic from a host that is not a member");
        Err(refused(&format!(
            "peer traffic from {ip}: not the host of a configured member"
        )))
    }

    /// Admits a membership change or a bootstrap (`what`) from this host
    /// or a member's.
    pub(crate) async fn admit(
        &self,
        remote: Option<SocketAddr>,
        what: &str,
    ) -> Result<(), CoordError> {
        let Some(ip) = remote.map(|a| a.ip().to_canonical()) else {
            return Err(refused(&format!("{what}: from an unknown address")));
        };
        if self.own_ips().await.contains(&ip) || self.is_member_host(ip).await.0 {
            return Ok(());
        }
        tracing::warn!(%ip, "refused to {what} for a host that is not a member");
        Err(refused(&format!(
            "{what}: refused from {ip}, which is not this host nor a member's (run it on a member's host)"
        )))
    }
}

fn refused(message: &str) -> CoordError {
    CoordError::new(Code::NotAMember, message)
}
