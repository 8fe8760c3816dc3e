//! The QUIC transport for gossip: [`QuicTransport`] implements
//! [`gossip_core::Transport`] over quinn with rustls (*ring* provider).
//!
//! * One QUIC connection per peer, cached and reused; reopened after loss,
//!   idle connections close after [`QuicConfig::idle_timeout`].
//! * One bidirectional stream per message. The sender writes one frame,
//!   `u32` big-endian length + encoded `gossip.v1.Envelope`, and finishes
//!   its side; the receiver answers one status byte, `0` accepted or `1`
//!   followed by the UTF-8 text of the rejection.
//! * ALPN `gossip/1` ([`gossip_proto::PROTOCOL`]). TLS comes from
//!   [`gossip_tls`]: self-signed (encrypted, **not** authenticated) or mutual
//!   TLS against a cluster CA. QUIC always encrypts, so
//!   [`TlsConfig::None`](gossip_core::TlsConfig::None) is refused.
//!
//! [`send_raw_frame`] sends arbitrary bytes for conformance tests.
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
