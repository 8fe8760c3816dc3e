//! A discrete-event harness for [`Machine`]s: many members, one simulated
//! network, virtual time. The unit tests of the state machine and the
//! simulator (`gossip-sim`) both drive the machines through it.
//!
//! Everything that happens is an entry in one binary heap, processed in
//! `(time, sequence)` order: a message delivery, a member's timer wake-up,
//! or a task of the caller's (a scripted action, say), which [`Harness::step`]
//! hands back. After every input the member's outputs are drained in the
//! machine's order (transmits, the next timeout, events); transmits are
//! routed in destination order, each one counted by [`MessageKind`], maybe
//! lost (a seeded ChaCha8 RNG), and delivered after a sampled latency plus
//! the receiver's extra delay (a slow member). Messages to a member that is
//! down, or across a partition (members in different groups), are dropped on
//! arrival. Events are collected, with the member's index, for the caller to
//! take ([`Harness::take_events`]).
//!
//! The cost of one entry does not grow with the number of members: a heap
//! operation, a hash lookup of the destination and the encoded size of each
//! message. Timer wake-ups are invalidated lazily: each member has a timer
//! generation, bumped whenever its deadline changes, and a popped wake-up
//! whose generation is stale is skipped.
//!
//! Compiled for the crate's own tests and with the `test-utils` feature.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::event::Event;
use crate::id::NodeAddr;
use crate::machine::{Machine, Transmit};
use crate::stats::{KindCounts, MessageKind};

/// Where a stalled timer (a machine whose deadline did not move past `now`
/// after `handle_timeout(now)`) is pushed to, so that a run cannot spin.
pub const STALL: Duration = Duration::from_millis(1);

/// Sequence numbers of timer wake-ups under [`SameInstant::MessagesFirst`]:
/// above every delivery's and task's, ordered by member index.
const TIMER_CLASS: u64 = 1 << 63;

/// How entries due at the same instant are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SameInstant {
    /// First in, first out, whatever the kind: a timer wake-up takes its
    /// place when it was armed. The simulator's order.
    #[default]
    InsertionOrder,
    /// Deliveries and tasks first (first in, first out), then the members'
    /// timer wake-ups by member index. The order does not depend on when a
    /// timer was armed, so a run that wakes members more often (see
    /// [`Harness::set_wake_also`]) processes the same inputs in the same
    /// order.
    MessagesFirst,
}

/// What the host of a crashed member answers (its process is gone, the
/// host is up): [`Harness::set_refusal_model`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Refusals {
    /// Nothing: a crash is silent, as a host that lost power (the default).
    #[default]
    Silent,
    /// Every message to it and every listener check of it is refused, one
    /// latency (a check: a round trip) later: TCP (a reset, a refused
    /// connection).
    OnSend,
    /// Only listener checks are refused; messages vanish: QUIC, whose
    /// datagrams go out on an unconnected UDP socket that never sees the
    /// ICMP port unreachable.
    OnCheck,
}

/// What one [`Harness::step`] processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stepped {
    /// A message was delivered to this member.
    Delivered(usize),
    /// A message was dropped on arrival: the receiver is down, gone, or
    /// across a partition, or the message was taken out of flight.
    Dropped,
    /// This member's `handle_timeout` was called.
    Woke(usize),
    /// A stale timer wake-up, skipped.
    Stale,
    /// The caller's task with this id is due: the caller runs it.
    Task(u32),
    /// This member learned that a message it sent was refused (see
    /// [`Harness::set_refusals`]).
    Refused(usize),
}

/// Cumulative counters of the simulated network.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// Messages and encoded bytes sent, by kind (counted when sent, whether
    /// delivered or not).
    pub sent: KindCounts,
    /// Bytes of piggybacked membership updates and broadcasts.
    pub piggyback_bytes: u64,
    /// Messages lost to the loss rate.
    pub dropped_loss: u64,
    /// Messages dropped on arrival across a partition.
    pub dropped_partition: u64,
    /// Messages dropped on arrival at a member that is down or gone.
    pub dropped_down: u64,
    /// Messages to an address that is no member's.
    pub dropped_unknown: u64,
    /// Messages to a crashed member answered with a refusal (see
    /// [`Harness::set_refusals`]).
    pub refused: u64,
    /// Distinct pairs of slots that exchanged a message (either way, lost
    /// ones included) since the harness was made: the connections, and so
    /// the handshakes, a connection-oriented transport (TLS, QUIC) would
    /// need (issue #10; see `Config::active_view`).
    pub pairs: u64,
}

impl Traffic {
    /// Messages sent, all kinds.
    pub fn messages(&self) -> u64 {
        MessageKind::ALL
            .iter()
            .map(|&k| self.sent.messages(k))
            .sum()
    }

    /// Encoded bytes sent, all kinds.
    pub fn bytes(&self) -> u64 {
        MessageKind::ALL.iter().map(|&k| self.sent.bytes(k)).sum()
    }
}

/// Samples one message's latency, in nanoseconds, from the harness's RNG.
pub type LatencyFn = Box<dyn FnMut(&mut ChaCha8Rng) -> u64 + Send>;

/// An extra wake-up a member gets besides its `poll_timeout` (see
/// [`Harness::set_wake_also`]).
pub type WakeFn = fn(&Machine) -> Option<Instant>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    /// A member's timer, valid if `timer_gen` still matches.
    Timer { member: u32, timer_gen: u32 },
    /// The message in `slab[slot]`, if still there.
    Deliver { slot: u32 },
    /// The caller's task.
    Task { id: u32 },
    /// Member `member`'s message to member `to` was refused.
    Refused { member: u32, to: u32 },
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: u64,
    /// Insertion order (see [`SameInstant`]): it makes the order total and
    /// the run deterministic.
    seq: u64,
    what: What,
}

struct InFlight {
    from: u32,
    to: u32,
    t: Transmit,
}

struct Slot {
    addr: NodeAddr,
    machine: Option<Machine>,
    down: bool,
    timer_at: Option<u64>,
    timer_gen: u32,
    group: u16,
    extra_delay: u64,
    wakes: u64,
    /// Bit `j` set: this slot and slot `j > this` have exchanged a message
    /// ([`Traffic::pairs`]).
    contacted: Vec<u64>,
}

/// Many [`Machine`]s over a simulated network under virtual time; see the
/// module documentation.
///
/// Members are slots with an address ([`Harness::add_member`]); a slot runs
/// a machine once [`Harness::start`]ed, until [`Harness::crash`] takes it
/// out (or [`Harness::set_down`] freezes it). Inputs reach machines through
/// the harness (deliveries, wake-ups, [`Harness::with`]), which drains their
/// outputs after each.
///
/// ```
/// use std::time::Duration;
/// use gossip_core::harness::Harness;
/// use gossip_core::{Config, Machine, MessageKind, NodeAddr, NodeId};
///
/// let mut h = Harness::new(7);
/// let a = h.add_member(NodeAddr::parse("a:1").unwrap());
/// let b = h.add_member(NodeAddr::parse("b:1").unwrap());
/// for (i, seed) in [(a, None), (b, Some(a))] {
///     let addr = h.addr(i).clone();
///     let mut m = Machine::new(NodeId::new(addr, 1), Config::default(), i as u64, h.now_instant())
///         .expect("the default config is valid");
///     if let Some(s) = seed {
///         m.add_seed(h.now_instant(), h.addr(s).clone());
///     }
///     h.start(i, m);
/// }
/// h.run_until(Duration::from_secs(1));
/// assert_eq!(h.machine(a).unwrap().members(h.now_instant()).len(), 2);
/// assert!(h.traffic().sent.messages(MessageKind::SyncRequest) > 0);
/// ```
pub struct Harness {
    base: Instant,
    now: u64,
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    rng: ChaCha8Rng,
    members: Vec<Slot>,
    index: HashMap<NodeAddr, u32>,
    slab: Vec<Option<InFlight>>,
    free: Vec<u32>,
    latency: LatencyFn,
    loss: f64,
    order: SameInstant,
    wake_also: Option<WakeFn>,
    max_message_size: Option<usize>,
    refusals: Refusals,
    traffic: Traffic,
    processed: u64,
    stalls: u64,
    batch: Vec<Transmit>,
    events: Vec<(usize, Event)>,
    log: Option<Vec<Transmit>>,
}

impl Harness {
    /// An empty network at virtual time zero (the base instant is now), with
    /// a constant latency of 1 ms, no loss, [`SameInstant::InsertionOrder`],
    /// and its RNG seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            base: Instant::now(),
            now: 0,
            heap: BinaryHeap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            members: Vec::new(),
            index: HashMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            latency: Box::new(|_| 1_000_000),
            loss: 0.0,
            order: SameInstant::InsertionOrder,
            wake_also: None,
            max_message_size: None,
            refusals: Refusals::Silent,
            traffic: Traffic::default(),
            processed: 0,
            stalls: 0,
            batch: Vec::new(),
            events: Vec::new(),
            log: None,
        }
    }

    // ----------------------------------------------------------- settings

    /// Every message's latency is drawn by `f` from the harness's RNG
    /// (after the loss draw), in nanoseconds.
    pub fn set_latency(&mut self, f: LatencyFn) {
        self.latency = f;
    }

    /// Every message takes `d` (plus the receiver's extra delay).
    pub fn set_fixed_latency(&mut self, d: Duration) {
        let ns = nanos(d);
        self.latency = Box::new(move |_| ns);
    }

    /// Probability that a message is lost when sent, in `[0, 1]`.
    pub fn set_loss(&mut self, loss: f64) {
        self.loss = loss;
    }

    /// The loss rate.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// How entries due at the same instant are ordered; set it before the
    /// first member starts.
    pub fn set_order(&mut self, order: SameInstant) {
        self.order = order;
    }

    /// Also wakes every member at `f(machine)`, whether its `poll_timeout`
    /// asks for it or not (a driver that wakes more often than needed).
    pub fn set_wake_also(&mut self, f: Option<WakeFn>) {
        self.wake_also = f;
    }

    /// Panics if a machine sends a message larger than `max` bytes.
    pub fn set_max_message_size(&mut self, max: Option<usize>) {
        self.max_message_size = max;
    }

    /// Whether a message that arrives at a crashed member (gone, not
    /// frozen, not across a partition) is answered with a refusal, as the
    /// kernel of a host whose process died answers with a TCP reset or an
    /// ICMP port unreachable: the sender's `handle_send_error(.., true)` is
    /// called one latency later. Off by default (a crash is then silent, as
    /// a host that lost power).
    ///
    /// On, a listener check ([`Machine::poll_refusal_check`]) of a crashed
    /// member is answered the same way, a round trip later. See
    /// [`Harness::set_refusal_model`] for a transport whose sends never
    /// fail.
    pub fn set_refusals(&mut self, on: bool) {
        self.refusals = if on {
            Refusals::OnSend
        } else {
            Refusals::Silent
        };
    }

    /// What a crashed member's host answers; see [`Refusals`].
    pub fn set_refusal_model(&mut self, model: Refusals) {
        self.refusals = model;
    }

    /// Starts (`true`) or stops recording every message sent; see
    /// [`Harness::take_log`].
    pub fn set_recording(&mut self, on: bool) {
        match (on, self.log.is_some()) {
            (true, false) => self.log = Some(Vec::new()),
            (false, true) => self.log = None,
            _ => {}
        }
    }

    /// The messages sent since the last call, in the order they were
    /// routed, if recording.
    pub fn take_log(&mut self) -> Vec<Transmit> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The RNG that draws losses and latencies; a caller may draw from it
    /// too (the simulator draws the machines' seeds).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    // ------------------------------------------------------------ members

    /// Adds a member slot at `addr` (not running yet); returns its index.
    /// Indices count from zero in the order slots were added.
    ///
    /// # Panics
    /// If `addr` is already a member's.
    pub fn add_member(&mut self, addr: NodeAddr) -> usize {
        let i = self.members.len();
        let old = self.index.insert(addr.clone(), i as u32);
        assert!(old.is_none(), "{addr} added twice");
        self.members.push(Slot {
            addr,
            machine: None,
            down: false,
            timer_at: None,
            timer_gen: 0,
            group: 0,
            extra_delay: 0,
            wakes: 0,
            contacted: Vec::new(),
        });
        i
    }

    /// Number of member slots.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Index of the member at `addr`.
    pub fn member_index(&self, addr: &NodeAddr) -> Option<usize> {
        self.index.get(addr).map(|&i| i as usize)
    }

    /// Member `i`'s address.
    pub fn addr(&self, i: usize) -> &NodeAddr {
        &self.members[i].addr
    }

    /// Runs `machine` as member `i` (replacing a crashed or frozen one): it
    /// is up, its old timer is void, and its outputs are drained.
    pub fn start(&mut self, i: usize, machine: Machine) {
        let s = &mut self.members[i];
        s.machine = Some(machine);
        s.down = false;
        s.timer_at = None;
        s.timer_gen = s.timer_gen.wrapping_add(1);
        self.drain(i, false);
    }

    /// Crashes member `i`: its machine is taken out (and returned), its
    /// timer is void, messages to it are dropped.
    pub fn crash(&mut self, i: usize) -> Option<Machine> {
        let s = &mut self.members[i];
        s.timer_at = None;
        s.timer_gen = s.timer_gen.wrapping_add(1);
        s.machine.take()
    }

    /// Freezes (`true`) or thaws member `i`: a frozen member keeps its
    /// machine, for reading, but is not woken and messages to it are
    /// dropped. Thawing re-arms its timer.
    pub fn set_down(&mut self, i: usize, down: bool) {
        let s = &mut self.members[i];
        s.down = down;
        s.timer_at = None;
        s.timer_gen = s.timer_gen.wrapping_add(1);
        if !down {
            self.drain(i, false);
        }
    }

    /// Whether member `i` runs a machine and is not frozen.
    pub fn is_up(&self, i: usize) -> bool {
        let s = &self.members[i];
        s.machine.is_some() && !s.down
    }

    /// Member `i`'s machine, running or frozen.
    pub fn machine(&self, i: usize) -> Option<&Machine> {
        self.members.get(i).and_then(|s| s.machine.as_ref())
    }

    /// Every member's machine, running or frozen, with its index.
    pub fn machines(&self) -> impl Iterator<Item = (usize, &Machine)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.machine.as_ref().map(|m| (i, m)))
    }

    /// Member `i`'s machine, to change behind the harness's back: nothing
    /// it sends, and no change of its deadline, is seen until its next input
    /// or `Harness::drain`.
    pub fn machine_mut(&mut self, i: usize) -> Option<&mut Machine> {
        self.members.get_mut(i).and_then(|s| s.machine.as_mut())
    }

    /// Calls `f` with member `i`'s machine (running or frozen) and the
    /// current instant, then drains its outputs. `None` if it has no machine.
    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Machine, Instant) -> R) -> Option<R> {
        let now = self.now_instant();
        let r = f(self.members[i].machine.as_mut()?, now);
        self.drain(i, false);
        Some(r)
    }

    /// Member `i`'s partition group: messages between members of different
    /// groups are dropped on arrival. All start in group 0.
    pub fn group(&self, i: usize) -> u16 {
        self.members[i].group
    }

    /// Puts member `i` in partition group `g`.
    pub fn set_group(&mut self, i: usize, g: u16) {
        self.members[i].group = g;
    }

    /// Every message to member `i` takes `d` longer (a slow member).
    pub fn set_extra_delay(&mut self, i: usize, d: Duration) {
        self.members[i].extra_delay = nanos(d);
    }

    /// Calls of member `i`'s `handle_timeout` so far.
    pub fn wakes(&self, i: usize) -> u64 {
        self.members[i].wakes
    }

    // ------------------------------------------------------------ getters

    /// Virtual time since the harness was created.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    /// [`Harness::now`] in nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.now
    }

    /// The instant the machines see now: the base instant plus
    /// [`Harness::now`].
    pub fn now_instant(&self) -> Instant {
        self.instant(self.now)
    }

    /// The base instant (virtual time zero).
    pub fn base(&self) -> Instant {
        self.base
    }

    fn instant(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    /// The network's counters.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Sets the network's counters back to zero.
    pub fn reset_traffic(&mut self) {
        self.traffic = Traffic::default();
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    /// Heap entries processed so far (deliveries, wake-ups including stale
    /// ones, tasks).
    pub fn processed(&self) -> u64 {
        self.processed
    }

    /// Wake-ups after which a machine's deadline had not moved past the
    /// time of the wake-up (a machine bug; the harness moves on by
    /// [`STALL`]).
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// Moves the events collected so far, each with its member's index, to
    /// the end of `out`, in the order they were raised.
    pub fn take_events(&mut self, out: &mut Vec<(usize, Event)>) {
        out.append(&mut self.events);
    }

    // ------------------------------------------------------------ driving

    /// Schedules the caller's task `id` at virtual time `at` (not before
    /// now); [`Harness::step`] returns [`Stepped::Task`] then.
    pub fn schedule_task(&mut self, at: Duration, id: u32) {
        let at = nanos(at).max(self.now);
        self.push(at, What::Task { id });
    }

    /// Virtual time of the next heap entry (which may be a stale wake-up).
    pub fn next_at(&self) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse(e)| Duration::from_nanos(e.at))
    }

    /// Sets the clock to `t` if it is later; entries due before `t` are
    /// not processed (call [`Harness::run_until`] for that).
    pub fn advance_to(&mut self, t: Duration) {
        self.now = self.now.max(nanos(t));
    }

    /// Processes the next heap entry; `None` if there is none.
    pub fn step(&mut self) -> Option<Stepped> {
        let Reverse(e) = self.heap.pop()?;
        debug_assert!(e.at >= self.now, "time went backwards");
        self.now = self.now.max(e.at);
        self.processed += 1;
        Some(match e.what {
            What::Timer { member, timer_gen } => {
                let i = member as usize;
                let now = self.instant(self.now);
                let s = &mut self.members[i];
                if s.timer_gen != timer_gen || s.down {
                    return Some(Stepped::Stale);
                }
                let Some(m) = s.machine.as_mut() else {
                    return Some(Stepped::Stale);
                };
                s.timer_at = None;
                s.wakes += 1;
                m.handle_timeout(now);
                self.drain(i, true);
                Stepped::Woke(i)
            }
            What::Deliver { slot } => {
                // The entry is gone, so is the slot's use: free it even if
                // the message was taken out of flight.
                self.free.push(slot);
                let Some(f) = self.slab[slot as usize].take() else {
                    return Some(Stepped::Dropped);
                };
                let (from, to) = (f.from as usize, f.to as usize);
                if self.members[from].group != self.members[to].group {
                    self.traffic.dropped_partition += 1;
                    return Some(Stepped::Dropped);
                }
                let now = self.instant(self.now);
                let s = &mut self.members[to];
                match s.machine.as_mut() {
                    Some(m) if !s.down => {
                        m.handle_message(now, f.t.msg);
                        self.drain(to, false);
                        Stepped::Delivered(to)
                    }
                    None if self.refusals == Refusals::OnSend => {
                        self.traffic.refused += 1;
                        let back = (self.latency)(&mut self.rng);
                        let what = What::Refused {
                            member: from as u32,
                            to: to as u32,
                        };
                        self.push(self.now + back, what);
                        Stepped::Dropped
                    }
                    _ => {
                        self.traffic.dropped_down += 1;
                        Stepped::Dropped
                    }
                }
            }
            What::Refused { member, to } => {
                let i = member as usize;
                let now = self.instant(self.now);
                let addr = self.members[to as usize].addr.clone();
                let s = &mut self.members[i];
                match s.machine.as_mut() {
                    Some(m) if !s.down => {
                        m.handle_send_error(now, &addr, true);
                        self.drain(i, false);
                        Stepped::Refused(i)
                    }
                    _ => Stepped::Stale,
                }
            }
            What::Task { id } => Stepped::Task(id),
        })
    }

    /// Processes every entry due up to and including virtual time `t`, then
    /// sets the clock to `t` (if later).
    ///
    /// # Panics
    /// If a task is due: a caller with tasks runs its own loop over
    /// [`Harness::step`].
    pub fn run_until(&mut self, t: Duration) {
        let t = nanos(t);
        while self.heap.peek().is_some_and(|Reverse(e)| e.at <= t) {
            if let Some(Stepped::Task(id)) = self.step() {
                panic!("task {id} is due: run the harness with `step`");
            }
        }
        self.now = self.now.max(t);
    }

    /// Drains member `i`'s outputs after a change made through
    /// [`Harness::machine_mut`].
    pub fn drain_member(&mut self, i: usize) {
        self.drain(i, false);
    }

    /// Takes every message in flight out of the network (their deliveries
    /// will find nothing), in the order they would have been delivered.
    pub fn take_in_flight(&mut self) -> Vec<Transmit> {
        let mut due: Vec<(u64, u64, u32)> = self
            .heap
            .iter()
            .filter_map(|Reverse(e)| match e.what {
                What::Deliver { slot } => Some((e.at, e.seq, slot)),
                _ => None,
            })
            .collect();
        due.sort_unstable();
        due.into_iter()
            .filter_map(|(_, _, slot)| self.slab[slot as usize].take())
            .map(|f| f.t)
            .collect()
    }

    /// Takes out of flight every message for which `keep` is false.
    pub fn retain_in_flight(&mut self, mut keep: impl FnMut(&Transmit) -> bool) {
        for f in &mut self.slab {
            if f.as_ref().is_some_and(|f| !keep(&f.t)) {
                *f = None;
            }
        }
    }

    // ---------------------------------------------------------- internals

    fn push(&mut self, at: u64, what: What) {
        self.seq += 1;
        let seq = match (self.order, what) {
            (SameInstant::MessagesFirst, What::Timer { member, .. }) => {
                TIMER_CLASS | u64::from(member)
            }
            _ => self.seq,
        };
        self.heap.push(Reverse(Entry { at, seq, what }));
    }

    /// Drains member `i`'s outputs after an input, in the machine's order:
    /// transmits, the next timeout, events.
    fn drain(&mut self, i: usize, from_timer: bool) {
        let base = self.base;
        let s = &mut self.members[i];
        let down = s.down;
        let Some(m) = s.machine.as_mut() else {
            return;
        };
        let mut batch = std::mem::take(&mut self.batch);
        while let Some(t) = m.poll_transmit() {
            batch.push(t);
        }
        let mut deadline = m.poll_timeout();
        if let Some(f) = self.wake_also
            && let Some(w) = f(m)
        {
            deadline = Some(deadline.map_or(w, |d| d.min(w)));
        }
        let deadline = deadline.map(|d| nanos(d.saturating_duration_since(base)));
        while let Some(e) = m.poll_event() {
            self.events.push((i, e));
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
        self.answer_checks(i);
        self.reschedule(i, if down { None } else { deadline }, from_timer);
    }

    /// Answers member `i`'s listener checks: a crashed member's address
    /// refuses one round trip later, if the model says so; anything else
    /// (alive, frozen, across a partition, unknown) gets no answer.
    fn answer_checks(&mut self, i: usize) {
        let Some(m) = self.members[i].machine.as_mut() else {
            return;
        };
        let addrs: Vec<NodeAddr> = std::iter::from_fn(|| m.poll_refusal_check()).collect();
        if self.refusals == Refusals::Silent {
            return;
        }
        for addr in addrs {
            let Some(&to) = self.index.get(&addr) else {
                continue;
            };
            let t = &self.members[to as usize];
            if t.machine.is_some() || t.group != self.members[i].group {
                continue;
            }
            self.traffic.refused += 1;
            let back = (self.latency)(&mut self.rng) + (self.latency)(&mut self.rng);
            let what = What::Refused {
                member: i as u32,
                to,
            };
            self.push(self.now + back, what);
        }
    }

    /// Counts the pair `{a, b}` in [`Traffic::pairs`] the first time.
    fn count_pair(&mut self, a: usize, b: usize) {
        let (lo, hi) = (a.min(b), a.max(b));
        let bits = &mut self.members[lo].contacted;
        let (word, bit) = (hi / 64, 1u64 << (hi % 64));
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & bit == 0 {
            bits[word] |= bit;
            self.traffic.pairs += 1;
        }
    }

    fn route(&mut self, from: usize, t: Transmit) {
        let kind = MessageKind::of(&t.msg);
        let size = t.msg.encoded_len();
        if let Some(max) = self.max_message_size {
            assert!(size <= max, "message of {size} bytes exceeds {max}");
        }
        let piggyback = prost::encoding::message::encoded_len_repeated(3, &t.msg.updates)
            + prost::encoding::message::encoded_len_repeated(4, &t.msg.broadcasts);
        self.traffic.sent.add(kind, size);
        self.traffic.piggyback_bytes += piggyback as u64;
        if let Some(log) = &mut self.log {
            log.push(t.clone());
        }
        let Some(&to) = self.index.get(&t.to) else {
            self.traffic.dropped_unknown += 1;
            return;
        };
        self.count_pair(from, to as usize);
        if self.loss > 0.0 && self.rng.random_bool(self.loss) {
            self.traffic.dropped_loss += 1;
            return;
        }
        let delay = (self.latency)(&mut self.rng) + self.members[to as usize].extra_delay;
        let f = InFlight {
            from: from as u32,
            to,
            t,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(f);
                s
            }
            None => {
                self.slab.push(Some(f));
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
                Some(now + nanos(STALL))
            }
            Some(d) => Some(d.max(now)),
            None => None,
        };
        let s = &mut self.members[i];
        if at == s.timer_at {
            return;
        }
        s.timer_gen = s.timer_gen.wrapping_add(1);
        s.timer_at = at;
        let timer_gen = s.timer_gen;
        if let Some(a) = at {
            self.push(
                a,
                What::Timer {
                    member: i as u32,
                    timer_gen,
                },
            );
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
