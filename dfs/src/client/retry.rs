//! Namenode calls that ride out a namenode that is briefly gone or still
//! starting, as HDFS's client does (it retries a refused connection,
//! `ipc.client.connect.max.retries`, and a `RetriableException`).
//!
//! A call is tried again, within the client's patience, only when doing so
//! cannot apply it twice:
//! - the connection was never made (nothing reached the namenode);
//! - the namenode answered that it changed nothing and the same call will
//!   work later (the start-up safe mode: `FsError::retriable`);
//! - the reply was lost after the request went out, and the call is
//!   idempotent (a read, a set to a value, `Complete`).
//!
//! A lost reply to any other call (create, delete, rename, add block, …)
//! is returned at once, saying that the namenode may have done it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use hstack_proto::dfs::namenode_client::NamenodeClient;
use tonic::transport::Channel;

use super::DfsClient;
use crate::error::{FsError, FsResult, Kind};

/// Whether a call may be sent twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Doing it twice is doing it once.
    Idempotent,
    /// Repeated only when the namenode certainly did not act on it.
    AtMostOnce,
}

/// Why a failed call may be tried again; `None`: it may not.
fn retry_reason(s: &tonic::Status, e: &FsError, repeat: Repeat) -> Option<&'static str> {
    if e.retriable {
        return Some("the namenode is starting");
    }
    if crate::error::from_namenode(s) {
        // A considered answer: trying again gets the same.
        return None;
    }
    if never_sent(s) {
        return Some("cannot connect to the namenode");
    }
    (repeat == Repeat::Idempotent && lost_connection(s))
        .then_some("lost the connection to the namenode")
}

/// Whether this client's channel failed before the request went out: it
/// could not connect. tonic says so only in words ("tcp connect error");
/// the test `a_refused_connection_counts_as_never_sent` holds it to them.
/// The status must also carry a local transport error as its source: a
/// proxy's "upstream connect error" arrives as a plain status, after the
/// request may have gone on.
pub(crate) fn never_sent(s: &tonic::Status) -> bool {
    use std::error::Error;
    let m = s.message();
    s.code() == tonic::Code::Unavailable
        && s.source().is_some()
        && (m.contains("connect error") || m.contains("error trying to connect"))
}

/// A transport failure of this client's connection (not an error that
/// would repeat, such as a message too large or one that cannot be
/// decoded).
fn lost_connection(s: &tonic::Status) -> bool {
    use std::error::Error;
    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) && s.source().is_some()
}

/// Sleeps between tries: 100 ms doubling to 1 s, until the deadline.
pub(crate) struct Backoff {
    wait: Duration,
    deadline: Instant,
    pauses: u32,
}

impl Backoff {
    pub(crate) fn new(patience: Duration) -> Self {
        Self {
            wait: Duration::from_millis(100),
            deadline: Instant::now() + patience,
            pauses: 0,
        }
    }

    /// Whether no pause was taken yet (time to say why we wait).
    pub(crate) fn first(&self) -> bool {
        self.pauses == 0
    }

    /// Sleeps before the next try; false once the deadline would pass.
    pub(crate) async fn pause(&mut self) -> bool {
        if Instant::now() + self.wait > self.deadline {
            return false;
        }
        tokio::time::sleep(self.wait).await;
        self.pauses += 1;
        self.wait = (self.wait * 2).min(Duration::from_secs(1));
        true
    }
}

impl DfsClient {
    /// Calls the namenode (`f` builds and sends the request), trying again
    /// while that is safe (module doc) and the client's patience lasts.
    pub async fn call<T, F, Fut>(&self, what: &str, repeat: Repeat, mut f: F) -> FsResult<T>
    where
        F: FnMut(NamenodeClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let patience = self.inner.opts.namenode_patience;
        let mut backoff = Backoff::new(patience);
        loop {
            let s = match f(self.namenode()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => s,
            };
            let e = if crate::error::from_namenode(&s) {
                FsError::from(s.clone())
            } else {
                transport_error(&s)
            };
            let Some(why) = retry_reason(&s, &e, repeat) else {
                return Err(unsure(e, &s, what));
            };
            if backoff.first() {
                tracing::warn!("{what}: {why} ({e}); trying again for up to {patience:?}");
            }
            if !backoff.pause().await {
                return Err(FsError::new(
                    e.kind,
                    format!("{what}: {why}, still after {patience:?}: {e}"),
                ));
            }
        }
    }
}

/// A failure below the RPC, with its causes.
fn transport_error(s: &tonic::Status) -> FsError {
    use std::error::Error;
    FsError::new(
        Kind::Unavailable,
        with_causes(s.message().into(), s.source()),
    )
}

/// `text`, then each cause it does not already end with (tonic's own
/// message is often just "transport error").
pub(crate) fn with_causes(
    mut text: String,
    mut next: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    while let Some(c) = next {
        let c_text = c.to_string();
        if !text.ends_with(&c_text) {
            text = format!("{text}: {c_text}");
        }
        next = c.source();
    }
    text
}

/// A lost reply to a call that is not repeated: say that it may have
/// happened.
fn unsure(e: FsError, s: &tonic::Status, what: &str) -> FsError {
    if crate::error::from_namenode(s) || never_sent(s) {
        return e;
    }
    FsError::new(
        Kind::Unavailable,
        format!(
            "{what}: lost the connection to the namenode; it may or may not have been done: {e}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: tonic::Status, repeat: Repeat) -> Option<&'static str> {
        let e = FsError::from(s.clone());
        retry_reason(&s, &e, repeat)
    }

    #[test]
    fn only_what_cannot_apply_twice_is_tried_again() {
        // Transport failures carry their cause, as tonic's own do.
        let local = |code, m: &str| {
            let mut s = tonic::Status::new(code, m);
            s.set_source(std::sync::Arc::new(std::io::Error::other(m.to_string())));
            s
        };
        let refused = local(
            tonic::Code::Unavailable,
            "error trying to connect: tcp connect error: Connection refused (os error 111)",
        );
        let reset = local(tonic::Code::Unknown, "transport error");
        // A proxy's answer: a status from the far side, no local cause.
        let proxied =
            tonic::Status::unavailable("upstream connect error or disconnect/reset before headers");
        let too_big = tonic::Status::out_of_range("decoded message length too large");
        let starting: tonic::Status = FsError::new(Kind::SafeMode, "starting").retriable().into();
        let manual: tonic::Status = FsError::new(Kind::SafeMode, "by an admin").into();
        let down: tonic::Status = FsError::new(Kind::Unavailable, "edit log failed").into();
        for repeat in [Repeat::Idempotent, Repeat::AtMostOnce] {
            assert!(reason(refused.clone(), repeat).is_some());
            assert!(reason(starting.clone(), repeat).is_some());
            assert_eq!(reason(manual.clone(), repeat), None);
            assert_eq!(reason(down.clone(), repeat), None);
        }
        assert!(reason(reset.clone(), Repeat::Idempotent).is_some());
        assert_eq!(reason(reset.clone(), Repeat::AtMostOnce), None);
        assert_eq!(reason(proxied.clone(), Repeat::AtMostOnce), None);
        assert_eq!(reason(too_big.clone(), Repeat::Idempotent), None);
        // And the error of a call not repeated says it may have happened.
        let e = unsure(FsError::from(reset.clone()), &reset, "create /a");
        assert!(e.message.contains("may or may not"), "{}", e.message);
        let e = unsure(FsError::from(manual.clone()), &manual, "create /a");
        assert_eq!(e.kind, Kind::SafeMode);
    }

    #[tokio::test]
    async fn a_refused_connection_counts_as_never_sent() {
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy();
        let s = NamenodeClient::new(ch)
            .get_file_info(hstack_proto::dfs::PathRequest::default())
            .await
            .unwrap_err();
        assert!(never_sent(&s), "{s:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_stops_at_the_deadline() {
        let mut b = Backoff::new(Duration::from_millis(350));
        let mut tries = 0;
        while b.pause().await {
            tries += 1;
        }
        // 100 + 200 ms fit; 400 more would not.
        assert_eq!(tries, 2);
    }
}
