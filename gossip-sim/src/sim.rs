//! The simulation: the members' lives, seeds, scripted actions and the
//! observer, over the discrete-event harness of `gossip-core`
//! ([`gossip_core::harness`]), which holds the heap of timestamped entries
//! (message deliveries, machine timer wake-ups, the simulation's tasks)
//! processed in `(time, sequence)` order under virtual time.
//!
//! Cost per entry is independent of the cluster size (a heap operation, a
//! hash lookup of the destination address, the encoded size of each message
//! sent); the only O(N) steps are the scripted actions (crash, partition)
//! and the optional settle check. Timer wake-ups are invalidated lazily by
//! the harness.

use std::time::{Duration, Instant};

use gossip_core::harness::{Harness, Stepped, Traffic};
use gossip_core::{Event, Machine, NodeAddr, NodeId};
use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;
use prost::bytes::Bytes;
use rand::Rng;

use crate::config::{Action, SimConfig, nanos};
use crate::error::SimError;
use crate::observe::Observer;

/// Generation of a member's first life; each restart adds one. Real members
/// use milliseconds since the Unix epoch, so this keeps encoded sizes
/// realistic (a 6-byte varint, not 1).
pub(crate) const GEN_BASE: u64 = 1_750_000_000_000;
/// Most lives of one member (the observer stores `life + 1` in a byte).
const MAX_LIVES: u8 = 254;
/// Seeds are handed to a member this far apart. The machine retries every
/// due seed in one pass over a `HashMap`, whose order differs between
/// processes, and that order decides which retry carries which piggybacked
/// updates; distinct retry instants (the backoff keeps them 1 us apart) keep
/// runs reproducible.
const SEED_SPACING_NS: u64 = 1_000;
/// Longest stretch of virtual time between two calls of a phase's `tick`.
const TICK_NS: u64 = 1_000_000;

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

/// What the simulation knows of a member slot besides the harness: its
/// lives.
pub(crate) struct Node {
    /// Current (or last) life; the generation is `GEN_BASE + life`.
    pub(crate) life: u8,
    pub(crate) started: bool,
}

/// The network's counters (messages and bytes sent by kind, drops), plus
/// the other cumulative counters that a measurement window is the difference
/// of.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) traffic: Traffic,
    /// Integral of the number of running members over virtual time, in
    /// member-nanoseconds.
    pub(crate) member_ns: u128,
    pub(crate) false_deaths: u64,
    pub(crate) partition_deaths: u64,
    pub(crate) false_suspicions: u64,
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
    /// The network, the clock and the machines.
    pub(crate) h: Harness,
    pub(crate) nodes: Vec<Node>,
    tasks: Vec<Option<Task>>,
    pub(crate) partitioned: bool,
    pub(crate) running: usize,
    pub(crate) counters: Counters,
    /// Counters at the start of the measured window, if begun.
    pub(crate) window: Option<Counters>,
    pub(crate) obs: Observer,
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
    /// Events taken from the harness, reused.
    events: Vec<(usize, Event)>,
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
        let mut h = Harness::new(cfg.seed);
        let latency = cfg.latency.clone();
        h.set_latency(Box::new(move |rng| latency.sample_ns(rng)));
        h.set_loss(cfg.loss);
        h.set_refusals(cfg.refusals);
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            h.add_member(member_addr(i));
            nodes.push(Node {
                life: 0,
                started: false,
            });
        }
        let mut sim = Self {
            cfg: cfg.clone(),
            h,
            nodes,
            tasks: Vec::new(),
            partitioned: false,
            running: 0,
            counters: Counters::default(),
            window: None,
            obs: Observer::new(n),
            action_errors: Vec::new(),
            warmup_mark: None,
            settle_mark: None,
            rest_end: None,
            started: 0,
            last_accrue: 0,
            events: Vec::new(),
        };
        let stagger = nanos(cfg.bootstrap.stagger);
        for i in 0..n {
            let at = stagger.saturating_mul(i as u64);
            if at == 0 {
                sim.start(i);
            } else {
                let idx = sim.add_task(Task::Start(i as u32));
                sim.h.schedule_task(Duration::from_nanos(at), idx);
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
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        for i in 0..n {
            let j = (i + 1) % n;
            if i == j || !self.h.is_up(i) {
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
                ..Default::default()
            };
            self.h.with(i, |m, now| m.handle_message(now, env));
            self.take_events();
        }
    }

    /// The id of member `i`'s current life.
    fn id_of(&self, i: usize) -> NodeId {
        NodeId::new(
            self.h.addr(i).clone(),
            GEN_BASE + u64::from(self.nodes[i].life),
        )
    }

    // ---------------------------------------------------------------- getters

    /// Virtual time since the simulation began.
    pub fn now(&self) -> Duration {
        self.h.now()
    }

    /// The `Instant` the machines see now (the base instant plus
    /// [`Simulation::now`]); pass it to [`Machine`] getters.
    pub fn now_instant(&self) -> Instant {
        self.h.now_instant()
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
        i < self.nodes.len() && self.h.is_up(i)
    }

    /// Member `i`'s machine, if it is running.
    pub fn machine(&self, i: usize) -> Option<&Machine> {
        self.h.machine(i)
    }

    /// Member `i`'s address, if `i` is a member index.
    pub fn addr(&self, i: usize) -> Option<&NodeAddr> {
        (i < self.nodes.len()).then(|| self.h.addr(i))
    }

    /// Index of the member at `addr`, if it is one of the simulation's.
    pub fn member_index(&self, addr: &NodeAddr) -> Option<usize> {
        self.h.member_index(addr)
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
        self.h.in_flight()
    }

    /// Heap entries processed so far (deliveries, timer wake-ups including
    /// stale ones, actions).
    pub fn events_processed(&self) -> u64 {
        self.h.processed()
    }

    /// Items waiting in the running members' piggyback queues, summed. O(N).
    pub fn piggyback_backlog(&self) -> usize {
        self.h.machines().map(|(_, m)| m.queue_depth()).sum()
    }

    /// Running members whose gossip rounds run (see
    /// [`Machine::is_active`]): they changed or learned something lately, or
    /// their piggyback queues are not empty. O(N).
    pub fn active_members(&self) -> usize {
        self.h.machines().filter(|(_, m)| m.is_active()).count()
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
        if at < self.now() {
            return Err(SimError::InThePast {
                at,
                now: self.now(),
            });
        }
        let idx = self.add_task(Task::Act(action));
        self.h.schedule_task(at, idx);
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
        match self.h.step() {
            Some(Stepped::Task(idx)) => {
                self.run_task(idx);
                true
            }
            Some(_) => {
                self.take_events();
                true
            }
            None => false,
        }
    }

    /// Processes everything due up to and including virtual time `t`, then
    /// sets the clock to `t` (if it is in the future).
    pub fn run_until(&mut self, t: Duration) {
        while self.h.next_at().is_some_and(|at| at <= t) {
            self.step();
        }
        self.h.advance_to(t);
    }

    /// Runs until `stop` holds (checked after every entry) or virtual time
    /// `limit` passes; returns whether `stop` held.
    pub fn run_while_not(&mut self, limit: Duration, mut stop: impl FnMut(&Self) -> bool) -> bool {
        loop {
            if stop(self) {
                return true;
            }
            if self.h.next_at().is_none_or(|at| at > limit) {
                self.h.advance_to(limit);
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
        let end = self.h.now_ns().saturating_add(nanos(limit));
        let slice = (nanos(limit) / 100).clamp(1, TICK_NS);
        loop {
            let next = self.h.now_ns().saturating_add(slice).min(end);
            let done = self.run_while_not(Duration::from_nanos(next), |s| {
                s.obs.first_converged.is_some()
            });
            if !tick(self) || done || self.h.now_ns() >= end {
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
        let end = self.h.now_ns().saturating_add(nanos(limit));
        let step = 250_000_000;
        let drained = loop {
            if self.piggyback_backlog() == 0 && self.active_members() == 0 {
                break Some(self.h.now_ns() - start.at);
            }
            if self.h.now_ns() >= end {
                break None;
            }
            let next = self.h.now_ns().saturating_add(step).min(end);
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

    /// Cumulative counters as of now.
    pub(crate) fn snapshot(&mut self) -> Counters {
        self.accrue();
        let mut c = self.counters.clone();
        c.traffic = self.h.traffic().clone();
        c.at = self.h.now_ns();
        c
    }

    /// Adds the running members' time since the last call to the
    /// member-time integral; call before `running` changes.
    fn accrue(&mut self) {
        let now = self.h.now_ns();
        let dt = now - self.last_accrue;
        self.counters.member_ns += u128::from(dt) * self.running as u128;
        self.last_accrue = now;
    }

    fn add_task(&mut self, t: Task) -> u32 {
        self.tasks.push(Some(t));
        (self.tasks.len() - 1) as u32
    }

    /// Observes the events the harness collected.
    fn take_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        self.h.take_events(&mut events);
        for (i, e) in events.drain(..) {
            self.observe(i, e);
        }
        self.events = events;
    }

    /// Runs the simulation's task `idx`, which the harness found due.
    fn run_task(&mut self, idx: u32) {
        match self.tasks[idx as usize].take() {
            Some(Task::Start(i)) => self.start(i as usize),
            Some(Task::Act(a)) => self.act(a),
            Some(Task::AddSeed { node, life, seed }) => {
                let (i, s) = (node as usize, seed as usize);
                let addr = self.h.addr(s).clone();
                if self.nodes[i].life == life && self.h.is_up(i) {
                    self.h.with(i, |m, now| m.add_seed(now, addr));
                    self.take_events();
                }
            }
            None => {}
        }
    }

    /// Starts member `i` (first life, or after a crash) with fresh seeds.
    fn start(&mut self, i: usize) {
        if self.h.is_up(i) {
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
        let now = self.h.now_instant();
        let id = self.id_of(i);
        let rng_seed: u64 = self.h.rng().random();
        let mut m = Machine::new(id, self.cfg.protocol.clone(), rng_seed, now)
            .expect("the simulation config was validated");
        let life = self.nodes[i].life;
        for (k, s) in seeds.into_iter().enumerate() {
            if k == 0 {
                m.add_seed(now, self.h.addr(s).clone());
            } else {
                let idx = self.add_task(Task::AddSeed {
                    node: i as u32,
                    life,
                    seed: s as u32,
                });
                let at = self.h.now_ns() + SEED_SPACING_NS * k as u64;
                self.h.schedule_task(Duration::from_nanos(at), idx);
            }
        }
        self.accrue();
        self.nodes[i].started = true;
        self.running += 1;
        if first {
            self.started += 1;
        }
        // The machine's first outputs are drained at once; its events are
        // observed after the observer has counted it as started.
        self.h.start(i, m);
        self.obs_started(i);
        self.take_events();
    }

    /// `min(i, k)` distinct random members among `0..i`.
    fn initial_seeds(&mut self, i: usize) -> Vec<usize> {
        let k = self.cfg.bootstrap.seeds_per_member;
        if i <= k {
            return (0..i).collect();
        }
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let s = self.h.rng().random_range(0..i);
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
            let s = self.h.rng().random_range(0..n);
            if s != i && self.h.is_up(s) && !out.contains(&s) {
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
                if !self.h.is_up(member) {
                    self.action_errors
                        .push(format!("set_key on member {member}: not running"));
                    return;
                }
                let set = self.h.with(member, |m, now| {
                    m.set_key(now, &key, Bytes::from(value), None)
                });
                match set {
                    Some(Ok(version)) => {
                        self.track_update(member, key, version);
                        self.take_events();
                    }
                    Some(Err(e)) => self
                        .action_errors
                        .push(format!("set_key on member {member}: {e}")),
                    None => {}
                }
            }
            Action::Crash { member } => {
                if !self.h.is_up(member) {
                    return;
                }
                self.accrue();
                self.obs_crash(member);
                self.h.crash(member);
                self.running -= 1;
                self.obs_check_converged();
            }
            Action::Restart { member } => {
                if self.nodes[member].started {
                    self.start(member);
                }
            }
            Action::Partition { groups } => {
                for i in 0..self.nodes.len() {
                    self.h.set_group(i, 0);
                }
                for (g, r) in groups.iter().enumerate() {
                    for i in r.clone() {
                        self.h.set_group(i, (g + 1) as u16);
                    }
                }
                self.partitioned = !groups.is_empty();
                self.obs_partition(groups.len());
            }
            Action::Heal => {
                for i in 0..self.nodes.len() {
                    self.h.set_group(i, 0);
                }
                self.partitioned = false;
                self.obs_heal();
            }
            Action::SetLoss { loss } => self.h.set_loss(loss),
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
