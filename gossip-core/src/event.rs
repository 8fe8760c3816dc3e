//! What a member reports to its application: member views and events.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use uuid::Uuid;

use crate::id::{NodeAddr, NodeId};

/// SWIM state of a member (SWIM section 4.2, plus `Left` for a graceful leave).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; becomes `Dead` after the suspicion timeout unless it
    /// refutes by raising its incarnation.
    Suspect,
    /// Declared failed; kept as a tombstone, not listed by `members()`.
    Dead,
    /// Left gracefully; kept as a tombstone, not listed by `members()`.
    Left,
}

impl MemberState {
    /// Alive and suspect members are live: listed by `members()`, probed and
    /// gossiped with.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }

    /// Lower-case name, as in the admin API (`"alive"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }
}

/// A snapshot of one member as this member sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    /// Advertised address, `host:port`.
    pub addr: NodeAddr,
    /// Generation of the member's current life.
    pub generation: u64,
    /// Incarnation, raised by the member to refute suspicion.
    pub incarnation: u64,
    /// SWIM state.
    pub state: MemberState,
    /// The member's metadata, as last received.
    pub meta: BTreeMap<String, String>,
    /// Highest state version received from it (contiguously).
    pub version: u64,
    /// Time since this member last heard from it directly (any message, ack
    /// or gossip), if ever; zero for the local member.
    #[serde(serialize_with = "ser_opt_ms", rename = "last_heard_ms")]
    pub last_heard: Option<Duration>,
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

impl MemberInfo {
    /// The member's id (address and generation).
    pub fn id(&self) -> NodeId {
        NodeId::new(self.addr.clone(), self.generation)
    }
}

/// One key of an owner's state as seen by this member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyEntry {
    /// The value; UTF-8 values serialize as strings in JSON.
    #[serde(serialize_with = "ser_bytes")]
    pub value: Bytes,
    /// The owner's version of this write.
    pub version: u64,
    /// Remaining time to live, if the key has a TTL.
    #[serde(serialize_with = "ser_opt_ms", rename = "ttl_ms")]
    pub ttl: Option<Duration>,
}

fn ser_bytes<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(b) {
        Ok(text) => s.serialize_str(text),
        Err(_) => s.serialize_bytes(b),
    }
}

/// An application broadcast as delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BroadcastMsg {
    /// Deduplication id.
    pub uuid: Uuid,
    /// The member that broadcast it.
    pub origin: NodeId,
    /// The origin's broadcast counter.
    pub version: u64,
    /// Hops left when it arrived here.
    pub ttl: u32,
    /// The payload.
    #[serde(serialize_with = "ser_bytes")]
    pub payload: Bytes,
}

/// What a subscriber sees, in the order the member applied it
/// (requirement 10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member (or a new generation of one) became known and alive.
    Joined(MemberInfo),
    /// A live member's metadata or incarnation changed, or it refuted a
    /// suspicion.
    Updated(MemberInfo),
    /// A member missed its probes and is suspected.
    Suspected(NodeId),
    /// A member was declared dead.
    Failed(NodeId),
    /// A member left gracefully.
    Left(NodeId),
    /// A key of `owner` was set (`value` is `Some`) or deleted / expired
    /// (`None`).
    KeyChanged {
        /// The key's owner.
        owner: NodeAddr,
        /// The key.
        key: String,
        /// The new value, `None` if deleted or expired.
        value: Option<Bytes>,
        /// The owner's version of this change.
        version: u64,
    },
    /// A broadcast delivered for the first time.
    Broadcast(BroadcastMsg),
}
