//! The public face of a member, whatever its transport.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::GossipError;
use crate::event::{Event, KeyEntry, MemberInfo};
use crate::id::{NodeAddr, NodeId};
use crate::stats::StatsSnapshot;

/// A boxed future, so that [`Membership`] stays object safe
/// (`Arc<dyn Membership>` serves any transport).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an application does with a running member: read the membership and
/// the key/value state, write its own metadata and keys, broadcast, watch
/// events, and leave. Implemented by [`Member`](crate::Member) for every
/// transport.
pub trait Membership: Send + Sync {
    /// This member's id (advertised address and generation).
    fn local_id(&self) -> NodeId;

    /// The live members (alive or suspect), this member included, sorted by
    /// address. Dead and left members are not listed.
    fn members(&self) -> Vec<MemberInfo>;

    /// Every member known, tombstones (dead, left) included, sorted by
    /// address.
    fn all_members(&self) -> Vec<MemberInfo>;

    /// Records an address to join through. It is contacted at once and
    /// retried with exponential backoff until it answers; it becomes a member
    /// only once it has answered (requirement 6).
    fn add_seed(&self, addr: NodeAddr);

    /// Replaces this member's metadata; every member eventually sees it.
    ///
    /// # Errors
    /// [`GossipError::TooManyMetaEntries`] or [`GossipError::TooLarge`] past
    /// the limits [`MAX_META_ENTRIES`](crate::MAX_META_ENTRIES) and
    /// [`MAX_META_BYTES`](crate::MAX_META_BYTES); [`GossipError::ShutDown`].
    fn set_meta(&self, meta: BTreeMap<String, String>) -> Result<(), GossipError>;

    /// Sets one of this member's keys, optionally expiring everywhere after
    /// `ttl`. Returns the version of the write.
    ///
    /// # Errors
    /// [`GossipError::InvalidKey`], [`GossipError::TooLarge`] if the value
    /// could not fit in one message, [`GossipError::ShutDown`].
    fn set_key(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, GossipError>;

    /// Deletes one of this member's keys (a versioned tombstone). Returns the
    /// version of the deletion, or `None` if the key did not exist.
    ///
    /// # Errors
    /// [`GossipError::InvalidKey`], [`GossipError::ShutDown`].
    fn delete_key(&self, key: &str) -> Result<Option<u64>, GossipError>;

    /// Reads a key of any owner (`None` if unknown, deleted or expired).
    fn get_key(&self, owner: &NodeAddr, key: &str) -> Option<KeyEntry>;

    /// Every live key of every live owner, grouped by owner address.
    fn kv(&self) -> BTreeMap<NodeAddr, BTreeMap<String, KeyEntry>>;

    /// Broadcasts `payload` to every live member, each delivering it once;
    /// `ttl_hops` bounds how far it is forwarded (`None`: the configured
    /// default). Returns the broadcast's UUID.
    ///
    /// # Errors
    /// [`GossipError::TooLarge`] if the payload could not fit in one message,
    /// [`GossipError::ShutDown`].
    fn broadcast(&self, payload: Bytes, ttl_hops: Option<u32>) -> Result<Uuid, GossipError>;

    /// As [`Membership::broadcast`] under the caller's `uuid`, so that a
    /// client can retry safely: returns false, and sends and delivers
    /// nothing, if this member has already seen a broadcast with that id.
    ///
    /// # Errors
    /// As [`Membership::broadcast`].
    fn broadcast_with_id(
        &self,
        uuid: Uuid,
        payload: Bytes,
        ttl_hops: Option<u32>,
    ) -> Result<bool, GossipError>;

    /// Subscribes to events from now on, in the order they happen. A
    /// subscriber that falls more than 4096 events behind is told so by
    /// `RecvError::Lagged` and misses the oldest.
    fn subscribe(&self) -> broadcast::Receiver<Event>;

    /// Message counters.
    fn stats(&self) -> StatsSnapshot;

    /// Leaves gracefully: announces the leave to peers, then stops every task
    /// and returns when they have ended. Idempotent.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
