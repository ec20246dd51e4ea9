//! The shuffle: a node manager's auxiliary service (`mapreduce_shuffle`)
//! serving map outputs to reduces over HTTP, and the reduce side's
//! fetcher.
//!
//! A map attempt writes its output under its application's directory on
//! the node (`<local dir>/usercache/<user>/appcache/<app>/output/<attempt>/
//! file.out` and `file.out.index`), outside its container's own
//! directory, so the output outlives the map's container and goes when the
//! application does. `GET /mapOutput?job=<app>&map=<attempt>&reduce=<n>`
//! answers with that partition's segment and its length, record count and
//! CRC32C in headers (`x-hstack-raw-len`, `x-hstack-part-len`,
//! `x-hstack-records`, `x-hstack-crc`); the fetcher checks the CRC over
//! every byte it received before the segment is merged.
//!
//! The service listens on the node's host, on `HSTACK_SHUFFLE_PORT` when
//! set (13562, Hadoop's, in production) and an ephemeral port otherwise;
//! application masters learn the port from the node manager's reply to
//! every container start.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hstack_daemon::Shutdown;
use hstack_scheduler::nm::aux::{self, AuxContext, AuxService, ServeFuture};

use crate::ifile::{self, SegmentInfo};

pub const SERVICE: &str = "mapreduce_shuffle";

/// Makes the service available to node managers of this binary.
pub fn register() {
    aux::register(SERVICE, |ctx| Ok(Arc::new(ShuffleService::new(ctx))));
}

pub struct ShuffleService {
    host: String,
    local_dirs: Vec<PathBuf>,
    users: Mutex<HashMap<String, String>>,
    port: Mutex<u16>,
}

impl ShuffleService {
    pub fn new(ctx: &AuxContext) -> Self {
        let host = ctx
            .node_id
            .rsplit_once(':')
            .map_or(ctx.node_id.as_str(), |h| h.0)
            .to_string();
        Self {
            host,
            local_dirs: ctx.local_dirs.clone(),
            users: Mutex::new(HashMap::new()),
            port: Mutex::new(0),
        }
    }

    /// Where an attempt's output is: the index file, if there is one.
    fn find(&self, app: &str, attempt: &str) -> Option<PathBuf> {
        let user = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .cloned();
        for d in &self.local_dirs {
            let users: Vec<String> = match &user {
                Some(u) => vec![u.clone()],
                None => std::fs::read_dir(d.join("usercache"))
                    .map(|r| {
                        r.filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            for u in users {
                let p = output_dir(d, &u, app, attempt).join("file.out.index");
                if p.exists() {
                    return Some(p);
                }
            }
        }
        None
    }
}

/// An attempt's map-output directory under one local directory.
pub fn output_dir(local: &std::path::Path, user: &str, app: &str, attempt: &str) -> PathBuf {
    local
        .join("usercache")
        .join(user)
        .join("appcache")
        .join(app)
        .join("output")
        .join(attempt)
}

fn plain_id(s: &str, prefix: &str) -> bool {
    s.starts_with(prefix)
        && s.len() < 200
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// What a request asks for, checked: ids of a plain shape only (no path
/// can be named through them).
fn parse_request(query: &HashMap<String, String>) -> Result<(String, String, usize), String> {
    let get = |k: &str| {
        query
            .get(k)
            .cloned()
            .ok_or_else(|| format!("missing `{k}`"))
    };
    let app = get("job")?;
    let attempt = get("map")?;
    let reduce: usize = get("reduce")?
        .parse()
        .map_err(|_| "`reduce` is not a number".to_string())?;
    if !plain_id(&app, "application_") {
        return Err(format!("`job` {app:?} is not an application id"));
    }
    if !plain_id(&attempt, "attempt_") {
        return Err(format!("`map` {attempt:?} is not an attempt id"));
    }
    Ok((app, attempt, reduce))
}

/// Reads one segment of a map output: its info and bytes.
fn read_segment(
    index: &std::path::Path,
    reduce: usize,
) -> Result<(SegmentInfo, Vec<u8>), (u16, String)> {
    use std::io::{Seek, SeekFrom};
    let segs = ifile::read_index(index).map_err(|e| (500, e.to_string()))?;
    let seg = *segs.get(reduce).ok_or_else(|| {
        (
            404,
            format!(
                "the map output has {} partitions, not {}",
                segs.len(),
                reduce + 1
            ),
        )
    })?;
    let file = index.with_file_name("file.out");
    let mut f =
        std::fs::File::open(&file).map_err(|e| (500, format!("{}: {e}", file.display())))?;
    f.seek(SeekFrom::Start(seg.offset))
        .map_err(|e| (500, e.to_string()))?;
    let mut b = vec![0; seg.part_len as usize];
    f.read_exact(&mut b)
        .map_err(|e| (500, format!("{}: {e}", file.display())))?;
    Ok((seg, b))
}

impl AuxService for ShuffleService {
    fn name(&self) -> &str {
        SERVICE
    }

    fn listen_addr(&self) -> Option<String> {
        let port = std::env::var("HSTACK_SHUFFLE_PORT")
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(0);
        Some(format!("{}:{port}", self.host))
    }

    fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: Shutdown,
    ) -> ServeFuture {
        use axum::extract::{Query, State};
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};
        async fn map_output(
            State(s): State<Arc<ShuffleService>>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Response {
            let (app, attempt, reduce) = match parse_request(&q) {
                Ok(r) => r,
                Err(m) => return (StatusCode::BAD_REQUEST, m).into_response(),
            };
            let Some(index) = s.find(&app, &attempt) else {
                return (
                    StatusCode::NOT_FOUND,
                    format!("no output of {attempt} of {app} here"),
                )
                    .into_response();
            };
            match tokio::task::spawn_blocking(move || read_segment(&index, reduce)).await {
                Ok(Ok((seg, bytes))) => (
                    [
                        ("x-hstack-raw-len", seg.raw_len.to_string()),
                        ("x-hstack-part-len", seg.part_len.to_string()),
                        ("x-hstack-records", seg.records.to_string()),
                        ("x-hstack-crc", seg.crc.to_string()),
                    ],
                    bytes,
                )
                    .into_response(),
                Ok(Err((code, m))) => (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    m,
                )
                    .into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            }
        }
        let app = axum::Router::new()
            .route("/mapOutput", axum::routing::get(map_output))
            .with_state(self);
        Box::pin(async move {
            let stop = shutdown.clone();
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.wait().await })
                .await;
        })
    }

    fn app_started(&self, app: &str, user: &str) {
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app.to_string(), user.to_string());
    }

    fn app_finished(&self, app: &str) {
        // The node manager removes the application's directory itself.
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
    }

    fn meta(&self) -> Vec<u8> {
        self.port
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .to_string()
            .into_bytes()
    }

    fn bound(&self, addr: std::net::SocketAddr) {
        *self.port.lock().unwrap_or_else(|p| p.into_inner()) = addr.port();
    }
}

/// The shuffle port in a node manager's aux metadata.
pub fn port_of(meta: &HashMap<String, Vec<u8>>) -> Option<u16> {
    std::str::from_utf8(meta.get(SERVICE)?).ok()?.parse().ok()
}

/// A fetched segment's header, then its body on the connection.
pub struct Fetching {
    pub info: SegmentInfo,
    pub body: std::io::Take<BufReader<std::net::TcpStream>>,
}

/// Asks `addr` for partition `reduce` of `attempt`'s output.
pub fn open(
    addr: &str,
    app: &str,
    attempt: &str,
    reduce: u32,
    timeout: Duration,
) -> anyhow::Result<Fetching> {
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{addr}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, timeout)
        .map_err(|e| anyhow::anyhow!("cannot reach the shuffle at {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET /mapOutput?job={app}&map={attempt}&reduce={reduce} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = BufReader::with_capacity(256 << 10, s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            anyhow::bail!("the shuffle at {addr} closed the connection mid-reply");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let num = |k: &str| -> anyhow::Result<u64> {
        headers
            .get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("the shuffle at {addr} sent no {k}"))
    };
    if code != 200 {
        let mut msg = String::new();
        let n = num("content-length").unwrap_or(4096).min(4096);
        let _ = r.by_ref().take(n).read_to_string(&mut msg);
        anyhow::bail!(
            "the shuffle at {addr} answered {code} for {attempt}: {}",
            msg.trim()
        );
    }
    let info = SegmentInfo {
        offset: 0,
        raw_len: num("x-hstack-raw-len")?,
        part_len: num("x-hstack-part-len")?,
        records: num("x-hstack-records")?,
        crc: num("x-hstack-crc")? as u32,
    };
    anyhow::ensure!(
        num("content-length")? == info.part_len,
        "the shuffle at {addr} sent a body of the wrong length"
    );
    Ok(Fetching {
        info,
        body: r.take(info.part_len),
    })
}

/// Copies a fetched body into `out`, checking its length and CRC32C.
pub fn receive(f: &mut Fetching, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    let mut crc = 0u32;
    let mut n = 0u64;
    loop {
        let k = f.body.read(&mut buf)?;
        if k == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..k]);
        out.write_all(&buf[..k])?;
        n += k as u64;
    }
    anyhow::ensure!(
        n == f.info.part_len,
        "the segment was cut short ({n} of {} bytes)",
        f.info.part_len
    );
    anyhow::ensure!(
        crc == f.info.crc,
        "the segment fails its checksum (damaged in transit or on the map's disk)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_ids_never_paths() {
        let q = |j: &str, m: &str, r: &str| {
            let mut h = HashMap::new();
            h.insert("job".to_string(), j.to_string());
            h.insert("map".to_string(), m.to_string());
            h.insert("reduce".to_string(), r.to_string());
            parse_request(&h)
        };
        assert!(q("application_1_0001", "attempt_job_1_0001_m_000000_0", "2").is_ok());
        assert!(q("application_1_0001/../x", "attempt_x", "0").is_err());
        assert!(q("application_1_0001", "attempt_../../etc", "0").is_err());
        assert!(q("application_1_0001", "attempt_x", "-1").is_err());
        assert!(q("app", "attempt_x", "0").is_err());
    }
}
