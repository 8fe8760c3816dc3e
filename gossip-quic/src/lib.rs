//! The QUIC transport for gossip: [`QuicTransport`] implements
//! [`gossip_core::Transport`] over quinn with rustls (*ring* provider).
//!
//! # Wire (ALPN)
//! * `gossip/2` ([`ALPN_V2`]), preferred. Once per connection the client
//!   says hello on the first bidirectional stream: its cluster id (UTF-8)
//!   and, if it serves, its advertised address (after a `0xFF` byte),
//!   answered by one verdict (`0` accepted, or `1` and the reason). A client
//!   of another cluster is refused there: the server counts it
//!   (`rejected_foreign_cluster`), logs a warning and closes the connection;
//!   the client's send fails with [`TransportError::Rejected`] naming both
//!   clusters, and that peer is not dialled again for 5 s. Then, one way and
//!   without verdicts: each batch of envelopes for the peer
//!   ([`Transport::send_batch`]) goes in as few QUIC DATAGRAMs (RFC 9221) as
//!   fit, each an encoded `gossip.v1.Batch`; an envelope too large for a
//!   datagram of its own goes on a one-way stream, as frames of `u32`
//!   big-endian length + encoded `Batch`, the length checked against
//!   [`Inbound::max_message_size`] (plus a few bytes of framing) before
//!   anything is allocated. Every envelope passes [`Inbound::accept`]; a
//!   datagram or frame that does not decode is counted as malformed, an
//!   oversized length as oversized. Both ends of a connection send and
//!   read this way (see *Connections*).
//! * `gossip/1` ([`gossip_proto::PROTOCOL`]), the previous version: one
//!   bidirectional stream per message (`u32` length + encoded
//!   `gossip.v1.Envelope`), answered by one verdict. Still served, so
//!   members of the previous version keep talking to this one during a
//!   rolling upgrade, and used to send to a peer that offers only it.
//!   [`Wire::V1Only`] pins an endpoint to it.
//!
//! # What is refused when
//! * In the TLS handshake: no common ALPN protocol; under mutual TLS a
//!   certificate not issued by the cluster CA, or none
//!   ([`QuicStats::tls_refused`]). QUIC always encrypts, so
//!   [`TlsConfig::None`](gossip_tls::TlsConfig::None) is refused by
//!   [`QuicTransport::bind`].
//! * At connection set-up (`gossip/2` hello): another cluster id.
//! * Per envelope, by [`Inbound`]: malformed, oversized, foreign cluster,
//!   overloaded; on `gossip/2` counted on the receiver only (no verdict
//!   travels back), on `gossip/1` also returned to the sender.
//!
//! # Connections
//! One cached connection per peer, at most [`QuicConfig::max_connections`]
//! (least recently used dropped first); idle ones close after
//! [`QuicConfig::idle_timeout`]; a reconnect resumes the TLS session.
//! One `gossip/2` connection serves both directions: a server that accepts
//! a hello naming address X, while it holds no open connection of its own
//! to X, *adopts* the connection as its connection to X
//! ([`QuicStats::connections_adopted`]), and its replies to X go over it
//! (the dialler reads the connections it dials as the ones it accepts).
//! So a pair of members that talk both ways pays one handshake, not two.
//! Two members that dial each other at once keep two connections, each
//! sending on the one it dialled and reading both: nothing is dropped in
//! favour of the other. A hello without an address (a client that does not
//! serve, or the conformance [`RawClient`]) is served one way, and answered
//! over a connection of our own. The address is trusted only to choose that
//! connection, and only if it is not ours, if an IP address is the one the
//! connection comes from, and, under mutual TLS, if the client certificate
//! is valid for its host; under self-signed TLS a host name is taken at its
//! word (a client could then draw our messages to a name it does not own
//! until the connection fails, as anyone who can reach an unauthenticated
//! member could already join it). TLS comes from [`gossip_tls`]:
//! self-signed (encrypted, **not** authenticated) or mutual TLS against a
//! cluster CA.
//!
//! [`send_raw_frame`] (`gossip/1`) and [`RawClient`] (`gossip/2`) send
//! arbitrary bytes for conformance tests.
//!
//! [`Transport::send_batch`]: gossip_core::Transport::send_batch
//! [`Inbound::max_message_size`]: gossip_core::Inbound::max_message_size
//! [`Inbound::accept`]: gossip_core::Inbound::accept
//! [`Inbound`]: gossip_core::Inbound
//! [`TransportError::Rejected`]: gossip_core::TransportError::Rejected
//! [`QuicStats::connections_adopted`]: crate::QuicStats::connections_adopted
//!
//! ```
//! use std::sync::Arc;
//! use gossip_core::{Stats, Transport, inbound_channel, pb};
//! use gossip_quic::{QuicConfig, QuicTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two endpoints on free loopback ports, self-signed TLS (the default).
//! let a = QuicTransport::bind(QuicConfig::default()).await?;
//! let b = QuicTransport::bind(QuicConfig::default()).await?;
//! let (inbound, mut received) =
//!     inbound_channel("demo", 64 * 1024, 16, Arc::new(Stats::default()));
//! b.start(inbound).await?;
//!
//! let msg = pb::Envelope {
//!     cluster_id: "demo".into(),
//!     from: Some(pb::NodeId { addr: a.local_addr().to_string(), generation: 1 }),
//!     body: Some(pb::envelope::Body::Gossip(pb::Gossip {})),
//!     ..Default::default()
//! };
//! a.send(&b.local_addr(), msg).await?;
//! assert_eq!(received.recv().await.map(|m| m.cluster_id).as_deref(), Some("demo"));
//!
//! a.shutdown().await;
//! b.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod client;
mod config;
mod failure;
mod raw;
mod refusal;
mod resume;
mod server;
mod transport;
mod wire;

pub use config::{QuicConfig, Wire};
pub use raw::{RawClient, send_raw_frame};
pub use transport::{QuicStats, QuicTransport};
pub use wire::ALPN_V2;
