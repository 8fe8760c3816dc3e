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
//!
//! Frames that tonic itself refuses before they reach the gate keep tonic's
//! codes: a frame larger than the maximum message size is refused before it
//! is decoded with `OUT_OF_RANGE`, bytes that are not a protobuf `Envelope`
//! with `INTERNAL` ("failed to decode Protobuf message"). Those frames are
//! not counted in [`Stats`](gossip_core::Stats), which only sees what reaches
//! the gate.
//!
//! On the client, [`Transport::send`] turns a failed call into
//! [`TransportError::Unreachable`] when the call failed locally (connection
//! refused, connect or request timeout, broken connection) or the peer
//! answered `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED` or `UNKNOWN`; any
//! other answer of the peer (`INVALID_ARGUMENT`, `PERMISSION_DENIED`,
//! `FAILED_PRECONDITION`, `RESOURCE_EXHAUSTED`, `OUT_OF_RANGE`, `INTERNAL`,
//! ...) is a [`TransportError::Rejected`] carrying the peer's message.
//!
//! # TLS
//!
//! Only [`TlsConfig::None`] (plaintext HTTP/2) is supported for now;
//! [`GrpcTransport::bind`] refuses the other settings with a clear error.
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod conn;
mod raw;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

use gossip_core::{Inbound, NodeAddr, TlsConfig, Transport, TransportError};
use gossip_proto::v1::Envelope;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use raw::send_raw_frame;

/// Default [`GrpcConfig::connect_timeout`]: 1 second.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default [`GrpcConfig::request_timeout`]: 2 seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`Transport::shutdown`] waits for connections it closed by force
/// to wind down before it aborts the server task.
const FORCE_CLOSE_GRACE: Duration = Duration::from_secs(1);

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
    /// the time shutdown lets in-flight calls finish. Default 2 seconds.
    pub request_timeout: Duration,
    /// Transport security. Only [`TlsConfig::None`] is supported for now.
    pub tls: TlsConfig,
}

impl Default for GrpcConfig {
    /// Listens on `127.0.0.1:0`, no advertised address, 1 s connect timeout,
    /// 2 s request timeout, no TLS.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            tls: TlsConfig::None,
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
/// `start` fail with [`TransportError::Other`]. Dropping the transport
/// without calling shutdown also stops the server, without waiting for it.
pub struct GrpcTransport {
    config: GrpcConfig,
    listen_addr: SocketAddr,
    local_addr: NodeAddr,
    state: Mutex<State>,
    clients: client::Clients,
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("listen_addr", &self.listen_addr)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl GrpcTransport {
    /// Binds a TCP listener on `config.listen` (port 0 allowed) without
    /// spawning any task. The member's address ([`Transport::local_addr`]) is
    /// `config.advertise` if set, else the address actually bound.
    ///
    /// # Errors
    /// [`TransportError::Other`] if `config.tls` is not [`TlsConfig::None`]
    /// (TLS is not supported yet); [`TransportError::Io`] if the address
    /// cannot be bound.
    pub async fn bind(config: GrpcConfig) -> Result<Self, TransportError> {
        match &config.tls {
            TlsConfig::None => {}
            TlsConfig::SelfSigned => {
                return Err(TransportError::Other(
                    "gRPC transport: TLS (self-signed) is not supported yet; use TlsConfig::None"
                        .into(),
                ));
            }
            TlsConfig::Mtls(_) => {
                return Err(TransportError::Other(
                    "gRPC transport: mutual TLS is not supported yet; use TlsConfig::None".into(),
                ));
            }
        }
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
        debug!(%listen_addr, %local_addr, "gRPC transport bound");
        Ok(Self {
            clients: client::Clients::new(config.connect_timeout, config.request_timeout),
            config,
            listen_addr,
            local_addr,
            state: Mutex::new(State::Bound(listener)),
        })
    }

    /// The socket address actually bound (with the real port when the
    /// configuration asked for port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }
}

impl Transport for GrpcTransport {
    fn local_addr(&self) -> NodeAddr {
        self.local_addr.clone()
    }

    /// Spawns the server on the listener bound by [`GrpcTransport::bind`].
    ///
    /// # Errors
    /// [`TransportError::Other`] if the transport was already started or has
    /// shut down.
    async fn start(&self, inbound: Inbound) -> Result<(), TransportError> {
        let mut state = self.state.lock().await;
        let listener = match std::mem::replace(&mut *state, State::Stopped) {
            State::Bound(listener) => listener,
            other @ State::Running { .. } => {
                *state = other;
                return Err(TransportError::Other(
                    "gRPC transport already started".into(),
                ));
            }
            State::Stopped => {
                return Err(TransportError::Other("gRPC transport has shut down".into()));
            }
        };
        let (stop, stopped) = oneshot::channel();
        let kill = CancellationToken::new();
        let task = server::spawn(
            listener,
            self.listen_addr,
            inbound,
            self.config.request_timeout,
            stopped,
            &kill,
        );
        info!(listen_addr = %self.listen_addr, local_addr = %self.local_addr, "gRPC transport serving");
        *state = State::Running { stop, kill, task };
        Ok(())
    }

    async fn send(&self, to: &NodeAddr, msg: Envelope) -> Result<(), TransportError> {
        self.clients.send(to, msg).await
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
                let grace = self.config.request_timeout;
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
        debug!(listen_addr = %self.listen_addr, "gRPC transport shut down");
    }
}
