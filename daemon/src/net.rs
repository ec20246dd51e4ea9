//! Outgoing gRPC channels that leave from a chosen local address.
//!
//! Peers that admit calls by source address (the namenode checks that a
//! datanode's reports come from the address it registered from; coord
//! members take peer traffic only from members' hosts) need the caller's
//! connection to leave from the address it serves on, not whichever one
//! the kernel's routing picks. On a host with several addresses (or
//! several loopback addresses in tests) those differ.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// A lazily connecting channel to `to` (`host:port`). With `from` set (and
/// not unspecified), every connection binds that local IP first; `to` is
/// resolved again on each connection, so a moved name is followed.
pub fn channel_from(from: Option<IpAddr>, to: &str) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{to}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    let Some(from) = from.filter(|ip| !ip.is_unspecified()) else {
        return Ok(endpoint.connect_lazy());
    };
    let to = to.to_string();
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let to = to.clone();
            async move {
                let stream = connect_from(from, &to).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        })),
    )
}

/// One TCP connection to `to` from `from` (port chosen by the kernel),
/// trying each resolved address of the right family in turn.
pub async fn connect_from(from: IpAddr, to: &str) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(to).await? {
        if addr.is_ipv4() != from.is_ipv4() {
            continue;
        }
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_nodelay(true)?;
        socket.bind(SocketAddr::new(from, 0))?;
        let connect = tokio::time::timeout(Duration::from_secs(3), socket.connect(addr));
        match connect.await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(std::io::ErrorKind::TimedOut.into()),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{to} has no address reachable from {from}"),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connection_leaves_from_the_chosen_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap().to_string();
        let from: IpAddr = "127.0.0.7".parse().unwrap();
        let (client, accepted) = tokio::join!(connect_from(from, &to), listener.accept());
        let client = client.unwrap();
        let (_, peer) = accepted.unwrap();
        assert_eq!(peer.ip(), from);
        assert_eq!(client.local_addr().unwrap().ip(), from);
    }

    #[tokio::test]
    async fn wrong_family_is_a_clear_error() {
        let from: IpAddr = "::1".parse().unwrap();
        let e = connect_from(from, "127.0.0.1:1").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrNotAvailable);
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    }
}
