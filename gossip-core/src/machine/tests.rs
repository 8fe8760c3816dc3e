//! Cluster tests of the state machine: many machines on the discrete-event
//! harness ([`crate::harness`]), virtual time. No sockets, no tokio, no
//! sleeps.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;
use prost::Message;

use super::{Machine, Timer, Transmit};
use crate::config::Config;
use crate::event::{Event, MemberState};
use crate::harness::{Harness, Refusals, SameInstant, Traffic, WakeFn};
use crate::id::{NodeAddr, NodeId};
use crate::members::{Fact, fact_to_pb};
use crate::stats::MessageKind;

const LATENCY: Duration = Duration::from_millis(1);

fn addr(i: usize) -> NodeAddr {
    NodeAddr::parse(&format!("n{i}:7000")).unwrap()
}

fn cfg() -> Config {
    Config::default()
}

/// A cluster of machines over the discrete-event harness (constant latency,
/// [`SameInstant::MessagesFirst`]), with members named by number
/// (`addr(i)`), and what the tests read collected in plain maps.
struct Net {
    h: Harness,
    start: Instant,
    now: Instant,
    cfg: Config,
    events: BTreeMap<NodeAddr, Vec<Event>>,
    loss: f64,
    /// Messages and bytes sent, by kind name ([`MessageKind::as_str`]).
    sent: BTreeMap<&'static str, (u64, u64)>,
    /// Every message sent, if recording.
    log: Option<Vec<Transmit>>,
    /// Extra delay of every message to these members (a slow member).
    slow: BTreeMap<NodeAddr, Duration>,
    /// Calls of `handle_timeout` (driver wake-ups), by member.
    wakes: BTreeMap<NodeAddr, u64>,
    /// Also wake every member at each of its gossip ticks, whether
    /// `poll_timeout` asks for it or not (as before quiet members slept).
    every_tick: bool,
    /// The harness's counters already added to `sent` and `wakes`.
    counted: Traffic,
    woken: Vec<u64>,
}

/// The extra wake-ups of [`Net::every_tick`]: each member's gossip tick.
fn gossip_tick(m: &Machine) -> Option<Instant> {
    Some(m.sync.next_tick())
}

impl Net {
    fn new(cfg: Config) -> Self {
        let mut h = Harness::new(7);
        h.set_fixed_latency(LATENCY);
        h.set_order(SameInstant::MessagesFirst);
        h.set_max_message_size(Some(cfg.max_message_size));
        let now = h.now_instant();
        Self {
            h,
            start: now,
            now,
            cfg,
            events: BTreeMap::new(),
            loss: 0.0,
            sent: BTreeMap::new(),
            log: None,
            slow: BTreeMap::new(),
            wakes: BTreeMap::new(),
            every_tick: false,
            counted: Traffic::default(),
            woken: Vec::new(),
        }
    }

    /// Harness index of member `i`.
    fn idx(&self, i: usize) -> usize {
        self.h.member_index(&addr(i)).expect("a spawned member")
    }

    /// Hands the harness the settings the tests change in place.
    fn sync(&mut self) {
        self.h.set_loss(self.loss);
        self.h.set_recording(self.log.is_some());
        self.h
            .set_wake_also(self.every_tick.then_some(gossip_tick as WakeFn));
        for i in 0..self.h.members() {
            let extra = self.slow.get(self.h.addr(i)).copied().unwrap_or_default();
            self.h.set_extra_delay(i, extra);
        }
    }

    /// Collects what the harness saw: the clock, events, the log and the
    /// counters.
    fn pull(&mut self) {
        self.now = self.h.now_instant();
        let mut events = Vec::new();
        self.h.take_events(&mut events);
        for (i, e) in events {
            let a = self.h.addr(i).clone();
            self.events.entry(a).or_default().push(e);
        }
        if let Some(log) = &mut self.log {
            log.extend(self.h.take_log());
        }
        let t = self.h.traffic();
        for k in MessageKind::ALL {
            let m = t.sent.messages(k) - self.counted.sent.messages(k);
            let b = t.sent.bytes(k) - self.counted.sent.bytes(k);
            if m > 0 {
                let e = self.sent.entry(k.as_str()).or_default();
                e.0 += m;
                e.1 += b;
            }
        }
        self.counted = t.clone();
        self.woken.resize(self.h.members(), 0);
        for i in 0..self.h.members() {
            let w = self.h.wakes(i);
            if w > self.woken[i] {
                *self.wakes.entry(self.h.addr(i).clone()).or_default() += w - self.woken[i];
                self.woken[i] = w;
            }
        }
    }

    /// Starts member `i` (generation `generation`) seeded with `seed`.
    fn spawn(&mut self, i: usize, generation: u64, seed: Option<usize>) {
        self.sync();
        let a = addr(i);
        let mut m = Machine::new(
            NodeId::new(a.clone(), generation),
            self.cfg.clone(),
            (i as u64) << 8 | generation,
            self.now,
        )
        .expect("valid config");
        if let Some(s) = seed {
            m.add_seed(self.now, addr(s));
        }
        let idx = match self.h.member_index(&a) {
            Some(idx) => idx,
            None => self.h.add_member(a),
        };
        self.h.start(idx, m);
        self.pull();
    }

    /// A chain: member i is seeded with member i - 1.
    fn chain(cfg: Config, n: usize) -> Self {
        let mut net = Self::new(cfg);
        for i in 0..n {
            net.spawn(i, 1, i.checked_sub(1));
        }
        net
    }

    fn m(&self, i: usize) -> &Machine {
        self.h.machine(self.idx(i)).unwrap()
    }

    /// Member `i`'s machine, changed behind the network's back (nothing is
    /// drained).
    fn node_mut(&mut self, i: usize) -> &mut Machine {
        let idx = self.idx(i);
        self.h.machine_mut(idx).unwrap()
    }

    /// Every spawned member's machine, running or crashed.
    fn machines(&self) -> impl Iterator<Item = &Machine> {
        self.h.machines().map(|(_, m)| m)
    }

    fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Machine, Instant) -> R) -> R {
        self.sync();
        let r = self.h.with(self.idx(i), f).unwrap();
        self.pull();
        r
    }

    /// Member `i` stops: it is not woken and messages to it are dropped;
    /// its machine stays readable.
    fn crash(&mut self, i: usize) {
        let idx = self.idx(i);
        self.h.set_down(idx, true);
    }

    /// Advances to the next instant that has anything due and processes
    /// everything due then (deliveries first, then wake-ups by member).
    fn step(&mut self) {
        self.sync();
        match self.h.next_at() {
            Some(t) => {
                while self.h.next_at() == Some(t) {
                    self.h.step();
                }
            }
            None => self.h.advance_to(self.h.now() + Duration::from_secs(1)),
        }
        self.pull();
    }

    /// Processes everything due before `now + d`, and nothing after: the
    /// first event at or past the end (a probe, say, now that quiet members
    /// are not woken for idle gossip ticks) belongs to the next period.
    fn run_for(&mut self, d: Duration) {
        let end = self.h.now() + d;
        while self.h.next_at().is_some_and(|t| t < end) {
            self.step();
        }
        self.h.advance_to(end);
        self.pull();
    }

    /// Runs until `cond` holds; returns the virtual time it took, or panics
    /// after `limit`.
    #[track_caller]
    fn run_until(&mut self, limit: Duration, what: &str, cond: impl Fn(&Net) -> bool) -> Duration {
        let begin = self.now;
        while !cond(self) {
            assert!(
                self.now - begin <= limit,
                "{what}: not reached within {limit:?}"
            );
            self.step();
        }
        self.now - begin
    }

    /// The running members' machines.
    fn live_up(&self) -> Vec<&Machine> {
        (0..self.h.members())
            .filter(|&i| self.h.is_up(i))
            .filter_map(|i| self.h.machine(i))
            .collect()
    }

    /// Every running member lists exactly the running members.
    fn converged(&self) -> bool {
        let up: Vec<&NodeAddr> = self.live_up().iter().map(|m| &m.local_id().addr).collect();
        self.live_up().iter().all(|m| {
            let seen: Vec<NodeAddr> = m.members(self.now).into_iter().map(|m| m.addr).collect();
            seen.len() == up.len() && up.iter().all(|u| seen.contains(u))
        })
    }

    fn state_of(&self, observer: usize, subject: usize) -> Option<MemberState> {
        self.m(observer)
            .member(self.now, &addr(subject))
            .map(|m| m.state)
    }

    fn events_of(&self, i: usize) -> &[Event] {
        self.events.get(&addr(i)).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Sends `updates` to member `to`, as if from member `from`.
    fn inject(&mut self, from: usize, to: usize, updates: Vec<pb::MemberUpdate>) {
        let msg = pb::Envelope {
            cluster_id: self.cfg.cluster_id.clone(),
            from: Some(self.m(from).local_id().to_pb()),
            incarnation: self.m(from).incarnation(),
            updates,
            broadcasts: vec![],
            body: Some(Body::Gossip(pb::Gossip {})),
            ..Default::default()
        };
        self.with(to, |m, now| m.handle_message(now, msg));
    }
}

fn update(i: usize, generation: u64, inc: u64, state: MemberState) -> pb::MemberUpdate {
    fact_to_pb(&Fact {
        id: NodeId::new(addr(i), generation),
        incarnation: inc,
        state,
    })
}

#[test]
fn join_through_a_seed() {
    let mut net = Net::chain(cfg(), 2);
    let took = net.run_until(Duration::from_secs(2), "join", Net::converged);
    assert!(
        took < Duration::from_millis(50),
        "join took {took:?}: it should take round trips"
    );
    assert!(matches!(net.events_of(0).first(), Some(Event::Joined(m)) if m.addr == addr(1)));
    // Last heard: zero for oneself, the time since the last message for a
    // peer.
    net.run_for(Duration::from_millis(700));
    let members = net.m(0).members(net.now);
    let me = members.iter().find(|m| m.addr == addr(0)).unwrap();
    assert_eq!(me.last_heard, Some(Duration::ZERO));
    let peer = members.iter().find(|m| m.addr == addr(1)).unwrap();
    let heard = peer.last_heard.expect("heard from the peer");
    assert!(heard < Duration::from_secs(1), "{heard:?}");
}

#[test]
fn a_seed_that_never_answers_is_not_a_member() {
    let mut net = Net::new(cfg());
    net.spawn(0, 1, Some(9));
    net.run_for(Duration::from_secs(60));
    let members = net.m(0).members(net.now);
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].addr, addr(0));
    let attempts = net.sent["sync_request"].0;
    // Backoff: 0.5 s doubling to 10 s over 60 s is about 10 attempts, not 120.
    assert!((5..=15).contains(&attempts), "{attempts} attempts");
}

#[test]
fn a_suspected_member_refutes_with_a_higher_incarnation() {
    let mut net = Net::chain(cfg(), 3);
    net.run_until(Duration::from_secs(2), "join", Net::converged);
    // Member 2 tells member 0 that member 1 is suspect.
    net.inject(2, 0, vec![update(1, 1, 0, MemberState::Suspect)]);
    assert_eq!(net.state_of(0, 1), Some(MemberState::Suspect));
    net.run_until(Duration::from_secs(2), "refutation", |n| {
        (0..3).all(|o| {
            n.m(o)
                .member(n.now, &addr(1))
                .is_some_and(|m| m.state == MemberState::Alive && m.incarnation == 1)
        })
    });
    assert!(
        net.events_of(0)
            .iter()
            .any(|e| matches!(e, Event::Suspected(id) if id.addr == addr(1)))
    );
    assert!(
        net.events_of(0)
            .iter()
            .any(|e| matches!(e, Event::Updated(m) if m.addr == addr(1) && m.incarnation == 1))
    );
    // Nobody declared it dead.
    net.run_for(Duration::from_secs(30));
    assert!(net.converged());
}

#[test]
fn a_crashed_member_goes_suspect_then_dead_within_the_bound() {
    let cfg = cfg();
    let bound = cfg.detection_bound(5);
    let mut net = Net::chain(cfg, 5);
    net.run_until(Duration::from_secs(2), "join", Net::converged);
    net.crash(4);
    let took = net.run_until(bound, "detection", Net::converged);
    for o in 0..4 {
        assert_eq!(net.state_of(o, 4), Some(MemberState::Dead), "observer {o}");
        let ev = net.events_of(o);
        let s = ev
            .iter()
            .position(|e| matches!(e, Event::Suspected(id) if id.addr == addr(4)));
        let f = ev
            .iter()
            .position(|e| matches!(e, Event::Failed(id) if id.addr == addr(4)));
        assert!(f.is_some(), "observer {o} saw no Failed event");
        if let (Some(s), Some(f)) = (s, f) {
            assert!(s < f, "suspected before failed");
        }
    }
    // Every observer runs its own suspicion timer (a remote "dead" only makes
    // it suspect); with K = 3 confirmations the timeout falls from its 24 s
    // maximum to its 4 s minimum, so all have removed it after about two
    // probe periods plus the minimum, far inside the 27 s bound.
    assert!(took < Duration::from_secs(12), "detection took {took:?}");
}

/// The time until every other member of 11 declared a crashed one dead,
/// with `model` for what the crashed member's host answers.
fn removal_after_crash(model: Refusals) -> Duration {
    let mut net = Net::chain(cfg(), 11);
    net.h.set_refusal_model(model);
    net.run_until(Duration::from_secs(5), "join", Net::converged);
    let idx = net.idx(10);
    net.h.crash(idx);
    let took = net.run_until(Duration::from_secs(60), "removal", Net::converged);
    for o in 0..10 {
        assert_eq!(net.state_of(o, 10), Some(MemberState::Dead), "observer {o}");
    }
    took
}

#[test]
fn a_listener_check_takes_the_fast_path_when_sends_cannot_tell() {
    // QUIC's case: a message to the crashed member vanishes, but a check of
    // its address is refused (ICMP port unreachable on a connected socket).
    let fast = removal_after_crash(Refusals::OnCheck);
    // A host that lost power refuses nothing: the slow path (a suspicion
    // timeout of at least 4 probe periods).
    let slow = removal_after_crash(Refusals::Silent);
    let period = cfg().probe_interval;
    assert!(fast < period * 3, "fast path took {fast:?}");
    assert!(slow > period * 4, "slow path took only {slow:?}");
}

#[test]
fn a_tombstone_blocks_resurrection_by_stale_gossip() {
    let mut net = Net::chain(cfg(), 3);
    net.run_until(Duration::from_secs(2), "join", Net::converged);
    net.crash(2);
    net.run_until(cfg().detection_bound(3), "detection", Net::converged);
    // Stale facts about member 2 (same generation, old incarnation) arrive.
    net.inject(
        1,
        0,
        vec![
            update(2, 1, 0, MemberState::Alive),
            update(2, 1, 0, MemberState::Suspect),
        ],
    );
    assert_eq!(net.state_of(0, 2), Some(MemberState::Dead));
    // A stale message from member 2 itself does not revive it either.
    let stale = pb::Envelope {
        cluster_id: "default".into(),
        from: Some(NodeId::new(addr(2), 1).to_pb()),
        incarnation: 0,
        body: Some(Body::Gossip(pb::Gossip {})),
        ..Default::default()
    };
    let now = net.now;
    net.node_mut(0).handle_message(now, stale);
    assert_eq!(net.state_of(0, 2), Some(MemberState::Dead));
    assert_eq!(net.m(0).members(net.now).len(), 2);
    // After the tombstone TTL it is forgotten.
    net.run_for(cfg().tombstone_ttl + Duration::from_secs(20));
    assert_eq!(net.state_of(0, 2), None);
}

#[test]
fn a_restart_with_a_new_generation_replaces_the_old_life() {
    let mut net = Net::chain(cfg(), 3);
    net.run_until(Duration::from_secs(2), "join", Net::converged);
    net.with(2, |m, now| {
        m.set_key(now, "old", Bytes::from_static(b"x"), None)
            .unwrap()
    });
    net.run_until(Duration::from_secs(2), "key", |n| {
        n.m(0).get_key(n.now, &addr(2), "old").is_some()
    });
    // Member 2 restarts at once on the same address, before anyone noticed.
    net.crash(2);
    net.spawn(2, 2, Some(0));
    net.run_until(Duration::from_secs(3), "restart", |n| {
        (0..2).all(|o| {
            n.m(o)
                .member(n.now, &addr(2))
                .is_some_and(|m| m.generation == 2 && m.state == MemberState::Alive)
        })
    });
    assert!(
        net.m(0).get_key(net.now, &addr(2), "old").is_none(),
        "the old life's keys are gone"
    );
    net.run_for(Duration::from_secs(30));
    assert!(net.converged(), "the new life is not declared dead");
    assert_eq!(net.m(1).member(net.now, &addr(2)).unwrap().generation, 2);
}

#[test]
fn keys_set_delete_and_metadata_reach_everyone() {
    let mut net = Net::chain(cfg(), 5);
    net.run_until(Duration::from_secs(3), "join", Net::converged);
    net.with(0, |m, now| {
        m.set_key(now, "a", Bytes::from_static(b"1"), None).unwrap();
        m.set_meta(now, BTreeMap::from([("role".into(), "db".into())]))
            .unwrap();
    });
    let took = net.run_until(Duration::from_secs(3), "key", |n| {
        (0..5).all(|o| {
            n.m(o)
                .get_key(n.now, &addr(0), "a")
                .is_some_and(|e| e.value == "1")
                && n.m(o)
                    .member(n.now, &addr(0))
                    .unwrap()
                    .meta
                    .get("role")
                    .is_some_and(|r| r == "db")
        })
    });
    assert!(took < Duration::from_millis(50), "eager push: {took:?}");
    net.with(0, |m, now| m.delete_key(now, "a").unwrap());
    net.run_until(Duration::from_secs(3), "delete", |n| {
        (0..5).all(|o| n.m(o).get_key(n.now, &addr(0), "a").is_none())
    });
    let ev = net.events_of(3);
    let changes: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::KeyChanged { key, value, .. } if key == "a" => Some(value.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        vec![Some(Bytes::from_static(b"1")), None],
        "in order"
    );
}

#[test]
fn key_versions_merge_out_of_order() {
    let mut net = Net::chain(cfg(), 2);
    net.run_until(Duration::from_secs(2), "join", Net::converged);
    // Capture member 0's pushes instead of delivering them.
    net.h.take_in_flight();
    net.with(0, |m, now| {
        m.set_key(now, "k", Bytes::from_static(b"v1"), None)
            .unwrap();
        m.set_key(now, "k", Bytes::from_static(b"v2"), None)
            .unwrap();
    });
    let mut pushes: Vec<Transmit> = net
        .h
        .take_in_flight()
        .into_iter()
        .filter(|t| matches!(t.msg.body, Some(Body::Delta(_))))
        .collect();
    assert_eq!(pushes.len(), 2);
    pushes.reverse();
    let now = net.now;
    for t in pushes.iter().chain(pushes.iter()) {
        net.node_mut(1).handle_message(now, t.msg.clone());
    }
    assert_eq!(net.m(1).get_key(now, &addr(0), "k").unwrap().value, "v2");
    assert_eq!(net.m(1).member(now, &addr(0)).unwrap().version, 2);
}

#[test]
fn a_key_with_a_ttl_expires_everywhere() {
    let mut net = Net::chain(cfg(), 4);
    net.run_until(Duration::from_secs(3), "join", Net::converged);
    net.with(1, |m, now| {
        m.set_key(
            now,
            "t",
            Bytes::from_static(b"x"),
            Some(Duration::from_secs(3)),
        )
        .unwrap()
    });
    net.run_until(Duration::from_secs(1), "spread", |n| {
        (0..4).all(|o| n.m(o).get_key(n.now, &addr(1), "t").is_some())
    });
    let t = net.run_until(Duration::from_secs(5), "expiry", |n| {
        (0..4).all(|o| n.m(o).get_key(n.now, &addr(1), "t").is_none())
    });
    assert!(t <= Duration::from_secs(3));
    net.run_for(Duration::from_secs(2));
    for o in 0..4 {
        let last = net.events_of(o).iter().rev().find_map(|e| match e {
            Event::KeyChanged { key, value, .. } if key == "t" => Some(value.clone()),
            _ => None,
        });
        assert_eq!(last, Some(None), "member {o} saw the expiry");
    }
}

#[test]
fn a_broadcast_is_delivered_once_by_every_member() {
    let mut net = Net::chain(cfg(), 12);
    net.run_until(Duration::from_secs(5), "join", Net::converged);
    let uuid = net.with(3, |m, now| {
        m.broadcast(now, Bytes::from_static(b"hello"), None)
            .unwrap()
    });
    net.run_for(Duration::from_secs(10));
    for o in 0..12 {
        let n = net
            .events_of(o)
            .iter()
            .filter(|e| matches!(e, Event::Broadcast(b) if b.uuid == uuid && b.payload == "hello"))
            .count();
        assert_eq!(n, 1, "member {o} delivered it {n} times");
    }
}

#[test]
fn a_member_that_leaves_is_dropped_at_once() {
    let mut net = Net::chain(cfg(), 5);
    net.run_until(Duration::from_secs(3), "join", Net::converged);
    net.with(2, |m, now| m.leave(now));
    net.crash(2);
    let took = net.run_until(Duration::from_secs(1), "leave", Net::converged);
    assert!(took <= Duration::from_millis(5), "{took:?}");
    assert_eq!(net.state_of(0, 2), Some(MemberState::Left));
    assert!(
        net.events_of(0)
            .iter()
            .any(|e| matches!(e, Event::Left(id) if id.addr == addr(2)))
    );
    assert!(net.m(2).poll_timeout().is_none());
}

#[test]
fn messages_from_another_cluster_change_nothing() {
    let mut net = Net::chain(cfg(), 2);
    net.run_until(Duration::from_secs(2), "join", Net::converged);
    let before = net.m(0).members(net.now);
    let foreign = pb::Envelope {
        cluster_id: "other".into(),
        from: Some(NodeId::new(addr(9), 1).to_pb()),
        updates: vec![update(1, 1, 5, MemberState::Dead)],
        body: Some(Body::Gossip(pb::Gossip {})),
        ..Default::default()
    };
    let now = net.now;
    net.node_mut(0).handle_message(now, foreign);
    assert_eq!(net.m(0).members(net.now), before);
    assert!(net.m(0).poll_transmit_is_empty());
}

impl Machine {
    fn poll_transmit_is_empty(&self) -> bool {
        self.transmits.is_empty()
    }
}

/// Requirement: 50 members on one seed chain reach full membership and full
/// key state within a bound stated in gossip rounds.
#[test]
fn fifty_members_converge_within_a_bound_in_rounds() {
    let cfg = cfg();
    let gossip = cfg.gossip_interval;
    let mut net = Net::chain(cfg, 50);
    for i in 0..50 {
        net.with(i, |m, now| {
            m.set_key(now, "k", Bytes::from(format!("v{i}")), None)
                .unwrap()
        });
    }
    // Bound: 2 * ceil(log2(50)) = 12 gossip rounds.
    let bound = gossip * 12;
    let took = net.run_until(bound, "convergence", |n| {
        n.converged() && (0..50).all(|o| n.m(o).kv(n.now).len() == 50)
    });
    let rounds = took.as_secs_f64() / gossip.as_secs_f64();
    assert!(rounds <= 12.0, "{rounds} rounds");
}

#[test]
fn at_rest_a_round_costs_constant_bytes() {
    let mut per_member = Vec::new();
    for n in [10, 40] {
        let mut net = Net::chain(cfg(), n);
        net.run_until(Duration::from_secs(10), "join", Net::converged);
        net.run_for(Duration::from_secs(30));
        net.sent.clear();
        net.run_for(Duration::from_secs(10));
        assert!(
            !net.sent.contains_key("sync_digest"),
            "{n}: digests exchanged at rest: {:?}",
            net.sent
        );
        let bytes: u64 = net.sent.values().map(|(_, b)| b).sum();
        per_member.push(bytes as f64 / n as f64 / 10.0);
    }
    // The same cost per member per second at 10 and at 40 members.
    let ratio = per_member[1] / per_member[0];
    assert!(
        (0.8..1.25).contains(&ratio),
        "bytes/member/s {per_member:?}"
    );
    assert!(per_member[1] < 2000.0, "bytes/member/s {per_member:?}");
}

#[test]
fn large_states_go_as_several_bounded_messages() {
    let mut c = cfg();
    c.max_message_size = 4096;
    let mut net = Net::chain(c, 2);
    net.run_until(Duration::from_secs(2), "join", Net::converged);
    // 200 keys of 200 bytes: 40 KB of state through 4 KB messages.
    for k in 0..200 {
        net.with(0, |m, now| {
            m.set_key(now, &format!("key{k}"), Bytes::from(vec![b'x'; 200]), None)
                .unwrap()
        });
    }
    net.spawn(2, 1, Some(1));
    net.run_until(Duration::from_secs(5), "state transfer", |n| {
        n.m(2)
            .kv(n.now)
            .get(&addr(0))
            .is_some_and(|k| k.len() == 200)
    });
    // Every message was checked against the limit in `drain`.
    assert!(net.sent["delta"].0 > 10);
}

#[test]
fn too_large_inputs_are_refused_and_change_nothing() {
    let now = Instant::now();
    let mut m = Machine::new(NodeId::new(addr(0), 1), cfg(), 1, now).expect("valid config");
    let big = Bytes::from(vec![0u8; 70_000]);
    assert!(m.set_key(now, "k", big.clone(), None).is_err());
    assert!(m.broadcast(now, big, None).is_err());
    assert!(m.set_key(now, "", Bytes::new(), None).is_err());
    let meta: BTreeMap<String, String> =
        (0..100).map(|i| (format!("k{i}"), String::new())).collect();
    assert!(m.set_meta(now, meta).is_err());
    assert!(m.kv(now).is_empty());
    assert_eq!(m.member(now, &addr(0)).unwrap().version, 0);
}

#[test]
fn runs_are_reproducible_from_the_seed() {
    let run = || {
        let mut net = Net::chain(cfg(), 6);
        net.log = Some(Vec::new());
        net.run_for(Duration::from_secs(5));
        net.with(2, |m, now| {
            m.set_key(now, "x", Bytes::from_static(b"y"), None).unwrap()
        });
        net.crash(4);
        net.run_for(Duration::from_secs(10));
        net.log
            .unwrap()
            .into_iter()
            .map(|t| (t.to, t.msg.encode_to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn under_twenty_percent_loss_no_live_member_is_declared_dead() {
    let mut net = Net::chain(cfg(), 8);
    net.run_until(Duration::from_secs(5), "join", Net::converged);
    net.loss = 0.2;
    net.run_for(Duration::from_secs(120));
    for o in 0..8 {
        let failed = net
            .events_of(o)
            .iter()
            .filter(|e| matches!(e, Event::Failed(_)))
            .count();
        assert_eq!(failed, 0, "member {o} declared {failed} live members dead");
    }
    net.loss = 0.0;
    net.run_until(Duration::from_secs(5), "steady", Net::converged);
}

#[test]
fn a_healed_partition_converges_to_one_view() {
    let mut net = Net::chain(cfg(), 6);
    net.run_until(Duration::from_secs(5), "join", Net::converged);
    let _ = net.start;
    // Cut {0,1,2} from {3,4,5} by crashing the links: model as loss of
    // cross-side messages.
    let left: HashSet<NodeAddr> = (0..3).map(addr).collect();
    let cross = |t: &Transmit, from_left: bool| left.contains(&t.to) != from_left;
    let end = net.now + Duration::from_secs(40);
    while net.now < end {
        net.h.retain_in_flight(|t| {
            let from = NodeAddr::parse(&t.msg.from.as_ref().unwrap().addr).unwrap();
            !cross(t, left.contains(&from))
        });
        net.step();
    }
    assert_eq!(
        net.m(0).members(net.now).len(),
        3,
        "each side dropped the other"
    );
    net.run_until(Duration::from_secs(30), "heal", Net::converged);
}

#[test]
fn a_change_in_a_large_cluster_is_located_by_bucket_fingerprints() {
    let mut c = cfg();
    c.eager_push = false;
    let n = 150;
    let mut net = Net::chain(c, n);
    net.run_until(Duration::from_secs(30), "join", Net::converged);
    net.run_for(Duration::from_secs(5));
    net.sent.clear();
    net.with(7, |m, now| {
        m.set_key(now, "k", Bytes::from_static(b"v"), None).unwrap()
    });
    net.run_until(Duration::from_secs(10), "anti-entropy spread", |x| {
        (0..n).all(|o| x.m(o).get_key(x.now, &addr(7), "k").is_some())
    });
    let (msgs, bytes) = net.sent["sync_digest"];
    let per_digest = bytes / msgs;
    // A complete digest of 150 members is ~6 KB; one bucket holds ~1.
    assert!(
        per_digest < 300,
        "{per_digest} bytes per digest: whole digests were sent"
    );
    assert!(net.sent.contains_key("sync_buckets"));
}

/// Runs 6 members where everything sent to member 0 arrives 1.2 s late
/// (beyond the 1 s probe period); returns how many times member 0 wrongly
/// suspected a healthy peer, and whether anybody was declared dead.
fn slow_member_run(max_local_health: u32) -> (usize, bool) {
    let mut c = cfg();
    c.max_local_health = max_local_health;
    let mut net = Net::chain(c, 6);
    net.run_until(Duration::from_secs(5), "join", Net::converged);
    net.slow.insert(addr(0), Duration::from_millis(1200));
    let before = net.events_of(0).len();
    net.run_for(Duration::from_secs(120));
    let accusations = net.events_of(0)[before..]
        .iter()
        .filter(|e| matches!(e, Event::Suspected(_)))
        .count();
    let deaths = (0..6).any(|o| {
        net.events_of(o)
            .iter()
            .any(|e| matches!(e, Event::Failed(_)))
    });
    net.slow.clear();
    net.run_for(Duration::from_secs(60));
    assert!(net.converged(), "recovers once the slowness ends");
    assert_eq!(net.m(0).local_health(), 0, "health recovers");
    (accusations, deaths)
}

#[test]
fn a_slow_member_stretches_its_own_probes_instead_of_accusing_healthy_peers() {
    let (with_lhm, deaths) = slow_member_run(8);
    let (without, _) = slow_member_run(0);
    eprintln!(
        "false suspicions by a slow member over 120 s: {with_lhm} with local health, {without} without"
    );
    assert!(!deaths, "a slow member must not get anyone declared dead");
    assert!(
        with_lhm * 2 <= without,
        "false suspicions with local health {with_lhm}, without {without}"
    );
}

#[test]
fn probes_that_all_fail_raise_local_health_up_to_its_bound() {
    let mut net = Net::chain(cfg(), 3);
    net.run_until(Duration::from_secs(5), "join", Net::converged);
    net.crash(1);
    net.crash(2);
    net.run_for(Duration::from_secs(30));
    let h = net.m(0).local_health();
    assert!(h >= 1 && h <= cfg().max_local_health, "{h}");
}

/// Found by the simulator: after a partition heals, the other side's death
/// verdicts must not kill members on one's own side before they can refute.
#[test]
fn healing_a_partition_kills_nobody_on_either_side() {
    let n = 20;
    let mut net = Net::chain(cfg(), n);
    net.run_until(Duration::from_secs(10), "join", Net::converged);
    let left: HashSet<NodeAddr> = (0..n / 2).map(addr).collect();
    let end = net.now + Duration::from_secs(60);
    while net.now < end {
        net.h.retain_in_flight(|t| {
            let from = NodeAddr::parse(&t.msg.from.as_ref().unwrap().addr).unwrap();
            left.contains(&from) == left.contains(&t.to)
        });
        net.step();
    }
    assert_eq!(
        net.m(0).members(net.now).len(),
        n / 2,
        "each side dropped the other"
    );
    let marks: Vec<usize> = (0..n).map(|o| net.events_of(o).len()).collect();
    net.run_until(Duration::from_secs(60), "heal", Net::converged);
    for (o, mark) in marks.iter().enumerate() {
        let own_side = left.contains(&addr(o));
        for e in &net.events_of(o)[*mark..] {
            if let Event::Failed(id) = e {
                assert!(
                    left.contains(&id.addr) != own_side,
                    "after the heal member {o} declared {id} of its own side dead"
                );
            }
        }
    }
}

#[test]
fn an_answered_probe_records_its_round_trip_time() {
    let mut net = Net::chain(cfg(), 2);
    net.run_until(Duration::from_secs(3), "join", Net::converged);
    let _ = net.with(0, |m, _| m.take_probe_rtts().count());
    net.run_for(cfg().probe_interval * 5);
    let rtts: Vec<Duration> = net.with(0, |m, _| m.take_probe_rtts().collect());
    assert!(rtts.len() >= 3, "{rtts:?}");
    // One hop each way, no loss: every probe is answered directly.
    assert!(rtts.iter().all(|&d| d == LATENCY * 2), "{rtts:?}");
    assert_eq!(net.with(0, |m, _| m.take_probe_rtts().count()), 0);
}

#[test]
fn an_unanswered_probe_records_no_round_trip_time() {
    let mut net = Net::chain(cfg(), 2);
    net.run_until(Duration::from_secs(3), "join", Net::converged);
    net.crash(1);
    let _ = net.with(0, |m, _| m.take_probe_rtts().count());
    net.run_for(cfg().probe_interval * 3);
    assert_eq!(net.with(0, |m, _| m.take_probe_rtts().count()), 0);
}

#[test]
fn a_broadcast_with_a_known_id_is_not_sent_again() {
    let mut net = Net::chain(cfg(), 3);
    net.run_until(Duration::from_secs(3), "join", Net::converged);
    let uuid = uuid::Uuid::from_u128(0x1234);
    let payload = Bytes::from_static(b"once");
    assert!(net.with(0, |m, now| {
        m.broadcast_with_id(now, uuid, payload.clone(), None)
            .unwrap()
    }));
    net.run_for(Duration::from_secs(2));
    // Again from the origin, and from a member that delivered it.
    assert!(!net.with(0, |m, now| {
        m.broadcast_with_id(now, uuid, payload.clone(), None)
            .unwrap()
    }));
    assert!(!net.with(2, |m, now| {
        m.broadcast_with_id(now, uuid, payload.clone(), Some(3))
            .unwrap()
    }));
    net.run_for(Duration::from_secs(2));
    for o in 0..3 {
        let n = net
            .events_of(o)
            .iter()
            .filter(|e| matches!(e, Event::Broadcast(b) if b.uuid == uuid && b.payload == "once"))
            .count();
        assert_eq!(n, 1, "member {o} delivered it {n} times");
    }
    let origin = net.events_of(1).iter().find_map(|e| match e {
        Event::Broadcast(b) if b.uuid == uuid => Some(b.origin.addr.clone()),
        _ => None,
    });
    assert_eq!(origin, Some(addr(0)));
}

// ------------------------------------------------------ silence at rest
// Issue #9, item 7: gossip rounds run only for a while after a change; at
// rest a member sends its probes (which carry the digest fingerprint) and a
// round per push-pull interval.

impl Net {
    /// No running member's gossip rounds run.
    fn quiet(&self) -> bool {
        self.live_up().iter().all(|m| !m.is_active())
    }

    /// Every running member has sent a message to every alive peer:
    /// warm-up (`Config::warm_up_peers`) has nothing left to send.
    fn warm(&self) -> bool {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        self.live_up()
            .iter()
            .all(|m| m.table.uncontacted_alive(&mut rng, 1).is_empty())
    }

    /// Messages of kind `k` sent so far.
    fn count(&self, k: &str) -> u64 {
        self.sent.get(k).map_or(0, |c| c.0)
    }

    /// Every member has member `owner`'s key `key`.
    fn all_have(&self, owner: usize, key: &str) -> bool {
        self.live_up()
            .iter()
            .all(|m| m.get_key(self.now, &addr(owner), key).is_some())
    }
}

/// A converged cluster of `n` at rest (every member quiet, and done with
/// its warm-up).
fn cluster_at_rest(cfg: Config, n: usize) -> Net {
    let mut net = Net::chain(cfg, n);
    net.run_until(Duration::from_secs(5), "join", Net::converged);
    net.run_until(Duration::from_secs(10), "warm", Net::warm);
    net.run_until(Duration::from_secs(10), "quiet", Net::quiet);
    net
}

#[test]
fn a_cluster_at_rest_sends_only_probes_and_a_push_pull_per_interval() {
    let n = 8;
    let c = cfg();
    let (gossip, push_pull) = (c.gossip_interval, c.push_pull_interval);
    let mut net = cluster_at_rest(c, n);
    net.sent.clear();
    net.log = Some(Vec::new());
    // 20 s is 100 gossip rounds, and less than the shortest wait before a
    // background push-pull (0.75 x 30 s) after the last active round.
    net.run_for(Duration::from_secs(20));
    let kinds: Vec<&str> = net.sent.keys().copied().collect();
    assert_eq!(kinds, ["ack", "ping"], "{:?}", net.sent);
    assert!(net.quiet());
    // One ping and one ack per member per probe interval.
    let pings = net.count("ping");
    assert!((n as u64 * 19..=n as u64 * 21).contains(&pings), "{pings}");
    // Every ping is acked; at most one per member is in flight at either
    // end of the window (pinged before it, or acked after it).
    let acks = net.count("ack");
    assert!(
        acks.abs_diff(pings) <= n as u64,
        "{acks} acks, {pings} pings"
    );
    // Every probe carries the fingerprint, and at rest it is the same.
    let hash = net.m(0).digest_hash();
    for t in net.log.as_ref().unwrap() {
        match &t.msg.body {
            Some(Body::Ping(p)) => assert_eq!((p.digest_hash, p.members), (hash, n as u32)),
            Some(Body::Ack(a)) => assert_eq!((a.digest_hash, a.members), (hash, n as u32)),
            _ => {}
        }
    }
    // Over two push-pull intervals, every member runs one or two background
    // rounds to a single peer, which its peer (same fingerprint) ignores.
    net.log = Some(Vec::new());
    net.sent.clear();
    net.run_for(push_pull * 2);
    let mut per_member: BTreeMap<String, u64> = BTreeMap::new();
    for t in net.log.as_ref().unwrap() {
        if matches!(t.msg.body, Some(Body::SyncRequest(_))) {
            *per_member
                .entry(t.msg.from.as_ref().unwrap().addr.clone())
                .or_default() += 1;
        }
    }
    assert_eq!(per_member.len(), n, "{per_member:?}");
    assert!(
        per_member.values().all(|c| (1..=3).contains(c)),
        "{per_member:?}"
    );
    assert!(!net.sent.contains_key("sync_digest"), "{:?}", net.sent);
    assert!(!net.sent.contains_key("delta"), "{:?}", net.sent);
    // Before: a round of `fanout` requests every gossip interval.
    let before = n as f64 * 3.0 * (push_pull * 2).as_secs_f64() / gossip.as_secs_f64();
    let now: u64 = per_member.values().sum();
    assert!(
        (now as f64) < before / 100.0,
        "{now} requests, {before} before"
    );
}

#[test]
fn a_change_spreads_to_all_then_the_rounds_stop_again() {
    for eager in [true, false] {
        let mut c = cfg();
        c.eager_push = eager;
        let n = 10;
        let limit = c.gossip_interval * (c.active_rounds_for(n) as u32 + 10);
        let mut net = cluster_at_rest(c, n);
        net.sent.clear();
        net.with(3, |m, now| {
            m.set_key(now, "k", Bytes::from_static(b"v"), None).unwrap()
        });
        assert!(net.m(3).is_active(), "a write makes its owner active");
        let spread = net.run_until(Duration::from_secs(3), "spread", |x| x.all_have(3, "k"));
        if eager {
            assert!(spread < Duration::from_millis(50), "{spread:?}");
        } else {
            // Anti-entropy alone: rounds started by the write carry it.
            assert!(spread < Duration::from_secs(2), "{spread:?}");
        }
        let quiet = net.run_until(limit, "quiet again", Net::quiet);
        // Rounds ran meanwhile (and found nothing more to repair).
        assert!(net.count("sync_request") > 0, "rounds ran: {:?}", net.sent);
        net.sent.clear();
        net.run_for(Duration::from_secs(10));
        assert_eq!(
            net.count("sync_request"),
            0,
            "eager {eager}: rounds after quiet ({quiet:?}): {:?}",
            net.sent
        );
    }
}

#[test]
fn a_silent_divergence_is_found_by_probe_fingerprints() {
    let mut c = cfg();
    // No background push-pull during the test: only probes can find it.
    c.push_pull_interval = Duration::from_secs(3600);
    let probe = c.probe_interval;
    let n = 6;
    let mut net = cluster_at_rest(c, n);
    net.sent.clear();
    // Member 4 gets a key behind the protocol's back: no push, no round,
    // nobody active. Only its fingerprint differs.
    let now = net.now;
    let m = net.node_mut(4);
    let me = addr(4);
    m.table.update(&me, |n| {
        n.owner
            .write(now, "hidden", Some(Bytes::from_static(b"x")), None)
    });
    assert!(m.poll_transmit().is_none() && !m.is_active());
    let took = net.run_until(probe * 3, "repair", |x| x.all_have(4, "hidden"));
    eprintln!("silent divergence repaired after {took:?}");
    assert!(took <= probe * 3, "{took:?}");
    // Found by an ack: the first exchange is a digest, not a round.
    assert!(net.count("sync_digest") > 0, "{:?}", net.sent);
    net.run_until(Duration::from_secs(10), "quiet again", Net::quiet);
    assert!(net.converged());
    let hash = net.m(0).digest_hash();
    assert!((0..n).all(|o| net.m(o).digest_hash() == hash));
}

#[test]
fn an_update_missed_behind_a_partition_is_repaired_after_the_heal() {
    let mut c = cfg();
    c.push_pull_interval = Duration::from_secs(3600);
    let (probe, gossip) = (c.probe_interval, c.gossip_interval);
    let n = 6;
    let mut net = cluster_at_rest(c, n);
    // Member 5 hears nothing but probes for 3 s (shorter than a suspicion)
    // while member 0 writes: the push and the rounds never reach it, and the
    // rounds stop before the link heals.
    let end = net.now + Duration::from_secs(3);
    let cut = |t: &Transmit| {
        t.to == addr(5) && !matches!(t.msg.body, Some(Body::Ping(_)) | Some(Body::Ack(_)))
    };
    net.with(0, |m, now| {
        m.set_key(now, "k", Bytes::from_static(b"v"), None).unwrap()
    });
    while net.now < end {
        net.h.retain_in_flight(|t| !cut(t));
        net.step();
    }
    assert!(net.m(5).get_key(net.now, &addr(0), "k").is_none(), "missed");
    assert!((0..5).all(|o| net.m(o).get_key(net.now, &addr(0), "k").is_some()));
    let took = net.run_until(probe * 3, "repair", |x| x.all_have(0, "k"));
    eprintln!("update missed behind a partition repaired {took:?} after the heal");
    assert!(took <= probe * 2 + gossip, "{took:?}");
    net.run_until(Duration::from_secs(10), "quiet again", Net::quiet);
    assert!(net.converged());
}

/// The join time through a seed at rest: within two gossip intervals, as
/// when every member ran a round every interval (about 200 ms here then),
/// and no slower than with rounds that never stop. The median of five joins
/// at different moments (so with the members' random draws at different
/// points): one join's time depends on whether a random pick missed a
/// member, which adds a gossip interval.
#[test]
fn a_member_joins_a_quiet_cluster_as_fast_as_before() {
    let join = |active_rounds: u32, rest: Duration| {
        let mut c = cfg();
        c.active_rounds = active_rounds;
        let n = 12;
        let mut net = Net::chain(c, n);
        net.run_until(Duration::from_secs(5), "join", Net::converged);
        net.run_for(Duration::from_secs(10));
        net.with(5, |m, now| {
            m.set_key(now, "k", Bytes::from_static(b"v"), None).unwrap()
        });
        net.run_for(rest);
        let quiet = net.quiet();
        net.spawn(n, 1, Some(0));
        let took = net.run_until(Duration::from_secs(10), "join", |x| {
            x.converged() && x.all_have(5, "k")
        });
        (took, quiet)
    };
    let median = |active_rounds: u32| {
        let mut runs: Vec<(Duration, bool)> = (10..15)
            .map(|s| join(active_rounds, Duration::from_millis(s * 1000 + s * 37)))
            .collect();
        let quiet = runs.iter().all(|r| r.1);
        let never_quiet = runs.iter().all(|r| !r.1);
        runs.sort();
        (
            runs[2].0,
            runs.iter().map(|r| r.0).collect::<Vec<_>>(),
            quiet,
            never_quiet,
        )
    };
    let (before, all_before, _, never_quiet) = median(u32::MAX);
    let (after, all_after, quiet, _) = median(cfg().active_rounds);
    eprintln!(
        "join of a 13th member, median of 5: {after:?} ({all_after:?}), with rounds always on \
         {before:?} ({all_before:?})"
    );
    assert!(never_quiet, "rounds that never stop never come to rest");
    assert!(quiet, "the cluster was at rest when the member joined");
    assert!(after <= cfg().gossip_interval * 2, "join took {after:?}");
    assert!(
        after <= before + cfg().gossip_interval,
        "join took {after:?}, {before:?} with rounds always on"
    );
}

/// A quiet member is not woken for gossip ticks that would send nothing: it
/// sleeps until its next real deadline (at rest, its next probe), where it
/// used to wake every gossip interval (issue #9: those wake-ups cost more
/// CPU than the messages at rest). A change brings the ticks back at once,
/// in their phase, and they stop again once the cluster is quiet.
#[test]
fn a_quiet_member_sleeps_until_its_next_probe() {
    let n = 8;
    let c = cfg();
    let (gossip, probe) = (c.gossip_interval, c.probe_interval);
    let rounds = c.active_rounds_for(n);
    let mut net = cluster_at_rest(c, n);
    let phase = net.m(3).sync.next_tick();
    // Nothing is due before the next probe, but a probe's timeout while
    // it awaits its ack (1 ms here) and tombstone collection (every 15 s).
    let sleeps_to_its_probe = |net: &Net| {
        let mut checked = 0;
        for m in net.machines() {
            assert!(!m.is_active());
            if m.swim.indirect_deadline().is_none() && m.swim.next_suspicion_deadline().is_none() {
                let t = m.poll_timeout().unwrap();
                assert!(
                    t >= m
                        .timers
                        .get(Timer::ProbePeriod)
                        .unwrap()
                        .min(m.timers.get(Timer::Gc).unwrap()),
                    "woken for a gossip tick"
                );
                checked += 1;
            }
        }
        checked
    };
    // 15 s: 75 gossip ticks and 15 probes, and less than the shortest wait
    // before a background push-pull after the last active round.
    net.wakes.clear();
    let end = net.now + Duration::from_secs(15);
    let mut checked = 0;
    while net.now < end {
        checked += sleeps_to_its_probe(&net);
        net.step();
    }
    assert!(checked > n * 10, "{checked}");
    let ticks = Duration::from_secs(15).as_nanos() / gossip.as_nanos();
    let probes = Duration::from_secs(15).as_nanos() / probe.as_nanos();
    for (a, w) in &net.wakes {
        // Its probes, and a tombstone collection or two.
        assert!(
            u128::from(*w) <= probes + 3,
            "{a}: {w} wake-ups, {ticks} ticks"
        );
    }
    assert_eq!(net.wakes.len(), n);

    // A write: an extra round at once, then a round every tick, in the
    // phase the ticks had before the quiet period.
    net.wakes.clear();
    net.with(3, |m, now| {
        m.set_key(now, "k", Bytes::from_static(b"v"), None).unwrap()
    });
    assert!(net.m(3).is_active());
    assert_eq!(net.m(3).poll_timeout(), Some(net.now), "the round at once");
    net.step();
    let m = net.m(3);
    assert_eq!(
        m.timers.get(Timer::GossipTick),
        Some(m.sync.next_tick()),
        "the next tick"
    );
    assert!(m.poll_timeout().unwrap() <= m.sync.next_tick());
    assert!(m.sync.next_tick() <= net.now + gossip);
    assert_eq!(
        (m.sync.next_tick() - phase).as_nanos() % gossip.as_nanos(),
        0
    );
    // Those who learn it tick again too.
    net.run_until(Duration::from_secs(1), "spread", |x| x.all_have(3, "k"));
    for m in net.machines() {
        assert!(m.is_active());
        assert_eq!(m.timers.get(Timer::GossipTick), Some(m.sync.next_tick()));
        assert!(m.poll_timeout().unwrap() <= net.now + gossip);
    }
    net.run_until(gossip * (rounds as u32 + 10), "quiet again", Net::quiet);
    let w = net.wakes[&addr(3)];
    assert!(
        w > rounds,
        "{w} wake-ups while active, {rounds} active rounds"
    );
    assert!(net.count("sync_request") > 0);
    // And they stop again.
    net.wakes.clear();
    net.run_for(probe * 5);
    sleeps_to_its_probe(&net);
    assert!(net.wakes.values().all(|w| *w <= 5 + 2), "{:?}", net.wakes);
}

/// A quiet member that knows a dead member still contacts one every
/// `DEAD_CONTACT_EVERY` ticks (so healed partitions meet), and is woken for
/// those ticks only.
#[test]
fn a_quiet_member_still_contacts_the_dead() {
    let n = 6;
    let c = cfg();
    let gossip = c.gossip_interval;
    let mut net = cluster_at_rest(c, n);
    net.crash(5);
    net.run_until(Duration::from_secs(30), "dead", |x| {
        (0..5).all(|o| x.state_of(o, 5) == Some(MemberState::Dead))
    });
    net.run_until(Duration::from_secs(10), "quiet", Net::quiet);
    net.log = Some(Vec::new());
    net.wakes.clear();
    let period = gossip * crate::anti_entropy::DEAD_CONTACT_EVERY as u32;
    net.run_for(period * 10);
    let mut to_dead: BTreeMap<String, u64> = BTreeMap::new();
    for t in net.log.as_ref().unwrap() {
        if t.to == addr(5) {
            assert!(matches!(t.msg.body, Some(Body::SyncRequest(_))));
            *to_dead
                .entry(t.msg.from.as_ref().unwrap().addr.clone())
                .or_default() += 1;
        }
    }
    assert_eq!(to_dead.len(), n - 1, "{to_dead:?}");
    assert!(
        to_dead.values().all(|c| (9..=11).contains(c)),
        "{to_dead:?}"
    );
    // Woken for those ticks and the probes, not for every tick (50).
    for (a, w) in &net.wakes {
        assert!((10..=25).contains(w), "{a}: {w} wake-ups");
    }
}

/// Not waking a quiet member for its idle gossip ticks changes nothing it
/// sends or reports: the same run with a wake-up at every gossip tick (the
/// driver's schedule before) sends the same messages in the same order and
/// raises the same events, through a join, a write, a crash (dead contacts)
/// and background push-pulls, with less than half the wake-ups.
#[test]
fn skipping_idle_ticks_changes_no_output() {
    let run = |every_tick: bool| {
        let mut net = Net::new(cfg());
        net.every_tick = every_tick;
        net.log = Some(Vec::new());
        for i in 0..8 {
            net.spawn(i, 1, i.checked_sub(1));
        }
        net.run_for(Duration::from_secs(10));
        net.with(2, |m, now| {
            m.set_key(now, "k", Bytes::from_static(b"v"), None).unwrap()
        });
        net.run_for(Duration::from_secs(5));
        net.crash(7);
        net.run_for(Duration::from_secs(60));
        let wakes: u64 = net.wakes.values().sum();
        (net.log.take().unwrap(), net.events, wakes)
    };
    let (log_before, events_before, wakes_before) = run(true);
    let (log, events, wakes) = run(false);
    assert_eq!(log.len(), log_before.len());
    assert!(log == log_before, "the same messages");
    assert!(events == events_before, "the same events");
    assert!(log.iter().any(|t| t.to == addr(7)), "dead contacts");
    eprintln!("wake-ups: {wakes}, {wakes_before} at every tick");
    assert!(wakes * 2 < wakes_before, "{wakes} vs {wakes_before}");
}

/// Issue #14, item 3: a member configured with a `max_message_size` under
/// the minimum is refused, not silently run with a larger one (which its
/// equally configured peers would have to reject)...
#[test]
fn a_message_size_under_the_minimum_is_refused() {
    let now = Instant::now();
    let mut c = cfg();
    c.max_message_size = 1500;
    let err = Machine::new(NodeId::new(addr(0), 1), c.clone(), 1, now)
        .err()
        .expect("1500 bytes is refused");
    assert_eq!(err.field, "max_message_size");
    assert!(err.reason.contains("2048"), "{}", err.reason);
    c.max_message_size = crate::config::MIN_MESSAGE_SIZE;
    let m = Machine::new(NodeId::new(addr(0), 1), c, 1, now).expect("the minimum is accepted");
    assert_eq!(m.config().max_message_size, crate::config::MIN_MESSAGE_SIZE);
}

/// ...and at the minimum, every message a member builds fits: 60 members
/// (past the small-cluster size, so bucket fingerprints and range digests
/// are used), the largest metadata and the largest values accepted, a
/// restart and a crash. `Net::drain` checks every message against the
/// limit.
#[test]
fn at_the_minimum_message_size_every_message_fits() {
    let mut c = cfg();
    c.max_message_size = crate::config::MIN_MESSAGE_SIZE;
    let n = 60;
    let mut net = Net::chain(c, n);
    net.run_until(Duration::from_secs(30), "join", Net::converged);
    for i in [0, 17, 42] {
        // The largest metadata is refused: it could not travel in one
        // message of this size...
        let meta: BTreeMap<String, String> = (0..8)
            .map(|j| (format!("k{j}"), "m".repeat(crate::MAX_META_BYTES / 8 - 3)))
            .collect();
        let err = net.with(i, |m, now| m.set_meta(now, meta)).unwrap_err();
        assert!(matches!(
            err,
            crate::GossipError::TooLarge {
                what: "metadata",
                ..
            }
        ));
        // ...and the largest accepted goes out within the limit.
        let mut len = crate::MAX_META_BYTES / 8;
        while net
            .with(i, |m, now| {
                let meta = (0..8).map(|j| (format!("k{j}"), "m".repeat(len))).collect();
                m.set_meta(now, meta)
            })
            .is_err()
        {
            len -= 1;
        }
        assert!(len > 10, "metadata values of {len} bytes");
        // The largest value the member accepts for a 256-byte key.
        let key = "k".repeat(crate::MAX_KEY_LEN);
        let mut len = crate::config::MIN_MESSAGE_SIZE;
        let ok = loop {
            let v = Bytes::from(vec![b'v'; len]);
            if net.with(i, |m, now| m.set_key(now, &key, v, None)).is_ok() {
                break len;
            }
            len -= 1;
        };
        assert!(ok > 100, "a value of {ok} bytes");
    }
    net.crash(5);
    net.spawn(5, 2, Some(6));
    net.run_until(Duration::from_secs(60), "converged again", |x| {
        x.converged() && x.all_have(42, &"k".repeat(crate::MAX_KEY_LEN))
    });
    assert!(net.sent.contains_key("sync_buckets") || net.sent.contains_key("sync_digest"));
}
