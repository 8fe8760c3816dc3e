//! The sans-IO protocol state machine.
//!
//! Shape (after quinn-proto): getters take `&self`; `handle_*` feed network
//! and timer inputs; commands (`add_seed`, `set_key`, ...) come from the
//! application; after every input the caller drains `poll_transmit`, then
//! reads `poll_timeout`, then drains `poll_event`. Time (`now`) and the RNG
//! seed are inputs: the machine never reads a clock, opens a socket or spawns
//! a task, so a run is reproducible from its seed.
//!
//! Layout: this file holds the state, the commands, the one `match` on
//! message kinds and the timer dispatch; `timer.rs` the [`Timer`] enum and
//! its table; `probe.rs` the SWIM glue and the membership rules (state in
//! [`Swim`], `crate::swim`); `sync.rs` the anti-entropy glue (state in
//! [`AntiEntropy`], `crate::anti_entropy`; digests built by
//! `crate::digest`). Wire types are converted to internal ones
//! ([`Fact`]) once, where a message enters.

mod probe;
#[cfg(test)]
mod rules;
#[cfg(test)]
mod rules_detector;
mod sync;
#[cfg(test)]
mod tests;
mod timer;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, trace, warn};
use uuid::Uuid;

use crate::active_view::ActiveView;
use crate::anti_entropy::AntiEntropy;
use crate::config::{
    Config, ConfigError, ENVELOPE_OVERHEAD, MAX_KEY_LEN, MAX_META_BYTES, MAX_META_ENTRIES,
};
use crate::dedup::Dedup;
use crate::error::GossipError;
use crate::event::{BroadcastMsg, Event, KeyEntry, MemberInfo, MemberState};
use crate::id::{NodeAddr, NodeId};
use crate::kv::{ENTRY_OVERHEAD, KeyChange};
use crate::members::{Fact, Node, Table, fact_from_pb, fact_to_pb};
use crate::queue::TransmitQueue;
use crate::swim::Swim;
use probe::Rumor;
use timer::{Timer, TimerTable};

/// Bytes of each message given to piggybacked membership updates at most.
pub(crate) const UPDATE_BUDGET: usize = 1024;
/// Framing of one metadata entry in a delta, in bytes (as `kv.rs` counts it).
const META_ENTRY_OVERHEAD: usize = 8;
/// Framing of the metadata and its owner delta, in bytes.
const META_OVERHEAD: usize = 64;
/// A timer that fires later than this after its deadline means this
/// member was not running (a starved process, a stopped VM, a blocked
/// loop): its SWIM deadlines are pushed back (issue #10, item 2).
const STALL_TOLERANCE: Duration = Duration::from_millis(20);
/// Peers a leave is announced to directly; the rest hear it by gossip.
const LEAVE_FANOUT: usize = 64;

/// A message for the driver to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// Destination address.
    pub to: NodeAddr,
    /// The message; its encoded size never exceeds the configured
    /// `max_message_size`.
    pub msg: pb::Envelope,
}

struct Seed {
    next_attempt: Instant,
    backoff: Duration,
    answered: bool,
}

/// The gossip protocol of one member, with no I/O.
///
/// # Example
/// ```
/// use std::time::Instant;
/// use gossip_core::{Config, Machine, NodeAddr, NodeId};
///
/// let now = Instant::now();
/// let id = NodeId::new(NodeAddr::parse("127.0.0.1:7001").unwrap(), 1);
/// let mut m = Machine::new(id, Config::default(), 42, now).expect("the default config is valid");
/// m.add_seed(now, NodeAddr::parse("127.0.0.1:7002").unwrap());
/// let t = m.poll_transmit().expect("the seed is contacted at once");
/// assert_eq!(t.to.as_str(), "127.0.0.1:7002");
/// assert_eq!(m.members(now).len(), 1, "a seed is not a member until it answers");
/// ```
pub struct Machine {
    id: NodeId,
    cfg: Config,
    rng: ChaCha8Rng,
    table: Table,
    /// SWIM's state: probes, relays, suspicions, local health.
    swim: Swim,
    /// Anti-entropy's state: gossip ticks, silence at rest, dead contacts.
    sync: AntiEntropy,
    /// The peers contacted most recently, whose connections are warm.
    active: ActiveView,
    /// Every deadline that can wake this machine.
    timers: TimerTable,
    updates: TransmitQueue<NodeAddr, pb::MemberUpdate>,
    bcasts: TransmitQueue<Uuid, pb::Broadcast>,
    dedup: Dedup,
    seeds: HashMap<NodeAddr, Seed>,
    bcast_version: u64,
    left: bool,
    /// Wake-ups that came later than `STALL_TOLERANCE` after a deadline.
    stalls: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Addresses whose listener the driver should check
    /// ([`Machine::poll_refusal_check`]).
    refusal_checks: VecDeque<NodeAddr>,
    /// Warm-up requests sent so far (`Config::warm_up_peers`; sync.rs
    /// `warm_up`).
    warmed: usize,
}

impl Machine {
    /// A new member `id` with protocol `config`, its RNG seeded with
    /// `rng_seed`, at time `now`. It knows only itself until a seed answers
    /// or a peer contacts it.
    ///
    /// # Errors
    /// [`ConfigError`] if `config` fails [`Config::validate`]: the machine
    /// runs with exactly the values configured, or not at all.
    pub fn new(
        id: NodeId,
        config: Config,
        rng_seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
        // Spread the first probe over one period so members do not probe in
        // lockstep.
        let probe_offset = config.probe_interval.mul_f64(rng.random_range(0.0..1.0));
        let gossip_offset = config.gossip_interval.mul_f64(rng.random_range(0.0..1.0));
        let push_pull_offset = push_pull_wait(&config, &mut rng);
        let me = Fact {
            id: id.clone(),
            incarnation: 0,
            state: MemberState::Alive,
        };
        let mut timers = TimerTable::default();
        timers.set(Timer::ProbePeriod, now + probe_offset);
        timers.set(Timer::Gc, now + gc_period(&config));
        let mut m = Self {
            table: Table::new(me, now),
            swim: Swim::new(config.max_local_health),
            sync: AntiEntropy::new(
                config.gossip_interval,
                now + gossip_offset,
                now + push_pull_offset,
            ),
            active: ActiveView::new(config.active_view),
            timers,
            updates: TransmitQueue::new(),
            bcasts: TransmitQueue::new(),
            dedup: Dedup::new(config.dedup_capacity, config.dedup_max_age),
            seeds: HashMap::new(),
            bcast_version: 0,
            left: false,
            stalls: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            refusal_checks: VecDeque::new(),
            warmed: 0,
            id,
            cfg: config,
            rng,
        };
        m.rearm();
        Ok(m)
    }

    // ---------------------------------------------------------------- getters

    /// This member's id (advertised address and generation).
    pub fn local_id(&self) -> &NodeId {
        &self.id
    }

    /// The configuration in force: the one given to [`Machine::new`],
    /// unchanged.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This member's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.table.me().fact.incarnation
    }

    /// The live members (alive or suspect), this member included, sorted by
    /// address. Dead and left members are not listed (see
    /// [`Machine::all_members`]).
    pub fn members(&self, now: Instant) -> Vec<MemberInfo> {
        self.collect_members(now, true)
    }

    /// Every member known, tombstones (dead, left) included, sorted by
    /// address.
    pub fn all_members(&self, now: Instant) -> Vec<MemberInfo> {
        self.collect_members(now, false)
    }

    /// One member by address, tombstones included.
    pub fn member(&self, now: Instant, addr: &NodeAddr) -> Option<MemberInfo> {
        self.table.get(addr).map(|n| self.info(now, n))
    }

    fn collect_members(&self, now: Instant, live_only: bool) -> Vec<MemberInfo> {
        let mut v: Vec<MemberInfo> = self
            .table
            .iter()
            .filter(|n| !live_only || n.is_live())
            .map(|n| self.info(now, n))
            .collect();
        v.sort_by(|a, b| a.addr.cmp(&b.addr));
        v
    }

    fn info(&self, now: Instant, n: &Node) -> MemberInfo {
        MemberInfo {
            addr: n.fact.id.addr.clone(),
            generation: n.fact.id.generation,
            incarnation: n.fact.incarnation,
            state: n.fact.state,
            meta: n.owner.meta.clone(),
            version: n.owner.version,
            last_heard: if n.fact.id.addr == self.id.addr {
                Some(Duration::ZERO)
            } else {
                self.table
                    .last_heard(n)
                    .map(|t| now.saturating_duration_since(t))
            },
        }
    }

    /// Reads a key of any live owner: `None` if the key is unknown, deleted
    /// or expired, or its owner is not live (suspect counts as live; dead and
    /// left owners' keys are hidden).
    pub fn get_key(&self, now: Instant, owner: &NodeAddr, key: &str) -> Option<KeyEntry> {
        let n = self.table.get(owner).filter(|n| n.is_live())?;
        n.owner.get(now, key)
    }

    /// Every visible key (neither deleted nor expired) of every live owner,
    /// grouped by owner address; owners without such a key are left out.
    pub fn kv(&self, now: Instant) -> BTreeMap<NodeAddr, BTreeMap<String, KeyEntry>> {
        self.table
            .iter()
            .filter(|n| n.is_live())
            .map(|n| (n.fact.id.addr.clone(), n.owner.visible(now)))
            .filter(|(_, keys)| !keys.is_empty())
            .collect()
    }

    /// Fingerprint of this member's view of the live membership and state
    /// versions; equal on two members that agree.
    pub fn digest_hash(&self) -> u64 {
        self.table.root_hash()
    }

    /// Lifeguard's local health multiplier: 0 when healthy; probe interval
    /// and timeout are stretched by this plus one.
    pub fn local_health(&self) -> u32 {
        self.swim.local_health()
    }

    /// How many times this member's timers fired more than 20 ms late (its
    /// loop was not running: a starved process, a blocked thread); each
    /// pushed its SWIM deadlines back instead of judging probes it could
    /// not hear the answers to (issue #10, item 2).
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// Messages waiting in the dissemination queues (membership updates and
    /// broadcasts).
    pub fn queue_depth(&self) -> usize {
        self.updates.len() + self.bcasts.len()
    }

    /// Whether the next gossip tick sends a round to `fanout` peers: the
    /// member changed or learned something, or saw a differing fingerprint,
    /// within the last [`Config::active_rounds_for`] rounds, or its
    /// piggyback queues are not empty. A member that is not active is at
    /// rest: it sends its probes, a round per `push_pull_interval`, and
    /// answers what it receives.
    pub fn is_active(&self) -> bool {
        self.sync.is_active(self.queue_depth())
    }

    // --------------------------------------------------------------- commands

    /// Records an address to join through. It is contacted at once and
    /// retried with exponential backoff until it answers; it becomes a member
    /// only once it has answered (requirement 6).
    pub fn add_seed(&mut self, now: Instant, addr: NodeAddr) {
        if addr == self.id.addr || self.left {
            return;
        }
        self.skip_idle_ticks(now, false);
        self.seeds.insert(
            addr,
            Seed {
                next_attempt: now,
                backoff: self.cfg.seed_retry_initial,
                answered: false,
            },
        );
        self.mark_active();
        self.contact_seeds(now);
        self.rearm();
    }

    /// Replaces this member's metadata; every member eventually sees it.
    ///
    /// # Errors
    /// [`GossipError::TooManyMetaEntries`] past
    /// [`MAX_META_ENTRIES`](crate::MAX_META_ENTRIES) entries,
    /// [`GossipError::TooLarge`] past
    /// [`MAX_META_BYTES`](crate::MAX_META_BYTES) bytes, or if it could not
    /// travel in one message of the configured `max_message_size` (the
    /// size then counts 8 bytes of framing per entry plus 64),
    /// [`GossipError::ShutDown`] after leaving. Nothing changes on error.
    pub fn set_meta(
        &mut self,
        now: Instant,
        meta: BTreeMap<String, String>,
    ) -> Result<(), GossipError> {
        self.check_open()?;
        if meta.len() > MAX_META_ENTRIES {
            return Err(GossipError::TooManyMetaEntries(meta.len()));
        }
        let size = crate::config::meta_bytes(&meta);
        if size > MAX_META_BYTES {
            return Err(GossipError::TooLarge {
                what: "metadata",
                size,
                max: MAX_META_BYTES,
            });
        }
        // The metadata travels whole in one delta: at a small
        // `max_message_size` it must fit in one message body.
        let cost = size + META_ENTRY_OVERHEAD * meta.len() + META_OVERHEAD;
        let budget = self.body_budget();
        if cost > budget {
            return Err(GossipError::TooLarge {
                what: "metadata",
                size: cost,
                max: budget,
            });
        }
        self.skip_idle_ticks(now, false);
        let me = self.id.addr.clone();
        let version = self
            .table
            .update(&me, |n| n.owner.write_meta(meta))
            .unwrap_or(0);
        let info = self.info(now, self.table.me());
        self.events.push_back(Event::Updated(info));
        self.learned(now);
        self.push_own(now, version - 1);
        self.rearm();
        Ok(())
    }

    /// Sets one of this member's keys, optionally expiring everywhere after
    /// `ttl`; returns the write's version.
    ///
    /// # Errors
    /// [`GossipError::InvalidKey`] for an empty key or one over
    /// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes; [`GossipError::TooLarge`]
    /// if key and value could not fit in one message;
    /// [`GossipError::ShutDown`] after leaving. Nothing changes on error.
    pub fn set_key(
        &mut self,
        now: Instant,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<u64, GossipError> {
        self.check_open()?;
        check_key(key)?;
        let size = key.len() + value.len() + ENTRY_OVERHEAD;
        let max = self.body_budget();
        if size > max {
            return Err(GossipError::TooLarge {
                what: "value",
                size,
                max,
            });
        }
        let change = self.write_own(now, key, Some(value), ttl);
        self.rearm();
        Ok(change.map(|c| c.version).unwrap_or(0))
    }

    /// Deletes one of this member's keys (a versioned tombstone, so that the
    /// deletion spreads like a write); returns the deletion's version, or
    /// `None`, changing nothing, if the key is not set (never set, already
    /// deleted, or expired).
    ///
    /// # Errors
    /// [`GossipError::InvalidKey`]; [`GossipError::ShutDown`] after leaving.
    /// Nothing changes on error.
    pub fn delete_key(&mut self, now: Instant, key: &str) -> Result<Option<u64>, GossipError> {
        self.check_open()?;
        check_key(key)?;
        let change = self.write_own(now, key, None, None);
        self.rearm();
        Ok(change.map(|c| c.version))
    }

    fn write_own(
        &mut self,
        now: Instant,
        key: &str,
        value: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Option<KeyChange> {
        self.skip_idle_ticks(now, false);
        let me = self.id.addr.clone();
        let change = self
            .table
            .update(&me, |n| n.owner.write(now, key, value, ttl))
            .flatten()?;
        if let Some(t) = ttl.and_then(|t| now.checked_add(t)) {
            self.expire_at(t);
        }
        self.key_event(me, change.clone());
        self.learned(now);
        self.push_own(now, change.version - 1);
        Some(change)
    }

    /// Broadcasts `payload` to every live member, each delivering it once
    /// (this member too); `ttl` bounds how many hops it is forwarded (`None`:
    /// the configured `broadcast_ttl`). Returns the broadcast's UUID.
    ///
    /// # Errors
    /// [`GossipError::TooLarge`] if the payload could not fit in one message;
    /// [`GossipError::ShutDown`] after leaving.
    pub fn broadcast(
        &mut self,
        now: Instant,
        payload: Bytes,
        ttl: Option<u32>,
    ) -> Result<Uuid, GossipError> {
        self.check_broadcast(&payload)?;
        let uuid = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
        self.broadcast_with_id(now, uuid, payload, ttl)?;
        Ok(uuid)
    }

    /// Broadcasts `payload` under the caller's `uuid` (e.g. a client that
    /// retries). Returns false, and sends and delivers nothing, if this
    /// member has already seen a broadcast with that id.
    ///
    /// # Errors
    /// As [`Machine::broadcast`]; nothing is changed.
    pub fn broadcast_with_id(
        &mut self,
        now: Instant,
        uuid: Uuid,
        payload: Bytes,
        ttl: Option<u32>,
    ) -> Result<bool, GossipError> {
        self.check_broadcast(&payload)?;
        if self.dedup.contains(now, uuid) {
            return Ok(false);
        }
        self.skip_idle_ticks(now, false);
        self.bcast_version += 1;
        let b = pb::Broadcast {
            uuid: uuid.as_bytes().to_vec().into(),
            origin: Some(self.id.to_pb()),
            version: self.bcast_version,
            ttl: ttl.unwrap_or(self.cfg.broadcast_ttl),
            payload,
        };
        self.receive_broadcast(now, b, None);
        self.rearm();
        Ok(true)
    }

    fn check_broadcast(&self, payload: &Bytes) -> Result<(), GossipError> {
        self.check_open()?;
        let max = self.body_budget();
        if payload.len() + 128 > max {
            return Err(GossipError::TooLarge {
                what: "payload",
                size: payload.len(),
                max: max - 128,
            });
        }
        Ok(())
    }

    /// Leaves the cluster gracefully: marks itself `left` and announces it
    /// directly to up to 64 live peers (the rest hear it by gossip). After
    /// this the machine sends nothing more and ignores input.
    pub fn leave(&mut self, now: Instant) {
        if self.left {
            return;
        }
        let me = self.id.addr.clone();
        self.table.update(&me, |n| n.fact.state = MemberState::Left);
        let update = self.my_update();
        let peers = self.table.random_live(&mut self.rng, LEAVE_FANOUT, &[]);
        debug!(peers = peers.len(), "leaving");
        for p in peers {
            self.send_with(&p, Body::Gossip(pb::Gossip {}), vec![update.clone()]);
        }
        let _ = now;
        self.left = true;
        self.timers = TimerTable::default();
    }

    fn check_open(&self) -> Result<(), GossipError> {
        if self.left {
            Err(GossipError::ShutDown)
        } else {
            Ok(())
        }
    }

    // ----------------------------------------------------------------- inputs

    /// Handles one received message. Messages from another cluster, from
    /// this member itself, or without a valid sender are ignored (transports
    /// reject them before this point through [`Inbound`](crate::Inbound)).
    pub fn handle_message(&mut self, now: Instant, msg: pb::Envelope) {
        if self.left || msg.cluster_id != self.cfg.cluster_id {
            return;
        }
        let Some(from) = msg.from.as_ref().and_then(|f| NodeId::from_pb(f).ok()) else {
            return;
        };
        if from.addr == self.id.addr {
            return;
        }
        self.skip_idle_ticks(now, false);
        trace!(from = %from, "message");
        if let Some(seed) = self.seeds.get_mut(&from.addr).filter(|s| !s.answered) {
            seed.answered = true;
            // Joined (or joined again): spread what the seed brings.
            self.mark_active();
        }
        // The sender vouches for itself.
        let sender = Fact {
            id: from.clone(),
            incarnation: msg.incarnation,
            state: MemberState::Alive,
        };
        self.apply_update(now, sender, Some(&from.addr), true, &Rumor::default());
        self.table.heard(&from.addr, now);
        self.active.touch(&from.addr);
        // A message from a member this one suspects proves it runs: the
        // suspicion here ends (an ack that comes late, after the probe
        // period, included). Its state stays `suspect` until it refutes, and
        // another member's verdict starts a new suspicion.
        if self.swim.is_suspected(&from.addr, from.generation) {
            debug!(member = %from, "suspicion cleared: the member answered");
            self.swim.clear_suspicion(&from.addr);
        }
        for u in &msg.updates {
            if let Some(fact) = fact_from_pb(u) {
                let rumor = Rumor::of(u);
                self.apply_update(now, fact, Some(&from.addr), true, &rumor);
            }
        }
        for b in msg.broadcasts {
            self.receive_broadcast(now, b, Some(&from.addr));
        }
        if let Some(body) = msg.body {
            match body {
                Body::Ping(p) => self.on_ping(&from, p),
                Body::Ack(a) => self.on_ack(now, &from, a),
                Body::PingReq(r) => self.on_ping_req(now, &from, r),
                Body::SyncRequest(r) => self.on_sync_request(now, &from, r),
                Body::SyncBuckets(b) => self.on_buckets(now, &from, b),
                Body::SyncDigest(d) => self.on_digest(now, &from, d),
                Body::Delta(d) => self.on_delta(now, &from, d),
                Body::Nack(n) => self.on_nack(now, n),
                Body::Gossip(_) => {}
                // Keyring changes are the driver's (`keyops.rs`): the
                // keyring is not protocol state. A driver that does not
                // encrypt has nothing to change.
                Body::KeyringRequest(_) | Body::KeyringAnswer(_) => {}
            }
        }
        self.rearm();
    }

    /// A message to `to` could not be delivered. `refused` says the
    /// transport got a definitive answer that nothing listens at `to`
    /// ([`TransportError::Refused`](crate::TransportError::Refused): TCP
    /// connection refused, ICMP port unreachable); other failures
    /// (timeouts, resets, TLS) are `false` and change nothing here, as a
    /// lost message would not. A refusal of this member's probe target, or
    /// of the target of an indirect probe it relays, is evidence for the
    /// failure detector's fast path (issue #10, item 4).
    pub fn handle_send_error(&mut self, now: Instant, to: &NodeAddr, refused: bool) {
        if self.left || !refused {
            return;
        }
        self.skip_idle_ticks(now, false);
        self.on_refused(now, to);
        self.rearm();
    }

    /// Runs every timer that is due at `now` (`Timer::ALL` order: probes,
    /// suspicion timeouts, seed retries, key expiry, tombstone collection,
    /// then the gossip tick or the extra round, which send what the others
    /// taught this member).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.skip_idle_ticks(now, false);
        if let Some(due) = self.timers.next().filter(|t| *t <= now) {
            let late = now - due;
            if late > STALL_TOLERANCE {
                self.on_stall(now, late);
            }
        }
        for timer in Timer::ALL {
            if self.timers.take_due(timer, now) {
                self.on_timer(now, timer);
                // What the timer changed may bring a later one forward (a
                // verdict that makes this member active arms the gossip tick
                // at once).
                self.rearm();
            }
        }
        // An idle tick due now is counted, as a wake-up for it would.
        self.skip_idle_ticks(now, true);
        self.rearm();
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::IndirectProbe => self.probe_indirectly(now),
            Timer::ProbePeriod => self.end_probe_period(now),
            Timer::RelayNack => self.send_due_nacks(now),
            Timer::Suspicion => self.expire_suspicions(now),
            Timer::SeedRetry => self.contact_seeds(now),
            Timer::KeyExpiry => self.expire_keys(now),
            Timer::Gc => {
                self.timers.set(Timer::Gc, now + gc_period(&self.cfg));
                self.collect_garbage(now);
            }
            Timer::GossipTick => {
                self.timers.stop(Timer::ExtraRound);
                self.gossip_round(now);
            }
            Timer::ExtraRound => self.extra_round(now),
        }
    }

    /// Refreshes the timers derived from the sub-protocols' state after an
    /// input: the indirect-probe fallback, the first suspicion deadline,
    /// the next seed retry and the next gossip tick with work. The others
    /// (probe period, key expiry, collection, extra round) are armed where
    /// they change.
    fn rearm(&mut self) {
        if self.left {
            return;
        }
        self.timers
            .set_opt(Timer::IndirectProbe, self.swim.indirect_deadline());
        self.timers
            .set_opt(Timer::Suspicion, self.swim.next_suspicion_deadline());
        self.timers
            .set_opt(Timer::RelayNack, self.swim.next_nack_deadline());
        let seed = self
            .seeds
            .values()
            .filter(|s| !s.answered)
            .map(|s| s.next_attempt)
            .min();
        self.timers.set_opt(Timer::SeedRetry, seed);
        let tick = self.sync.next_busy_tick(
            self.queue_depth(),
            self.timers.get(Timer::ExtraRound).is_some(),
            self.table.live_peers().len() > 0,
        );
        self.timers.set_opt(Timer::GossipTick, tick);
    }

    // ---------------------------------------------------------------- outputs

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        pop_shrinking(&mut self.transmits)
    }

    /// When [`Machine::handle_timeout`] must next be called; `None` after
    /// leaving.
    ///
    /// The earliest of the next probe, probe timeout, suspicion expiry, key
    /// expiry, tombstone collection, seed retry, pending extra round, and
    /// the next gossip tick *that has work*: every tick while the member is
    /// active ([`Machine::is_active`]); at rest only the tick of the next
    /// background push-pull and, while dead members are known, every
    /// `DEAD_CONTACT_EVERY`th tick. A quiet member therefore sleeps from
    /// probe to probe instead of waking every `gossip_interval`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next event for the application, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        pop_shrinking(&mut self.events)
    }

    /// The next address whose listener the caller should check: is anything
    /// still listening there? The driver asks its transport
    /// ([`Transport::check_refused`](crate::Transport::check_refused)) and,
    /// if the answer is "refused", reports it as a refused send,
    /// [`Machine::handle_send_error`]`(now, addr, true)`; any other answer
    /// (something listens, no answer in time, the transport cannot tell) is
    /// not reported.
    ///
    /// Asked only on the failure path, so a healthy cluster pays nothing: by
    /// a prober whose direct probe went unanswered for its probe timeout,
    /// and by a relay asked to probe a member indirectly. It serves
    /// transports whose sends succeed although nothing listens (QUIC over
    /// an unconnected UDP socket, a message lost in a stale stream): the
    /// refusal fast path (issue #10, item 4) then works on them too.
    pub fn poll_refusal_check(&mut self) -> Option<NodeAddr> {
        pop_shrinking(&mut self.refusal_checks)
    }

    // ---------------------------------------------------------------- helpers

    /// Room for a message body: the maximum size less the envelope and the
    /// piggyback allowance.
    fn body_budget(&self) -> usize {
        self.cfg.max_message_size - ENVELOPE_OVERHEAD - UPDATE_BUDGET
    }

    fn my_update(&self) -> pb::MemberUpdate {
        fact_to_pb(&self.table.me().fact)
    }

    /// Queues a message to `to`, piggybacking queued updates (those about the
    /// recipient first) and broadcasts within the size limit.
    fn send(&mut self, to: &NodeAddr, body: Body) {
        self.send_with(to, body, Vec::new());
    }

    fn send_with(&mut self, to: &NodeAddr, mut body: Body, forced: Vec<pb::MemberUpdate>) {
        // Every probe and ack carries this member's digest fingerprint, so
        // that probes, which run at rest, reveal a divergence (sync.rs
        // `on_fingerprint`).
        let (hash, members) = (self.table.root_hash(), self.table.live_count() as u32);
        match &mut body {
            Body::Ping(p) => (p.digest_hash, p.members) = (hash, members),
            Body::Ack(a) => (a.digest_hash, a.members) = (hash, members),
            _ => {}
        }
        let mut msg = pb::Envelope {
            cluster_id: self.cfg.cluster_id.clone(),
            from: Some(self.id.to_pb()),
            incarnation: self.table.me().fact.incarnation,
            updates: forced,
            broadcasts: Vec::new(),
            body: Some(body),
            // Sealing is the driver's (issue #12).
            sealed: bytes::Bytes::new(),
        };
        let used = msg.encoded_len();
        let room = self.cfg.max_message_size.saturating_sub(used + 64);
        let limit = self.cfg.retransmit_limit(self.table.live_count());
        let updates = self.updates.take(room.min(UPDATE_BUDGET), limit, Some(to));
        let used_updates: usize = updates.iter().map(|u| u.encoded_len() + 2).sum();
        msg.updates.extend(updates);
        msg.broadcasts = self
            .bcasts
            .take(room.saturating_sub(used_updates), limit, None);
        let size = msg.encoded_len();
        if size > self.cfg.max_message_size {
            // Only a record this member did not build can do this (a peer's
            // metadata or key near the size limit, forwarded as it came):
            // peers would reject the message, so it is not sent, and
            // anti-entropy carries the record in bounded pieces instead.
            warn!(%to, size, max = self.cfg.max_message_size, "message over max_message_size not sent");
            return;
        }
        self.active.touch(to);
        self.table.contacted(to);
        self.transmits.push_back(Transmit {
            to: to.clone(),
            msg,
        });
    }

    /// Silence at rest: this member saw that its view differs from a peer's
    /// (a differing fingerprint), or is joining, so its gossip rounds run for
    /// the next [`Config::active_rounds_for`] rounds. See also
    /// [`Machine::learned`].
    fn mark_active(&mut self) {
        let rounds = self.cfg.active_rounds_for(self.table.live_count());
        self.sync.mark_active(rounds);
    }

    /// This member changed or learned something (a write, a membership
    /// change, a delta with news): it becomes active, so the rounds follow a
    /// change through the cluster and stop once nobody has anything new; and
    /// it runs a round at once, outside its ticks, at most once per tick.
    ///
    /// The round at once replaces the pull of the quiet members. When every
    /// member ran rounds all the time, the members not yet informed pulled
    /// from the informed ones while those pushed; quiet members do not pull,
    /// so with rounds on ticks alone a change would spread by push only, one
    /// gossip interval per hop (without eager push, 5 rounds instead of 2.4
    /// at 1,000 members in the simulator). It is not run on a mere
    /// fingerprint mismatch: the member is then as likely to be the stale
    /// side, and its round would only carry its stale fingerprint. The
    /// regular ticks keep their phase: were the extra round to restart them,
    /// every member reached by one eager push would tick in step, and a
    /// member missed by all of them would wait a whole interval.
    fn learned(&mut self, now: Instant) {
        self.mark_active();
        if self.timers.get(Timer::ExtraRound).is_none() && self.sync.ask_extra_round() {
            self.timers.set(Timer::ExtraRound, now);
        }
    }

    /// Sends a message carrying only piggybacked data to `k` random live
    /// peers (eager push of fresh updates and broadcasts).
    fn push_gossip(&mut self, k: usize, exclude: &[&NodeAddr]) {
        let peers = self.table.random_live(&mut self.rng, k, exclude);
        for p in peers {
            self.send(&p, Body::Gossip(pb::Gossip {}));
        }
    }

    fn key_event(&mut self, owner: NodeAddr, c: KeyChange) {
        self.events.push_back(Event::KeyChanged {
            owner,
            key: c.key,
            value: c.value,
            version: c.version,
        });
    }

    /// Delivers a broadcast once and forwards it while it has hops left
    /// (`from` is `None` for the local member's own broadcast).
    fn receive_broadcast(&mut self, now: Instant, mut b: pb::Broadcast, from: Option<&NodeAddr>) {
        let Ok(uuid) = Uuid::from_slice(&b.uuid) else {
            return;
        };
        let Some(origin) = b.origin.as_ref().and_then(|o| NodeId::from_pb(o).ok()) else {
            return;
        };
        if !self.dedup.insert(now, uuid) {
            return;
        }
        self.events.push_back(Event::Broadcast(BroadcastMsg {
            uuid,
            origin: origin.clone(),
            version: b.version,
            ttl: b.ttl,
            payload: b.payload.clone(),
        }));
        if b.ttl == 0 {
            return;
        }
        if from.is_some() {
            b.ttl -= 1;
        }
        let size = b.encoded_len() + 2;
        self.bcasts.push(uuid, b, size);
        if self.cfg.eager_push || from.is_none() {
            let exclude: Vec<&NodeAddr> = std::iter::once(&origin.addr).chain(from).collect();
            self.push_gossip(self.cfg.fanout, &exclude);
        }
    }

    /// An isolated member (its last live peer just failed or left) goes back
    /// to its seeds: every seed that answered once is contacted again at
    /// once.
    fn rejoin_if_isolated(&mut self, now: Instant) {
        if self.left || self.table.live_peers().len() > 0 {
            return;
        }
        // The seed-retry timer follows in `rearm`, after the input.
        for s in self.seeds.values_mut().filter(|s| s.answered) {
            s.answered = false;
            s.next_attempt = now;
            s.backoff = self.cfg.seed_retry_initial;
        }
    }

    /// Contacts every seed due at `now` and backs it off.
    fn contact_seeds(&mut self, now: Instant) {
        let mut due: Vec<NodeAddr> = self
            .seeds
            .iter()
            .filter(|(_, s)| !s.answered && s.next_attempt <= now)
            .map(|(a, _)| a.clone())
            .collect();
        due.sort(); // HashMap order differs between processes.
        for addr in due {
            if let Some(s) = self.seeds.get_mut(&addr) {
                s.next_attempt = now + s.backoff;
                s.backoff = (s.backoff * 2).min(self.cfg.seed_retry_max);
            }
            debug!(seed = %addr, "contacting seed");
            let req = self.sync_request();
            self.send(&addr, req);
        }
    }

    fn expire_keys(&mut self, now: Instant) {
        let mut addrs: Vec<NodeAddr> = self.table.iter().map(|n| n.fact.id.addr.clone()).collect();
        addrs.sort(); // Events in the same order in every process.
        let mut next: Option<Instant> = None;
        for addr in addrs {
            let is_owner = addr == self.id.addr;
            let changes = self
                .table
                .update(&addr, |n| {
                    let c = n.owner.expire(now, is_owner);
                    for e in n.owner.keys.values() {
                        if let Some(t) = e.expires_at.filter(|_| !e.deleted) {
                            next = Some(next.map_or(t, |x: Instant| x.min(t)));
                        }
                    }
                    c
                })
                .unwrap_or_default();
            let mut first_version = None;
            for c in changes {
                first_version.get_or_insert(c.version);
                self.key_event(addr.clone(), c);
            }
            if first_version.is_some() {
                self.learned(now);
            }
            if let (true, Some(v)) = (is_owner, first_version) {
                self.push_own(now, v - 1);
            }
        }
        self.timers.set_opt(Timer::KeyExpiry, next);
    }

    /// A key expires at `t`: the key-expiry timer fires by then.
    fn expire_at(&mut self, t: Instant) {
        let at = self.timers.get(Timer::KeyExpiry).map_or(t, |e| e.min(t));
        self.timers.set(Timer::KeyExpiry, at);
    }

    fn collect_garbage(&mut self, now: Instant) {
        let ttl = self.cfg.tombstone_ttl;
        let gone: Vec<NodeAddr> = self
            .table
            .iter()
            .filter(|n| !n.is_live() && now.saturating_duration_since(self.table.since(n)) >= ttl)
            .map(|n| n.fact.id.addr.clone())
            .collect();
        for a in gone {
            self.table.remove(&a);
        }
        let table = &self.table;
        self.sync.dead_pool.retain(|a| table.get(a).is_some());
        let addrs: Vec<NodeAddr> = self.table.iter().map(|n| n.fact.id.addr.clone()).collect();
        for a in addrs {
            self.table.update(&a, |n| n.owner.gc(now, ttl));
        }
        self.swim.expire_relays(now);
        self.dedup.expire(now);
    }
}

/// Wait before a quiet member's next background round: uniform in `[0.75,
/// 1]` times `push_pull_interval`, so that members that went quiet together
/// do not fire together.
fn push_pull_wait(cfg: &Config, rng: &mut ChaCha8Rng) -> Duration {
    cfg.push_pull_interval.mul_f64(rng.random_range(0.75..=1.0))
}

fn gc_period(cfg: &Config) -> Duration {
    (cfg.tombstone_ttl / 4).max(Duration::from_millis(100))
}

fn check_key(key: &str) -> Result<(), GossipError> {
    if !crate::config::key_len_ok(key) {
        return Err(GossipError::InvalidKey(format!(
            "a key must be 1 to {MAX_KEY_LEN} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// Capacity an output queue keeps once drained.
const OUTPUT_KEEP: usize = 64;

/// Pops the front of an output queue; once it is drained, gives back the
/// memory of a burst (a delta naming thousands of new members queues
/// thousands of events), which a simulator of many machines cannot afford
/// to keep per machine.
fn pop_shrinking<T>(q: &mut VecDeque<T>) -> Option<T> {
    let x = q.pop_front();
    if x.is_none() && q.capacity() > OUTPUT_KEEP {
        q.shrink_to(OUTPUT_KEEP);
    }
    x
}
