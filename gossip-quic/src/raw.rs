//! Clients for conformance tests: [`send_raw_frame`] (one `gossip/1`
//! exchange, also what a member of the previous version sends) and
//! [`RawClient`] (a `gossip/2` connection sending arbitrary bytes).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use gossip_core::{NodeAddr, TransportError};
use gossip_proto::PROTOCOL;
use quinn::{Connection, Endpoint, VarInt};
use tracing::debug;

use crate::config::QuicConfig;
use crate::failure::connection_failed;
use crate::transport::{quic_client_config, transport_config};
use crate::wire;

/// Longest wait for the close to reach the peer before dropping the
/// one-shot endpoint.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// For conformance tests: opens a connection to `addr` with a self-signed
/// client (no client certificate, server certificate not verified) offering
/// ALPN `alpn` (default [`gossip_proto::PROTOCOL`], `gossip/1`), writes
/// `frame` verbatim as the body of one length-delimited frame (a `u32`
/// big-endian length prefix is added) on a new bidirectional stream, and
/// returns the peer's verdict. Uses a temporary endpoint on an ephemeral
/// port, closed before returning; the connect timeout is
/// [`QuicConfig::default`]'s (1 s).
///
/// # Errors
/// [`TransportError::Rejected`] if the peer refused the frame (its reason,
/// e.g. malformed or oversized) or the TLS handshake (e.g. no common ALPN,
/// or it requires a client certificate); [`TransportError::Unreachable`] if
/// no connection could be made or the peer did not answer within the
/// timeout; [`TransportError::Io`] if the local socket cannot be bound;
/// [`TransportError::TooLarge`] for a frame longer than `u32::MAX` bytes;
/// [`TransportError::Tls`] if the client's TLS setup cannot be built.
pub async fn send_raw_frame(
    addr: SocketAddr,
    frame: Bytes,
    alpn: Option<&[u8]>,
) -> Result<(), TransportError> {
    let defaults = QuicConfig::default();
    let timeout = defaults.connect_timeout;
    let to = NodeAddr::from(addr);
    let unreachable = |reason: String| TransportError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let framed = wire::frame(&frame)?;
    let alpn = alpn.unwrap_or(PROTOCOL.as_bytes());
    let tls = gossip_tls::unverified_client_config(&[alpn])
        .map_err(|e| TransportError::Tls(format!("QUIC TLS setup failed: {e}")))?;
    let transport = Arc::new(transport_config(defaults.idle_timeout)?);
    let client = quic_client_config(Arc::new(tls), transport)?;
    let endpoint = Endpoint::client(unbound_local(addr))?;

    let established = AtomicBool::new(false);
    let exchange = async {
        let connecting = endpoint
            .connect_with(client, addr, "localhost")
            .map_err(|e| unreachable(format!("cannot start a connection: {e}")))?;
        let conn = connecting
            .await
            .map_err(|e| connection_failed(to.as_str(), PROTOCOL, &e))?;
        established.store(true, Ordering::Relaxed);
        let lost = |e| connection_failed(to.as_str(), PROTOCOL, &e);
        let (mut send, mut recv) = conn.open_bi().await.map_err(lost)?;
        match send.write_chunk(framed).await {
            Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
            Err(quinn::WriteError::ConnectionLost(e)) => return Err(lost(e)),
            Err(e) => return Err(unreachable(format!("cannot send the frame: {e}"))),
        }
        let _ = send.finish();
        let reply = match recv.read_to_end(wire::MAX_REPLY).await {
            Ok(reply) => reply,
            Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
                return Err(lost(e));
            }
            Err(e) => {
                return Err(TransportError::Rejected {
                    addr: addr.to_string(),
                    reason: format!("protocol error: cannot read the verdict: {e}"),
                });
            }
        };
        conn.close(VarInt::from_u32(0), b"done");
        wire::verdict(to.as_str(), &reply)
    };
    let result = match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(unreachable(format!(
            "no connection or no answer within {timeout:?}"
        ))),
    };
    endpoint.close(VarInt::from_u32(0), b"done");
    // Let our close reach the peer, unless the handshake never completed:
    // then there is no one to tell.
    if established.load(Ordering::Relaxed)
        && tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle())
            .await
            .is_err()
    {
        debug!(%addr, "one-shot endpoint still closing");
    }
    result
}

fn unbound_local(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv6() {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    }
}

/// For conformance tests: a `gossip/2` connection from a self-signed client
/// (no client certificate, server certificate not verified) on an endpoint
/// of its own, which sends arbitrary datagrams and stream frames. See
/// [`QuicTransport`](crate::QuicTransport) for the wire.
pub struct RawClient {
    endpoint: Endpoint,
    conn: Connection,
    addr: SocketAddr,
}

impl RawClient {
    /// Connects to `addr` offering ALPN `gossip/2` only, and says hello as a
    /// member of `cluster_id`; within [`QuicConfig::default`]'s connect
    /// timeout (1 s).
    ///
    /// # Errors
    /// [`TransportError::Rejected`] if the peer refused the hello (another
    /// cluster: the reason names both) or the TLS handshake;
    /// [`TransportError::Unreachable`] if no connection could be made;
    /// [`TransportError::Io`] if the local socket cannot be bound.
    pub async fn connect(addr: SocketAddr, cluster_id: &str) -> Result<Self, TransportError> {
        let defaults = QuicConfig::default();
        let to = NodeAddr::from(addr);
        let protocols = "gossip/2";
        let tls = gossip_tls::unverified_client_config(&[wire::ALPN_V2])
            .map_err(|e| TransportError::Tls(format!("QUIC TLS setup failed: {e}")))?;
        let transport = Arc::new(transport_config(defaults.idle_timeout)?);
        let client = quic_client_config(Arc::new(tls), transport)?;
        let endpoint = Endpoint::client(unbound_local(addr))?;
        let setup = async {
            let conn = endpoint
                .connect_with(client, addr, "localhost")
                .map_err(|e| TransportError::Unreachable {
                    addr: addr.to_string(),
                    reason: format!("cannot start a connection: {e}"),
                })?
                .await
                .map_err(|e| connection_failed(to.as_str(), protocols, &e))?;
            let lost = |e| connection_failed(to.as_str(), protocols, &e);
            let (mut send, mut recv) = conn.open_bi().await.map_err(lost)?;
            send.write_all(cluster_id.as_bytes()).await.map_err(|e| {
                TransportError::Unreachable {
                    addr: addr.to_string(),
                    reason: format!("cannot send the hello: {e}"),
                }
            })?;
            let _ = send.finish();
            let reply = match recv.read_to_end(wire::MAX_REPLY).await {
                Ok(reply) => reply,
                Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
                    return Err(lost(e));
                }
                Err(e) => {
                    return Err(TransportError::Unreachable {
                        addr: addr.to_string(),
                        reason: format!("no hello verdict: {e}"),
                    });
                }
            };
            wire::verdict(to.as_str(), &reply)?;
            Ok(conn)
        };
        match tokio::time::timeout(defaults.connect_timeout, setup).await {
            Ok(Ok(conn)) => Ok(Self {
                endpoint,
                conn,
                addr,
            }),
            Ok(Err(e)) => {
                endpoint.close(VarInt::from_u32(wire::CLOSE_REFUSED), b"refused");
                Err(e)
            }
            Err(_) => {
                endpoint.close(VarInt::from_u32(wire::CLOSE_REFUSED), b"timed out");
                Err(TransportError::Unreachable {
                    addr: addr.to_string(),
                    reason: "no connection or no hello verdict within 1 s".to_owned(),
                })
            }
        }
    }

    /// The largest datagram the connection takes now.
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.conn.max_datagram_size()
    }

    /// Sends `payload` verbatim as one datagram (the peer expects an encoded
    /// `gossip.v1.Batch`).
    ///
    /// # Errors
    /// [`TransportError::TooLarge`] if the datagram exceeds what the
    /// connection takes; [`TransportError::Unreachable`] if the connection
    /// is closed or the peer does not take datagrams.
    pub fn send_datagram(&self, payload: Bytes) -> Result<(), TransportError> {
        let size = payload.len();
        self.conn.send_datagram(payload).map_err(|e| match e {
            quinn::SendDatagramError::TooLarge => TransportError::TooLarge {
                size,
                max: self.conn.max_datagram_size().unwrap_or(0),
            },
            other => TransportError::Unreachable {
                addr: self.addr.to_string(),
                reason: format!("datagram not sent: {other}"),
            },
        })
    }

    /// Sends one stream frame on a new one-way stream: a `u32` big-endian
    /// length prefix of `announced_len`, then `body` verbatim; finishes the
    /// stream if `body` is the whole announced frame. Then waits, at most
    /// 1 s, for the peer to acknowledge the stream (`Ok(None)`) or stop it
    /// (`Ok(Some(code))`; code 1: the announced length is over the limit).
    ///
    /// # Errors
    /// [`TransportError::Unreachable`] if the connection is lost or nothing
    /// is heard within 1 s.
    pub async fn send_stream_frame(
        &self,
        announced_len: u32,
        body: Bytes,
    ) -> Result<Option<u64>, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            addr: self.addr.to_string(),
            reason,
        };
        let exchange = async {
            let mut stream = self
                .conn
                .open_uni()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let mut frame = BytesMut::with_capacity(wire::LEN_PREFIX + body.len());
            frame.put_u32(announced_len);
            frame.put_slice(&body);
            match stream.write_all(&frame).await {
                Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
                Err(e) => return Err(unreachable(format!("cannot write: {e}"))),
            }
            if body.len() == announced_len as usize {
                let _ = stream.finish();
            }
            stream
                .stopped()
                .await
                .map(|code| code.map(u64::from))
                .map_err(|e| unreachable(e.to_string()))
        };
        tokio::time::timeout(CLOSE_WAIT, exchange)
            .await
            .map_err(|_| unreachable("no acknowledgement within 1 s".to_owned()))?
    }

    /// Closes the connection and the endpoint, letting the close reach the
    /// peer (at most 1 s).
    pub async fn close(self) {
        self.conn.close(VarInt::from_u32(0), b"done");
        self.endpoint.close(VarInt::from_u32(0), b"done");
        let _ = tokio::time::timeout(CLOSE_WAIT, self.endpoint.wait_idle()).await;
    }
}
