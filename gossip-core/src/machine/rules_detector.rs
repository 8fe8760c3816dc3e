//! Rule tests of the failure detector (issue #10): one machine, inputs
//! given one at a time, the exact verdicts. RTT-adapted probe timeouts,
//! late answers, Lifeguard's nacks and distinct accusers, and the refusal
//! fast path.

use std::time::{Duration, Instant};

use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;

use super::Machine;
use super::rules::{envelope, events, gossip, id, machine_with, run_timers, update};
use crate::config::Config;
use crate::event::{Event, MemberState};
use crate::id::{NodeAddr, NodeId};

const MS: Duration = Duration::from_millis(1);

/// Probes every second, a 100 ms probe timeout, 3 indirect probes.
fn cfg() -> Config {
    Config {
        probe_interval: 1000 * MS,
        probe_timeout: 100 * MS,
        ..Config::default()
    }
}

/// Runs the timers until the machine sends a ping to `target`; answers the
/// pings of every other member at once. Returns the ping's seq and time.
fn until_probe_of(m: &mut Machine, target: &NodeAddr, limit: Instant) -> (u64, Instant) {
    loop {
        let t = m.poll_timeout().expect("a timer");
        assert!(t <= limit, "no probe of {target} before the limit");
        m.handle_timeout(t);
        let mut found = None;
        while let Some(x) = m.poll_transmit() {
            if let Some(Body::Ping(p)) = &x.msg.body {
                if x.to == *target && found.is_none() {
                    found = Some(p.seq);
                } else if x.to != *target {
                    answer(m, &x.to, p.seq, t);
                }
            }
        }
        if let Some(seq) = found {
            return (seq, t);
        }
    }
}

/// `from` acks ping `seq` at `now`.
fn answer(m: &mut Machine, from: &NodeAddr, seq: u64, now: Instant) {
    let from = NodeId::new(from.clone(), 1);
    let ack = pb::Ack {
        seq,
        target: Some(from.to_pb()),
        ..Default::default()
    };
    m.handle_message(now, envelope(&from, vec![], Body::Ack(ack)));
}

/// Runs the timers, each at its deadline, up to `until`; every ping is
/// answered at once, as live members do. Returns the last timer's time.
fn run_answering(m: &mut Machine, until: Instant) -> Option<Instant> {
    let mut last = None;
    while let Some(t) = m.poll_timeout().filter(|t| *t <= until) {
        m.handle_timeout(t);
        for (to, b) in transmits(m) {
            if let Some(Body::Ping(ping)) = b {
                answer(m, &to, ping.seq, t);
            }
        }
        last = Some(t);
    }
    last
}

/// Drains the transmits; returns `(to, body)` of each.
fn transmits(m: &mut Machine) -> Vec<(NodeAddr, Option<Body>)> {
    std::iter::from_fn(|| m.poll_transmit())
        .map(|t| (t.to, t.msg.body))
        .collect()
}

fn suspected(ev: &[Event], x: &NodeId) -> bool {
    ev.iter()
        .any(|e| matches!(e, Event::Suspected(s) if s == x))
}

fn failed(ev: &[Event], x: &NodeId) -> bool {
    ev.iter().any(|e| matches!(e, Event::Failed(f) if f == x))
}

#[test]
fn the_probe_timeout_follows_the_measured_round_trips() {
    let t0 = Instant::now();
    let (me, x) = (id("m"), id("x"));
    // One peer: the fallback at the probe timeout is a second direct ping.
    let mut m = machine_with(cfg(), &me, std::slice::from_ref(&x), t0);
    let second_ping_after = |m: &mut Machine, sent: Instant| loop {
        let t = m.poll_timeout().unwrap();
        assert!(t < sent + 1000 * MS, "a second ping within the period");
        m.handle_timeout(t);
        let again = transmits(m)
            .iter()
            .any(|(to, b)| *to == x.addr && matches!(b, Some(Body::Ping(_))));
        if again {
            return t - sent;
        }
    };
    // Before any sample: the configured timeout.
    let (_, sent) = until_probe_of(&mut m, &x.addr, t0 + 5000 * MS);
    assert_eq!(second_ping_after(&mut m, sent), 100 * MS);
    // Acks that take 250 ms, answered before each fallback.
    let mut now = sent;
    for _ in 0..6 {
        let (seq, sent) = until_probe_of(&mut m, &x.addr, now + 5000 * MS);
        let at = sent + 250 * MS;
        // The fallback fires first while the estimate is below 250 ms.
        while let Some(t) = m.poll_timeout().filter(|t| *t < at) {
            m.handle_timeout(t);
        }
        answer(&mut m, &x.addr, seq, at);
        transmits(&mut m);
        now = at;
    }
    // Now the wait follows the round trips: srtt (250 ms) plus deviations,
    // capped at half the probe interval.
    let (_, sent) = until_probe_of(&mut m, &x.addr, now + 5000 * MS);
    let waited = second_ping_after(&mut m, sent);
    assert!(
        waited >= 250 * MS && waited <= 500 * MS,
        "waited {waited:?}"
    );
}

#[test]
fn a_late_answer_clears_the_suspicion_here() {
    let t0 = Instant::now();
    let (me, p, x) = (id("m"), id("p"), id("x"));
    let mut m = machine_with(cfg(), &me, &[p.clone(), x.clone()], t0);
    // P accuses X; this member suspects it too.
    let mut rumor = update(&x, 0, MemberState::Suspect);
    rumor.accuser = p.addr.as_str().to_owned();
    m.handle_message(t0, envelope(&p, vec![rumor], gossip()));
    assert!(suspected(&events(&mut m), &x));
    assert!(m.swim.is_suspected(&x.addr, 1));
    // X's ack to an old probe comes in late: X runs.
    let ack = pb::Ack {
        seq: 999,
        target: Some(x.to_pb()),
        ..Default::default()
    };
    m.handle_message(t0 + 10 * MS, envelope(&x, vec![], Body::Ack(ack)));
    assert!(!m.swim.is_suspected(&x.addr, 1), "suspicion cleared");
    // Past the longest suspicion timeout, answering every probe: X is not
    // declared dead here.
    let end = t0 + cfg().suspicion_max(3) + 1000 * MS;
    let now = run_answering(&mut m, end).unwrap_or(t0 + 10 * MS);
    let ev = events(&mut m);
    assert!(!failed(&ev, &x), "{ev:?}");
    assert_eq!(m.member(now, &x.addr).unwrap().state, MemberState::Suspect);
}

/// Probes X with three relays; `nacks` of them answer with a nack; the
/// period ends. Returns the machine, its events and its local health.
fn probe_with_nacks(nacks: usize) -> (Vec<Event>, u32, NodeId) {
    let t0 = Instant::now();
    let (me, x) = (id("m"), id("x"));
    let relays = [id("a"), id("b"), id("c")];
    let mut peers = relays.to_vec();
    peers.push(x.clone());
    let mut m = machine_with(cfg(), &me, &peers, t0);
    let (seq, sent) = until_probe_of(&mut m, &x.addr, t0 + 10_000 * MS);
    assert_eq!(m.local_health(), 0);
    let (asked, t) = loop {
        let t = m.poll_timeout().unwrap();
        m.handle_timeout(t);
        let asked: Vec<NodeAddr> = transmits(&mut m)
            .into_iter()
            .filter(|(_, b)| matches!(b, Some(Body::PingReq(r)) if r.seq == seq))
            .map(|(to, _)| to)
            .collect();
        if !asked.is_empty() {
            break (asked, t);
        }
    };
    assert_eq!(t, sent + 100 * MS, "the indirect probe at the timeout");
    assert_eq!(asked.len(), 3);
    for r in asked.iter().take(nacks) {
        let r = NodeId::new(r.clone(), 1);
        let nack = pb::Nack {
            seq,
            refused: false,
        };
        m.handle_message(t + 50 * MS, envelope(&r, vec![], Body::Nack(nack)));
    }
    // The end of the period: the verdict on X.
    run_timers(&mut m, sent + 1000 * MS);
    let ev = events(&mut m);
    (ev, m.local_health(), x)
}

#[test]
fn nacks_spare_the_probers_health_not_the_targets_fate() {
    // Every relay nacked: X is silent and this member's messages get
    // through: X is suspected, the local health does not change.
    let (ev, health, x) = probe_with_nacks(3);
    assert!(suspected(&ev, &x), "{ev:?}");
    assert_eq!(health, 0);
    // No nack at all: X is suspected all the same, and each missing nack
    // counts against this member's own health (Lifeguard IV-A).
    let (ev, health, x) = probe_with_nacks(0);
    assert!(suspected(&ev, &x), "{ev:?}");
    assert_eq!(health, 3);
    let (_, health, _) = probe_with_nacks(2);
    assert_eq!(health, 1);
}

#[test]
fn confirmations_count_distinct_accusers_not_relayed_copies() {
    let t0 = Instant::now();
    let (me, x) = (id("m"), id("x"));
    let (p, q, r, s) = (id("p"), id("q"), id("r"), id("s"));
    let peers = [p.clone(), q.clone(), r.clone(), s.clone(), x.clone()];
    let mut m = machine_with(cfg(), &me, &peers, t0);
    let accused_by = |who: &NodeId| {
        let mut u = update(&x, 0, MemberState::Suspect);
        u.accuser = who.addr.as_str().to_owned();
        u
    };
    m.handle_message(t0, envelope(&p, vec![accused_by(&p)], gossip()));
    let first = m.swim.next_suspicion_deadline().unwrap();
    // P's accusation relayed by Q and R: the same accuser.
    m.handle_message(t0, envelope(&q, vec![accused_by(&p)], gossip()));
    m.handle_message(t0, envelope(&r, vec![accused_by(&p)], gossip()));
    assert_eq!(m.swim.next_suspicion_deadline().unwrap(), first);
    // Q's own accusation: a confirmation, the timeout shrinks.
    m.handle_message(t0, envelope(&r, vec![accused_by(&q)], gossip()));
    let second = m.swim.next_suspicion_deadline().unwrap();
    assert!(second < first, "{second:?} < {first:?}");
    // ... and it is gossiped again with its accuser.
    let mut relayed = false;
    run_timers(&mut m, t0 + 300 * MS);
    while let Some(t) = m.poll_transmit() {
        relayed |= t.msg.updates.iter().any(|u| {
            u.id.as_ref().is_some_and(|i| i.addr == x.addr.as_str()) && u.accuser == q.addr.as_str()
        });
    }
    assert!(relayed, "Q's confirmation is gossiped");
    // An update from an older member (no accuser): the relaying member
    // counts, as before.
    m.handle_message(
        t0,
        envelope(&s, vec![update(&x, 0, MemberState::Suspect)], gossip()),
    );
    assert!(m.swim.next_suspicion_deadline().unwrap() < second);
}

/// Probes X with three relays and reports X's first ping refused.
/// Returns the machine, the probe's seq, the relays and the time.
fn refused_probe() -> (Machine, u64, Vec<NodeAddr>, Instant, NodeId) {
    let t0 = Instant::now();
    let (me, x) = (id("m"), id("x"));
    let peers = [id("a"), id("b"), id("c"), x.clone()];
    let mut m = machine_with(cfg(), &me, &peers, t0);
    let (seq, sent) = until_probe_of(&mut m, &x.addr, t0 + 10_000 * MS);
    let now = sent + MS;
    m.handle_send_error(now, &x.addr, true);
    // No waiting for the timeout: the relays are asked at once.
    let asked: Vec<NodeAddr> = transmits(&mut m)
        .into_iter()
        .filter(|(_, b)| matches!(b, Some(Body::PingReq(r)) if r.seq == seq))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(asked.len(), 3, "indirect probes at the refusal");
    (m, seq, asked, now, x)
}

#[test]
fn a_refusal_confirmed_by_a_relay_removes_the_member_at_once() {
    let (mut m, seq, asked, now, x) = refused_probe();
    let relay = NodeId::new(asked[0].clone(), 1);
    let nack = pb::Nack { seq, refused: true };
    m.handle_message(now + MS, envelope(&relay, vec![], Body::Nack(nack)));
    let ev = events(&mut m);
    assert!(failed(&ev, &x), "dead at once: {ev:?}");
    assert!(!suspected(&ev, &x), "no suspicion first: {ev:?}");
    assert_eq!(m.member(now, &x.addr).unwrap().state, MemberState::Dead);
    // The verdict is pushed at once, marked as resting on refusals.
    let pushed = std::iter::from_fn(|| m.poll_transmit())
        .filter(|t| {
            t.msg.updates.iter().any(|u| {
                u.id.as_ref().is_some_and(|i| i.addr == x.addr.as_str())
                    && u.state == pb::MemberState::Dead as i32
                    && u.refused
                    && u.accuser == "m:7000"
            })
        })
        .count();
    assert!(pushed >= 1, "the verdict is pushed");
}

#[test]
fn a_refusal_nobody_confirms_takes_the_slow_path() {
    let (mut m, seq, asked, now, x) = refused_probe();
    // The relays got no ack but no refusal either (a partition drops).
    for r in &asked {
        let r = NodeId::new(r.clone(), 1);
        let nack = pb::Nack {
            seq,
            refused: false,
        };
        m.handle_message(now + 50 * MS, envelope(&r, vec![], Body::Nack(nack)));
    }
    assert!(!failed(&events(&mut m), &x));
    run_timers(&mut m, now + 1000 * MS);
    let ev = events(&mut m);
    assert!(suspected(&ev, &x), "{ev:?}");
    assert!(!failed(&ev, &x), "{ev:?}");
    assert_eq!(
        m.member(now + 1000 * MS, &x.addr).unwrap().state,
        MemberState::Suspect
    );
}

#[test]
fn a_restart_during_the_fast_path_is_not_declared_dead() {
    let (mut m, seq, asked, now, x) = refused_probe();
    // X restarts on the same address with a new generation, and says so.
    let reborn = NodeId::new(x.addr.clone(), 2);
    m.handle_message(now + MS, envelope(&reborn, vec![], gossip()));
    // The relay's refusal (of the old life's address, before the restart)
    // comes after.
    let relay = NodeId::new(asked[0].clone(), 1);
    let nack = pb::Nack { seq, refused: true };
    m.handle_message(now + 2 * MS, envelope(&relay, vec![], Body::Nack(nack)));
    let ev = events(&mut m);
    assert!(!ev.iter().any(|e| matches!(e, Event::Failed(_))), "{ev:?}");
    let info = m.member(now, &x.addr).unwrap();
    assert_eq!((info.generation, info.state), (2, MemberState::Alive));
}

#[test]
fn a_refused_death_verdict_is_accepted_as_it_is() {
    let t0 = Instant::now();
    let (me, p, x, y) = (id("m"), id("p"), id("x"), id("y"));
    let mut m = machine_with(cfg(), &me, &[p.clone(), x.clone(), y.clone()], t0);
    let mut dead = update(&x, 0, MemberState::Dead);
    dead.accuser = p.addr.as_str().to_owned();
    dead.refused = true;
    m.handle_message(t0, envelope(&p, vec![dead], gossip()));
    let ev = events(&mut m);
    assert!(failed(&ev, &x), "{ev:?}");
    // A plain "dead" from a third party only makes a member suspect here.
    m.handle_message(
        t0,
        envelope(&p, vec![update(&y, 0, MemberState::Dead)], gossip()),
    );
    let ev = events(&mut m);
    assert!(suspected(&ev, &y) && !failed(&ev, &y), "{ev:?}");
}

#[test]
fn a_member_that_was_not_running_does_not_accuse() {
    let t0 = Instant::now();
    let (me, x) = (id("m"), id("x"));
    let mut m = machine_with(cfg(), &me, std::slice::from_ref(&x), t0);
    let (seq, sent) = until_probe_of(&mut m, &x.addr, t0 + 5000 * MS);
    // The member's loop stalls for 3 s: its next call comes long after the
    // probe's timeout and period. X's ack, sent in time, waits in a queue
    // and is handled right after the wake-up.
    let woke = sent + 3000 * MS;
    m.handle_timeout(woke);
    assert_eq!(m.stalls(), 1);
    answer(&mut m, &x.addr, seq, woke + MS);
    // Then X answers every probe, as a live member does.
    run_answering(&mut m, woke + 3000 * MS);
    let ev = events(&mut m);
    assert!(!suspected(&ev, &x), "{ev:?}");
}

/// Runs the timers (answering every other member's pings) until the probe
/// of `x` goes indirect; asserts that no listener check was asked before.
/// Returns the probe's seq and the time it went indirect.
fn until_indirect(m: &mut Machine, x: &NodeAddr, t0: Instant) -> (u64, Instant) {
    let (seq, sent) = until_probe_of(m, x, t0 + 10_000 * MS);
    assert_eq!(m.poll_refusal_check(), None, "answered probes ask nothing");
    loop {
        let t = m.poll_timeout().expect("a timer");
        assert!(t <= sent + 1000 * MS, "the probe never went indirect");
        m.handle_timeout(t);
        let indirect = transmits(m)
            .iter()
            .any(|(_, b)| matches!(b, Some(Body::PingReq(r)) if r.seq == seq));
        if indirect {
            return (seq, t);
        }
        assert_eq!(m.poll_refusal_check(), None, "no check before the timeout");
    }
}

#[test]
fn an_unanswered_probe_asks_whether_anything_listens() {
    let t0 = Instant::now();
    let (me, x) = (id("m"), id("x"));
    let peers = [id("a"), id("b"), id("c"), x.clone()];
    let mut m = machine_with(cfg(), &me, &peers, t0);
    let (seq, t) = until_indirect(&mut m, &x.addr, t0);
    // Once, when the probe timeout passed unanswered.
    assert_eq!(m.poll_refusal_check(), Some(x.addr.clone()));
    assert_eq!(m.poll_refusal_check(), None);
    // The answer "refused" is a refused send; with a relay's refused nack
    // the member is dead at once.
    m.handle_send_error(t + MS, &x.addr, true);
    assert!(!failed(&events(&mut m), &x), "one refusal is not enough");
    let relay = id("a");
    let nack = pb::Nack { seq, refused: true };
    m.handle_message(t + 2 * MS, envelope(&relay, vec![], Body::Nack(nack)));
    let ev = events(&mut m);
    assert!(failed(&ev, &x) && !suspected(&ev, &x), "{ev:?}");
}

#[test]
fn a_relay_checks_its_target_and_nacks_a_refusal() {
    let t0 = Instant::now();
    let (me, x, r) = (id("m"), id("x"), id("r"));
    let mut m = machine_with(cfg(), &me, &[r.clone(), x.clone()], t0);
    let req = pb::PingReq {
        seq: 9,
        target: Some(x.to_pb()),
    };
    m.handle_message(t0 + MS, envelope(&r, vec![], Body::PingReq(req)));
    let sent = transmits(&mut m);
    assert!(
        sent.iter()
            .any(|(to, b)| *to == x.addr && matches!(b, Some(Body::Ping(_)))),
        "{sent:?}"
    );
    assert_eq!(m.poll_refusal_check(), Some(x.addr.clone()));
    m.handle_send_error(t0 + 2 * MS, &x.addr, true);
    let nacks: Vec<(NodeAddr, u64, bool)> = transmits(&mut m)
        .into_iter()
        .filter_map(|(to, b)| match b {
            Some(Body::Nack(n)) => Some((to, n.seq, n.refused)),
            _ => None,
        })
        .collect();
    assert_eq!(nacks, vec![(r.addr.clone(), 9, true)]);
    // Its nack is sent: nothing more at the nack deadline.
    run_timers(&mut m, t0 + 500 * MS);
    assert!(
        !transmits(&mut m)
            .iter()
            .any(|(_, b)| matches!(b, Some(Body::Nack(_)))),
        "one nack per relayed probe"
    );
}

/// The target of the first probe `m` starts after `t` other than `last`.
fn next_probe(m: &mut Machine, last: &NodeAddr, t: Instant) -> NodeAddr {
    loop {
        let at = m.poll_timeout().expect("a timer");
        assert!(at < t + 2000 * MS, "no new probe");
        m.handle_timeout(at);
        let pinged = transmits(m).into_iter().find_map(|(to, b)| match b {
            Some(Body::Ping(p)) if p.on_behalf_of.is_none() && to != *last => Some(to),
            _ => None,
        });
        if let Some(to) = pinged {
            return to;
        }
    }
}

#[test]
fn a_refused_message_to_a_member_not_probed_makes_it_the_next_target() {
    let t0 = Instant::now();
    let me = id("m");
    let peers: Vec<NodeId> = ["a", "b", "c", "d", "e", "f"].map(id).to_vec();
    let first = &peers[0].addr;
    // Two identical machines (same seed): the first shows whose turn is
    // next, the second is told of a refusal of someone else.
    let mut control = machine_with(cfg(), &me, &peers, t0);
    let (_, t) = until_probe_of(&mut control, first, t0 + 10_000 * MS);
    let natural = next_probe(&mut control, first, t);
    let x = peers
        .iter()
        .map(|p| &p.addr)
        .find(|a| *a != first && **a != natural)
        .expect("a member out of turn");
    let mut m = machine_with(cfg(), &me, &peers, t0);
    let (_, t) = until_probe_of(&mut m, first, t0 + 10_000 * MS);
    m.handle_send_error(t + MS, x, true);
    assert_eq!(next_probe(&mut m, first, t), *x);
}
