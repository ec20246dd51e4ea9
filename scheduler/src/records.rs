//! The scheduler's vocabulary, in YARN's shape: resources, application,
//! attempt and container ids, and the asks an application master makes.
//! Pure data: no I/O, no clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An amount of memory and CPU. Memory in MiB and whole virtual cores, as
/// YARN counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resource {
    pub memory_mb: u64,
    pub vcores: u32,
}

impl Resource {
    pub const ZERO: Resource = Resource {
        memory_mb: 0,
        vcores: 0,
    };

    pub const fn new(memory_mb: u64, vcores: u32) -> Resource {
        Resource { memory_mb, vcores }
    }

    /// Whether `self` fits in `room` in both dimensions.
    pub fn fits_in(self, room: Resource) -> bool {
        self.memory_mb <= room.memory_mb && self.vcores <= room.vcores
    }

    pub fn is_zero(self) -> bool {
        self.memory_mb == 0 && self.vcores == 0
    }

    /// Neither dimension is zero (a request for nothing is refused).
    pub fn is_positive(self) -> bool {
        self.memory_mb > 0 && self.vcores > 0
    }

    pub fn saturating_sub(self, o: Resource) -> Resource {
        Resource {
            memory_mb: self.memory_mb.saturating_sub(o.memory_mb),
            vcores: self.vcores.saturating_sub(o.vcores),
        }
    }

    pub fn times(self, n: u64) -> Resource {
        Resource {
            memory_mb: self.memory_mb.saturating_mul(n),
            vcores: u32::try_from(u64::from(self.vcores).saturating_mul(n)).unwrap_or(u32::MAX),
        }
    }

    /// Each dimension scaled by `f` (rounded down).
    pub fn scaled(self, f: f64) -> Resource {
        Resource {
            memory_mb: (self.memory_mb as f64 * f) as u64,
            vcores: (self.vcores as f64 * f) as u32,
        }
    }

    /// The larger of each dimension.
    pub fn max(self, o: Resource) -> Resource {
        Resource {
            memory_mb: self.memory_mb.max(o.memory_mb),
            vcores: self.vcores.max(o.vcores),
        }
    }

    /// The smaller of each dimension.
    pub fn min(self, o: Resource) -> Resource {
        Resource {
            memory_mb: self.memory_mb.min(o.memory_mb),
            vcores: self.vcores.min(o.vcores),
        }
    }

    /// The dominant share of `self` in `total` (Ghodsi et al.'s DRF): the
    /// larger of its memory and CPU fractions. 0 when `total` is empty.
    pub fn dominant_share(self, total: Resource) -> f64 {
        let m = if total.memory_mb == 0 {
            0.0
        } else {
            self.memory_mb as f64 / total.memory_mb as f64
        };
        let c = if total.vcores == 0 {
            0.0
        } else {
            f64::from(self.vcores) / f64::from(total.vcores)
        };
        m.max(c)
    }
}

impl std::ops::Add for Resource {
    type Output = Resource;
    fn add(self, o: Resource) -> Resource {
        Resource {
            memory_mb: self.memory_mb.saturating_add(o.memory_mb),
            vcores: self.vcores.saturating_add(o.vcores),
        }
    }
}

impl std::ops::AddAssign for Resource {
    fn add_assign(&mut self, o: Resource) {
        *self = *self + o;
    }
}

impl std::ops::SubAssign for Resource {
    fn sub_assign(&mut self, o: Resource) {
        *self = self.saturating_sub(o);
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<memory:{} MiB, vcores:{}>", self.memory_mb, self.vcores)
    }
}

/// A malformed id.
#[derive(Debug, thiserror::Error)]
#[error("{what} {text:?} is not of the form {shape}")]
pub struct BadId {
    what: &'static str,
    text: String,
    shape: &'static str,
}

/// `application_<cluster start ms>_<seq>` (seq at least 4 digits), as YARN
/// names applications.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppId {
    pub cluster_ts: u64,
    pub seq: u32,
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "application_{}_{:04}", self.cluster_ts, self.seq)
    }
}

impl FromStr for AppId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<AppId, BadId> {
        let bad = || BadId {
            what: "application id",
            text: s.to_string(),
            shape: "application_<cluster start ms>_<seq>",
        };
        let rest = s.strip_prefix("application_").ok_or_else(bad)?;
        let (ts, seq) = rest.split_once('_').ok_or_else(bad)?;
        Ok(AppId {
            cluster_ts: ts.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// `appattempt_<cluster start ms>_<app seq>_<attempt>` (attempt 6 digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptId {
    pub app: AppId,
    pub attempt: u32,
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "appattempt_{}_{:04}_{:06}",
            self.app.cluster_ts, self.app.seq, self.attempt
        )
    }
}

impl FromStr for AttemptId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<AttemptId, BadId> {
        let bad = || BadId {
            what: "attempt id",
            text: s.to_string(),
            shape: "appattempt_<cluster start ms>_<seq>_<attempt>",
        };
        let rest = s.strip_prefix("appattempt_").ok_or_else(bad)?;
        let mut parts = rest.split('_');
        let (Some(ts), Some(seq), Some(at), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(AttemptId {
            app: AppId {
                cluster_ts: ts.parse().map_err(|_| bad())?,
                seq: seq.parse().map_err(|_| bad())?,
            },
            attempt: at.parse().map_err(|_| bad())?,
        })
    }
}

/// `container_<cluster start ms>_<app seq>_<attempt>_<seq>` (attempt 2
/// digits, seq 6), as YARN names containers. The application master's is
/// always sequence 1 of its attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerId {
    pub attempt: AttemptId,
    pub seq: u64,
}

impl ContainerId {
    pub fn app(&self) -> AppId {
        self.attempt.app
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.attempt;
        write!(
            f,
            "container_{}_{:04}_{:02}_{:06}",
            a.app.cluster_ts, a.app.seq, a.attempt, self.seq
        )
    }
}

impl FromStr for ContainerId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<ContainerId, BadId> {
        let bad = || BadId {
            what: "container id",
            text: s.to_string(),
            shape: "container_<cluster start ms>_<app seq>_<attempt>_<seq>",
        };
        let rest = s.strip_prefix("container_").ok_or_else(bad)?;
        let mut parts = rest.split('_');
        let (Some(ts), Some(app), Some(at), Some(seq), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        Ok(ContainerId {
            attempt: AttemptId {
                app: AppId {
                    cluster_ts: ts.parse().map_err(|_| bad())?,
                    seq: app.parse().map_err(|_| bad())?,
                },
                attempt: at.parse().map_err(|_| bad())?,
            },
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// How close to its data a container was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Locality {
    /// On a node the ask named.
    NodeLocal,
    /// On the rack of a node the ask named, or a rack it named.
    RackLocal,
    /// Anywhere (an ask with no locality is always this).
    OffSwitch,
}

impl Locality {
    pub fn name(self) -> &'static str {
        match self {
            Locality::NodeLocal => "node-local",
            Locality::RackLocal => "rack-local",
            Locality::OffSwitch => "off-switch",
        }
    }
}

/// One request group of an application master: `count` more containers of
/// `resource` at `priority` (lower numbers first, as in YARN), preferably
/// on `nodes` or `racks`. `id` is the master's own: sending an ask with an
/// id it sent before replaces that ask's outstanding count (0 cancels it),
/// so a retried allocate call asks for nothing twice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    pub id: u64,
    pub priority: i32,
    pub resource: Resource,
    pub count: u32,
    /// Node ids (`host:port`) or host names.
    pub nodes: Vec<String>,
    pub racks: Vec<String>,
    /// May the container go elsewhere once it has waited (delay
    /// scheduling)? With `false`, only the nodes and racks named.
    pub relax_locality: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_in_yarns_shape() {
        let app = AppId {
            cluster_ts: 1_700_000_000_123,
            seq: 7,
        };
        assert_eq!(app.to_string(), "application_1700000000123_0007");
        assert_eq!(
            "application_1700000000123_0007".parse::<AppId>().unwrap(),
            app
        );
        let at = AttemptId { app, attempt: 2 };
        assert_eq!(at.to_string(), "appattempt_1700000000123_0007_000002");
        assert_eq!(at.to_string().parse::<AttemptId>().unwrap(), at);
        let c = ContainerId {
            attempt: at,
            seq: 15,
        };
        assert_eq!(c.to_string(), "container_1700000000123_0007_02_000015");
        assert_eq!(c.to_string().parse::<ContainerId>().unwrap(), c);
        // More than 4 (6) digits still round-trips.
        let big = AppId {
            cluster_ts: 1,
            seq: 123_456,
        };
        assert_eq!(big.to_string().parse::<AppId>().unwrap(), big);
        for bad in [
            "",
            "application_",
            "application_x_1",
            "app_1_2",
            "application_1_2_3",
        ] {
            let e = bad.parse::<AppId>().unwrap_err();
            assert!(e.to_string().contains("application_<"), "{e}");
        }
        assert!("container_1_2_3".parse::<ContainerId>().is_err());
    }

    #[test]
    fn resources_fit_and_have_a_dominant_share() {
        let total = Resource::new(100, 10);
        assert!(Resource::new(100, 10).fits_in(total));
        assert!(!Resource::new(101, 1).fits_in(total));
        assert!(!Resource::new(1, 11).fits_in(total));
        assert_eq!(Resource::new(50, 1).dominant_share(total), 0.5);
        assert_eq!(Resource::new(10, 5).dominant_share(total), 0.5);
        assert_eq!(
            Resource::new(1, 1).saturating_sub(Resource::new(2, 0)),
            Resource::new(0, 1)
        );
        assert!(!Resource::new(0, 1).is_positive());
    }
}
