//! What every hstack daemon shares: one launch path for every role
//! (`role`), layered configuration, the HTTP endpoint (`/metrics`,
//! `/healthz`, `/readyz`, a status page), tracing, graceful shutdown, the
//! abort-on-panic hook, the "which addresses did I bind" announcement,
//! and the small helpers every role needs once: atomic file writes,
//! metric registration, versioned formats, and child daemon processes
//! (backoff with jitter is `hstack_proto::retry`, beside the error model,
//! so clients have it without this crate).

mod announce;
mod config;
pub mod format;
mod fsutil;
mod http;
mod logging;
pub mod metrics;
pub mod net;
pub mod process;
mod role;
mod shutdown;

pub use announce::{announce, read_announcement, Announcement, ANNOUNCE_FILE};
/// The HTTP framework roles build their own routes with.
pub use axum;
pub use config::{
    assert_flags_round_trip, env_prefix, layer_config, CommonArgs, ConfigError, ConfigOutcome,
    DaemonArgs,
};
pub use fsutil::{sync_dir, write_atomic};
pub use http::{HttpExtras, StatusFn, StatusTable, TablesFn};
pub use logging::{init_client_tracing, init_tracing, install_abort_on_panic, LogFormat};
pub use role::{
    launch, run_daemon, AtPath, Fatal, Handle, Launch, Role, RoleConfig, StartError, SHUTDOWN_GRACE,
};
pub use shutdown::Shutdown;

/// The version every daemon reports in `hstack_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `host:port` others should use to reach a socket bound at `bound`:
/// `host` if set, else the bound IP, or this machine's name when bound to
/// every interface.
pub fn advertised(bound: std::net::SocketAddr, host: &str) -> String {
    if !host.is_empty() {
        return format!("{host}:{}", bound.port());
    }
    if bound.ip().is_unspecified() {
        let name = std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let name = if name.is_empty() {
            "localhost".to_string()
        } else {
            name
        };
        return format!("{name}:{}", bound.port());
    }
    bound.to_string()
}
