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

use hstack_proto::dfs::admin_protocol_client::AdminProtocolClient as AdminClient;
use hstack_proto::dfs::client_protocol_client::ClientProtocolClient as NamenodeClient;
use tonic::transport::Channel;

use super::DfsClient;
use crate::error::{Code, FsError, FsResult};

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
    if e.retry_later {
        return Some("the namenode is starting");
    }
    if crate::error::is_answer(s) {
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

/// Pauses between tries: about 100 ms doubling to 1 s, with jitter, for
/// at most `patience`.
pub(crate) fn backoff(patience: Duration) -> hstack_proto::retry::Backoff {
    hstack_proto::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
        .with_patience(patience)
}

impl DfsClient {
    /// Calls the namenode's client protocol (`f` builds and sends the
    /// request), trying again while that is safe (module doc) and the
    /// client's patience lasts.
    pub async fn call<T, F, Fut>(&self, what: &str, repeat: Repeat, f: F) -> FsResult<T>
    where
        F: FnMut(NamenodeClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retrying(what, repeat, self.namenode(), f).await
    }

    /// The same for the namenode's administrative protocol.
    pub async fn admin_call<T, F, Fut>(&self, what: &str, repeat: Repeat, f: F) -> FsResult<T>
    where
        F: FnMut(AdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retrying(what, repeat, self.admin(), f).await
    }

    async fn retrying<C, T, F, Fut>(
        &self,
        what: &str,
        repeat: Repeat,
        client: C,
        mut f: F,
    ) -> FsResult<T>
    where
        C: Clone,
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let patience = self.inner.opts.namenode_patience;
        let mut backoff = backoff(patience);
        loop {
            let s = match f(client.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => s,
            };
            let e = if crate::error::is_answer(&s) {
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
                    e.code,
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
        Code::Unavailable,
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
    if crate::error::is_answer(s) || never_sent(s) {
        return e;
    }
    FsError::new(
        Code::Unavailable,
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
        let starting: tonic::Status = FsError::new(Code::SafeMode, "starting")
            .retry_later()
            .into();
        let manual: tonic::Status = FsError::new(Code::SafeMode, "by an admin").into();
        let down: tonic::Status = FsError::new(Code::Unavailable, "edit log failed").into();
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
        assert_eq!(e.code, Code::SafeMode);
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
}
