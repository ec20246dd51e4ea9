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
pub use logging::{init_tracing, install_abort_on_panic, LogFormat};
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
