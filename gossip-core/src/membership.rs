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
use crate::keyops::KeyringReport;
use crate::keyring::{KeyId, KeyringOp};
use crate::stats::StatsSnapshot;

/// A boxed future, so that [`Membership`] stays object safe
/// (`Arc<dyn Membership>` serves any transport).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an application does with a running member: read the membership and
/// the key/value state, write its own metadata and keys, broadcast, watch
/// events, and leave. Implemented by [`Member`](crate::Member) for every
/// transport.
///
/// The commands it shares with the sans-IO [`Machine`](crate::Machine) are
/// documented once, on the `Machine` method of the same name, which the
/// member runs at the current time: its result, errors and guarantees are
/// this method's. [`GossipError::ShutDown`] there means the member has
/// left or shut down.
pub trait Membership: Send + Sync {
    /// This member's id. See [`Machine::local_id`](crate::Machine::local_id).
    fn local_id(&self) -> NodeId;

    /// The live members. See [`Machine::members`](crate::Machine::members).
    fn members(&self) -> Vec<MemberInfo>;

    /// Every member known, tombstones included. See
    /// [`Machine::all_members`](crate::Machine::all_members).
    fn all_members(&self) -> Vec<MemberInfo>;

    /// Records an address to join through. See
    /// [`Machine::add_seed`](crate::Machine::add_seed).
    fn add_seed(&self, addr: NodeAddr);

    /// Replaces this member's metadata. See
    /// [`Machine::set_meta`](crate::Machine::set_meta).
    fn set_meta(&self, meta: BTreeMap<String, String>) -> Result<(), GossipError>;

    /// Sets one of this member's keys. See
    /// [`Machine::set_key`](crate::Machine::set_key).
    fn set_key(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, GossipError>;

    /// Deletes one of this member's keys. See
    /// [`Machine::delete_key`](crate::Machine::delete_key).
    fn delete_key(&self, key: &str) -> Result<Option<u64>, GossipError>;

    /// Reads a key of a live owner. See
    /// [`Machine::get_key`](crate::Machine::get_key).
    fn get_key(&self, owner: &NodeAddr, key: &str) -> Option<KeyEntry>;

    /// Every visible key of every live owner. See
    /// [`Machine::kv`](crate::Machine::kv).
    fn kv(&self) -> BTreeMap<NodeAddr, BTreeMap<String, KeyEntry>>;

    /// Broadcasts `payload` to every live member. See
    /// [`Machine::broadcast`](crate::Machine::broadcast).
    fn broadcast(&self, payload: Bytes, ttl_hops: Option<u32>) -> Result<Uuid, GossipError>;

    /// Broadcasts under the caller's `uuid`, so that a client can retry
    /// safely. See [`Machine::broadcast_with_id`](crate::Machine::broadcast_with_id).
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

    /// The ids of this member's keys, the primary first, if it encrypts
    /// (issue #12). Ids name keys without revealing them.
    fn key_ids(&self) -> Option<Vec<KeyId>>;

    /// Applies `op` to this member's keyring and asks every live member to
    /// apply it too (issue #12): the answers, or their absence, per member,
    /// within `timeout`. Rotation: `Install` the new key, then `Use` it,
    /// then `Remove` the old one, each once every member has done the step
    /// before (members accept every installed key meanwhile).
    ///
    /// # Errors
    /// [`GossipError::Keyring`] with
    /// [`KeyringError::NotEnabled`](crate::KeyringError::NotEnabled) if this
    /// member does not encrypt; [`GossipError::ShutDown`] if it is not
    /// running. Refusals of single members (including this one) are in the
    /// report, not errors.
    fn change_keyring(
        &self,
        op: KeyringOp,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<KeyringReport, GossipError>>;

    /// Leaves gracefully: announces the leave to peers, then stops every task
    /// and returns when they have ended. Idempotent.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
