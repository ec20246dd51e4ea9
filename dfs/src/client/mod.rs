//! The file system client: namespace calls to the namenode, and file
//! streams that move block data straight to and from datanodes
//! ([`FileWriter`], [`FileReader`]).

mod input;
pub(crate) mod local;
mod output;
mod retry;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hstack_proto::dfs as pb;
use hstack_proto::dfs::admin_protocol_client::AdminProtocolClient;
use hstack_proto::dfs::client_protocol_client::ClientProtocolClient as NamenodeClient;
use tonic::transport::{Channel, Endpoint};

pub use input::FileReader;
pub use output::FileWriter;
pub use retry::Repeat;

use crate::error::{Code, FsError, FsResult};

/// Who the client is and where it runs.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The user every call runs as (HSTACK_USER, else $USER). The
    /// namenode looks up the user's groups itself.
    pub user: String,
    /// The host the namenode should consider the client on, for
    /// writer-local placement and nearest-first reads; empty = the address
    /// its calls come from.
    pub host: String,
    /// How often an open writer renews its lease.
    pub lease_renew: Duration,
    /// How long a namenode call keeps trying through a namenode that is
    /// unreachable or starting (HSTACK_NAMENODE_RETRY_SECS, default 60:
    /// longer than the namenode's 30 s safe-mode extension; see `retry`).
    pub namenode_patience: Duration,
    /// Read replicas on this host straight from their files, which their
    /// datanode hands over on its Unix socket (short-circuit local reads),
    /// instead of through its transfer port. On unless
    /// `HSTACK_SHORT_CIRCUIT` is `0`, `false`, `off` or `no`.
    pub short_circuit: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            user: env("HSTACK_USER")
                .or_else(|| env("USER"))
                .unwrap_or_else(|| "hstack".into()),
            host: env("HSTACK_CLIENT_HOST").unwrap_or_default(),
            lease_renew: Duration::from_secs(1),
            namenode_patience: Duration::from_secs(
                env("HSTACK_NAMENODE_RETRY_SECS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(60),
            ),
            short_circuit: env("HSTACK_SHORT_CIRCUIT").is_none_or(|v| {
                !matches!(
                    v.to_ascii_lowercase().as_str(),
                    "0" | "false" | "off" | "no"
                )
            }),
        }
    }
}

/// Options of a new file.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    pub overwrite: bool,
    /// 0 = the namenode's default.
    pub replication: u32,
    /// 0 = the namenode's default.
    pub block_size: u64,
    /// 0 = 0644.
    pub permission: u32,
    pub create_parent: bool,
}

struct Inner {
    nn: NamenodeClient<Channel>,
    admin: AdminProtocolClient<Channel>,
    opts: ClientOptions,
    client_name: String,
    open_writers: AtomicUsize,
    local: local::LocalState,
}

/// A connection to one namenode; cheap to clone.
#[derive(Clone)]
pub struct DfsClient {
    inner: Arc<Inner>,
}

impl DfsClient {
    /// `namenode` is `host:port` of its RPC address.
    pub async fn connect(namenode: &str, opts: ClientOptions) -> FsResult<Self> {
        let ep = Endpoint::from_shared(format!("http://{namenode}"))
            .map_err(|e| FsError::invalid(format!("namenode address {namenode:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        // Like every call, the first connection waits out a namenode that
        // is restarting.
        let mut backoff = retry::backoff(opts.namenode_patience);
        let ch = loop {
            match ep.connect().await {
                Ok(ch) => break ch,
                Err(e) => {
                    let e = FsError::new(
                        Code::Unavailable,
                        format!(
                            "cannot reach the namenode at {namenode}: {}",
                            retry::with_causes(e.to_string(), std::error::Error::source(&e))
                        ),
                    );
                    if backoff.first() {
                        tracing::warn!("{e}; trying again for up to {:?}", opts.namenode_patience);
                    }
                    if !backoff.pause().await {
                        return Err(e);
                    }
                }
            }
        };
        let nn = NamenodeClient::new(ch.clone())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let admin = AdminProtocolClient::new(ch)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let client_name = format!(
            "hstack-client-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let inner = Arc::new(Inner {
            nn,
            admin,
            opts,
            client_name,
            open_writers: AtomicUsize::new(0),
            local: local::LocalState::default(),
        });
        tokio::spawn(renew_leases(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The raw stub of the namenode's client protocol.
    pub fn namenode(&self) -> NamenodeClient<Channel> {
        self.inner.nn.clone()
    }

    /// The raw stub of the namenode's administrative protocol.
    pub fn admin(&self) -> AdminProtocolClient<Channel> {
        self.inner.admin.clone()
    }

    pub fn client_name(&self) -> &str {
        &self.inner.client_name
    }

    pub fn user(&self) -> &str {
        &self.inner.opts.user
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    pub(crate) fn local_state(&self) -> &local::LocalState {
        &self.inner.local
    }

    /// Who this client's calls say they come from.
    pub fn caller(&self) -> Option<pb::Caller> {
        Some(pb::Caller {
            user: self.inner.opts.user.clone(),
            client_name: self.inner.client_name.clone(),
            host: self.inner.opts.host.clone(),
        })
    }

    fn path_req(&self, path: &str) -> pb::PathRequest {
        pb::PathRequest {
            caller: self.caller(),
            path: path.to_string(),
        }
    }

    pub async fn mkdirs(
        &self,
        path: &str,
        permission: u32,
        parents: bool,
    ) -> FsResult<pb::FileStatus> {
        let req = pb::MkdirsRequest {
            caller: self.caller(),
            path: path.to_string(),
            permission,
            create_parent: parents,
        };
        // With parents, an existing directory is success: safe to repeat.
        let repeat = if parents {
            Repeat::Idempotent
        } else {
            Repeat::AtMostOnce
        };
        let r = self
            .call(&format!("mkdir {path}"), repeat, |mut nn| {
                let req = req.clone();
                async move { nn.mkdirs(req).await }
            })
            .await?;
        r.status
            .ok_or_else(|| FsError::new(Code::Io, "mkdirs returned no status"))
    }

    /// `None` when nothing is at `path`.
    pub async fn stat(&self, path: &str) -> FsResult<Option<pb::FileStatus>> {
        let req = self.path_req(path);
        Ok(self
            .call(&format!("stat {path}"), Repeat::Idempotent, |mut nn| {
                let req = req.clone();
                async move { nn.get_file_info(req).await }
            })
            .await?
            .status)
    }

    /// A directory's entries (a file lists as itself), every page.
    pub async fn list(&self, path: &str) -> FsResult<Vec<pb::FileStatus>> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let req = pb::GetListingRequest {
                caller: self.caller(),
                path: path.to_string(),
                start_after: after.clone(),
                limit: 1000,
            };
            let page = self
                .call(&format!("list {path}"), Repeat::Idempotent, |mut nn| {
                    let req = req.clone();
                    async move { nn.get_listing(req).await }
                })
                .await?;
            let last = page.entries.last().map(|e| e.path.clone());
            out.extend(page.entries);
            match last {
                Some(l) if page.remaining > 0 => {
                    after = l.rsplit('/').next().unwrap_or_default().to_string();
                }
                _ => return Ok(out),
            }
        }
    }

    pub async fn delete(&self, path: &str, recursive: bool) -> FsResult<()> {
        let req = pb::DeleteRequest {
            caller: self.caller(),
            path: path.to_string(),
            recursive,
        };
        self.call(&format!("delete {path}"), Repeat::AtMostOnce, |mut nn| {
            let req = req.clone();
            async move { nn.delete(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn rename(&self, src: &str, dst: &str) -> FsResult<()> {
        let req = pb::RenameRequest {
            caller: self.caller(),
            src: src.to_string(),
            dst: dst.to_string(),
        };
        self.call(
            &format!("rename {src} to {dst}"),
            Repeat::AtMostOnce,
            |mut nn| {
                let req = req.clone();
                async move { nn.rename(req).await }
            },
        )
        .await?;
        Ok(())
    }

    pub async fn set_replication(&self, path: &str, replication: u32) -> FsResult<()> {
        let req = pb::SetReplicationRequest {
            caller: self.caller(),
            path: path.to_string(),
            replication,
        };
        self.call(&format!("setrep {path}"), Repeat::Idempotent, |mut nn| {
            let req = req.clone();
            async move { nn.set_replication(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn set_permission(&self, path: &str, permission: u32) -> FsResult<()> {
        let req = pb::SetPermissionRequest {
            caller: self.caller(),
            path: path.to_string(),
            permission,
        };
        self.call(&format!("chmod {path}"), Repeat::Idempotent, |mut nn| {
            let req = req.clone();
            async move { nn.set_permission(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn set_owner(&self, path: &str, owner: &str, group: &str) -> FsResult<()> {
        let req = pb::SetOwnerRequest {
            caller: self.caller(),
            path: path.to_string(),
            owner: owner.to_string(),
            group: group.to_string(),
        };
        self.call(&format!("chown {path}"), Repeat::Idempotent, |mut nn| {
            let req = req.clone();
            async move { nn.set_owner(req).await }
        })
        .await?;
        Ok(())
    }

    /// -1 leaves a time as it is.
    pub async fn set_times(&self, path: &str, mtime_ms: i64, atime_ms: i64) -> FsResult<()> {
        let req = pb::SetTimesRequest {
            caller: self.caller(),
            path: path.to_string(),
            mtime_ms,
            atime_ms,
        };
        self.call(&format!("touch {path}"), Repeat::Idempotent, |mut nn| {
            let req = req.clone();
            async move { nn.set_times(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn content_summary(&self, path: &str) -> FsResult<pb::ContentSummary> {
        let req = self.path_req(path);
        self.call(&format!("du {path}"), Repeat::Idempotent, |mut nn| {
            let req = req.clone();
            async move { nn.get_content_summary(req).await }
        })
        .await
    }

    pub async fn block_locations(
        &self,
        path: &str,
        offset: u64,
        length: u64,
    ) -> FsResult<pb::LocatedBlocks> {
        let req = pb::GetBlockLocationsRequest {
            caller: self.caller(),
            path: path.to_string(),
            offset,
            length,
        };
        self.call(&format!("open {path}"), Repeat::Idempotent, |mut nn| {
            let req = req.clone();
            async move { nn.get_block_locations(req).await }
        })
        .await
    }

    /// Creates a file and opens it for writing.
    pub async fn create(&self, path: &str, o: &CreateOptions) -> FsResult<FileWriter> {
        let req = pb::CreateRequest {
            caller: self.caller(),
            path: path.to_string(),
            permission: o.permission,
            overwrite: o.overwrite,
            create_parent: o.create_parent,
            replication: o.replication,
            block_size: o.block_size,
        };
        let st = self
            .call(&format!("create {path}"), Repeat::AtMostOnce, |mut nn| {
                let req = req.clone();
                async move { nn.create(req).await }
            })
            .await?
            .status
            .ok_or_else(|| FsError::new(Code::Io, "create returned no status"))?;
        self.inner.open_writers.fetch_add(1, Ordering::SeqCst);
        Ok(FileWriter::new(self.clone(), st))
    }

    pub(crate) fn writer_closed(&self) {
        self.inner.open_writers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Opens a file for reading.
    pub async fn open(&self, path: &str) -> FsResult<FileReader> {
        FileReader::open(self.clone(), path).await
    }
}

/// Renews the client's lease while it has files open for writing; ends
/// with the client.
async fn renew_leases(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(i) => i.opts.lease_renew,
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(i) = inner.upgrade() else { return };
        if i.open_writers.load(Ordering::SeqCst) == 0 {
            continue;
        }
        let req = pb::RenewLeaseRequest {
            caller: Some(pb::Caller {
                user: i.opts.user.clone(),
                client_name: i.client_name.clone(),
                host: i.opts.host.clone(),
            }),
        };
        let mut nn = i.nn.clone();
        drop(i);
        if let Err(e) = nn.renew_lease(req).await {
            tracing::warn!("cannot renew the write lease: {}", e.message());
        }
    }
}
