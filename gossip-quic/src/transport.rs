//! [`QuicTransport`]: the quinn endpoint, its configuration, its counters
//! and its life (start, shutdown). The sending side is in `client.rs`, the
//! receiving side in `server.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use gossip_core::pb::Envelope;
use gossip_core::{Inbound, NodeAddr, Transport, TransportError};
use gossip_tls::{TlsMode, TlsSetup};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    AsyncUdpSocket, Connection, ConnectionError, Endpoint, EndpointConfig, IdleTimeout, Runtime,
    TokioRuntime, TransportConfig, VarInt,
};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::client::Peer;
use crate::config::{QuicConfig, Wire};
use crate::failure::is_tls_failure;
use crate::server::accept_loop;
use crate::{client, refusal, resume, wire};

/// Receive and send buffer asked for the UDP socket, bytes (the kernel caps
/// it at `net.core.rmem_max` / `wmem_max`). Linux's default, about 208 KiB,
/// holds some 170 full-size QUIC packets: a seed that 100 members join at
/// once, each handshake's first flight padded to 1,200 bytes and more,
/// overflowed it while busy, and every lost Initial cost its member a
/// probe timeout (0.3, 0.65, 1.3 s...) before it was sent again: joins of
/// 100 members in one process took 3 s instead of 1 s in half the runs
/// (issue #10). quic-go asks for 7 MiB for the same reason.
const SOCKET_BUFFER: usize = 4 << 20;

/// Asks for [`SOCKET_BUFFER`] on both of `socket`'s buffers; best effort
/// (what the kernel grants is logged).
fn widen_buffers(socket: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(socket);
    if let Err(e) = s.set_recv_buffer_size(SOCKET_BUFFER) {
        debug!(error = %e, "cannot widen the UDP receive buffer");
    }
    if let Err(e) = s.set_send_buffer_size(SOCKET_BUFFER) {
        debug!(error = %e, "cannot widen the UDP send buffer");
    }
    debug!(
        recv = s.recv_buffer_size().ok(),
        send = s.send_buffer_size().ok(),
        "UDP socket buffers"
    );
}

/// RTT assumed before the first measurement (quinn's default is 333 ms, for
/// the Internet). Members usually share a LAN: with 100 ms a lost handshake
/// packet is resent after about 300 ms rather than 1 s, within the default
/// connect timeout, and a connection abandoned mid-handshake finishes closing
/// (3 PTO) in about a second.
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Longest time one incoming exchange may take when idle connections are
/// never closed (`idle_timeout` zero).
const UNBOUNDED_IDLE_STREAM_DEADLINE: Duration = Duration::from_secs(30);
/// Bytes of datagrams buffered per connection, each way (quinn's default
/// send buffer; the receive buffer also bounds one datagram's size).
const DATAGRAM_BUFFER: usize = 1024 * 1024;
/// One-way streams a peer may have open at once on one connection (each
/// carries the envelopes of one batch that did not fit in a datagram).
const MAX_UNI_STREAMS: u32 = 64;
/// Bidirectional streams a peer may have open at once on one connection:
/// `gossip/2` opens one (the hello), `gossip/1` one per message in flight.
/// quinn sets up the state of every stream a peer may open when a
/// connection starts, so its default of 100 cost about 2 % of the CPU of a
/// 100-member join (issue #10); a `gossip/1` sender beyond this limit waits
/// for a stream rather than failing.
const MAX_BIDI_STREAMS: u32 = 16;
/// Peers whose TLS session tickets are kept, per cached connection allowed.
const SESSIONS_PER_CONNECTION: usize = 2;
/// Longest [`Transport::shutdown`] takes, whatever the peers do.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(1);
/// Part of [`SHUTDOWN_BUDGET`] what sends handed to quinn gets to leave
/// (datagrams still queued, stream data not yet acknowledged, e.g. the
/// leave announcement) before the connections are closed.
const FLUSH_GRACE: Duration = Duration::from_millis(250);
/// Part of [`SHUTDOWN_BUDGET`] the accept loop and its connection tasks get
/// to end on their own before they are aborted.
const ACCEPT_LOOP_GRACE: Duration = Duration::from_millis(250);

/// Counters of one [`QuicTransport`], beside the member's
/// [`Stats`](gossip_core::Stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuicStats {
    /// Outgoing connections established (handshake completed).
    pub connections_opened: u64,
    /// Incoming connections accepted (handshake completed).
    pub connections_accepted: u64,
    /// Accepted connections taken as the connection to the address their
    /// dialler named in its hello, so that our messages to it go over them
    /// rather than over a connection of our own (one connection, one
    /// handshake, per pair of members that talk both ways).
    pub connections_adopted: u64,
    /// Connections, incoming or outgoing, that failed in the TLS handshake:
    /// a peer whose certificate we refused (under mutual TLS: not issued by
    /// the cluster CA, or none), a peer that refused ours, or no common ALPN
    /// protocol.
    pub tls_refused: u64,
    /// Incoming connections whose TLS handshake resumed a session this
    /// endpoint issued (no certificates, no signatures).
    pub tls_resumed: u64,
    /// Connections to peers open in the cache now, dialled or adopted (at
    /// most [`QuicConfig::max_connections`]).
    pub cached_connections: u64,
    /// Connections dropped from the cache because they were the least
    /// recently used beyond [`QuicConfig::max_connections`]: closed if we
    /// dialled them, left open for the peer if adopted.
    pub lru_evictions: u64,
    /// `gossip/2` datagrams sent (each a batch of one or more envelopes).
    pub datagrams_sent: u64,
    /// `gossip/2` datagrams received.
    pub datagrams_received: u64,
    /// `gossip/2` one-way streams opened for envelopes too large for a
    /// datagram.
    pub streams_sent: u64,
    /// `gossip/2` one-way streams accepted.
    pub streams_received: u64,
    /// Batches sent on a new connection right behind its hello, before the
    /// peer's verdict (a round trip sooner than after it; issue #10).
    pub batches_with_hello: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_adopted: AtomicU64,
    pub(crate) batches_with_hello: AtomicU64,
    pub(crate) tls_refused: AtomicU64,
    pub(crate) tls_resumed: Arc<AtomicU64>,
    pub(crate) lru_evictions: AtomicU64,
    pub(crate) datagrams_sent: AtomicU64,
    pub(crate) datagrams_received: AtomicU64,
    pub(crate) streams_sent: AtomicU64,
    pub(crate) streams_received: AtomicU64,
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

pub(crate) struct Inner {
    pub(crate) local: NodeAddr,
    pub(crate) listen: SocketAddr,
    pub(crate) mode: TlsMode,
    /// What we offer in ALPN, for error messages.
    pub(crate) protocols: &'static str,
    server_config: quinn::ServerConfig,
    /// Our rustls client configuration, of which each peer gets a copy.
    client_tls: Arc<rustls::ClientConfig>,
    transport: Arc<TransportConfig>,
    /// Each peer's client configuration, holding its TLS session tickets; at
    /// most [`SESSIONS_PER_CONNECTION`] × `max_connections` peers.
    sessions: Mutex<HashMap<NodeAddr, quinn::ClientConfig>>,
    pub(crate) idle_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_connections: usize,
    state: Mutex<State>,
    /// The connection cache, one entry per peer: what our sends to it use.
    pub(crate) peers: Mutex<HashMap<NodeAddr, Arc<Peer>>>,
    /// The clock of least-recent use: one tick per send.
    pub(crate) tick: AtomicU64,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    /// The gate given to `start`: its cluster id goes in our hellos.
    pub(crate) inbound: OnceLock<Inbound>,
    /// Hands the `gossip/2` connections we dial to the accept loop, which
    /// reads them as it reads accepted ones (set by `start`).
    dialled: OnceLock<mpsc::UnboundedSender<Connection>>,
    /// One task per one-way stream sent and not yet acknowledged.
    pub(crate) flushing: Mutex<JoinSet<()>>,
    pub(crate) counters: Counters,
}

/// A [`Transport`] over QUIC (quinn, rustls with the *ring* provider).
///
/// # Wire
/// ALPN offers `gossip/2` then `gossip/1` ([`Wire::Auto`]); each connection
/// speaks what it negotiated, so members of this version and of the previous
/// one talk during a rolling upgrade, both ways.
///
/// * `gossip/2`: once per connection, the client's hello (its cluster id,
///   and its advertised address if it serves) on the first bidirectional
///   stream, answered with a verdict: a peer of
///   another cluster is refused there, counted as `rejected_foreign_cluster`
///   and logged by the server, and its [`Transport::send_batch`] fails with
///   [`TransportError::Rejected`] naming both clusters; it is not dialled
///   again for 5 s. Then [`Transport::send_batch`] packs the envelopes into
///   as few QUIC datagrams (RFC 9221) as fit, each an encoded
///   `gossip.v1.Batch`; an envelope too large for a datagram of its own goes
///   on a one-way stream (`u32` big-endian length + encoded `Batch`, the
///   length checked against [`Inbound::max_message_size`] plus a few bytes
///   of framing before anything is allocated). No verdict: `Ok` means the
///   connection took the batch; the receiver counts what it rejects
///   (garbage, oversized, foreign, overloaded) in its own
///   [`Stats`](gossip_core::Stats).
/// * `gossip/1` (the previous version): one bidirectional stream per
///   message, `u32` big-endian length + encoded `gossip.v1.Envelope`,
///   answered with one status byte, `0` accepted or `1` and the text of the
///   [`Rejection`](gossip_core::Rejection), which the sender returns as
///   [`TransportError::Rejected`]. Served to old clients; used to send to
///   old servers.
///
/// TLS failures (no common ALPN, a certificate refused under mutual TLS) are
/// refused in the handshake and counted in [`QuicStats::tls_refused`] on the
/// side that refused.
///
/// # Connections
/// One connection per peer, opened on the first send, cached and reused;
/// at most [`QuicConfig::max_connections`] of them, the least recently used
/// dropped first ([`QuicStats::lru_evictions`]). A `gossip/2` connection
/// serves both directions: the dialler's hello names its advertised
/// address, and the server, holding no open connection of its own to that
/// address, adopts the accepted one as its connection to it
/// ([`QuicStats::connections_adopted`]; counted in the bound; when dropped
/// from the cache it is left open for its dialler) and sends its replies
/// over it, while the dialler reads the connections it dials like the ones
/// it accepts. Two members dialling each other at once each keep sending on
/// the connection they dialled, and read both. The address chooses that
/// connection and nothing else; it is taken only if it is not ours, if an
/// IP address is the one the connection comes from, and under mutual TLS if
/// the client certificate is valid for its host (under self-signed TLS a
/// host name is taken at its word). A transport that has not
/// [started](Transport::start) names no address, and is dialled back.
/// Connections
/// without traffic close after [`QuicConfig::idle_timeout`]. A reconnect
/// resumes the TLS session (stateless tickets; [`QuicStats::tls_resumed`]
/// on the server). A cached `gossip/2` connection whose peer has sent not one
/// packet (not even an acknowledgement) for [`QuicConfig::connect_timeout`]
/// after a send is presumed dead (a crashed or restarted peer) and replaced
/// by the next send; what was sent meanwhile is lost, as over UDP. A send
/// over a cached connection that turns out closed is retried once over a new
/// one. A peer that could not be reached (no handshake within the connect
/// timeout) is not dialled again for 1 s, one that refused us at set-up for
/// 5 s: sends to it meanwhile fail at once with the same reason.
///
/// A peer address where nothing listens is not told apart from a silent
/// peer: it fails as [`TransportError::Unreachable`] after the connect
/// timeout, never as [`TransportError::Refused`]. quinn 0.11 sends from one
/// unconnected UDP socket and surfaces no ICMP port-unreachable error (its
/// socket layer, quinn-udp, asks for none), so only the handshake timeout
/// is seen.
///
/// # Tasks
/// [`QuicTransport::bind`] only binds the UDP socket. quinn's endpoint, which
/// spawns its own driver task (and one per connection), is created by the
/// first of [`Transport::start`] and [`Transport::send_batch`]. `start`
/// spawns the accept loop, which runs each connection (accepted, or dialled
/// on `gossip/2`) in a task of its own JoinSet, and each one-way stream in a
/// task of the connection's.
/// [`Transport::shutdown`] returns within about a second whatever the peers
/// do: it lets what sends already handed over leave (queued datagrams,
/// unacknowledged streams: a leave announcement) for at most 250 ms, closes
/// the endpoint and every connection, gives the accept loop 250 ms to end,
/// then aborts it, and waits for quinn to finish closing and release the
/// socket within what is left of that second.
pub struct QuicTransport {
    inner: Arc<Inner>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic (plain replacements).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// quinn's transport parameters for our connections.
///
/// Path MTU discovery is off: a connection stays at QUIC's 1,200-byte
/// floor, and an envelope too large for a datagram of that size goes on a
/// one-way stream (as larger ones always did). Discovery sent a few probe
/// packets padded to up to 1,452 bytes after every handshake, which the
/// peer parses one padding byte at a time (quinn's frame iterator): when
/// 100 members joined in one process (1,200-1,400 handshakes) about a tenth
/// of the CPU went there, and without discovery the join took 823-1,001 ms
/// of CPU instead of 1,043-1,331 (issue #10, BENCHMARKS section 6).
/// Gossip messages are mostly far below 1,200 bytes.
pub(crate) fn transport_config(idle_timeout: Duration) -> Result<TransportConfig, TransportError> {
    let idle = IdleTimeout::try_from(idle_timeout).map_err(|_| {
        TransportError::InvalidConfig(format!(
            "idle timeout {idle_timeout:?} is too long for QUIC (at most 2^62 ms)"
        ))
    })?;
    let mut config = TransportConfig::default();
    config
        .max_idle_timeout(Some(idle))
        .initial_rtt(INITIAL_RTT)
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_BIDI_STREAMS))
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER)
        .mtu_discovery_config(None);
    Ok(config)
}

/// Wraps a rustls client configuration for quinn.
pub(crate) fn quic_client_config(
    tls: Arc<rustls::ClientConfig>,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Tls(format!("TLS client setup unusable for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

impl QuicTransport {
    /// Binds the UDP socket at [`QuicConfig::listen`] (port 0 picks a free
    /// port) and builds the TLS configuration. Spawns no task: quinn starts
    /// with the first [`Transport::start`] or send.
    ///
    /// # Errors
    /// [`TransportError::Tls`] for [`TlsConfig::None`](gossip_tls::TlsConfig::None)
    /// (QUIC always encrypts) or TLS files that cannot be loaded (the
    /// message names the file); [`TransportError::InvalidConfig`] for an
    /// unspecified listen IP without [`QuicConfig::advertise`], or an idle
    /// timeout QUIC cannot express; [`TransportError::Io`] if the socket
    /// cannot be bound.
    pub async fn bind(config: QuicConfig) -> Result<Self, TransportError> {
        let socket = std::net::UdpSocket::bind(config.listen)?;
        widen_buffers(&socket);
        let listen = socket.local_addr()?;
        let local = match config.advertise {
            Some(addr) => addr,
            None if listen.ip().is_unspecified() => {
                return Err(TransportError::InvalidConfig(format!(
                    "listen address {listen} is unspecified and cannot identify this member; \
                     set QuicConfig::advertise to the address peers reach it at"
                )));
            }
            None => NodeAddr::from(listen),
        };
        let (alpn, protocols): (&[&[u8]], _) = match config.wire {
            Wire::Auto => (&[wire::ALPN_V2, wire::ALPN_V1], "gossip/2 or gossip/1"),
            Wire::V1Only => (&[wire::ALPN_V1], "gossip/1"),
        };
        let tls = TlsSetup::new(&config.tls, gossip_tls::server_name(&local), alpn)
            .map_err(|e| TransportError::Tls(format!("QUIC TLS setup failed: {e}")))?
            .ok_or_else(|| {
                TransportError::Tls(
                    "QUIC always encrypts: TlsConfig::None is not supported, \
                     use TlsConfig::SelfSigned or TlsConfig::Mtls"
                        .to_owned(),
                )
            })?;
        let counters = Counters::default();
        let mut server_tls = (*tls.server).clone();
        resume::server(&mut server_tls, counters.tls_resumed.clone())?;
        let transport = Arc::new(transport_config(config.idle_timeout)?);
        let crypto = QuicServerConfig::try_from(Arc::new(server_tls))
            .map_err(|e| TransportError::Tls(format!("TLS server setup unusable for QUIC: {e}")))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(transport.clone());
        // Checks now that rustls' client configuration suits QUIC; each peer
        // gets a copy with a session cache of its own (`client_config`).
        quic_client_config(tls.client.clone(), transport.clone())?;
        debug!(%listen, advertise = %local, mode = ?tls.mode, "QUIC transport bound");
        Ok(Self {
            inner: Arc::new(Inner {
                local,
                listen,
                mode: tls.mode,
                protocols,
                server_config,
                client_tls: tls.client.clone(),
                transport,
                sessions: Mutex::new(HashMap::new()),
                idle_timeout: config.idle_timeout,
                connect_timeout: config.connect_timeout,
                max_connections: config.max_connections.max(1),
                state: Mutex::new(State::Bound(socket)),
                peers: Mutex::new(HashMap::new()),
                tick: AtomicU64::new(0),
                accept_task: Mutex::new(None),
                inbound: OnceLock::new(),
                dialled: OnceLock::new(),
                flushing: Mutex::new(JoinSet::new()),
                counters,
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
            connections_adopted: c.connections_adopted.load(Ordering::Relaxed),
            tls_refused: c.tls_refused.load(Ordering::Relaxed),
            tls_resumed: c.tls_resumed.load(Ordering::Relaxed),
            cached_connections: self.inner.cached_connections() as u64,
            lru_evictions: c.lru_evictions.load(Ordering::Relaxed),
            datagrams_sent: c.datagrams_sent.load(Ordering::Relaxed),
            datagrams_received: c.datagrams_received.load(Ordering::Relaxed),
            streams_sent: c.streams_sent.load(Ordering::Relaxed),
            streams_received: c.streams_received.load(Ordering::Relaxed),
            batches_with_hello: c.batches_with_hello.load(Ordering::Relaxed),
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
    pub(crate) fn endpoint(&self) -> Result<Endpoint, TransportError> {
        let mut state = lock(&self.state);
        if let State::Running { endpoint, .. } = &*state {
            return Ok(endpoint.clone());
        }
        let socket = match std::mem::replace(&mut *state, State::Shut) {
            State::Bound(socket) => socket,
            State::Running { .. } | State::Shut => return Err(TransportError::ShutDown),
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

    /// How long one incoming exchange (a `gossip/1` frame in and its verdict
    /// out, or a `gossip/2` one-way stream) may take: the
    /// idle timeout, or [`UNBOUNDED_IDLE_STREAM_DEADLINE`] without one.
    /// Waits, at most `grace`, until every cached connection has sent the
    /// datagrams queued on it and its peer acknowledged the streams sent.
    async fn flush(&self, grace: Duration) {
        let conns: Vec<quinn::Connection> = lock(&self.peers)
            .values()
            .filter_map(|p| p.connection())
            .collect();
        let mut flushing = std::mem::take(&mut *lock(&self.flushing));
        let flushed = tokio::time::timeout(grace, async {
            while conns.iter().any(|c| {
                c.close_reason().is_none() && c.datagram_send_buffer_space() < DATAGRAM_BUFFER
            }) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            while flushing.join_next().await.is_some() {}
        })
        .await;
        if flushed.is_err() {
            debug!("data still unsent at shutdown; dropping it");
        }
        flushing.abort_all();
    }

    /// The client configuration for connecting to `to`, with the TLS
    /// session tickets of earlier connections to it.
    pub(crate) fn client_config(
        &self,
        to: &NodeAddr,
    ) -> Result<quinn::ClientConfig, TransportError> {
        let mut sessions = lock(&self.sessions);
        if let Some(config) = sessions.get(to) {
            return Ok(config.clone());
        }
        if sessions.len() >= SESSIONS_PER_CONNECTION * self.max_connections {
            // Forget some peer's tickets: its next connection pays a full
            // handshake.
            if let Some(any) = sessions.keys().next().cloned() {
                sessions.remove(&any);
            }
        }
        let tls = resume::client_for_peer(&self.client_tls);
        let config = quic_client_config(Arc::new(tls), self.transport.clone())?;
        sessions.insert(to.clone(), config.clone());
        Ok(config)
    }

    pub(crate) fn stream_deadline(&self) -> Duration {
        if self.idle_timeout.is_zero() {
            UNBOUNDED_IDLE_STREAM_DEADLINE
        } else {
            self.idle_timeout
        }
    }

    /// Whether connections we dial are read (the accept loop runs), so that
    /// our hello may name our address and the peer send on them.
    pub(crate) fn reads_dialled(&self) -> bool {
        self.dialled.get().is_some_and(|tx| !tx.is_closed())
    }

    /// Has the accept loop read `conn`, a `gossip/2` connection we dialled,
    /// like an accepted one (datagrams and one-way streams from the peer).
    pub(crate) fn receive_dialled(&self, conn: Connection) {
        if let Some(tx) = self.dialled.get() {
            let _ = tx.send(conn);
        }
    }

    pub(crate) fn count_failure(&self, e: &ConnectionError) {
        if is_tls_failure(e) {
            self.counters.tls_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for QuicTransport {
    /// Dropping without [`Transport::shutdown`] closes the endpoint and every
    /// connection at once; the accept loop and quinn's tasks then end on
    /// their own, unawaited.
    fn drop(&mut self) {
        if let State::Running { endpoint, .. } = &*lock(&self.inner.state) {
            endpoint.close(VarInt::from_u32(wire::CLOSE_SHUTDOWN), b"member dropped");
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
    /// [`TransportError::AlreadyStarted`] if already started,
    /// [`TransportError::ShutDown`] after shutdown.
    async fn start(&self, inbound: Inbound) -> Result<(), TransportError> {
        let mut task = lock(&self.inner.accept_task);
        if task.is_some() {
            return Err(TransportError::AlreadyStarted);
        }
        let endpoint = self.inner.endpoint()?;
        let _ = self.inner.inbound.set(inbound.clone());
        let (dialled, dialled_rx) = mpsc::unbounded_channel();
        let _ = self.inner.dialled.set(dialled);
        endpoint.set_server_config(Some(self.inner.server_config.clone()));
        let span = debug_span!("quic", listen = %self.inner.listen);
        *task = Some(tokio::spawn(
            accept_loop(self.inner.clone(), endpoint, inbound, dialled_rx).instrument(span),
        ));
        info!(listen = %self.inner.listen, advertise = %self.inner.local, "QUIC transport serving");
        Ok(())
    }

    /// [`Transport::send_batch`] of one message.
    ///
    /// # Errors
    /// As [`Transport::send_batch`].
    async fn send(&self, to: &NodeAddr, msg: Envelope) -> Result<(), TransportError> {
        self.send_batch(to, vec![msg]).await
    }

    /// Sends `batch` to `to`: on `gossip/2` in datagrams (and a one-way
    /// stream for envelopes too large for one), without waiting for the
    /// peer; on `gossip/1` one message at a time, each with its verdict.
    ///
    /// # Errors
    /// [`TransportError::Unreachable`] if no connection could be made within
    /// [`QuicConfig::connect_timeout`], or the connection took nothing in
    /// that time (on `gossip/1`: the peer did not answer in that time);
    /// [`TransportError::Rejected`] if the peer refused us at connection
    /// set-up (another cluster: the reason names both; or the TLS
    /// handshake), then again for 5 s without dialling, or, on `gossip/1`,
    /// refused the message (the reason is its
    /// [`Rejection`](gossip_core::Rejection) text);
    /// [`TransportError::Refused`] if the peer's endpoint refused the
    /// connection (QUIC's CONNECTION_REFUSED: it is closing or not serving);
    /// [`TransportError::ShutDown`] after shutdown. A port where nothing
    /// listens at all is a connect timeout
    /// ([`TransportError::Unreachable`]), not a refusal: quinn 0.11 reports
    /// no ICMP port unreachable on its unconnected UDP socket;
    /// [`Transport::check_refused`] tells it.
    async fn send_batch(&self, to: &NodeAddr, batch: Vec<Envelope>) -> Result<(), TransportError> {
        let endpoint = self.inner.endpoint()?;
        self.inner.send_batch(&endpoint, to, batch).await
    }

    /// Sends one empty UDP datagram to `to` from a connected socket of its
    /// own and waits up to 500 ms for the ICMP port unreachable that only a
    /// connected socket is told of; true if it came. A live endpoint drops
    /// the datagram.
    async fn check_refused(&self, to: &NodeAddr) -> bool {
        match client::resolve(to, self.inner.listen.is_ipv6()).await {
            Ok(addr) => refusal::check(addr, refusal::REFUSAL_WAIT).await,
            Err(_) => false,
        }
    }

    /// Closes the endpoint and every connection, and returns within about
    /// a second whatever the peers do.
    async fn shutdown(&self) {
        let deadline = Instant::now() + SHUTDOWN_BUDGET;
        let (endpoint, socket) = match std::mem::replace(&mut *lock(&self.inner.state), State::Shut)
        {
            State::Running { endpoint, socket } => (endpoint, socket),
            // Never started: dropping the socket releases the port.
            State::Bound(_) | State::Shut => return,
        };
        self.inner.flush(FLUSH_GRACE).await;
        // Stops accepting and closes every connection, incoming and outgoing.
        endpoint.close(
            VarInt::from_u32(wire::CLOSE_SHUTDOWN),
            b"member shutting down",
        );
        lock(&self.inner.peers).clear();
        let task = lock(&self.inner.accept_task).take();
        if let Some(mut task) = task {
            // Every connection is closed, so the loop and its connection
            // tasks end at once; abort them if not.
            match tokio::time::timeout(ACCEPT_LOOP_GRACE, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "accept loop ended abnormally"),
                Err(_) => {
                    task.abort();
                    debug!("accept loop still running after the close; aborted");
                }
            }
        }
        // Lets the peers learn of the close instead of waiting for their idle
        // timeout (quinn's closing period, 3 PTO), within the budget.
        if tokio::time::timeout_at(deadline, endpoint.wait_idle())
            .await
            .is_err()
        {
            debug!("connections still closing at the end of the shutdown budget");
        }
        drop(endpoint);
        // quinn's driver task ends once the last endpoint handle is gone and
        // its connections have closed, and then drops the socket; wait for
        // that (so the port is free when shutdown returns), within the
        // budget. Sends still in flight elsewhere hold the endpoint.
        let released = tokio::time::timeout_at(deadline, async {
            while socket.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if released.is_err() {
            debug!(listen = %self.inner.listen, "quinn still holds the UDP socket at the end of the shutdown budget");
        }
        info!(listen = %self.inner.listen, "QUIC transport shut down");
    }
}
