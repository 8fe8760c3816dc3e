//! STUB: the sans-IO state machine. Being implemented; API is final.
#![allow(missing_docs, unused_variables, dead_code)]
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_proto::v1::Envelope;
use uuid::Uuid;

use crate::config::Config;
use crate::error::GossipError;
use crate::event::{Event, KeyEntry, MemberInfo};
use crate::id::{NodeAddr, NodeId};

/// A message to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Destination.
    pub to: NodeAddr,
    /// The message.
    pub msg: Envelope,
}

pub struct Machine {
    id: NodeId,
}

impl Machine {
    pub fn new(id: NodeId, config: Config, rng_seed: u64, now: Instant) -> Self {
        Self { id }
    }
    pub fn local_id(&self) -> &NodeId {
        &self.id
    }
    pub fn members(&self, now: Instant) -> Vec<MemberInfo> {
        Vec::new()
    }
    pub fn all_members(&self, now: Instant) -> Vec<MemberInfo> {
        Vec::new()
    }
    pub fn get_key(&self, now: Instant, owner: &NodeAddr, key: &str) -> Option<KeyEntry> {
        None
    }
    pub fn kv(&self, now: Instant) -> BTreeMap<NodeAddr, BTreeMap<String, KeyEntry>> {
        BTreeMap::new()
    }
    pub fn handle_message(&mut self, now: Instant, msg: Envelope) {}
    pub fn handle_timeout(&mut self, now: Instant) {}
    pub fn add_seed(&mut self, now: Instant, addr: NodeAddr) {}
    pub fn set_meta(&mut self, now: Instant, meta: BTreeMap<String, String>) -> Result<(), GossipError> {
        Ok(())
    }
    pub fn set_key(&mut self, now: Instant, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, GossipError> {
        Ok(0)
    }
    pub fn delete_key(&mut self, now: Instant, key: &str) -> Result<Option<u64>, GossipError> {
        Ok(None)
    }
    pub fn broadcast(&mut self, now: Instant, payload: Bytes, ttl: Option<u32>) -> Result<Uuid, GossipError> {
        Ok(Uuid::nil())
    }
    pub fn leave(&mut self, now: Instant) {}
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        None
    }
}
