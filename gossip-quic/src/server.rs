//! The receiving side: the accept loop and one task per connection, serving
//! each connection by the wire its ALPN negotiated, and reading the
//! `gossip/2` connections we dialled (a peer may answer over them); the
//! check of the address a hello names before its connection is adopted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gossip_core::{Inbound, NodeAddr};
use gossip_tls::TlsMode;
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream, VarInt};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, debug_span, trace, warn};

use crate::client::negotiated;
use crate::failure::is_tls_failure;
use crate::transport::Inner;
use crate::{frames, wire};

/// Accepts connections until the endpoint closes; each connection runs in a
/// task of `connections`, all awaited (or aborted, when this future is
/// dropped) before returning. The `gossip/2` connections we dial arrive on
/// `dialled` once their hello is accepted, and are read in the same way.
pub(crate) async fn accept_loop(
    inner: Arc<Inner>,
    endpoint: Endpoint,
    inbound: Inbound,
    mut dialled: mpsc::UnboundedReceiver<Connection>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let span = debug_span!("quic_conn", remote = %incoming.remote_address());
                connections.spawn(
                    serve_connection(inner.clone(), incoming, inbound.clone()).instrument(span),
                );
            }
            Some(conn) = dialled.recv() => {
                let span = debug_span!("quic_conn", remote = %conn.remote_address(), dialled = true);
                let (inner, inbound) = (inner.clone(), inbound.clone());
                connections.spawn(
                    async move { receive_v2(&inner, conn, inbound).await }.instrument(span),
                );
            }
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    warn!(error = %e, "connection task ended abnormally");
                }
            }
        }
    }
    // The endpoint is closed, so every connection ends promptly.
    while let Some(done) = connections.join_next().await {
        if let Err(e) = done {
            warn!(error = %e, "connection task ended abnormally");
        }
    }
    debug!("accept loop ended");
}

/// Serves one incoming connection by its negotiated wire.
async fn serve_connection(inner: Arc<Inner>, incoming: Incoming, inbound: Inbound) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            inner.count_failure(&e);
            if is_tls_failure(&e) {
                warn!(%remote, error = %e, "refused a connection: TLS handshake failed");
            } else {
                debug!(%remote, error = %e, "incoming handshake failed");
            }
            return;
        }
    };
    inner
        .counters
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    if negotiated(&conn).as_deref() == Some(wire::ALPN_V2) {
        debug!("connection accepted (gossip/2)");
        serve_v2(&inner, conn, inbound).await;
    } else {
        debug!("connection accepted (gossip/1)");
        serve_v1(&inner, conn, inbound).await;
    }
}

/// Why a hello was not accepted.
enum Hello {
    /// The connection is gone.
    Lost,
    /// Another cluster; the reason was sent to the client.
    Refused(String),
    /// The hello does not follow the framing.
    Protocol(String),
}

/// Reads the client's hello and answers it. Before the answer, a connection
/// whose hello names an address that passes [`check_claim`] is adopted as
/// our connection to that address ([`Inner::adopt`]).
async fn hello(inner: &Inner, conn: &Connection, inbound: &Inbound) -> Result<(), Hello> {
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|_| Hello::Lost)?;
    let hello = recv
        .read_to_end(wire::MAX_HELLO)
        .await
        .map_err(|e| Hello::Protocol(format!("cannot read the hello: {e}")))?;
    let (hello, verdict) = frames::hello_verdict(inbound, &hello);
    if verdict.is_ok() {
        match hello.addr {
            // The first format: the client reads nothing; we dial it.
            None => {}
            Some(Err(text)) => {
                debug!(claimed = %text, "hello names an unusable address; not adopted")
            }
            Some(Ok(addr)) => match check_claim(inner, conn, &addr) {
                Ok(()) => {
                    inner.adopt(&addr, conn);
                }
                Err(why) => {
                    debug!(claimed = %addr, %why, "hello's address not trusted; not adopted")
                }
            },
        }
    }
    // The client reads the verdict; if it cannot, the close below carries
    // the reason too.
    let _ = send.write_all(&wire::reply(verdict.clone())).await;
    let _ = send.finish();
    verdict.map_err(Hello::Refused)
}

/// `gossip/2`: the hello, then datagrams and one-way streams until the
/// connection closes.
async fn serve_v2(inner: &Inner, conn: Connection, inbound: Inbound) {
    match tokio::time::timeout(inner.connect_timeout, hello(inner, &conn, &inbound)).await {
        Ok(Ok(())) => {}
        Ok(Err(Hello::Lost)) => return,
        Ok(Err(Hello::Refused(reason))) => {
            warn!(remote = %conn.remote_address(), %reason, "refused a connection from another cluster");
            // Let the client read the verdict and close; then close anyway.
            let _ = tokio::time::timeout(inner.connect_timeout, conn.closed()).await;
            let mut end = reason.len().min(512);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            conn.close(
                VarInt::from_u32(wire::CLOSE_FOREIGN_CLUSTER),
                &reason.as_bytes()[..end],
            );
            return;
        }
        Ok(Err(Hello::Protocol(why))) => {
            debug!(%why, "bad hello; closing");
            conn.close(VarInt::from_u32(wire::CLOSE_PROTOCOL), why.as_bytes());
            return;
        }
        Err(_) => {
            debug!("no hello within the connect timeout; closing");
            conn.close(VarInt::from_u32(wire::CLOSE_PROTOCOL), b"no hello in time");
            return;
        }
    }
    receive_v2(inner, conn, inbound).await;
}

/// Whether the address `claimed` in the hello of `conn` may choose the
/// connection our sends to it use. Never trusted for more: the envelopes on
/// the connection are checked as any others.
/// * Not our own address.
/// * An IP address must be the one the connection comes from (after
///   IPv4-mapped IPv6 is unmapped): without authentication, an address
///   cannot be claimed from elsewhere. A member whose packets leave from
///   another address than the one it advertises (multi-homed, NAT) is then
///   not adopted, and dialled back as before. A host name is taken at its
///   word (no resolution on the accepting path).
/// * Under mutual TLS, the client's certificate, issued by the cluster CA,
///   must also be valid for the claimed host, as its server certificate is
///   when we dial that address.
fn check_claim(inner: &Inner, conn: &Connection, claimed: &NodeAddr) -> Result<(), String> {
    if *claimed == inner.local {
        return Err("our own address".to_owned());
    }
    let host = gossip_tls::server_name(claimed);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        let from = conn.remote_address().ip().to_canonical();
        if ip.to_canonical() != from {
            return Err(format!("the connection comes from {from}"));
        }
    }
    if inner.mode == TlsMode::Mtls {
        let name = ServerName::try_from(host).map_err(|e| format!("not a TLS name: {e}"))?;
        let chain = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or("no client certificate")?;
        let cert = chain.first().ok_or("no client certificate")?;
        let parsed = rustls::server::ParsedCertificate::try_from(cert)
            .map_err(|e| format!("unreadable client certificate: {e}"))?;
        rustls::client::verify_server_name(&parsed, &name)
            .map_err(|e| format!("the client certificate is not valid for {host}: {e}"))?;
    }
    Ok(())
}

/// `gossip/2` after the hello, on a connection accepted or dialled: the
/// peer's datagrams and one-way streams until the connection closes.
pub(crate) async fn receive_v2(inner: &Inner, conn: Connection, inbound: Inbound) {
    let max_frame = inbound.max_message_size() + wire::BATCH_FRAMING;
    let deadline = inner.stream_deadline();
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            datagram = conn.read_datagram() => match datagram {
                Ok(bytes) => {
                    inner.counters.datagrams_received.fetch_add(1, Ordering::Relaxed);
                    frames::accept_batch(&inbound, &bytes, "datagram");
                }
                Err(e) => {
                    inner.count_failure(&e);
                    debug!(reason = %e, "connection closed");
                    break;
                }
            },
            stream = conn.accept_uni() => match stream {
                Ok(recv) => {
                    inner.counters.streams_received.fetch_add(1, Ordering::Relaxed);
                    streams.spawn(serve_uni(recv, inbound.clone(), max_frame, deadline));
                }
                Err(e) => {
                    debug!(reason = %e, "connection closed");
                    break;
                }
            },
            stream = conn.accept_bi() => match stream {
                // gossip/2 uses one bidirectional stream, the hello.
                Ok((mut send, mut recv)) => {
                    let _ = recv.stop(VarInt::from_u32(wire::STOP_UNEXPECTED));
                    let _ = send.reset(VarInt::from_u32(wire::STOP_UNEXPECTED));
                }
                Err(e) => {
                    debug!(reason = %e, "connection closed");
                    break;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // The connection is closed, so every stream ends promptly.
    while streams.join_next().await.is_some() {}
}

/// Reads the frames of one `gossip/2` one-way stream until its end
/// ([`frames::read_uni_frames`]), within `deadline`.
async fn serve_uni(mut recv: RecvStream, inbound: Inbound, max_frame: usize, deadline: Duration) {
    let read = frames::read_uni_frames(&mut recv, &inbound, max_frame);
    if tokio::time::timeout(deadline, read).await.is_err() {
        debug!(?deadline, "stream timed out");
    }
}

/// `gossip/1`: one task per stream, each one message and its verdict.
async fn serve_v1(inner: &Inner, conn: Connection, inbound: Inbound) {
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    streams.spawn(serve_stream(send, recv, inbound.clone(), inner.stream_deadline()));
                }
                Err(e) => {
                    inner.count_failure(&e);
                    debug!(reason = %e, "connection closed");
                    break;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // The connection is closed, so every stream ends promptly.
    while streams.join_next().await.is_some() {}
}

/// Reads one `gossip/1` frame, hands it to `inbound` and writes the verdict.
/// The whole exchange is bounded by `deadline`.
async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    inbound: Inbound,
    deadline: Duration,
) {
    let exchange = async {
        let Some(verdict) = frames::read_v1_frame(&mut recv, &inbound).await else {
            return;
        };
        if let Err(reason) = &verdict {
            debug!(%reason, "rejected a frame");
        } else {
            trace!("accepted a frame");
        }
        if let Err(e) = send.write_all(&wire::reply(verdict)).await {
            debug!(error = %e, "cannot send the verdict");
            return;
        }
        let _ = send.finish();
    };
    if tokio::time::timeout(deadline, exchange).await.is_err() {
        debug!(?deadline, "stream exchange timed out");
    }
}
