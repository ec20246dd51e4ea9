use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What a started daemon bound, printed on stdout as one line
/// (`HSTACK_READY {json}`) and written to `DIR/addresses.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Announcement {
    pub role: String,
    pub id: String,
    pub pid: u32,
    pub addrs: BTreeMap<String, SocketAddr>,
}

pub const ANNOUNCE_FILE: &str = "addresses.json";

pub fn announce(
    data_dir: &Path,
    role: &str,
    id: &str,
    addrs: &BTreeMap<String, SocketAddr>,
) -> std::io::Result<Announcement> {
    let a = Announcement {
        role: role.to_string(),
        id: id.to_string(),
        pid: std::process::id(),
        addrs: addrs.clone(),
    };
    let json = serde_json::to_string(&a).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(data_dir)?;
    crate::write_atomic(&data_dir.join(ANNOUNCE_FILE), json.as_bytes())?;
    println!("HSTACK_READY {json}");
    Ok(a)
}

/// Reads a daemon's announcement; `None` if it has not written one yet.
pub fn read_announcement(data_dir: &Path) -> Option<Announcement> {
    let s = std::fs::read_to_string(data_dir.join(ANNOUNCE_FILE)).ok()?;
    serde_json::from_str(&s).ok()
}
