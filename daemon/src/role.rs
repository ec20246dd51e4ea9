//! One way to be a daemon. A role (`coord`, `namenode`, `datanode`, and
//! the roles to come) says what its configuration is and how it starts;
//! everything else happens here, the same for every role:
//!
//! 1. the configuration is layered (defaults < `--config` file <
//!    `HSTACK_<ROLE>_<KEY>` < flags) and validated;
//! 2. logging, the abort-on-panic hook, the runtime (its worker threads
//!    from the configuration), the metrics registry with
//!    `hstack_build_info` and the process collector;
//! 3. the role starts inside the span `node{role, id}`, binding its
//!    listeners through [`Launch::bind`] (bound addresses are recorded)
//!    and spawning every background task through [`Launch::spawn`];
//! 4. the bound addresses are announced (stdout and `addresses.json`);
//! 5. the daemon runs until SIGTERM/SIGINT or a fatal fault
//!    ([`Fatal::fail`]); then every task is joined (within a grace
//!    period, after which the stragglers are named and aborted) and the
//!    process exits 0, or 1 after a fatal fault.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{layer_config, ConfigError, ConfigOutcome, DaemonArgs};
use crate::http::{serve_http, HttpExtras, HttpState, StatusFn};
use crate::{LogFormat, Shutdown};

/// How long shutdown waits for background tasks before it aborts them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A role's configuration: one flat serde struct with a `Default` whose
/// fields are also its flags (`#[derive(clap::Args)]`, doc comments as
/// help; `bool` fields take `--key true|false`). Every key has a
/// default, so the environment layer knows each key and its type.
pub trait RoleConfig:
    Serialize + DeserializeOwned + Default + Clone + Send + Sync + clap::Args + 'static
{
    /// What serde cannot check: ranges, addresses, relations between keys.
    /// The message names the key.
    fn validate(&self) -> Result<(), String>;
    fn log_format(&self) -> LogFormat;
    fn log_level(&self) -> &str;
    /// Runtime worker threads; 0 = one per core.
    fn worker_threads(&self) -> usize;
}

/// Implements [`RoleConfig`] for a config struct with the keys every role
/// has (`log_format`, `log_level`, `worker_threads`) and an inherent
/// `validate(&self) -> Result<(), E>` whose error is displayed.
#[macro_export]
macro_rules! role_config {
    ($config:ty) => {
        impl $crate::RoleConfig for $config {
            fn validate(&self) -> Result<(), String> {
                <$config>::validate(self).map_err(|e| e.to_string())
            }
            fn log_format(&self) -> $crate::LogFormat {
                self.log_format
            }
            fn log_level(&self) -> &str {
                &self.log_level
            }
            fn worker_threads(&self) -> usize {
                self.worker_threads
            }
        }
    };
}

/// A daemon role.
pub trait Role: Send + 'static {
    /// The subcommand (`hstack NAME`), the span's role, the `role` label
    /// of `hstack_build_info`, and the environment prefix
    /// (`HSTACK_<NAME>_<KEY>`).
    const NAME: &'static str;
    type Config: RoleConfig;
    /// What the running role keeps for its handle's holder.
    type State: Send + Sync + 'static;

    /// The node's id, for the span and the announcement (it may come from
    /// the data directory, as a datanode's does).
    fn id(cfg: &Self::Config) -> Result<String, StartError>;
    /// The directory the announcement (`addresses.json`) is written to.
    fn announce_dir(cfg: &Self::Config) -> PathBuf;
    /// Opens storage, binds (through `launch`), spawns (through
    /// `launch`), and returns once the role serves.
    fn start(
        cfg: Self::Config,
        launch: &mut Launch,
    ) -> impl Future<Output = Result<Self::State, StartError>> + Send;
}

/// Why a daemon could not start: each names the key, path or address
/// that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind {key} = {addr}: {source}")]
    Bind {
        key: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("{key} = {value:?}: {message}")]
    BadValue {
        key: String,
        value: String,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Storage { path: PathBuf, message: String },
    #[error("{what}: {message}")]
    Failed { what: String, message: String },
}

impl StartError {
    pub fn storage(path: &Path, message: impl std::fmt::Display) -> Self {
        Self::Storage {
            path: path.to_path_buf(),
            message: format!("{message:#}"),
        }
    }

    pub fn bad_value(key: &str, value: impl std::fmt::Display, message: impl Into<String>) -> Self {
        Self::BadValue {
            key: key.into(),
            value: value.to_string(),
            message: message.into(),
        }
    }

    pub fn failed(what: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::Failed {
            what: what.into(),
            message: format!("{message:#}"),
        }
    }
}

/// `result.at(path)?`: an I/O (or other) failure as a start error naming
/// the path.
pub trait AtPath<T> {
    fn at(self, path: &Path) -> Result<T, StartError>;
}

impl<T, E: std::fmt::Display> AtPath<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, StartError> {
        self.map_err(|e| StartError::storage(path, e))
    }
}

/// The fault that stops a daemon from inside: cloneable, set once.
#[derive(Clone)]
pub struct Fatal {
    reason: Arc<Mutex<Option<String>>>,
    shutdown: Shutdown,
}

impl Fatal {
    fn new(shutdown: Shutdown) -> Self {
        Self {
            reason: Arc::default(),
            shutdown,
        }
    }

    /// Logs `reason` once as an ERROR, and stops the daemon: its handle's
    /// `wait` then returns the reason, and the process exits with 1.
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            tracing::error!("fatal: {reason}; stopping");
            *r = Some(reason);
        }
        drop(r);
        self.shutdown.trigger();
    }

    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running daemon's background tasks, joined on shutdown.
#[derive(Default)]
struct Tasks(Vec<(&'static str, JoinHandle<()>)>);

impl Tasks {
    /// Waits for every task up to `grace`, then aborts the rest and names
    /// them (a task that does not watch the shutdown signal is a bug).
    async fn join(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for (name, mut h) in self.0 {
            match tokio::time::timeout_at(deadline, &mut h).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_cancelled() => {}
                Ok(Err(e)) => tracing::error!(task = name, "task failed: {e}"),
                Err(_) => {
                    tracing::warn!(
                        task = name,
                        "task still running {grace:?} after shutdown; aborting it"
                    );
                    h.abort();
                }
            }
        }
    }
}

/// What a role starts with: the shared parts, and where it records what
/// it binds and spawns.
pub struct Launch {
    role: &'static str,
    id: String,
    registry: prometheus::Registry,
    shutdown: Shutdown,
    fatal: Fatal,
    tasks: Tasks,
    addrs: BTreeMap<String, SocketAddr>,
}

impl Launch {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub fn fatal(&self) -> Fatal {
        self.fatal.clone()
    }

    /// Binds `addr` (the value of configuration key `key`) and records
    /// the bound address as `name` for the announcement.
    pub async fn bind(
        &mut self,
        name: &str,
        key: &str,
        addr: &str,
    ) -> Result<tokio::net::TcpListener, StartError> {
        let parsed: SocketAddr = addr
            .parse()
            .map_err(|_| StartError::bad_value(key, addr, "not an IP:PORT address"))?;
        let bind_err = |source| StartError::Bind {
            key: key.into(),
            addr: addr.into(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(parsed)
            .await
            .map_err(bind_err)?;
        let bound = listener.local_addr().map_err(bind_err)?;
        self.addrs.insert(name.to_string(), bound);
        Ok(listener)
    }

    /// The address bound as `name` (panics if none was: a role's bug).
    pub fn bound(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// Spawns a background task in the node's span. It must end once the
    /// shutdown signal fires; shutdown joins it.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks
            .0
            .push((name, tokio::spawn(task.in_current_span())));
    }

    /// Spawns a task that runs until shutdown and is dropped then (a loop
    /// with nothing to finish: an accept loop, a scanner).
    pub fn spawn_until_shutdown(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let shutdown = self.shutdown.clone();
        self.spawn(name, async move {
            tokio::select! {
                _ = shutdown.wait() => {}
                _ = task => {}
            }
        });
    }

    /// Serves gRPC on `listener` until shutdown: `services` adds the
    /// services to a server with TCP_NODELAY (without it small replies wait
    /// on Nagle and delayed ACKs) and HTTP/2 keep-alives.
    pub fn serve_grpc(
        &mut self,
        name: &'static str,
        listener: tokio::net::TcpListener,
        services: impl FnOnce(tonic::transport::Server) -> tonic::transport::server::Router,
    ) -> Result<(), StartError> {
        let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
            .map_err(|e| StartError::failed(format!("serving {name}"), e))?;
        // Every request's handler runs in the daemon's span (hyper spawns
        // a task per connection, which would otherwise lose it).
        let span = tracing::Span::current();
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .trace_fn(move |_| span.clone());
        let router = services(server);
        let shutdown = self.shutdown.clone();
        let fatal = self.fatal.clone();
        self.spawn(name, async move {
            let stop = shutdown.clone();
            let served = drained(
                router.serve_with_incoming_shutdown(incoming, async move { stop.wait().await }),
                shutdown,
            )
            .await;
            if let Some(Err(e)) = served {
                fatal.fail(format!("serving {name} gRPC failed: {e:#}"));
            }
        });
        Ok(())
    }

    /// Binds the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, the
    /// status page) on `addr` (key `key`) and serves it until shutdown.
    pub async fn serve_http(
        &mut self,
        key: &str,
        addr: &str,
        status: StatusFn,
    ) -> Result<SocketAddr, StartError> {
        self.serve_http_with(key, addr, status, HttpExtras::default())
            .await
    }

    /// `serve_http`, with the role's own tables on the status page and
    /// routes beside the common ones.
    pub async fn serve_http_with(
        &mut self,
        key: &str,
        addr: &str,
        status: StatusFn,
        extras: HttpExtras,
    ) -> Result<SocketAddr, StartError> {
        let listener = self.bind("http", key, addr).await?;
        let state = HttpState {
            role: self.role.to_string(),
            id: self.id.clone(),
            registry: self.registry.clone(),
            status,
            tables: extras.tables,
        };
        let shutdown = self.shutdown.clone();
        let fatal = self.fatal.clone();
        let served = serve_http(listener, state, extras.routes, shutdown.clone());
        self.spawn("http", async move {
            if let Some(Err(e)) = drained(served, shutdown).await {
                fatal.fail(format!("serving HTTP failed: {e:#}"));
            }
        });
        Ok(self.bound("http"))
    }
}

/// How long a server stopping gracefully lets requests in flight finish
/// before it drops them. Long streams (a coordination session, a kept-alive
/// scrape connection) would otherwise hold shutdown forever; their clients
/// see the connection end and go elsewhere.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Runs a server that stops gracefully on `shutdown`, but at most
/// [`DRAIN`] after it: `None` if it was cut off.
async fn drained<T>(server: impl Future<Output = T>, shutdown: Shutdown) -> Option<T> {
    tokio::select! {
        r = server => Some(r),
        _ = async {
            shutdown.wait().await;
            tokio::time::sleep(DRAIN).await;
        } => None,
    }
}

/// A running daemon: what it bound, its role's state, and how to wait for
/// it. The same type for every role.
pub struct Handle<S> {
    pub role: &'static str,
    pub id: String,
    /// Every bound address by name (`rpc`, `http`, …), as announced.
    pub addrs: BTreeMap<String, SocketAddr>,
    pub state: S,
    shutdown: Shutdown,
    fatal: Fatal,
    tasks: Tasks,
}

impl<S> Handle<S> {
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.get(name).copied()
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Runs until the shutdown signal (or a fatal fault), then joins every
    /// background task. `Err` names the fatal fault that stopped it.
    pub async fn wait(self) -> Result<(), String> {
        self.shutdown.wait().await;
        self.tasks.join(SHUTDOWN_GRACE).await;
        match self.fatal.reason() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

/// Starts role `R` with `cfg` in this process (the span is the caller's:
/// `run_daemon` makes it). Bound addresses are in the handle; nothing is
/// announced.
pub async fn launch<R: Role>(
    cfg: R::Config,
    id: String,
    shutdown: Shutdown,
    registry: prometheus::Registry,
) -> Result<Handle<R::State>, StartError> {
    cfg.validate()
        .map_err(|m| StartError::Config(ConfigError::Invalid(m)))?;
    crate::metrics::register_build_info(&registry, R::NAME);
    crate::metrics::register_process_collector(&registry);
    let fatal = Fatal::new(shutdown.clone());
    let mut launch = Launch {
        role: R::NAME,
        id: id.clone(),
        registry,
        shutdown: shutdown.clone(),
        fatal: fatal.clone(),
        tasks: Tasks::default(),
        addrs: BTreeMap::new(),
    };
    let started = R::start(cfg, &mut launch).await;
    let state = match started {
        Ok(s) => s,
        Err(e) => {
            // Whatever started before the failure stops again.
            shutdown.trigger();
            launch.tasks.join(SHUTDOWN_GRACE).await;
            return Err(e);
        }
    };
    Ok(Handle {
        role: R::NAME,
        id,
        addrs: launch.addrs,
        state,
        shutdown,
        fatal,
        tasks: launch.tasks,
    })
}

/// `hstack ROLE …`: the whole life of a daemon process (module doc).
/// Returns the process's exit status.
pub fn run_daemon<R: Role>(args: DaemonArgs<R::Config>) -> std::process::ExitCode
where
    R::Config: RoleConfig,
{
    use std::process::ExitCode;
    let cfg = match layer_config::<R::Config>(&args, R::NAME) {
        Ok(ConfigOutcome::Run(cfg)) => cfg,
        Ok(ConfigOutcome::Exit(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::init_tracing(cfg.log_format(), cfg.log_level());
    crate::install_abort_on_panic();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if cfg.worker_threads() > 0 {
        builder.worker_threads(cfg.worker_threads());
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let id = R::id(&cfg)?;
        let span = tracing::info_span!("node", role = R::NAME, id = %id);
        async move {
            let shutdown = Shutdown::new();
            shutdown.trigger_on_signals();
            let dir = R::announce_dir(&cfg);
            let handle =
                launch::<R>(cfg, id.clone(), shutdown, prometheus::Registry::new()).await?;
            if let Err(e) = crate::announce(&dir, R::NAME, &id, &handle.addrs) {
                // Started but unannounced: stop what started, then fail.
                handle.shutdown.trigger();
                let _ = handle.wait().await;
                return Err(StartError::storage(&dir, e));
            }
            tracing::info!(addrs = ?handle.addrs, "{} started", R::NAME);
            let stopped = handle.wait().await;
            tracing::info!("stopped");
            Ok::<_, StartError>(stopped)
        }
        .instrument(span)
        .await
    });
    // A blocking thread stuck on a dead disk must not keep the process
    // from exiting (dropping the runtime would wait for it).
    rt.shutdown_timeout(Duration::from_secs(10));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(_fatal)) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!("failed to start: {e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(dead_code)]
fn _assert_layerable<T: Serialize + DeserializeOwned + Default>() {}
