//! Configuration of a [`QuicTransport`](crate::QuicTransport).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use gossip_core::NodeAddr;
use gossip_tls::TlsConfig;

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
    /// convention). Default 5 min: longer than a round of probes over a LAN
    /// cluster of a few hundred members, so the connection to a peer probed
    /// once per round is reused rather than reopened (an idle QUIC
    /// connection sends nothing); [`QuicConfig::max_connections`] bounds
    /// their number.
    pub idle_timeout: Duration,
    /// Longest wait to establish a connection (name resolution, QUIC and TLS
    /// handshake, and the `gossip/2` hello). Also how long a cached
    /// connection may stay silent (not one packet from the peer, not even an
    /// acknowledgement) after a send before it is presumed dead and replaced
    /// by the next send, and, on the old `gossip/1` wire, the longest wait
    /// for a message's verdict. Default 1 s.
    pub connect_timeout: Duration,
    /// Most connections to peers cached at once (a count of peers): the
    /// ones we dialled and the incoming ones adopted for our sends (see
    /// [`QuicTransport`](crate::QuicTransport)). One more drops the least
    /// recently used: closed if we dialled it, left open for its dialler if
    /// adopted; the next send to that peer dials it (a resumed TLS session,
    /// so without a full handshake). Other incoming connections are not
    /// counted: each is bounded by its peer's own limit and closed after
    /// [`QuicConfig::idle_timeout`]. Default 256: a member of a LAN cluster
    /// of a thousand talks to a few dozen peers per minute (probes, gossip
    /// rounds, pushes), so it need not hold 999 connections. Zero is taken
    /// as one.
    pub max_connections: usize,
    /// Which wire versions this endpoint speaks. Default [`Wire::Auto`].
    pub wire: Wire,
}

/// The wire versions an endpoint offers, in ALPN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wire {
    /// Offer and serve `gossip/2` (datagrams and one-way streams, cluster
    /// checked once per connection) and `gossip/1` (one stream and one
    /// verdict per message), preferring `gossip/2`: a member of this version
    /// talks `gossip/2` to its own version and `gossip/1` to members of the
    /// previous one, in both directions, during a rolling upgrade.
    #[default]
    Auto,
    /// Offer and serve `gossip/1` only, as the previous version did: for
    /// pinning the old wire until every member is upgraded, and for tests
    /// and measurements of the old wire.
    V1Only,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            advertise: None,
            tls: TlsConfig::SelfSigned,
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(1),
            max_connections: 256,
            wire: Wire::Auto,
        }
    }
}
