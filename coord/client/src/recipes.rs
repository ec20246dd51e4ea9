//! Leader election and a lock, the recipes the rest of hstack stands on.
//!
//! Both are the same queue: each contender creates an ephemeral sequential
//! node under a directory; the lowest sequence holds; everyone else watches
//! only its predecessor (no herd when the holder goes). The holder's fencing
//! token is its node's czxid: zxids only grow, and a later holder created
//! its node later, so tokens increase across holders. Hand it to whatever
//! the holder writes to, and have that reject smaller tokens.

use std::time::Duration;

use crate::client::{Client, CreateMode, EventKind};
use crate::error::{Code, CoordError, Result};

/// Creates `path` and any missing ancestors as persistent nodes.
pub async fn ensure_path(client: &Client, path: &str) -> Result<()> {
    let mut cur = String::new();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        cur.push('/');
        cur.push_str(comp);
        match client.create(&cur, b"", CreateMode::Persistent).await {
            Ok(_) => {}
            Err(e) if e.code == Code::NodeExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn seq_of(name: &str) -> Option<u64> {
    name.rsplit('-').next()?.parse().ok()
}

/// One contender's place in a queue under `dir`.
struct Ticket {
    path: String,
    token: u64,
}

async fn enqueue(client: &Client, dir: &str, prefix: &str, data: &[u8]) -> Result<Ticket> {
    ensure_path(client, dir).await?;
    let base = format!("{dir}/{prefix}-");
    match client
        .create_with_stat(&base, data, CreateMode::EphemeralSequential)
        .await
    {
        Ok((path, stat)) => Ok(Ticket {
            path,
            token: stat.czxid,
        }),
        Err(e) if e.retryable() => {
            // The create may have applied (or may still commit, if it was in
            // the log of a deposed leader): once a sync has gone through the
            // current leader, it is either there or gone for good. Find our
            // own node by its owner instead of creating a second one.
            client.sync(dir).await?;
            let me = client.session_id();
            for name in client.get_children(dir, false).await? {
                let path = format!("{dir}/{name}");
                if let Some(st) = client.exists(&path, false).await? {
                    if st.ephemeral_owner == me && name.starts_with(prefix) {
                        return Ok(Ticket {
                            path,
                            token: st.czxid,
                        });
                    }
                }
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Waits until `ticket` is first in its queue.
async fn wait_turn(client: &Client, dir: &str, prefix: &str, ticket: &Ticket) -> Result<()> {
    let my_name = ticket.path.rsplit('/').next().unwrap_or("").to_string();
    let my_seq = seq_of(&my_name)
        .ok_or_else(|| CoordError::new(Code::RuntimeInconsistency, "bad sequence node"))?;
    loop {
        let mut queue: Vec<(u64, String)> = client
            .get_children(dir, false)
            .await?
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .filter_map(|n| seq_of(&n).map(|s| (s, n)))
            .collect();
        queue.sort();
        if !queue.iter().any(|(_, n)| *n == my_name) {
            return Err(CoordError::new(
                Code::SessionExpired,
                format!("{} is gone (session expired?)", ticket.path),
            ));
        }
        let Some((_, pred)) = queue.iter().rev().find(|(s, _)| *s < my_seq) else {
            return Ok(());
        };
        let pred_path = format!("{dir}/{pred}");
        let mut events = client.events();
        if client.exists(&pred_path, true).await?.is_none() {
            continue;
        }
        loop {
            match events.recv().await {
                Ok(ev) if ev.path == pred_path && ev.kind == EventKind::NodeDeleted => break,
                Ok(ev) if ev.kind == EventKind::Expired => {
                    return Err(CoordError::new(
                        Code::SessionExpired,
                        "session expired while waiting",
                    ))
                }
                // Reconnected: the watch was re-registered, but re-check anyway.
                Ok(ev) if ev.kind == EventKind::Connected => break,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                Err(_) => {
                    return Err(CoordError::new(
                        Code::SessionExpired,
                        "the session is closed",
                    ))
                }
            }
        }
    }
}

/// Leader election under a directory.
pub struct LeaderElection {
    client: Client,
    dir: String,
}

/// Held leadership. Dropping it does not resign; call `resign`, or let the
/// session end.
pub struct Leadership {
    client: Client,
    pub path: String,
    /// Increases across successive leaders.
    pub token: u64,
}

impl LeaderElection {
    pub fn new(client: Client, dir: &str) -> Self {
        Self {
            client,
            dir: dir.trim_end_matches('/').to_string(),
        }
    }

    /// Joins the election and returns once this contender leads. `data`
    /// (for example the contender's address) is what `leader` reports.
    pub async fn campaign(&self, data: &[u8]) -> Result<Leadership> {
        let ticket = enqueue(&self.client, &self.dir, "n", data).await?;
        wait_turn(&self.client, &self.dir, "n", &ticket).await?;
        Ok(Leadership {
            client: self.client.clone(),
            path: ticket.path,
            token: ticket.token,
        })
    }

    /// The current leader's data, if there is one.
    pub async fn leader(&self) -> Result<Option<Vec<u8>>> {
        let mut queue: Vec<(u64, String)> = match self.client.get_children(&self.dir, false).await {
            Ok(c) => c
                .into_iter()
                .filter_map(|n| seq_of(&n).map(|s| (s, n)))
                .collect(),
            Err(e) if e.code == Code::NoNode => return Ok(None),
            Err(e) => return Err(e),
        };
        queue.sort();
        for (_, n) in queue {
            match self
                .client
                .get_data(&format!("{}/{n}", self.dir), false)
                .await
            {
                Ok((d, _)) => return Ok(Some(d)),
                Err(e) if e.code == Code::NoNode => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

impl Leadership {
    pub async fn resign(self) -> Result<()> {
        match self.client.delete(&self.path, None).await {
            Err(e) if e.code != Code::NoNode => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether this leadership still stands (its node exists).
    pub async fn is_held(&self) -> Result<bool> {
        Ok(self.client.exists(&self.path, false).await?.is_some())
    }
}

/// A mutual-exclusion lock under a directory.
pub struct Lock {
    client: Client,
    dir: String,
}

pub struct LockGuard {
    client: Client,
    pub path: String,
    /// Increases across successive holders.
    pub token: u64,
}

impl Lock {
    pub fn new(client: Client, dir: &str) -> Self {
        Self {
            client,
            dir: dir.trim_end_matches('/').to_string(),
        }
    }

    pub async fn acquire(&self) -> Result<LockGuard> {
        let ticket = enqueue(&self.client, &self.dir, "lock", b"").await?;
        wait_turn(&self.client, &self.dir, "lock", &ticket).await?;
        Ok(LockGuard {
            client: self.client.clone(),
            path: ticket.path,
            token: ticket.token,
        })
    }

    /// Like `acquire`, but gives up (and leaves the queue) after `wait`.
    pub async fn try_acquire(&self, wait: Duration) -> Result<Option<LockGuard>> {
        let ticket = enqueue(&self.client, &self.dir, "lock", b"").await?;
        match tokio::time::timeout(wait, wait_turn(&self.client, &self.dir, "lock", &ticket)).await
        {
            Ok(Ok(())) => Ok(Some(LockGuard {
                client: self.client.clone(),
                path: ticket.path,
                token: ticket.token,
            })),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let _ = self.client.delete(&ticket.path, None).await;
                Ok(None)
            }
        }
    }
}

impl LockGuard {
    pub async fn release(self) -> Result<()> {
        match self.client.delete(&self.path, None).await {
            Err(e) if e.code != Code::NoNode => Err(e),
            _ => Ok(()),
        }
    }
}
