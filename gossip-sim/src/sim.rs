//! The discrete-event engine: one binary heap of timestamped entries
//! (message deliveries, machine timer wake-ups, scripted actions) processed
//! in `(time, sequence)` order under virtual time.
//!
//! Cost per entry is independent of the cluster size (a heap operation, a
//! hash lookup of the destination address, the encoded size of each message
//! sent); the only O(N) steps are the scripted actions (crash, partition)
//! and the optional settle check. Timer wake-ups are invalidated lazily: each
//! member has a timer generation, bumped whenever its deadline changes, and
//! a popped wake-up whose generation is stale is ignored.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use gossip_core::{Event, Machine, NodeAddr, NodeId, Transmit};
use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;
use prost::Message;
use prost::bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Action, SimConfig, nanos};
use crate::error::SimError;
use crate::observe::Observer;

/// Generation of a member's first life; each restart adds one. Real members
/// use milliseconds since the Unix epoch, so this keeps encoded sizes
/// realistic (a 6-byte varint, not 1).
pub(crate) const GEN_BASE: u64 = 1_750_000_000_000;
/// Most lives of one member (the observer stores `life + 1` in a byte).
const MAX_LIVES: u8 = 254;
/// Where a stalled timer (a machine whose deadline did not move past `now`
/// after `handle_timeout(now)`) is pushed to, so the run cannot spin.
const STALL_NS: u64 = 1_000_000;
/// Seeds are handed to a member this far apart. The machine retries every
/// due seed in one pass over a `HashMap`, whose order differs between
/// processes, and that order decides which retry carries which piggybacked
/// updates; distinct retry instants (the backoff keeps them 1 us apart) keep
/// runs reproducible.
const SEED_SPACING_NS: u64 = 1_000;
/// Longest stretch of virtual time between two calls of a phase's `tick`.
const TICK_NS: u64 = 1_000_000;

/// Names of the message kinds, indexed like the traffic counters.
pub(crate) const KINDS: [&str; 9] = [
    "ping",
    "ack",
    "ping_req",
    "sync_request",
    "sync_buckets",
    "sync_digest",
    "delta",
    "gossip",
    "empty",
];

fn kind(msg: &pb::Envelope) -> usize {
    match msg.body {
        Some(Body::Ping(_)) => 0,
        Some(Body::Ack(_)) => 1,
        Some(Body::PingReq(_)) => 2,
        Some(Body::SyncRequest(_)) => 3,
        Some(Body::SyncBuckets(_)) => 4,
        Some(Body::SyncDigest(_)) => 5,
        Some(Body::Delta(_)) => 6,
        Some(Body::Gossip(_)) => 7,
        None => 8,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    /// A member's timer, valid if `timer_gen` still matches.
    Timer { node: u32, timer_gen: u32 },
    /// A message in `slab[slot]`.
    Deliver { slot: u32 },
    /// A start or scripted action in `tasks[idx]`.
    Task { idx: u32 },
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: u64,
    /// Insertion order: ties in time are processed first in, first out,
    /// which makes the order total and the run deterministic.
    seq: u64,
    what: What,
}

struct InFlight {
    from: u32,
    to: u32,
    msg: pb::Envelope,
}

enum Task {
    Start(u32),
    /// Gives member `node`, if still in life `life`, seed `seed`.
    AddSeed {
        node: u32,
        life: u8,
        seed: u32,
    },
    Act(Action),
}

/// One simulated member slot: an address and, while running, a machine.
pub(crate) struct Node {
    pub(crate) addr: NodeAddr,
    pub(crate) machine: Option<Machine>,
    /// Current (or last) life; the generation is `GEN_BASE + life`.
    pub(crate) life: u8,
    pub(crate) started: bool,
    timer_at: Option<u64>,
    timer_gen: u32,
    pub(crate) group: u16,
}

impl Node {
    pub(crate) fn running(&self) -> bool {
        self.machine.is_some()
    }
}

/// Messages sent and bytes sent, by kind, plus the other cumulative counters
/// that a measurement window is the difference of.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) msgs: [u64; KINDS.len()],
    pub(crate) bytes: [u64; KINDS.len()],
    /// Bytes of piggybacked membership updates and broadcasts.
    pub(crate) piggyback_bytes: u64,
    /// Integral of the number of running members over virtual time, in
    /// member-nanoseconds.
    pub(crate) member_ns: u128,
    pub(crate) false_deaths: u64,
    pub(crate) partition_deaths: u64,
    pub(crate) false_suspicions: u64,
    pub(crate) dropped_loss: u64,
    pub(crate) dropped_partition: u64,
    pub(crate) dropped_down: u64,
    pub(crate) dropped_unknown: u64,
    /// Virtual time of the snapshot, ns.
    pub(crate) at: u64,
}

/// A phase of the run: when it reached its goal, and the counters at its
/// start and end.
#[derive(Clone, Debug)]
pub(crate) struct PhaseMark {
    /// Warm-up: virtual time of convergence; settle: time it took.
    pub(crate) done_at: Option<u64>,
    pub(crate) start: Counters,
    pub(crate) end: Counters,
}

/// A simulated cluster of real [`Machine`]s under virtual time.
///
/// Build one with [`Simulation::new`]: every member is created (at once, or
/// staggered per [`Bootstrap::stagger`](crate::Bootstrap::stagger)) with its
/// seeds. Then drive it with [`Simulation::run_until`] and the phase helpers
/// ([`warm_up`](Simulation::warm_up), [`settle`](Simulation::settle),
/// [`begin_measurement`](Simulation::begin_measurement)), script it with
/// [`schedule`](Simulation::schedule), and read the figures with
/// [`report`](Simulation::report). [`run_scenario`](crate::run_scenario)
/// does all of this from a [`SimConfig`].
///
/// Everything observed comes from the machines' own events, drained after
/// every input: `Joined`/`Failed`/`Left` maintain an N x N byte matrix of who
/// lists whom (so "every member lists every running member" is an O(1)
/// check), `KeyChanged` timestamps each member's first sight of a tracked
/// write, `Suspected`/`Failed` about a running member count as false
/// suspicions/deaths.
///
/// # Cost
/// The simulator's own work per delivery or timer wake-up is a heap
/// operation, a hash lookup and the message's encoded size; profiled at 1,000
/// and 10,000 members it is under 5 % of the run time, the rest being the
/// machines'. Memory grows with the square of the cluster: every machine
/// holds a full membership table and, after joining, a piggyback queue entry
/// per member, about 0.9 KB per member pair in all (0.9 GB at 1,000 members,
/// 60 to 90 GB at 10,000). The observer adds one byte per pair.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use gossip_sim::{Action, SimConfig, Simulation};
///
/// let cfg = SimConfig::new(20, 3);
/// let mut sim = Simulation::new(&cfg).unwrap();
/// let took = sim.warm_up(Duration::from_secs(30)).expect("20 members converge");
/// assert!(took < Duration::from_secs(5));
/// sim.begin_measurement();
/// let t = sim.now() + Duration::from_millis(100);
/// sim.schedule(t, Action::SetKey { member: 3, key: "k".into(), value: b"v".to_vec() })
///     .unwrap();
/// sim.run_until(t + Duration::from_secs(2));
/// let report = sim.report();
/// assert_eq!(report.updates[0].reached, 20);
/// ```
pub struct Simulation {
    pub(crate) cfg: SimConfig,
    base: Instant,
    pub(crate) now: u64,
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    rng: ChaCha8Rng,
    pub(crate) nodes: Vec<Node>,
    index: HashMap<NodeAddr, u32>,
    slab: Vec<Option<InFlight>>,
    free: Vec<u32>,
    tasks: Vec<Option<Task>>,
    pub(crate) loss: f64,
    pub(crate) partitioned: bool,
    pub(crate) running: usize,
    pub(crate) counters: Counters,
    /// Counters at the start of the measured window, if begun.
    pub(crate) window: Option<Counters>,
    pub(crate) obs: Observer,
    pub(crate) processed: u64,
    pub(crate) stalls: u64,
    pub(crate) action_errors: Vec<String>,
    /// The warm-up and settling phases, for the report.
    pub(crate) warmup_mark: Option<PhaseMark>,
    pub(crate) settle_mark: Option<PhaseMark>,
    /// Counters when the first action ran after the measured window began
    /// (the end of the at-rest window).
    pub(crate) rest_end: Option<Counters>,
    /// Members started at least once.
    pub(crate) started: usize,
    last_accrue: u64,
    batch: Vec<Transmit>,
    events: Vec<Event>,
}

impl Simulation {
    /// Creates the cluster described by `cfg`: member `i` gets address
    /// `10.a.b.c:7946` (the 24 bits of `i`), generation
    /// 1,750,000,000,000 (plus one per restart), an RNG seed drawn from the
    /// network RNG, and its seeds (see [`Bootstrap`](crate::Bootstrap)).
    /// Members with start time zero are started now; the scenario is not
    /// scheduled (see [`run_scenario`](crate::run_scenario)).
    ///
    /// # Errors
    /// Whatever [`SimConfig::validate`] refuses.
    pub fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        cfg.validate()?;
        let n = cfg.nodes;
        let mut nodes = Vec::with_capacity(n);
        let mut index = HashMap::with_capacity(n);
        for i in 0..n {
            let addr = member_addr(i);
            index.insert(addr.clone(), i as u32);
            nodes.push(Node {
                addr,
                machine: None,
                life: 0,
                started: false,
                timer_at: None,
                timer_gen: 0,
                group: 0,
            });
        }
        let mut sim = Self {
            cfg: cfg.clone(),
            base: Instant::now(),
            now: 0,
            heap: BinaryHeap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            nodes,
            index,
            slab: Vec::new(),
            free: Vec::new(),
            tasks: Vec::new(),
            loss: cfg.loss,
            partitioned: false,
            running: 0,
            counters: Counters::default(),
            window: None,
            obs: Observer::new(n),
            processed: 0,
            stalls: 0,
            action_errors: Vec::new(),
            warmup_mark: None,
            settle_mark: None,
            rest_end: None,
            started: 0,
            last_accrue: 0,
            batch: Vec::new(),
            events: Vec::new(),
        };
        let stagger = nanos(cfg.bootstrap.stagger);
        for i in 0..n {
            let at = stagger.saturating_mul(i as u64);
            if at == 0 {
                sim.start(i);
            } else {
                let idx = sim.add_task(Task::Start(i as u32));
                sim.push(at, What::Task { idx });
            }
        }
        if cfg.bootstrap.converged {
            sim.install_full_views();
        }
        Ok(sim)
    }

    /// [`Bootstrap::converged`](crate::Bootstrap::converged): hands every
    /// running member the full member list as an anti-entropy delta from
    /// the next member, through the machine's ordinary `handle_message`.
    fn install_full_views(&mut self) {
        let n = self.nodes.len();
        let owners: Vec<pb::OwnerDelta> = (0..n)
            .map(|i| pb::OwnerDelta {
                member: Some(pb::MemberUpdate {
                    id: Some(self.id_of(i).to_pb()),
                    incarnation: 0,
                    state: pb::MemberState::Alive as i32,
                }),
                ..Default::default()
            })
            .collect();
        for i in 0..n {
            let j = (i + 1) % n;
            if i == j || !self.nodes[i].running() {
                continue;
            }
            let env = pb::Envelope {
                cluster_id: self.cfg.protocol.cluster_id.clone(),
                from: Some(self.id_of(j).to_pb()),
                updates: Vec::new(),
                broadcasts: Vec::new(),
                incarnation: 0,
                body: Some(Body::Delta(pb::Delta {
                    owners: owners.clone(),
                    push: false,
                })),
            };
            let now = self.instant(self.now);
            if let Some(m) = self.nodes[i].machine.as_mut() {
                m.handle_message(now, env);
                self.drain(i, false);
            }
        }
    }

    /// The id of member `i`'s current life.
    fn id_of(&self, i: usize) -> NodeId {
        let node = &self.nodes[i];
        NodeId::new(node.addr.clone(), GEN_BASE + u64::from(node.life))
    }

    // ---------------------------------------------------------------- getters

    /// Virtual time since the simulation began.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    /// The `Instant` the machines see now (the base instant plus
    /// [`Simulation::now`]); pass it to [`Machine`] getters.
    pub fn now_instant(&self) -> Instant {
        self.instant(self.now)
    }

    /// Number of member slots (running or not).
    pub fn members(&self) -> usize {
        self.nodes.len()
    }

    /// Number of running members.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Whether member `i` is running (started and not crashed).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(Node::running)
    }

    /// Member `i`'s machine, if it is running.
    pub fn machine(&self, i: usize) -> Option<&Machine> {
        self.nodes.get(i).and_then(|n| n.machine.as_ref())
    }

    /// Member `i`'s address, if `i` is a member index.
    pub fn addr(&self, i: usize) -> Option<&NodeAddr> {
        self.nodes.get(i).map(|n| &n.addr)
    }

    /// Index of the member at `addr`, if it is one of the simulation's.
    pub fn member_index(&self, addr: &NodeAddr) -> Option<usize> {
        self.index.get(addr).map(|&i| i as usize)
    }

    /// Whether every running member lists exactly the running members (in
    /// their current lives) as live. O(1).
    pub fn membership_converged(&self) -> bool {
        self.obs.converged
    }

    /// Share of the (observer, member) pairs among running members in which
    /// the observer lists the member's current life, in `[0, 1]`.
    pub fn membership_fraction(&self) -> f64 {
        self.obs.pair_fraction(self.running)
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    /// Heap entries processed so far (deliveries, timer wake-ups including
    /// stale ones, actions).
    pub fn events_processed(&self) -> u64 {
        self.processed
    }

    /// Items waiting in the running members' piggyback queues, summed. O(N).
    pub fn piggyback_backlog(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| n.machine.as_ref())
            .map(Machine::queue_depth)
            .sum()
    }

    /// Running members whose gossip rounds run (see
    /// [`Machine::is_active`]): they changed or learned something lately, or
    /// their piggyback queues are not empty. O(N).
    pub fn active_members(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| n.machine.as_ref())
            .filter(|m| m.is_active())
            .count()
    }

    // ---------------------------------------------------------------- driving

    /// Schedules `action` at virtual time `at` (absolute). Actions at the
    /// same time run in the order they were scheduled, after anything
    /// already due at that time.
    ///
    /// # Errors
    /// [`SimError::InThePast`] if `at` is before [`Simulation::now`]; the
    /// action's own [`Action::validate`] errors.
    pub fn schedule(&mut self, at: Duration, action: Action) -> Result<(), SimError> {
        action.validate(self.nodes.len())?;
        let at_ns = nanos(at);
        if at_ns < self.now {
            return Err(SimError::InThePast {
                at,
                now: self.now(),
            });
        }
        let idx = self.add_task(Task::Act(action));
        self.push(at_ns, What::Task { idx });
        Ok(())
    }

    /// Applies `action` now.
    ///
    /// # Errors
    /// The action's [`Action::validate`] errors; nothing changes then.
    pub fn apply(&mut self, action: Action) -> Result<(), SimError> {
        action.validate(self.nodes.len())?;
        self.act(action);
        Ok(())
    }

    /// Processes the next heap entry; false if there is none.
    pub fn step(&mut self) -> bool {
        match self.heap.pop() {
            Some(Reverse(e)) => {
                self.process(e);
                true
            }
            None => false,
        }
    }

    /// Processes everything due up to and including virtual time `t`, then
    /// sets the clock to `t` (if it is in the future).
    pub fn run_until(&mut self, t: Duration) {
        let t = nanos(t);
        while self.heap.peek().is_some_and(|Reverse(e)| e.at <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Runs until `stop` holds (checked after every entry) or virtual time
    /// `limit` passes; returns whether `stop` held.
    pub fn run_while_not(&mut self, limit: Duration, mut stop: impl FnMut(&Self) -> bool) -> bool {
        let limit = nanos(limit);
        loop {
            if stop(self) {
                return true;
            }
            if self.heap.peek().is_none_or(|Reverse(e)| e.at > limit) {
                self.now = self.now.max(limit);
                return stop(self);
            }
            self.step();
        }
    }

    /// Warm-up: runs until membership has converged (every member has
    /// started and every running member lists every other one) or `limit`
    /// of virtual time has passed since the call. Returns the virtual time
    /// from the start of the simulation to convergence, if reached. The
    /// report's `warmup` section describes it, with the traffic it cost.
    pub fn warm_up(&mut self, limit: Duration) -> Option<Duration> {
        self.warm_up_with(limit, &mut |_| true)
    }

    /// [`Simulation::warm_up`], calling `tick` every 1 ms of virtual time
    /// (or every hundredth of `limit`, if shorter); the warm-up stops early,
    /// unconverged, when `tick` returns false (e.g. to watch memory or draw
    /// progress).
    pub fn warm_up_with(
        &mut self,
        limit: Duration,
        tick: &mut dyn FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        let start = self.snapshot();
        let end = self.now.saturating_add(nanos(limit));
        let slice = (nanos(limit) / 100).clamp(1, TICK_NS);
        loop {
            let next = self.now.saturating_add(slice).min(end);
            let done = self.run_while_not(Duration::from_nanos(next), |s| {
                s.obs.first_converged.is_some()
            });
            if !tick(self) || done || self.now >= end {
                break;
            }
        }
        let end = self.snapshot();
        self.warmup_mark = Some(PhaseMark {
            done_at: self.obs.first_converged,
            start,
            end,
        });
        self.obs.first_converged.map(Duration::from_nanos)
    }

    /// Settling: runs until the cluster is at rest: no running member has
    /// anything left in its piggyback queues and none is active (its gossip
    /// rounds have stopped; see [`Machine::is_active`]), checked every 250 ms
    /// of virtual time, O(N) each, or until `limit` has passed. Returns the
    /// time it took, if the cluster came to rest.
    pub fn settle(&mut self, limit: Duration) -> Option<Duration> {
        self.settle_with(limit, &mut |_| true)
    }

    /// [`Simulation::settle`], calling `tick` after every check; settling
    /// stops early, undrained, when `tick` returns false.
    pub fn settle_with(
        &mut self,
        limit: Duration,
        tick: &mut dyn FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        let start = self.snapshot();
        let end = self.now.saturating_add(nanos(limit));
        let step = 250_000_000;
        let drained = loop {
            if self.piggyback_backlog() == 0 && self.active_members() == 0 {
                break Some(self.now - start.at);
            }
            if self.now >= end {
                break None;
            }
            let next = self.now.saturating_add(step).min(end);
            self.run_until(Duration::from_nanos(next));
            if !tick(self) {
                break None;
            }
        };
        let end = self.snapshot();
        self.settle_mark = Some(PhaseMark {
            done_at: drained,
            start,
            end,
        });
        drained.map(Duration::from_nanos)
    }

    /// Starts the measured window now: traffic, false deaths and false
    /// suspicions in the report count from here. Without it they count from
    /// the start of the simulation.
    pub fn begin_measurement(&mut self) {
        self.window = Some(self.snapshot());
    }

    // -------------------------------------------------------------- internals

    pub(crate) fn instant(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    fn ns_of(base: Instant, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(base))
    }

    /// Cumulative counters as of now.
    pub(crate) fn snapshot(&mut self) -> Counters {
        self.accrue();
        let mut c = self.counters.clone();
        c.at = self.now;
        c
    }

    /// Adds the running members' time since the last call to the
    /// member-time integral; call before `running` changes.
    fn accrue(&mut self) {
        let dt = self.now - self.last_accrue;
        self.counters.member_ns += u128::from(dt) * self.running as u128;
        self.last_accrue = self.now;
    }

    fn push(&mut self, at: u64, what: What) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            what,
        }));
    }

    fn add_task(&mut self, t: Task) -> u32 {
        self.tasks.push(Some(t));
        (self.tasks.len() - 1) as u32
    }

    fn process(&mut self, e: Entry) {
        debug_assert!(e.at >= self.now, "time went backwards");
        self.now = self.now.max(e.at);
        self.processed += 1;
        match e.what {
            What::Timer { node, timer_gen } => {
                let i = node as usize;
                let now = self.instant(self.now);
                let n = &mut self.nodes[i];
                if n.timer_gen != timer_gen {
                    return;
                }
                let Some(m) = n.machine.as_mut() else { return };
                n.timer_at = None;
                m.handle_timeout(now);
                self.drain(i, true);
            }
            What::Deliver { slot } => {
                let Some(f) = self.slab[slot as usize].take() else {
                    return;
                };
                self.free.push(slot);
                let (from, to) = (f.from as usize, f.to as usize);
                if self.nodes[from].group != self.nodes[to].group {
                    self.counters.dropped_partition += 1;
                    return;
                }
                let now = self.instant(self.now);
                match self.nodes[to].machine.as_mut() {
                    Some(m) => {
                        m.handle_message(now, f.msg);
                        self.drain(to, false);
                    }
                    None => self.counters.dropped_down += 1,
                }
            }
            What::Task { idx } => match self.tasks[idx as usize].take() {
                Some(Task::Start(i)) => self.start(i as usize),
                Some(Task::Act(a)) => self.act(a),
                Some(Task::AddSeed { node, life, seed }) => {
                    let (i, s) = (node as usize, seed as usize);
                    let now = self.instant(self.now);
                    let addr = self.nodes[s].addr.clone();
                    if self.nodes[i].life == life
                        && let Some(m) = self.nodes[i].machine.as_mut()
                    {
                        m.add_seed(now, addr);
                        self.drain(i, false);
                    }
                }
                None => {}
            },
        }
    }

    /// Drains member `i`'s outputs after an input, in the machine's order:
    /// transmits, the next timeout, events.
    fn drain(&mut self, i: usize, from_timer: bool) {
        let base = self.base;
        let Some(m) = self.nodes[i].machine.as_mut() else {
            return;
        };
        let mut batch = std::mem::take(&mut self.batch);
        let mut events = std::mem::take(&mut self.events);
        while let Some(t) = m.poll_transmit() {
            batch.push(t);
        }
        let deadline = m.poll_timeout().map(|d| Self::ns_of(base, d));
        while let Some(e) = m.poll_event() {
            events.push(e);
        }
        // One input's messages are routed in destination order, so which
        // random delay each one draws does not depend on the order the
        // machine produced them in (which can follow its hash maps' order).
        if batch.len() > 1 {
            batch.sort_by(|a, b| a.to.cmp(&b.to));
        }
        for t in batch.drain(..) {
            self.route(i, t);
        }
        self.batch = batch;
        self.reschedule(i, deadline, from_timer);
        for e in events.drain(..) {
            self.observe(i, e);
        }
        self.events = events;
    }

    fn route(&mut self, from: usize, t: Transmit) {
        let k = kind(&t.msg);
        let size = t.msg.encoded_len() as u64;
        let piggyback = prost::encoding::message::encoded_len_repeated(3, &t.msg.updates)
            + prost::encoding::message::encoded_len_repeated(4, &t.msg.broadcasts);
        self.counters.msgs[k] += 1;
        self.counters.bytes[k] += size;
        self.counters.piggyback_bytes += piggyback as u64;
        let Some(&to) = self.index.get(&t.to) else {
            self.counters.dropped_unknown += 1;
            return;
        };
        if self.loss > 0.0 && self.rng.random_bool(self.loss) {
            self.counters.dropped_loss += 1;
            return;
        }
        let delay = self.cfg.latency.sample_ns(&mut self.rng);
        let msg = InFlight {
            from: from as u32,
            to,
            msg: t.msg,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(msg);
                s
            }
            None => {
                self.slab.push(Some(msg));
                (self.slab.len() - 1) as u32
            }
        };
        self.push(self.now + delay, What::Deliver { slot });
    }

    fn reschedule(&mut self, i: usize, deadline: Option<u64>, from_timer: bool) {
        let now = self.now;
        let at = match deadline {
            Some(d) if d <= now && from_timer => {
                // handle_timeout(now) left a deadline at or before now: a
                // machine bug; count it and move on rather than spin.
                self.stalls += 1;
                Some(now + STALL_NS)
            }
            Some(d) => Some(d.max(now)),
            None => None,
        };
        let n = &mut self.nodes[i];
        if at == n.timer_at {
            return;
        }
        n.timer_gen = n.timer_gen.wrapping_add(1);
        n.timer_at = at;
        let timer_gen = n.timer_gen;
        if let Some(a) = at {
            self.push(
                a,
                What::Timer {
                    node: i as u32,
                    timer_gen,
                },
            );
        }
    }

    /// Starts member `i` (first life, or after a crash) with fresh seeds.
    fn start(&mut self, i: usize) {
        if self.nodes[i].running() {
            return;
        }
        let first = !self.nodes[i].started;
        let seeds = if !first {
            if self.nodes[i].life >= MAX_LIVES {
                self.action_errors
                    .push(format!("member {i}: more than {MAX_LIVES} lives"));
                return;
            }
            self.nodes[i].life += 1;
            self.restart_seeds(i)
        } else {
            self.initial_seeds(i)
        };
        let now = self.instant(self.now);
        let node = &self.nodes[i];
        let id = NodeId::new(node.addr.clone(), GEN_BASE + u64::from(node.life));
        let rng_seed: u64 = self.rng.random();
        let mut m = Machine::new(id, self.cfg.protocol.clone(), rng_seed, now)
            .expect("the simulation config was validated");
        let life = self.nodes[i].life;
        for (k, s) in seeds.into_iter().enumerate() {
            if k == 0 {
                m.add_seed(now, self.nodes[s].addr.clone());
            } else {
                let idx = self.add_task(Task::AddSeed {
                    node: i as u32,
                    life,
                    seed: s as u32,
                });
                self.push(self.now + SEED_SPACING_NS * k as u64, What::Task { idx });
            }
        }
        self.accrue();
        let node = &mut self.nodes[i];
        node.machine = Some(m);
        node.started = true;
        node.timer_at = None;
        node.timer_gen = node.timer_gen.wrapping_add(1);
        self.running += 1;
        if first {
            self.started += 1;
        }
        self.obs_started(i);
        self.drain(i, false);
    }

    /// `min(i, k)` distinct random members among `0..i`.
    fn initial_seeds(&mut self, i: usize) -> Vec<usize> {
        let k = self.cfg.bootstrap.seeds_per_member;
        if i <= k {
            return (0..i).collect();
        }
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let s = self.rng.random_range(0..i);
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// Up to `restart_seeds` distinct random running members other than `i`.
    fn restart_seeds(&mut self, i: usize) -> Vec<usize> {
        let k = self.cfg.bootstrap.restart_seeds;
        let n = self.nodes.len();
        let mut out = Vec::with_capacity(k);
        let mut tries = 0;
        while out.len() < k && tries < 64 * k.max(1) {
            tries += 1;
            let s = self.rng.random_range(0..n);
            if s != i && self.nodes[s].running() && !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    fn act(&mut self, action: Action) {
        if self.window.is_some() && self.rest_end.is_none() {
            self.rest_end = Some(self.snapshot());
        }
        match action {
            Action::SetKey { member, key, value } => {
                let now = self.instant(self.now);
                let Some(m) = self.nodes[member].machine.as_mut() else {
                    self.action_errors
                        .push(format!("set_key on member {member}: not running"));
                    return;
                };
                match m.set_key(now, &key, Bytes::from(value), None) {
                    Ok(version) => {
                        self.track_update(member, key, version);
                        self.drain(member, false);
                    }
                    Err(e) => self
                        .action_errors
                        .push(format!("set_key on member {member}: {e}")),
                }
            }
            Action::Crash { member } => {
                if !self.nodes[member].running() {
                    return;
                }
                self.accrue();
                self.obs_crash(member);
                let n = &mut self.nodes[member];
                n.machine = None;
                n.timer_at = None;
                n.timer_gen = n.timer_gen.wrapping_add(1);
                self.running -= 1;
                self.obs_check_converged();
            }
            Action::Restart { member } => {
                if self.nodes[member].started {
                    self.start(member);
                }
            }
            Action::Partition { groups } => {
                for n in &mut self.nodes {
                    n.group = 0;
                }
                for (g, r) in groups.iter().enumerate() {
                    for n in &mut self.nodes[r.clone()] {
                        n.group = (g + 1) as u16;
                    }
                }
                self.partitioned = !groups.is_empty();
                self.obs_partition(groups.len());
            }
            Action::Heal => {
                for n in &mut self.nodes {
                    n.group = 0;
                }
                self.partitioned = false;
                self.obs_heal();
            }
            Action::SetLoss { loss } => self.loss = loss,
        }
    }
}

/// Address of member `i`: `10.a.b.c:7946` from the 24 bits of `i`.
pub fn member_addr(i: usize) -> NodeAddr {
    let s = format!(
        "10.{}.{}.{}:7946",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    );
    // The format is always a valid `host:port`.
    NodeAddr::parse(&s).unwrap_or_else(|_| unreachable!("{s} is a valid address"))
}
