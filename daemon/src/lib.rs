//! What every hstack daemon shares: layered configuration, the HTTP endpoint
//! (`/metrics`, `/healthz`, `/readyz`, a status page), tracing, graceful
//! shutdown, the abort-on-panic hook and the "which addresses did I bind"
//! announcement.

mod announce;
mod config;
mod http;
mod logging;
mod shutdown;

pub use announce::{announce, read_announcement, Announcement};
pub use config::{layer_config, CommonArgs, ConfigError, ConfigOutcome};
pub use http::{serve_http, HttpState, StatusFn};
pub use logging::{init_client_tracing, init_tracing, install_abort_on_panic, LogFormat};
pub use shutdown::Shutdown;

/// The version every daemon reports in `hstack_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Registers `hstack_build_info{version,role}` (always 1) in `registry`.
pub fn register_build_info(registry: &prometheus::Registry, role: &str) {
    let opts = prometheus::Opts::new("hstack_build_info", "Build information of this daemon")
        .const_label("version", VERSION)
        .const_label("role", role);
    let gauge = prometheus::IntGauge::with_opts(opts).expect("valid metric");
    gauge.set(1);
    // A second registration in the same registry is a programming error we
    // tolerate: the gauge is constant.
    let _ = registry.register(Box::new(gauge));
}

/// For `spawn_grpc!`.
#[doc(hidden)]
pub mod __private {
    pub use anyhow;
    pub use tonic;
    pub use tracing;
}

/// Serves one tonic service on a bound `tokio::net::TcpListener` until
/// `shutdown` (a [`Shutdown`]); evaluates to `anyhow::Result<()>`.
/// Accepted sockets get TCP_NODELAY: without it small replies wait on Nagle
/// and delayed ACKs (tens of milliseconds).
#[macro_export]
macro_rules! spawn_grpc {
    ($listener:expr, $svc:expr, $shutdown:expr, $what:expr) => {{
        use $crate::__private::{anyhow, tonic, tracing};
        let what: &'static str = $what;
        match tonic::transport::server::TcpIncoming::from_listener($listener, true, None) {
            Err(e) => Err(anyhow::anyhow!("cannot serve {what}: {e}")),
            Ok(incoming) => {
                let shutdown: $crate::Shutdown = $shutdown;
                let svc = $svc;
                tokio::spawn(async move {
                    let res = tonic::transport::Server::builder()
                        .tcp_nodelay(true)
                        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
                        .add_service(svc)
                        .serve_with_incoming_shutdown(
                            incoming,
                            async move { shutdown.wait().await },
                        )
                        .await;
                    if let Err(e) = res {
                        tracing::error!("failed to serve {what} gRPC: {e:#}");
                    }
                });
                Ok(())
            }
        }
    }};
}

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
