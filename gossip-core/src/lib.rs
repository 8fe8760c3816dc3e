//! Transport-agnostic gossip membership.
//!
//! A member knows its own address (its identity), metadata and key/value
//! state; given one live seed it learns every live member, their metadata and
//! keys. Membership and failure detection follow SWIM (Das, Gupta and
//! Motivala, 2002) with Lifeguard's dynamic suspicion timeout (Dadgar et al.,
//! 2018); state dissemination is scuttlebutt push-pull anti-entropy (van
//! Renesse et al., 2008) plus eager push of fresh writes (rumor mongering).
//!
//! The protocol is the sans-IO [`Machine`]: it takes `(now, message)` and timer
//! expiries and yields messages to send, its next deadline and [`Event`]s. It
//! never reads a clock, opens a socket or spawns a task. [`Member`] drives it
//! with tokio over any [`Transport`].
//!
//! # Cargo features
//!
//! * `test-utils` (off by default): test transports for this crate's users'
//!   tests and simulations. `MemNetwork` / `MemTransport`, an in-memory
//!   network whose links can be cut, and `FaultController` /
//!   `FaultyTransport`, loss, delay and partitions around any transport;
//!   and `harness`, the discrete-event driver of many machines under
//!   virtual time that the simulator (`gossip-sim`) and the machine's own
//!   tests run on.
//!   Enable it in `[dev-dependencies]` (or in a test-support crate); a
//!   production build does not need it.
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod active_view;
mod anti_entropy;
mod codec;
mod config;
mod dedup;
mod digest;
mod driver;
mod error;
mod event;
#[cfg(feature = "test-utils")]
mod fault;
#[cfg(any(test, feature = "test-utils"))]
pub mod harness;
mod id;
mod keyops;
mod keyring;
mod kv;
mod machine;
#[cfg(feature = "test-utils")]
mod mem;
mod members;
mod membership;
mod outbox;
#[cfg(test)]
mod protocol_example;
mod queue;
mod seal;
mod stats;
mod swim;
mod transport;

pub use codec::{Inbound, inbound_channel};
pub use config::{
    Config, ConfigError, MAX_CLUSTER_ID_LEN, MAX_KEY_LEN, MAX_META_BYTES, MAX_META_ENTRIES,
    MIN_MESSAGE_SIZE,
};
pub use driver::{Member, MemberOptions};
pub use error::{AddrError, GossipError, Rejection, TransportError};
pub use event::{BroadcastMsg, Event, KeyEntry, MemberInfo, MemberState};
#[cfg(feature = "test-utils")]
pub use fault::{FaultController, FaultyTransport};
pub use id::{NodeAddr, NodeId};
pub use keyops::{KeyringOutcome, KeyringReport};
pub use keyring::{KEY_ID_LEN, KEY_LEN, Key, KeyId, Keyring, KeyringError, KeyringOp, MAX_KEYS};
pub use machine::{Machine, Transmit};
#[cfg(feature = "test-utils")]
pub use mem::{MemNetwork, MemTransport};
pub use membership::{BoxFuture, Membership};
pub use seal::{SEAL_OVERHEAD, Sealer};
pub use stats::{KindCounts, MessageKind, RTT_BUCKETS_US, RttSnapshot, Stats, StatsSnapshot};
pub use transport::Transport;

/// The wire schema, re-exported for transports.
pub use gossip_proto::v1 as pb;
