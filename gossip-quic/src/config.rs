//! Configuration of a [`QuicTransport`](crate::QuicTransport).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use gossip_core::{NodeAddr, TlsConfig};

/// Settings of one QUIC endpoint.
#[derive(Clone, Debug)]
pub struct QuicConfig {
    /// UDP address to bind; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The address peers reach this member at, which becomes its identity.
    /// Default `None`: the bound address (an unspecified IP such as
    /// `0.0.0.0` then is an error: set this).
    pub advertise: Option<NodeAddr>,
    /// Transport security. QUIC always encrypts, so [`TlsConfig::None`] is
    /// refused by [`QuicTransport::bind`](crate::QuicTransport::bind); use
    /// [`TlsConfig::SelfSigned`] (encrypted, **not** authenticated; the
    /// default) or [`TlsConfig::Mtls`].
    pub tls: TlsConfig,
    /// A connection without traffic for this long is closed (QUIC
    /// `max_idle_timeout`; the smaller of both ends' values applies) and
    /// reopened by the next send. It also bounds how long one incoming
    /// message exchange may take. Zero disables the idle timeout (QUIC's
    /// convention). Default 30 s.
    pub idle_timeout: Duration,
    /// Longest wait to establish a connection (name resolution plus QUIC and
    /// TLS handshake), and for the peer's verdict on a message sent over a
    /// cached connection before that connection is presumed dead and
    /// replaced. Default 1 s.
    pub connect_timeout: Duration,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            advertise: None,
            tls: TlsConfig::SelfSigned,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
        }
    }
}
