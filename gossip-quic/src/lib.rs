//! The QUIC transport for gossip: [`QuicTransport`] implements
//! [`gossip_core::Transport`] over quinn with rustls (*ring* provider).
//!
//! # Wire (ALPN)
//! * `gossip/2` ([`ALPN_V2`]), preferred. Once per connection the client
//!   says hello on the first bidirectional stream: its cluster id (UTF-8),
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
//!   oversized length as oversized.
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
//!   [`TlsConfig::None`](gossip_core::TlsConfig::None) is refused by
//!   [`QuicTransport::bind`].
//! * At connection set-up (`gossip/2` hello): another cluster id.
//! * Per envelope, by [`Inbound`]: malformed, oversized, foreign cluster,
//!   overloaded; on `gossip/2` counted on the receiver only (no verdict
//!   travels back), on `gossip/1` also returned to the sender.
//!
//! # Connections
//! One cached outgoing connection per peer, at most
//! [`QuicConfig::max_connections`] (least recently used closed first);
//! idle ones close after [`QuicConfig::idle_timeout`]; a reconnect resumes
//! the TLS session. TLS comes from [`gossip_tls`]: self-signed (encrypted,
//! **not** authenticated) or mutual TLS against a cluster CA.
//!
//! [`send_raw_frame`] (`gossip/1`) and [`RawClient`] (`gossip/2`) send
//! arbitrary bytes for conformance tests.
//!
//! [`Transport::send_batch`]: gossip_core::Transport::send_batch
//! [`Inbound::max_message_size`]: gossip_core::Inbound::max_message_size
//! [`Inbound::accept`]: gossip_core::Inbound::accept
//! [`Inbound`]: gossip_core::Inbound
//! [`TransportError::Rejected`]: gossip_core::TransportError::Rejected
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
mod resume;
mod server;
mod transport;
mod wire;

pub use config::{QuicConfig, Wire};
pub use raw::{RawClient, send_raw_frame};
pub use transport::{QuicStats, QuicTransport};
pub use wire::ALPN_V2;
