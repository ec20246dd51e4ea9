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

/// A table of the status page: a title, the column names and the rows.
#[derive(Clone, Debug, Default)]
pub struct StatusTable {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Returns the tables the status page shows below its rows.
pub type TablesFn = Arc<dyn Fn() -> Vec<StatusTable> + Send + Sync>;

/// What a role adds to the endpoint: tables on the status page, and
/// routes of its own (a REST view, logs), served beside the common ones.
#[derive(Default)]
pub struct HttpExtras {
    pub tables: Option<TablesFn>,
    pub routes: Option<Router>,
}

#[derive(Clone)]
pub struct HttpState {
    pub role: String,
    pub id: String,
    pub registry: prometheus::Registry,
    pub status: StatusFn,
    pub tables: Option<TablesFn>,
}

/// Serves the endpoint on `listener` until `shutdown`.
pub(crate) async fn serve_http(
    listener: tokio::net::TcpListener,
    state: HttpState,
    routes: Option<Router>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(status_page))
        .with_state(Arc::new(state));
    if let Some(r) = routes {
        app = app.merge(r);
    }
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
    let tables = s.tables.as_ref().map(|t| t()).unwrap_or_default();
    Html(page(&s.role, &s.id, ready, &rows, &tables).into_string())
}

fn page(
    role: &str,
    id: &str,
    ready: bool,
    rows: &[(String, String)],
    tables: &[StatusTable],
) -> maud::Markup {
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
                @for t in tables {
                    h2 { (t.title) }
                    table border="1" cellpadding="3" {
                        tr { @for c in &t.columns { th { (c) } } }
                        @for r in &t.rows {
                            tr { @for v in r { td { (v) } } }
                        }
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
        let tables = vec![super::StatusTable {
            title: "apps <x>".into(),
            columns: vec!["id".into()],
            rows: vec![vec!["<script>".into()]],
        }];
        let html = super::page("coord", "1<", true, &rows, &tables).into_string();
        assert!(
            html.contains("apps &lt;x&gt;") && html.contains("&lt;script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;b&gt;") && html.contains("a &amp; b"),
            "{html}"
        );
        assert!(html.contains("hstack coord 1&lt;") && html.contains("ready"));
    }
}
