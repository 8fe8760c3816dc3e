//! TLS for the gRPC transport, with the rustls configurations of
//! [`gossip_tls`] (so self-signed and mutual TLS behave exactly as in the
//! QUIC transport).
//!
//! * Server side: [`TlsIncoming`] accepts TCP connections on the listener
//!   and runs each TLS handshake in a task of its own, bounded by a timeout;
//!   only connections whose handshake succeeded reach tonic. Handshakes that
//!   fail on a TLS error are counted as refused and logged at debug level.
//! * Client side: [`TlsConnect`] is the connector of a tonic channel: it
//!   opens a TCP connection and runs the TLS handshake, sending the host part
//!   of the peer address as SNI. tonic then speaks HTTP/2 over it.
//!
//! ALPN is `h2` on both sides. Certificates and keys are never logged: only
//! rustls' error descriptions are.

use std::error::Error;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use gossip_core::{NodeAddr, TransportError};
use gossip_tls::TlsMode;
use gossip_tls::rustls::{self, pki_types::ServerName};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, trace, warn};

use crate::conn::KillableIo;

/// The ALPN protocol of gRPC over TLS: HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// The counter of connections refused in the TLS handshake, shared by the
/// server and the client side of one transport.
pub(crate) type Refusals = Arc<AtomicU64>;

/// The rustls error that `error` or one of its sources carries, if any.
///
/// `io::Error::source` skips the error an `io::Error` wraps, so wrapped
/// errors are searched explicitly.
pub(crate) fn rustls_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref)
        && let Some(tls) = rustls_error(inner)
    {
        return Some(tls);
    }
    error.source().and_then(rustls_error)
}

/// Describes a TLS failure met by a client: a refusal by the peer is
/// [`TransportError::Rejected`] (the peer is up but will not talk to us),
/// any other TLS error (we refused the peer, or it does not speak TLS) is
/// [`TransportError::Unreachable`].
pub(crate) fn tls_failure(addr: &str, error: &rustls::Error) -> TransportError {
    match error {
        rustls::Error::AlertReceived(alert) => TransportError::Rejected {
            addr: addr.to_owned(),
            reason: format!(
                "TLS handshake refused by the peer (alert {alert:?}): {}",
                gossip_tls::alert_hint(*alert, "gRPC (h2)")
            ),
        },
        other => TransportError::Unreachable {
            addr: addr.to_owned(),
            reason: format!("TLS handshake failed on our side: {other}"),
        },
    }
}

/// Counts `error` as a refused connection if it is a TLS error (not a plain
/// I/O failure such as a reset or an early end of stream); true if counted.
fn count_refusal(refused: &AtomicU64, error: &io::Error) -> bool {
    let tls = rustls_error(error).is_some();
    if tls {
        refused.fetch_add(1, Ordering::Relaxed);
    }
    tls
}

// ---------------------------------------------------------------------------
// Server side.

/// What the server needs to accept TLS connections.
pub(crate) struct ServerTls {
    pub(crate) acceptor: TlsAcceptor,
    /// Longest time a connection may take to complete its handshake.
    pub(crate) handshake_timeout: Duration,
    pub(crate) refused: Refusals,
}

/// The stream of accepted connections whose TLS handshake succeeded, for
/// tonic's `serve_with_incoming_shutdown`.
///
/// Each accepted TCP connection is wrapped in a [`KillableIo`] and handshakes
/// in a task of `handshakes`. Dropping the stream (tonic drops it as soon as
/// it stops accepting) closes the listening socket and aborts the handshakes
/// still running.
pub(crate) struct TlsIncoming {
    listener: TcpListener,
    tls: ServerTls,
    kill: CancellationToken,
    handshakes: JoinSet<Option<ServerTlsIo>>,
}

impl TlsIncoming {
    pub(crate) fn new(listener: TcpListener, tls: ServerTls, kill: &CancellationToken) -> Self {
        Self {
            listener,
            tls,
            kill: kill.clone(),
            handshakes: JoinSet::new(),
        }
    }

    /// Starts the handshake of one accepted connection.
    fn handshake(&mut self, stream: TcpStream, remote: SocketAddr) {
        // Gossip messages are small; do not let Nagle delay them.
        if let Err(e) = stream.set_nodelay(true) {
            trace!(error = %e, "cannot set TCP_NODELAY");
        }
        let accept = self
            .tls
            .acceptor
            .accept(KillableIo::new(stream, &self.kill));
        let timeout = self.tls.handshake_timeout;
        let refused = self.tls.refused.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(timeout, accept).await {
                Ok(Ok(tls)) => {
                    trace!(%remote, "TLS handshake completed");
                    Some(ServerTlsIo(tls))
                }
                Ok(Err(e)) => {
                    if count_refusal(&refused, &e) {
                        debug!(%remote, error = %e, "refused a connection: TLS handshake failed");
                    } else {
                        debug!(%remote, error = %e, "connection closed during the TLS handshake");
                    }
                    None
                }
                Err(_) => {
                    debug!(%remote, ?timeout, "no TLS handshake within the timeout; closing");
                    None
                }
            }
        });
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<ServerTlsIo>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, remote))) => this.handshake(stream, remote),
                // tonic logs it and keeps accepting, as with plaintext.
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(io)))) => return Poll::Ready(Some(Ok(io))),
                Poll::Ready(Some(Ok(None))) => {}
                Poll::Ready(Some(Err(e))) => {
                    if !e.is_cancelled() {
                        warn!(error = %e, "TLS handshake task ended abnormally");
                    }
                }
                // The listener woke us up on a new connection (registered
                // above), the join set on a finished handshake.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// An accepted connection after its TLS handshake.
pub(crate) struct ServerTlsIo(tokio_rustls::server::TlsStream<KillableIo>);

impl AsyncRead for ServerTlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerTlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Connected for ServerTlsIo {
    // The TCP peer address, so that `Request::remote_addr` works as over
    // plaintext.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

// ---------------------------------------------------------------------------
// Client side.

/// What a client needs to open TLS connections.
pub(crate) struct ClientTls {
    connector: TlsConnector,
    mode: TlsMode,
    refused: Refusals,
}

impl ClientTls {
    pub(crate) fn new(
        config: Arc<rustls::ClientConfig>,
        mode: TlsMode,
        refused: Refusals,
    ) -> Arc<Self> {
        Arc::new(Self {
            connector: TlsConnector::from(config),
            mode,
            refused,
        })
    }

    /// The name sent as SNI and checked against the peer's certificate: the
    /// host part of `to`. A host rustls cannot use as a name is replaced by
    /// `localhost` in self-signed mode, where names are not checked.
    fn server_name(&self, to: &NodeAddr) -> Result<ServerName<'static>, TransportError> {
        let host = gossip_tls::server_name(to);
        match ServerName::try_from(host.to_owned()) {
            Ok(name) => Ok(name),
            Err(_) if self.mode == TlsMode::SelfSigned => Ok(ServerName::try_from("localhost")
                .map_err(|e| TransportError::Tls(format!("invalid fallback TLS name: {e}")))?),
            Err(e) => Err(TransportError::Unreachable {
                addr: to.to_string(),
                reason: format!("host {host:?} cannot be checked against a certificate: {e}"),
            }),
        }
    }

    /// The connector of a channel to `to`.
    pub(crate) fn connector(self: &Arc<Self>, to: &NodeAddr) -> Result<TlsConnect, TransportError> {
        Ok(TlsConnect {
            host: to.to_string(),
            name: self.server_name(to)?,
            tls: self.clone(),
            failure: FailureSlot::default(),
        })
    }

    /// The connector of a channel to the socket address `addr`, checked
    /// against the certificate as an IP address.
    pub(crate) fn connector_to_socket(self: &Arc<Self>, addr: SocketAddr) -> TlsConnect {
        TlsConnect {
            host: addr.to_string(),
            name: ServerName::IpAddress(addr.ip().into()),
            tls: self.clone(),
            failure: FailureSlot::default(),
        }
    }
}

/// The last TLS failure of a channel's connections, if its latest
/// connection failed on one.
///
/// hyper keeps only the text of the I/O errors that end an HTTP/2
/// connection, so a refusal that arrives after the client finished its
/// handshake (see [`ClientTlsIo`]) cannot be recognized from the call's
/// error: the connection records it here instead.
#[derive(Clone, Default)]
pub(crate) struct FailureSlot(Arc<Mutex<Option<rustls::Error>>>);

impl FailureSlot {
    fn set(&self, error: Option<rustls::Error>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// The TLS error the channel's latest connection failed on, if any.
    pub(crate) fn get(&self) -> Option<rustls::Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A tonic connector: TCP connection to `host` (`host:port`, resolved), then
/// TLS handshake sending `name` as SNI. The URI tonic passes is ignored: a
/// channel always goes to the peer it was made for.
#[derive(Clone)]
pub(crate) struct TlsConnect {
    host: String,
    name: ServerName<'static>,
    tls: Arc<ClientTls>,
    failure: FailureSlot,
}

impl TlsConnect {
    /// Where the channel's connections record their TLS failures.
    pub(crate) fn failure(&self) -> FailureSlot {
        self.failure.clone()
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<TokioIo<ClientTlsIo>>> + Send>>;

impl Service<Uri> for TlsConnect {
    type Response = TokioIo<ClientTlsIo>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        // tonic bounds the whole future with the connect timeout.
        Box::pin(async move {
            this.failure.set(None);
            let tcp = TcpStream::connect(&this.host).await?;
            if let Err(e) = tcp.set_nodelay(true) {
                trace!(error = %e, "cannot set TCP_NODELAY");
            }
            match this.tls.connector.connect(this.name, tcp).await {
                Ok(stream) => {
                    trace!(to = %this.host, "TLS handshake completed");
                    Ok(TokioIo::new(ClientTlsIo {
                        inner: stream,
                        watch: Some((this.tls.refused.clone(), this.failure)),
                    }))
                }
                Err(e) => {
                    if let Some(tls) = rustls_error(&e) {
                        this.tls.refused.fetch_add(1, Ordering::Relaxed);
                        this.failure.set(Some(tls.clone()));
                        debug!(to = %this.host, error = %e, "TLS handshake failed");
                    }
                    Err(e)
                }
            }
        })
    }
}

/// A client connection after its TLS handshake.
///
/// Under TLS 1.3 the client finishes its handshake before the server has
/// checked the client's certificate, so a server refusing that certificate
/// shows up as a TLS error (the server's alert) on the first read. Until the
/// first application byte arrives, `watch` is kept to count such an error as
/// a refusal and record it for the channel.
pub(crate) struct ClientTlsIo {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
    watch: Option<(Refusals, FailureSlot)>,
}

impl ClientTlsIo {
    fn observe<T>(&mut self, result: &Poll<io::Result<T>>) {
        if let Poll::Ready(Err(e)) = result
            && let Some(tls) = rustls_error(e)
            && let Some((refused, failure)) = self.watch.take()
        {
            refused.fetch_add(1, Ordering::Relaxed);
            failure.set(Some(tls.clone()));
            debug!(error = %e, "TLS connection refused by the peer");
        }
    }
}

impl AsyncRead for ClientTlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.observe(&result);
        if buf.filled().len() > before {
            // The peer accepted the handshake.
            this.watch = None;
        }
        result
    }
}

impl AsyncWrite for ClientTlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.observe(&result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.observe(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.observe(&result);
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip_tls::rustls::AlertDescription;

    #[test]
    fn rustls_errors_are_found_inside_io_errors_and_sources() {
        let tls = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        let io = io::Error::new(io::ErrorKind::InvalidData, tls);
        assert!(matches!(
            rustls_error(&io),
            Some(rustls::Error::AlertReceived(AlertDescription::UnknownCA))
        ));
        // Wrapped once more, as hyper and tonic do.
        let outer = io::Error::other(io);
        assert!(rustls_error(&outer).is_some());
        let plain = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert!(rustls_error(&plain).is_none());
    }

    #[test]
    fn refusals_by_the_peer_are_rejections() {
        let refused = tls_failure(
            "a:1",
            &rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        assert!(
            matches!(&refused, TransportError::Rejected { reason, .. }
                if reason.contains("client certificate")),
            "{refused:?}"
        );
        let ours = tls_failure(
            "a:1",
            &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(
            matches!(&ours, TransportError::Unreachable { reason, .. }
                if reason.contains("on our side")),
            "{ours:?}"
        );
    }
}
