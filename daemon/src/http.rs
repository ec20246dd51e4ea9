//! The HTTP endpoint every daemon serves: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive), `/readyz` (the role says it can serve)
//! and `/` (a small HTML status page).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};

use crate::Shutdown;

/// Key/value rows for the status page and the readiness answer.
pub type StatusFn = Arc<dyn Fn() -> (bool, Vec<(String, String)>) + Send + Sync>;

#[derive(Clone)]
pub struct HttpState {
    pub role: String,
    pub id: String,
    pub registry: prometheus::Registry,
    /// Returns (ready, rows for the status page).
    pub status: StatusFn,
}

/// Binds `addr`, serves until `shutdown`, and returns the bound address.
pub async fn serve_http(
    addr: SocketAddr,
    state: HttpState,
    shutdown: Shutdown,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(status_page))
        .with_state(Arc::new(state));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::error!("failed to serve HTTP: {e:#}");
        }
    });
    Ok(bound)
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}

async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    let (ready, rows) = (s.status)();
    let body: String = rows.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    if ready {
        (StatusCode::OK, format!("ready\n{body}")).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{body}"),
        )
            .into_response()
    }
}

async fn status_page(State(s): State<Arc<HttpState>>) -> Html<String> {
    let (ready, rows) = (s.status)();
    let mut html = format!(
        "<!doctype html><html><head><title>hstack {role} {id}</title></head><body>\
         <h1>hstack {role} {id}</h1><p>version {v} &middot; {state}</p><table>",
        role = escape(&s.role),
        id = escape(&s.id),
        v = crate::VERSION,
        state = if ready { "ready" } else { "not ready" },
    );
    for (k, v) in rows {
        html.push_str(&format!(
            "<tr><th align=left>{}</th><td>{}</td></tr>",
            escape(&k),
            escape(&v)
        ));
    }
    html.push_str("</table><p><a href=\"/metrics\">metrics</a></p></body></html>");
    Html(html)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
