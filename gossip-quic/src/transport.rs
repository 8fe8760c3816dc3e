//! [`QuicTransport`]: the quinn endpoint, its accept loop and the connection
//! cache.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use gossip_core::pb::Envelope;
use gossip_core::{Inbound, NodeAddr, Transport, TransportError};
use gossip_proto::PROTOCOL;
use gossip_tls::{TlsMode, TlsSetup};
use prost::Message;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    AsyncUdpSocket, Connection, ConnectionError, Endpoint, EndpointConfig, IdleTimeout, Incoming,
    RecvStream, Runtime, SendStream, TokioRuntime, TransportConfig, VarInt,
};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, debug, debug_span, info, trace, warn};

use crate::config::QuicConfig;
use crate::failure::{connection_failed, is_tls_failure};
use crate::wire;

/// Application close code sent when this member shuts down.
const CLOSE_SHUTDOWN: u32 = 0;
/// Application close code sent when a connection is dropped because the peer
/// did not answer.
const CLOSE_NO_ANSWER: u32 = 1;
/// Stream stop code: the announced frame is larger than the limit.
const STOP_OVERSIZED: u32 = 1;
/// RTT assumed before the first measurement (quinn's default is 333 ms, for
/// the Internet). Members usually share a LAN: with 100 ms a lost handshake
/// packet is resent after about 300 ms rather than 1 s, within the default
/// connect timeout, and a connection abandoned mid-handshake finishes closing
/// (3 PTO) in under a second, which bounds shutdown.
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Longest time one incoming exchange may take when idle connections are
/// never closed (`idle_timeout` zero).
const UNBOUNDED_IDLE_STREAM_DEADLINE: Duration = Duration::from_secs(30);
/// Longest wait, after the endpoint has gone idle, for quinn's driver task to
/// release the UDP socket.
const SOCKET_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Counters of one [`QuicTransport`], beside the member's
/// [`Stats`](gossip_core::Stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuicStats {
    /// Outgoing connections established (handshake completed).
    pub connections_opened: u64,
    /// Incoming connections accepted (handshake completed).
    pub connections_accepted: u64,
    /// Connections, incoming or outgoing, that failed in the TLS handshake:
    /// a peer whose certificate we refused (under mutual TLS: not issued by
    /// the cluster CA, or none), a peer that refused ours, or no common ALPN
    /// protocol.
    pub tls_refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections_opened: AtomicU64,
    connections_accepted: AtomicU64,
    tls_refused: AtomicU64,
}

/// Where the endpoint is in its life.
enum State {
    /// The UDP socket is bound; quinn is not running yet (no task exists).
    Bound(std::net::UdpSocket),
    /// The quinn endpoint runs. `socket` lets shutdown see when quinn has
    /// released the UDP socket.
    Running {
        endpoint: Endpoint,
        socket: Weak<dyn AsyncUdpSocket>,
    },
    /// Shut down; nothing runs.
    Shut,
}

/// The cached connection to one peer. The async mutex serializes
/// (re)connecting, so that concurrent sends share one connection.
type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

struct Inner {
    local: NodeAddr,
    listen: SocketAddr,
    mode: TlsMode,
    server_config: quinn::ServerConfig,
    client_config: quinn::ClientConfig,
    idle_timeout: Duration,
    connect_timeout: Duration,
    state: Mutex<State>,
    peers: Mutex<HashMap<NodeAddr, Slot>>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    counters: Counters,
}

/// A [`Transport`] over QUIC (quinn, rustls with the *ring* provider).
///
/// * One connection per peer, opened on the first send, cached and reused.
///   A send over a cached connection that turns out closed, lost or silent
///   (no verdict within [`QuicConfig::connect_timeout`] and not one datagram
///   from the peer meanwhile, e.g. the peer restarted) is retried once over
///   a new connection. A send abandoned by its caller drops the connection
///   it was using from the cache, under the same condition. A peer that sent
///   anything while the verdict was late is slow, not gone: only that send
///   fails and the connection stays.
///   Connections without traffic close after [`QuicConfig::idle_timeout`].
/// * Each message travels on its own bidirectional stream: the sender writes
///   one frame (`u32` big-endian length + encoded `gossip.v1.Envelope`) and
///   finishes its side; the receiver checks the announced length against
///   [`Inbound::max_message_size`] before reading, hands the frame to
///   [`Inbound::accept_bytes`] and answers with one status byte: `0`
///   (accepted) or `1` followed by the UTF-8 text of the
///   [`Rejection`](gossip_core::Rejection), which the sender returns as
///   [`TransportError::Rejected`].
/// * ALPN is [`gossip_proto::PROTOCOL`] (`gossip/1`); a peer offering
///   anything else fails the handshake.
///
/// # Tasks
/// [`QuicTransport::bind`] only binds the UDP socket. quinn's endpoint, which
/// spawns its own driver task (and one per connection), is created by the
/// first of [`Transport::start`] and [`Transport::send`]. `start` spawns the
/// accept loop, which runs each connection in a task of its own JoinSet.
/// [`Transport::shutdown`] closes the endpoint and every connection, awaits
/// the accept loop and its connection tasks, waits for quinn to finish
/// closing (`Endpoint::wait_idle`) and for its driver to release the socket.
pub struct QuicTransport {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic (plain replacements).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// quinn's transport parameters for our connections.
pub(crate) fn transport_config(idle_timeout: Duration) -> Result<TransportConfig, TransportError> {
    let idle = IdleTimeout::try_from(idle_timeout).map_err(|_| {
        TransportError::Other(format!(
            "idle timeout {idle_timeout:?} is too long for QUIC (at most 2^62 ms)"
        ))
    })?;
    let mut config = TransportConfig::default();
    config
        .max_idle_timeout(Some(idle))
        .initial_rtt(INITIAL_RTT)
        // Messages use bidirectional streams only.
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    Ok(config)
}

/// Wraps a rustls client configuration for quinn.
pub(crate) fn quic_client_config(
    tls: Arc<rustls::ClientConfig>,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Other(format!("TLS client setup unusable for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// Resolves `to` to one socket address our socket can reach.
pub(crate) async fn resolve(
    to: &NodeAddr,
    ipv6_socket: bool,
) -> Result<SocketAddr, TransportError> {
    let unreachable = |reason: String| TransportError::Unreachable {
        addr: to.to_string(),
        reason,
    };
    let addrs = tokio::net::lookup_host(to.as_str())
        .await
        .map_err(|e| unreachable(format!("cannot resolve: {e}")))?;
    let mut fallback = None;
    for addr in addrs {
        if addr.is_ipv6() == ipv6_socket {
            return Ok(addr);
        }
        fallback.get_or_insert(addr);
    }
    match fallback {
        // An IPv6 socket is dual-stack where the OS allows it.
        Some(addr) if ipv6_socket => Ok(addr),
        Some(addr) => Err(unreachable(format!(
            "resolves to {addr} only, which an IPv4 endpoint cannot reach"
        ))),
        None => Err(unreachable("resolves to no address".to_owned())),
    }
}

/// The name sent as SNI and checked against the peer's certificate: the
/// host part of `to`. A host rustls cannot use as a name is replaced by
/// `localhost` in self-signed mode, where names are not checked.
pub(crate) fn sni(to: &NodeAddr, mode: TlsMode) -> Result<&str, TransportError> {
    let host = gossip_tls::server_name(to);
    match rustls::pki_types::ServerName::try_from(host) {
        Ok(_) => Ok(host),
        Err(_) if mode == TlsMode::SelfSigned => Ok("localhost"),
        Err(e) => Err(TransportError::Unreachable {
            addr: to.to_string(),
            reason: format!("host {host:?} cannot be checked against a certificate: {e}"),
        }),
    }
}

impl QuicTransport {
    /// Binds the UDP socket at [`QuicConfig::listen`] (port 0 picks a free
    /// port) and builds the TLS configuration. Spawns no task: quinn starts
    /// with the first [`Transport::start`] or [`Transport::send`].
    ///
    /// # Errors
    /// [`TransportError::Other`] for [`TlsConfig::None`](gossip_core::TlsConfig::None)
    /// (QUIC always encrypts), for TLS files that cannot be loaded (the
    /// message names the file), for an unspecified listen IP without
    /// [`QuicConfig::advertise`], or an idle timeout QUIC cannot express;
    /// [`TransportError::Io`] if the socket cannot be bound.
    pub async fn bind(config: QuicConfig) -> Result<Self, TransportError> {
        let socket = std::net::UdpSocket::bind(config.listen)?;
        let listen = socket.local_addr()?;
        let local = match config.advertise {
            Some(addr) => addr,
            None if listen.ip().is_unspecified() => {
                return Err(TransportError::Other(format!(
                    "listen address {listen} is unspecified and cannot identify this member; \
                     set QuicConfig::advertise to the address peers reach it at"
                )));
            }
            None => NodeAddr::from(listen),
        };
        let alpn = [PROTOCOL.as_bytes()];
        let tls = TlsSetup::new(&config.tls, gossip_tls::server_name(&local), &alpn)
            .map_err(|e| TransportError::Other(format!("QUIC TLS setup failed: {e}")))?
            .ok_or_else(|| {
                TransportError::Other(
                    "QUIC always encrypts: TlsConfig::None is not supported, \
                     use TlsConfig::SelfSigned or TlsConfig::Mtls"
                        .to_owned(),
                )
            })?;
        let transport = Arc::new(transport_config(config.idle_timeout)?);
        let crypto = QuicServerConfig::try_from(tls.server.clone()).map_err(|e| {
            TransportError::Other(format!("TLS server setup unusable for QUIC: {e}"))
        })?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(transport.clone());
        let client_config = quic_client_config(tls.client.clone(), transport)?;
        debug!(%listen, advertise = %local, mode = ?tls.mode, "QUIC transport bound");
        Ok(Self {
            inner: Arc::new(Inner {
                local,
                listen,
                mode: tls.mode,
                server_config,
                client_config,
                idle_timeout: config.idle_timeout,
                connect_timeout: config.connect_timeout,
                state: Mutex::new(State::Bound(socket)),
                peers: Mutex::new(HashMap::new()),
                accept_task: Mutex::new(None),
                counters: Counters::default(),
            }),
        })
    }

    /// The UDP address the endpoint is bound to (with the port picked by the
    /// OS if [`QuicConfig::listen`] had port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.listen
    }

    /// Connections, incoming or outgoing, that failed in the TLS handshake
    /// (see [`QuicStats::tls_refused`]).
    pub fn tls_refused(&self) -> u64 {
        self.inner.counters.tls_refused.load(Ordering::Relaxed)
    }

    /// The transport's counters.
    pub fn stats(&self) -> QuicStats {
        let c = &self.inner.counters;
        QuicStats {
            connections_opened: c.connections_opened.load(Ordering::Relaxed),
            connections_accepted: c.connections_accepted.load(Ordering::Relaxed),
            tls_refused: c.tls_refused.load(Ordering::Relaxed),
        }
    }

    /// Connections currently open on the endpoint, incoming and outgoing
    /// (including ones still handshaking or closing); 0 before quinn starts
    /// and after shutdown.
    pub fn open_connections(&self) -> usize {
        match &*lock(&self.inner.state) {
            State::Running { endpoint, .. } => endpoint.open_connections(),
            State::Bound(_) | State::Shut => 0,
        }
    }
}

impl Inner {
    /// The running endpoint, started on first use.
    fn endpoint(&self) -> Result<Endpoint, TransportError> {
        let mut state = lock(&self.state);
        if let State::Running { endpoint, .. } = &*state {
            return Ok(endpoint.clone());
        }
        let socket = match std::mem::replace(&mut *state, State::Shut) {
            State::Bound(socket) => socket,
            State::Running { .. } | State::Shut => {
                return Err(TransportError::Other(
                    "the QUIC transport has shut down".to_owned(),
                ));
            }
        };
        let runtime: Arc<dyn Runtime> = Arc::new(TokioRuntime);
        let socket = runtime.wrap_udp_socket(socket)?;
        let weak = Arc::downgrade(&socket);
        // No server configuration until `start`: connection attempts that
        // arrive earlier are refused at once rather than left waiting.
        let endpoint =
            Endpoint::new_with_abstract_socket(EndpointConfig::default(), None, socket, runtime)?;
        *state = State::Running {
            endpoint: endpoint.clone(),
            socket: weak,
        };
        debug!(listen = %self.listen, "QUIC endpoint started");
        Ok(endpoint)
    }

    /// How long one incoming exchange (frame in, verdict out) may take: the
    /// idle timeout, or [`UNBOUNDED_IDLE_STREAM_DEADLINE`] without one.
    fn stream_deadline(&self) -> Duration {
        if self.idle_timeout.is_zero() {
            UNBOUNDED_IDLE_STREAM_DEADLINE
        } else {
            self.idle_timeout
        }
    }

    fn count_failure(&self, e: &ConnectionError) {
        if is_tls_failure(e) {
            self.counters.tls_refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn slot(&self, to: &NodeAddr) -> Slot {
        lock(&self.peers).entry(to.clone()).or_default().clone()
    }

    /// Forgets and closes the cached connection to `to` if it is still
    /// `conn`. Synchronous, so that a dropped send can call it.
    fn evict(&self, to: &NodeAddr, conn: &Connection, why: &'static str) {
        conn.close(VarInt::from_u32(CLOSE_NO_ANSWER), why.as_bytes());
        let slot = lock(&self.peers).get(to).cloned();
        if let Some(slot) = slot
            && let Ok(mut cached) = slot.try_lock()
            && cached
                .as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            *cached = None;
            debug!(%to, why, "dropped cached connection");
        }
    }

    /// Drops cache entries that hold no live connection, so that peers that
    /// went away do not accumulate. Entries some send is using are kept
    /// (slots are only handed out under the `peers` lock, held here).
    fn sweep(&self) {
        lock(&self.peers).retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.try_lock().map_or(true, |c| {
                    c.as_ref().is_some_and(|c| c.close_reason().is_none())
                })
        });
    }

    /// The cached live connection to `to`, or a new one; `true` if new.
    async fn connection(
        &self,
        endpoint: &Endpoint,
        to: &NodeAddr,
    ) -> Result<(Connection, bool), TransportError> {
        let slot = self.slot(to);
        let mut cached = slot.lock().await;
        if let Some(conn) = cached.as_ref() {
            match conn.close_reason() {
                None => return Ok((conn.clone(), false)),
                Some(why) => debug!(%to, %why, "cached connection is closed; reconnecting"),
            }
        }
        *cached = None;
        let conn = self.connect(endpoint, to).await?;
        *cached = Some(conn.clone());
        drop(cached);
        self.sweep();
        Ok((conn, true))
    }

    async fn connect(
        &self,
        endpoint: &Endpoint,
        to: &NodeAddr,
    ) -> Result<Connection, TransportError> {
        let attempt = async {
            let ipv6 = self.listen.is_ipv6();
            let addr = resolve(to, ipv6).await?;
            let connecting = endpoint
                .connect_with(self.client_config.clone(), addr, sni(to, self.mode)?)
                .map_err(|e| TransportError::Unreachable {
                    addr: to.to_string(),
                    reason: format!("cannot start a connection: {e}"),
                })?;
            connecting.await.map_err(|e| {
                self.count_failure(&e);
                connection_failed(to.as_str(), &e)
            })
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(conn)) => {
                self.counters
                    .connections_opened
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%to, remote = %conn.remote_address(), "connection opened");
                Ok(conn)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransportError::Unreachable {
                addr: to.to_string(),
                reason: format!(
                    "no QUIC handshake within the connect timeout of {:?}",
                    self.connect_timeout
                ),
            }),
        }
    }

    /// Sends one frame to `to`, over the cached connection if there is one;
    /// if that connection turns out dead, once more over a new one.
    async fn deliver(
        &self,
        endpoint: &Endpoint,
        to: &NodeAddr,
        frame: Bytes,
    ) -> Result<(), TransportError> {
        match self.attempt(endpoint, to, frame.clone()).await {
            Attempt::Done(result) => result,
            Attempt::ConnectionFailed { error, fresh: true } => Err(error),
            Attempt::ConnectionFailed {
                error,
                fresh: false,
            } => {
                debug!(%to, %error, "cached connection failed; retrying on a new one");
                match self.attempt(endpoint, to, frame).await {
                    Attempt::Done(result) => result,
                    Attempt::ConnectionFailed { error, .. } => Err(error),
                }
            }
        }
    }

    /// One exchange over the cached or a new connection.
    async fn attempt(&self, endpoint: &Endpoint, to: &NodeAddr, frame: Bytes) -> Attempt {
        let (conn, fresh) = match self.connection(endpoint, to).await {
            Ok(c) => c,
            Err(e) => return Attempt::Done(Err(e)),
        };
        // If this future is dropped mid-exchange (the caller timed out), the
        // connection is presumed dead unless the peer sent anything since
        // the exchange began: the next send then reconnects.
        let mut guard = EvictOnDrop {
            inner: self,
            to,
            conn: Some(&conn),
            rx_before: received(&conn),
        };
        let outcome = tokio::time::timeout(self.connect_timeout, exchange(&conn, frame)).await;
        guard.conn = None;
        let rx_before = guard.rx_before;
        let error = match outcome {
            Ok(Ok(reply)) => return Attempt::Done(wire::verdict(to.as_str(), &reply)),
            Ok(Err(Exchange::Stream(reason))) => {
                return Attempt::Done(Err(TransportError::Rejected {
                    addr: to.to_string(),
                    reason,
                }));
            }
            Ok(Err(Exchange::Lost(e))) => {
                self.count_failure(&e);
                self.evict(to, &conn, "connection lost");
                connection_failed(to.as_str(), &e)
            }
            Err(_) if received(&conn) > rx_before => {
                // The peer answered something (QUIC acknowledgements, other
                // streams) while this exchange waited: it is slow, not gone.
                // Closing the connection would fail every other message in
                // flight on it and cost a new handshake, which under load
                // makes a slow cluster collapse; fail this message only.
                return Attempt::Done(Err(TransportError::Unreachable {
                    addr: to.to_string(),
                    reason: format!(
                        "no answer within the connect timeout of {:?} (the connection is alive; kept)",
                        self.connect_timeout
                    ),
                }));
            }
            Err(_) => {
                self.evict(to, &conn, "no answer");
                TransportError::Unreachable {
                    addr: to.to_string(),
                    reason: format!(
                        "no answer within the connect timeout of {:?}",
                        self.connect_timeout
                    ),
                }
            }
        };
        Attempt::ConnectionFailed { error, fresh }
    }
}

/// The outcome of [`Inner::attempt`].
enum Attempt {
    /// A verdict, or a failure that another attempt would not cure.
    Done(Result<(), TransportError>),
    /// The connection failed or stopped answering; worth one retry on a new
    /// connection if this one was `fresh == false` (cached, maybe stale).
    ConnectionFailed { error: TransportError, fresh: bool },
}

struct EvictOnDrop<'a> {
    inner: &'a Inner,
    to: &'a NodeAddr,
    conn: Option<&'a Connection>,
    /// [`received`] when the exchange began.
    rx_before: u64,
}

impl Drop for EvictOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn
            && received(conn) == self.rx_before
        {
            self.inner.evict(self.to, conn, "send abandoned");
        }
    }
}

/// UDP datagrams received on `conn` so far: a peer whose count moves is
/// alive, however slow its answers.
fn received(conn: &Connection) -> u64 {
    conn.stats().udp_rx.datagrams
}

/// Why one request/reply exchange failed.
enum Exchange {
    /// The connection is gone.
    Lost(ConnectionError),
    /// The stream failed while the connection lives (e.g. reset by the peer).
    Stream(String),
}

/// Writes one frame on a new stream and reads the peer's reply.
async fn exchange(conn: &Connection, frame: Bytes) -> Result<Vec<u8>, Exchange> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(Exchange::Lost)?;
    match send.write_chunk(frame).await {
        // A peer that refuses the frame early (oversized) stops our side and
        // still sends its verdict.
        Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
        Err(quinn::WriteError::ConnectionLost(e)) => return Err(Exchange::Lost(e)),
        Err(e) => return Err(Exchange::Stream(format!("cannot send the frame: {e}"))),
    }
    // Fails only if the peer already stopped the stream, which is fine.
    let _ = send.finish();
    match recv.read_to_end(wire::MAX_REPLY).await {
        Ok(reply) => Ok(reply),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
            Err(Exchange::Lost(e))
        }
        Err(e) => Err(Exchange::Stream(format!(
            "protocol error: cannot read the verdict: {e}"
        ))),
    }
}

/// Accepts connections until the endpoint closes; each connection runs in a
/// task of `connections`, all awaited before returning.
async fn accept_loop(inner: Arc<Inner>, endpoint: Endpoint, inbound: Inbound) {
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

/// Serves one incoming connection: one task per stream, all awaited.
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
    debug!("connection accepted");
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

/// Reads one frame, hands it to `inbound` and writes the verdict. The whole
/// exchange is bounded by `deadline`.
async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    inbound: Inbound,
    deadline: Duration,
) {
    let exchange = async {
        let mut len = [0u8; wire::LEN_PREFIX];
        if let Err(e) = recv.read_exact(&mut len).await {
            debug!(error = %e, "stream ended before a frame length");
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        let verdict = if let Err(r) = inbound.check_len(len) {
            // Refuse before allocating or reading the body.
            let _ = recv.stop(VarInt::from_u32(STOP_OVERSIZED));
            Err(r.to_string())
        } else {
            let mut buf = vec![0u8; len];
            match recv.read_exact(&mut buf).await {
                Ok(()) => inbound.accept_bytes(&buf).map_err(|r| r.to_string()),
                Err(quinn::ReadExactError::FinishedEarly(got)) => Err(inbound
                    .reject(gossip_core::Rejection::Malformed(format!(
                        "frame truncated, {got} of the announced {len} bytes arrived"
                    )))
                    .to_string()),
                Err(e) => {
                    debug!(error = %e, "stream failed while reading a frame");
                    return;
                }
            }
        };
        if let Err(reason) = &verdict {
            debug!(%reason, "rejected a frame");
        } else {
            trace!(bytes = len, "accepted a frame");
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

impl Drop for QuicTransport {
    /// Dropping without [`Transport::shutdown`] closes the endpoint and every
    /// connection at once; the accept loop and quinn's tasks then end on
    /// their own, unawaited.
    fn drop(&mut self) {
        if let State::Running { endpoint, .. } = &*lock(&self.inner.state) {
            endpoint.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"member dropped");
        }
    }
}

impl Transport for QuicTransport {
    fn local_addr(&self) -> NodeAddr {
        self.inner.local.clone()
    }

    /// Starts quinn (if a send has not already) and spawns the accept loop.
    ///
    /// # Errors
    /// [`TransportError::Io`] if quinn cannot use the socket,
    /// [`TransportError::Other`] if already started or shut down.
    async fn start(&self, inbound: Inbound) -> Result<(), TransportError> {
        let mut task = lock(&self.inner.accept_task);
        if task.is_some() {
            return Err(TransportError::Other(
                "the QUIC transport is already started".to_owned(),
            ));
        }
        let endpoint = self.inner.endpoint()?;
        endpoint.set_server_config(Some(self.inner.server_config.clone()));
        let span = debug_span!("quic", listen = %self.inner.listen);
        *task = Some(tokio::spawn(
            accept_loop(self.inner.clone(), endpoint, inbound).instrument(span),
        ));
        info!(listen = %self.inner.listen, advertise = %self.inner.local, "QUIC transport serving");
        Ok(())
    }

    /// Sends `msg` to `to` and waits for its verdict.
    ///
    /// # Errors
    /// [`TransportError::Unreachable`] if no connection could be made within
    /// [`QuicConfig::connect_timeout`] or the peer did not answer in that
    /// time; [`TransportError::Rejected`] if the peer refused the frame (the
    /// reason is its [`Rejection`](gossip_core::Rejection) text) or the TLS
    /// handshake; [`TransportError::Other`] after shutdown.
    async fn send(&self, to: &NodeAddr, msg: Envelope) -> Result<(), TransportError> {
        let endpoint = self.inner.endpoint()?;
        let frame = wire::frame(&msg.encode_to_vec())?;
        self.inner.deliver(&endpoint, to, frame).await
    }

    async fn shutdown(&self) {
        let (endpoint, socket) = match std::mem::replace(&mut *lock(&self.inner.state), State::Shut)
        {
            State::Running { endpoint, socket } => (endpoint, socket),
            // Never started: dropping the socket releases the port.
            State::Bound(_) | State::Shut => return,
        };
        // Stops accepting and closes every connection, incoming and outgoing.
        endpoint.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"member shutting down");
        lock(&self.inner.peers).clear();
        let task = lock(&self.inner.accept_task).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            warn!(error = %e, "accept loop ended abnormally");
        }
        // Lets the peers learn of the close instead of waiting for their idle
        // timeout; bounded by quinn's closing period (3 PTO).
        endpoint.wait_idle().await;
        drop(endpoint);
        // quinn's driver task ends once the last endpoint handle is gone and
        // then drops the socket; wait for that so the port is free when
        // shutdown returns. Sends still in flight elsewhere hold the endpoint,
        // hence the bound.
        let released = tokio::time::timeout(SOCKET_RELEASE_WAIT, async {
            while socket.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if released.is_err() {
            warn!(listen = %self.inner.listen, "quinn still holds the UDP socket after shutdown");
        }
        info!(listen = %self.inner.listen, "QUIC transport shut down");
    }
}
