//! The HTTP endpoint every daemon serves: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive), `/readyz` (the role says it can serve)
//! and `/` (a small HTML status page).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};

use crate::Shutdown;

/// Returns (ready, rows for the status page and the readiness answer).
pub type StatusFn = Arc<dyn Fn() -> (bool, Vec<(String, String)>) + Send + Sync>;

#[derive(Clone)]
pub struct HttpState {
    pub role: String,
    pub id: String,
    pub registry: prometheus::Registry,
    pub status: StatusFn,
}

/// Serves the endpoint on `listener` until `shutdown`.
pub(crate) async fn serve_http(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(status_page))
        .with_state(Arc::new(state));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
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
    Html(page(&s.role, &s.id, ready, &rows).into_string())
}

fn page(role: &str, id: &str, ready: bool, rows: &[(String, String)]) -> maud::Markup {
    maud::html! {
        (maud::DOCTYPE)
        html {
            head { title { "hstack " (role) " " (id) } }
            body {
                h1 { "hstack " (role) " " (id) }
                p { "version " (crate::VERSION) " · " (if ready { "ready" } else { "not ready" }) }
                table {
                    @for (k, v) in rows {
                        tr { th align="left" { (k) } td { (v) } }
                    }
                }
                p { a href="/metrics" { "metrics" } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_status_page_escapes_what_it_shows() {
        let rows = vec![("<b>".to_string(), "a & b".to_string())];
        let html = super::page("coord", "1<", true, &rows).into_string();
        assert!(
            html.contains("&lt;b&gt;") && html.contains("a &amp; b"),
            "{html}"
        );
        assert!(html.contains("hstack coord 1&lt;") && html.contains("ready"));
    }
}
