//! The gRPC transport of the gossip library.
//!
//! [`GrpcTransport`] implements [`gossip_core::Transport`] over the tonic
//! service `gossip.v1.GossipService`, whose single unary RPC
//! `Send(Envelope) returns (SendReply)` delivers one message one way. The
//! server hands every decoded envelope to the member's
//! [`Inbound`] gate and reports its verdict as a gRPC
//! status; the client keeps one lazily connected HTTP/2 channel per peer.
//!
//! # Status codes
//!
//! The server maps a [`Rejection`](gossip_core::Rejection) to a status in one
//! place; the status message is the rejection's `Display` text:
//!
//! | Rejection        | gRPC code            | Why                                              |
//! |------------------|----------------------|--------------------------------------------------|
//! | `Malformed`      | `INVALID_ARGUMENT`   | the frame itself is bad; resending cannot help   |
//! | `Oversized`      | `INVALID_ARGUMENT`   | idem                                             |
//! | `ForeignCluster` | `PERMISSION_DENIED`  | the sender is not a member of this cluster        |
//! | `Overloaded`     | `RESOURCE_EXHAUSTED` | transient: the inbound queue is full              |
//! | `ShuttingDown`   | `UNAVAILABLE`        | the member is going away                         |
//! | `Decrypt`        | `UNAUTHENTICATED`    | the sender's key is not in this member's keyring |
//!
//! On a `Gossip` stream a `Decrypt` rejection is a `StreamReply`, not the end
//! of the stream: during a key rotation a few envelopes may be sealed with a
//! key the receiver installs a moment later.
//!
//! Frames that tonic itself refuses before they reach the gate keep tonic's
//! codes: a frame larger than the maximum message size is refused before it
//! is decoded with `OUT_OF_RANGE`, bytes that are not a protobuf `Envelope`
//! with `INTERNAL` ("failed to decode Protobuf message"). Those frames are
//! not counted in [`Stats`](gossip_core::Stats), which only sees what reaches
//! the gate.
//!
//! On the client, [`Transport::send`] turns a failed call into
//! [`TransportError::Refused`] when the TCP connection was refused (nothing
//! listens at the peer's address), [`TransportError::Unreachable`] when the
//! call failed locally otherwise (connect or request timeout, broken
//! connection) or the peer answered `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
//! `CANCELLED` or `UNKNOWN`; any other answer of the peer (`INVALID_ARGUMENT`, `PERMISSION_DENIED`, `UNAUTHENTICATED`,
//! `FAILED_PRECONDITION`, `RESOURCE_EXHAUSTED`, `OUT_OF_RANGE`, `INTERNAL`,
//! ...) is a [`TransportError::Rejected`] carrying the peer's message.
//!
//! # TLS
//!
//! [`GrpcConfig::tls`] selects the transport security; the rustls
//! configurations come from [`gossip_tls`], the same as the QUIC transport's
//! (same files, same checks), with ALPN `h2` ([`ALPN_H2`]):
//!
//! * [`TlsConfig::None`] (the default): plaintext HTTP/2 ("h2c"). For tests
//!   and trusted networks.
//! * [`TlsConfig::SelfSigned`]: each member generates its own certificate
//!   when bound; clients accept any server certificate and present none.
//!   Traffic is encrypted, but peers are **not** authenticated: anyone who
//!   can reach the port can send, and a man in the middle can read and alter
//!   traffic.
//! * [`TlsConfig::Mtls`]: the cluster CA certificate plus this member's
//!   certificate and key, as PEM files. The server requires a client
//!   certificate issued by the cluster CA; the client requires a server
//!   certificate issued by the CA and valid for the host part of the peer's
//!   address (sent as SNI, see [`gossip_tls::server_name`]). A peer that
//!   fails this is refused during the TLS handshake, before any message is
//!   read, and counted in [`GrpcTransport::tls_refused`].
//!
//! Under TLS, every member of a cluster must use the same mode: a plaintext
//! client cannot talk to a TLS server nor the other way round, and under
//! mutual TLS a self-signed member is refused. On the client, a handshake
//! the peer refused is a [`TransportError::Rejected`] whose reason starts
//! with "TLS handshake refused by the peer"; a handshake refused on our side
//! (e.g. the peer's certificate is not issued by our CA) is a
//! [`TransportError::Unreachable`]. Certificates and keys are never logged.
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod conn;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod raw;
mod server;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gossip_core::{Inbound, NodeAddr, Transport, TransportError};
use gossip_proto::v1::Envelope;
use gossip_tls::{TlsConfig, TlsMode, TlsSetup, rustls};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use raw::{send_raw_frame, send_raw_frame_tls};
pub use tls::ALPN_H2;

/// Default [`GrpcConfig::connect_timeout`]: 1 second.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default [`GrpcConfig::request_timeout`]: 2 seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Default [`GrpcConfig::max_connections`]: 256 cached channels, enough for
/// the peers a member of a LAN cluster of a thousand talks to at once
/// without holding a connection to each of them.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default [`GrpcConfig::idle_timeout`]: 5 minutes. Longer than a round of
/// probes over a LAN cluster of a few hundred members, so the connection to
/// a peer probed once per round is reused rather than reopened; an idle
/// connection costs nothing on the wire (no keepalive pings from the
/// client) and [`GrpcConfig::max_connections`] bounds their number.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long [`Transport::shutdown`] waits for connections it closed by force
/// to wind down before it aborts the server task.
const FORCE_CLOSE_GRACE: Duration = Duration::from_millis(300);
/// Longest time [`Transport::shutdown`] lets open connections close
/// gracefully (streams end at once; unary calls in flight finish).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Settings of a [`GrpcTransport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcConfig {
    /// Socket address the server binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address peers reach this member at, which becomes its identity. `None`
    /// uses the address actually bound (so it must then be reachable by
    /// peers: do not leave it `None` when listening on `0.0.0.0`).
    pub advertise: Option<NodeAddr>,
    /// Longest time to establish a TCP + HTTP/2 connection to a peer.
    /// Default 1 second.
    pub connect_timeout: Duration,
    /// Longest time one `Send` call may take, on the client (the whole call,
    /// connecting included) and on the server (handling one request); also
    /// the time shutdown lets in-flight calls finish and, under TLS, the
    /// time the server waits for an incoming connection's TLS handshake.
    /// Default 2 seconds.
    pub request_timeout: Duration,
    /// Transport security: [`TlsConfig::None`] (plaintext HTTP/2, the
    /// default), [`TlsConfig::SelfSigned`] (encrypted, peers **not**
    /// authenticated) or [`TlsConfig::Mtls`] (encrypted, peers authenticated
    /// by the cluster CA). See the crate documentation.
    pub tls: TlsConfig,
    /// Most cached client channels (each one TCP connection); when a new
    /// peer needs one, the least recently used is closed. Default
    /// [`DEFAULT_MAX_CONNECTIONS`] (issue #9 item 5).
    pub max_connections: usize,
    /// A cached channel unused for this long is closed; zero keeps them.
    /// Default [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// The wire version spoken. [`GrpcWire::Stream`] (the default): one
    /// long-lived `Gossip` stream per peer carrying batches, unary `Send`
    /// calls to peers that serve no streams, and both served.
    /// [`GrpcWire::Unary`]: the first wire version, one unary `Send` per
    /// message and no `Gossip` streams served, as a member of the previous
    /// release (for rolling-upgrade tests).
    pub wire: GrpcWire,
}

/// The gRPC wire version a [`GrpcTransport`] speaks (see
/// [`GrpcConfig::wire`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GrpcWire {
    /// One unary `Send` call per message; `Gossip` streams are answered
    /// `UNIMPLEMENTED`. The first wire version.
    Unary,
    /// One `Gossip` stream per peer carrying batches of envelopes; falls
    /// back to unary calls for a peer that answers `UNIMPLEMENTED`.
    #[default]
    Stream,
}

/// Counters of one [`GrpcTransport`]'s client side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcStats {
    /// Client channels cached now (at most [`GrpcConfig::max_connections`]).
    pub channels: usize,
    /// `Gossip` streams opened so far.
    pub streams_opened: u64,
    /// Channels closed to make room for a new one (least recently used).
    pub evicted_lru: u64,
    /// Channels closed after [`GrpcConfig::idle_timeout`] unused.
    pub evicted_idle: u64,
}

impl Default for GrpcConfig {
    /// Listens on `127.0.0.1:0`, no advertised address, 1 s connect timeout,
    /// 2 s request timeout, no TLS, 256 channels closed after 5 min idle,
    /// streams.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            tls: TlsConfig::None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            wire: GrpcWire::Stream,
        }
    }
}

/// Where the server is in its life.
enum State {
    /// Bound by [`GrpcTransport::bind`]; nothing spawned yet.
    Bound(TcpListener),
    /// Serving: `stop` asks the server task to stop gracefully, `kill`
    /// closes its connections by force, `task` is that task.
    Running {
        stop: oneshot::Sender<()>,
        kill: CancellationToken,
        task: JoinHandle<()>,
    },
    /// Shut down (or never startable again).
    Stopped,
}

/// A [`Transport`] over gRPC (tonic, HTTP/2).
///
/// [`GrpcTransport::bind`] binds the listening socket but spawns nothing;
/// [`Transport::start`] spawns the server on that socket.
/// [`Transport::shutdown`] closes the listening socket at once, asks open
/// connections to close (HTTP/2 GOAWAY), gives in-flight calls up to
/// [`GrpcConfig::request_timeout`] to finish, then closes the remaining
/// connections by force; it drops every cached client channel and returns
/// once the server and its connection tasks ended. Afterwards `send` and
/// `start` fail with [`TransportError::ShutDown`]. Dropping the transport
/// without calling shutdown also stops the server, without waiting for it.
pub struct GrpcTransport {
    config: GrpcConfig,
    listen_addr: SocketAddr,
    local_addr: NodeAddr,
    state: Mutex<State>,
    clients: Arc<client::Clients>,
    /// The server's TLS configuration and mode; `None` for plaintext.
    tls: Option<(Arc<rustls::ServerConfig>, TlsMode)>,
    /// Connections refused in the TLS handshake, incoming and outgoing.
    tls_refused: Arc<AtomicU64>,
}

impl std::fmt::Debug for GrpcTransport {
    // Keys and certificates are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("listen_addr", &self.listen_addr)
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls_mode())
            .finish_non_exhaustive()
    }
}

impl GrpcTransport {
    /// Binds a TCP listener on `config.listen` (port 0 allowed) without
    /// spawning any task. The member's address ([`Transport::local_addr`]) is
    /// `config.advertise` if set, else the address actually bound.
    ///
    /// Under [`TlsConfig::SelfSigned`] the member's certificate is generated
    /// here (for the host part of the member's address and `localhost`);
    /// under [`TlsConfig::Mtls`] the PEM files are read here.
    ///
    /// # Errors
    /// [`TransportError::Io`] if the address cannot be bound;
    /// [`TransportError::Tls`] if the TLS configuration cannot be built
    /// (e.g. a PEM file is missing or invalid: the message names the file,
    /// never its contents).
    pub async fn bind(config: GrpcConfig) -> Result<Self, TransportError> {
        let listener = TcpListener::bind(config.listen).await?;
        let listen_addr = listener.local_addr()?;
        let local_addr = match &config.advertise {
            Some(a) => a.clone(),
            None => {
                if listen_addr.ip().is_unspecified() {
                    warn!(
                        %listen_addr,
                        "listening on an unspecified address without an advertised address; \
                         peers cannot reach this member at its identity"
                    );
                }
                NodeAddr::from(listen_addr)
            }
        };
        let tls_refused = Arc::new(AtomicU64::new(0));
        let setup = TlsSetup::new(
            &config.tls,
            gossip_tls::server_name(&local_addr),
            &[ALPN_H2],
        )
        .map_err(|e| TransportError::Tls(format!("gRPC TLS setup failed: {e}")))?;
        let client_tls = setup
            .as_ref()
            .map(|s| tls::ClientTls::new(s.client.clone(), s.mode, tls_refused.clone()));
        let tls = setup.map(|s| (s.server, s.mode));
        debug!(%listen_addr, %local_addr, tls = ?tls.as_ref().map(|t| t.1), "gRPC transport bound");
        Ok(Self {
            clients: Arc::new(client::Clients::new(
                client::ClientOptions {
                    connect_timeout: config.connect_timeout,
                    request_timeout: config.request_timeout,
                    max_connections: config.max_connections,
                    idle_timeout: config.idle_timeout,
                    streams: config.wire == GrpcWire::Stream,
                },
                client_tls,
            )),
            config,
            listen_addr,
            local_addr,
            state: Mutex::new(State::Bound(listener)),
            tls,
            tls_refused,
        })
    }

    /// The TLS mode in use, `None` for plaintext ([`TlsConfig::None`]).
    pub fn tls_mode(&self) -> Option<TlsMode> {
        self.tls.as_ref().map(|(_, mode)| *mode)
    }

    /// Connections, incoming or outgoing, refused in the TLS handshake: a
    /// peer whose certificate this member refused (under mutual TLS: none,
    /// or not issued by the cluster CA), a peer that refused this member's
    /// certificate (as far as this side can tell: the peer may close the
    /// connection without telling why), no common ALPN protocol, or a peer
    /// that does not speak TLS at all. Connections that close or time out
    /// before completing the handshake without a TLS error are not counted.
    /// Always 0 for plaintext.
    pub fn tls_refused(&self) -> u64 {
        self.tls_refused.load(Ordering::Relaxed)
    }

    /// The socket address actually bound (with the real port when the
    /// configuration asked for port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The client side's counters.
    pub fn stats(&self) -> GrpcStats {
        let c = &self.clients.counters;
        GrpcStats {
            channels: self.clients.len(),
            streams_opened: c.streams_opened.load(Ordering::Relaxed),
            evicted_lru: c.evicted_lru.load(Ordering::Relaxed),
            evicted_idle: c.evicted_idle.load(Ordering::Relaxed),
        }
    }
}

impl Transport for GrpcTransport {
    fn local_addr(&self) -> NodeAddr {
        self.local_addr.clone()
    }

    /// Spawns the server on the listener bound by [`GrpcTransport::bind`].
    ///
    /// # Errors
    /// [`TransportError::AlreadyStarted`] if the transport was already
    /// started, [`TransportError::ShutDown`] if it has shut down.
    async fn start(&self, inbound: Inbound) -> Result<(), TransportError> {
        let mut state = self.state.lock().await;
        let listener = match std::mem::replace(&mut *state, State::Stopped) {
            State::Bound(listener) => listener,
            other @ State::Running { .. } => {
                *state = other;
                return Err(TransportError::AlreadyStarted);
            }
            State::Stopped => {
                return Err(TransportError::ShutDown);
            }
        };
        let (stop, stopped) = oneshot::channel();
        let kill = CancellationToken::new();
        let tls = self.tls.as_ref().map(|(server, _)| tls::ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(server.clone()),
            handshake_timeout: self.config.request_timeout,
            refused: self.tls_refused.clone(),
        });
        self.clients.set_inbound(inbound.clone());
        let task = server::spawn(
            listener,
            self.listen_addr,
            inbound,
            self.config.request_timeout,
            self.config.wire == GrpcWire::Stream,
            tls,
            stopped,
            &kill,
        );
        info!(
            listen_addr = %self.listen_addr,
            local_addr = %self.local_addr,
            tls = ?self.tls_mode(),
            "gRPC transport serving"
        );
        *state = State::Running { stop, kill, task };
        Ok(())
    }

    /// Sends one message with one unary `Send` call and returns the peer's
    /// verdict (the first wire version's path: for single messages whose
    /// caller wants the answer, and for foreign clients). The driver sends
    /// with [`Transport::send_batch`].
    async fn send(&self, to: &NodeAddr, msg: Envelope) -> Result<(), TransportError> {
        self.clients.send(to, msg).await
    }

    /// Puts the batch on the peer's `Gossip` stream in frames of at most the
    /// maximum message size; returns once they are queued on the stream,
    /// without waiting for the peer. A rejection comes back later and is
    /// counted in
    /// [`StatsSnapshot::rejected_by_peer`](gossip_core::StatsSnapshot::rejected_by_peer).
    async fn send_batch(&self, to: &NodeAddr, batch: Vec<Envelope>) -> Result<(), TransportError> {
        self.clients.send_batch(to, batch).await
    }

    /// A fresh TCP connect to `to`: true if it is refused (nothing listens
    /// there), false if it connects or does not answer within 500 ms.
    async fn check_refused(&self, to: &NodeAddr) -> bool {
        client::connect_refused(to).await
    }

    async fn shutdown(&self) {
        // New sends fail from now on; in-flight ones finish on their own.
        self.clients.close();
        // Held across the wait so that a concurrent shutdown also returns
        // only once the server task ended.
        let mut state = self.state.lock().await;
        match std::mem::replace(&mut *state, State::Stopped) {
            State::Bound(listener) => drop(listener),
            State::Running {
                stop,
                kill,
                mut task,
            } => {
                // Whatever happens below, even if this future is dropped, no
                // connection outlives the transport.
                let _kill_on_exit = kill.clone().drop_guard();
                // Stop accepting and ask connections to close; in-flight calls
                // get up to the request timeout (the server's own limit).
                // The server may already have ended (then the send fails).
                let _ = stop.send(());
                let grace = self.config.request_timeout.min(SHUTDOWN_GRACE);
                let mut result = tokio::time::timeout(grace, &mut task).await;
                if result.is_err() {
                    debug!(
                        ?grace,
                        "connections still open after the grace period; closing them"
                    );
                    kill.cancel();
                    result = tokio::time::timeout(FORCE_CLOSE_GRACE, &mut task).await;
                }
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "gRPC server task failed"),
                    Err(_) => {
                        warn!(
                            "gRPC server did not stop after closing its connections; aborting it"
                        );
                        task.abort();
                        // Only the cancellation error is expected here.
                        let _ = task.await;
                    }
                }
            }
            State::Stopped => {}
        }
        self.clients.join(FORCE_CLOSE_GRACE).await;
        debug!(listen_addr = %self.listen_addr, "gRPC transport shut down");
    }
}
