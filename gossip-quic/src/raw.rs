//! [`send_raw_frame`]: a one-shot client for conformance tests.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gossip_core::{NodeAddr, TransportError};
use gossip_proto::PROTOCOL;
use quinn::{Endpoint, VarInt};
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
/// [`TransportError::Other`] for a frame longer than `u32::MAX` bytes.
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
        .map_err(|e| TransportError::Other(format!("QUIC TLS setup failed: {e}")))?;
    let transport = Arc::new(transport_config(defaults.idle_timeout)?);
    let client = quic_client_config(Arc::new(tls), transport)?;
    let local = if addr.is_ipv6() {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    };
    let endpoint = Endpoint::client(local)?;

    let established = AtomicBool::new(false);
    let exchange = async {
        let connecting = endpoint
            .connect_with(client, addr, "localhost")
            .map_err(|e| unreachable(format!("cannot start a connection: {e}")))?;
        let conn = connecting
            .await
            .map_err(|e| connection_failed(to.as_str(), &e))?;
        established.store(true, Ordering::Relaxed);
        let lost = |e| connection_failed(to.as_str(), &e);
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
