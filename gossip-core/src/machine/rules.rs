//! Rule tests: one machine, one input, the exact outputs. Each test builds
//! a machine through the public API (`Machine::new`, `handle_message` with
//! `pb` envelopes), feeds it one message and asserts the transmits it
//! queues (destination, body kind, key fields) and the events it raises,
//! then that nothing else was queued.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;
use prost::Message;

use super::Machine;
use crate::config::Config;
use crate::event::{Event, MemberState};
use crate::id::{NodeAddr, NodeId};
use crate::members::{bucket_range, ring_position};

/// Pops the machine's next transmit and checks that it goes to `$to` and
/// that its body matches the pattern (and guard). Evaluates to `$then`,
/// with the pattern's bindings (references into the body) and `$env` (the
/// whole envelope) in scope.
macro_rules! expect_transmit {
    ($m:expr, to: $to:expr, $env:ident, $pat:pat $(if $guard:expr)? => $then:expr) => {{
        let to: &NodeAddr = &$to;
        let t = $m
            .poll_transmit()
            .unwrap_or_else(|| panic!("no transmit; expected one to {to}"));
        assert_eq!(&t.to, to, "destination of {:?}", t.msg.body);
        let $env = t.msg;
        match &$env.body {
            Some($pat) $(if $guard)? => $then,
            other => panic!("to {to}: unexpected body {other:?}"),
        }
    }};
    ($m:expr, to: $to:expr, $pat:pat $(if $guard:expr)?) => {
        expect_transmit!($m, to: $to, _env, $pat $(if $guard)? => ())
    };
}

/// Asserts that the machine has no transmit left.
#[track_caller]
pub(super) fn expect_no_more_transmits(m: &mut Machine) {
    if let Some(t) = m.poll_transmit() {
        panic!("unexpected transmit to {}: {:?}", t.to, t.msg.body);
    }
}

/// Takes every event the machine raised.
pub(super) fn events(m: &mut Machine) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

pub(super) fn addr(name: &str) -> NodeAddr {
    NodeAddr::parse(&format!("{name}:7000")).unwrap()
}

pub(super) fn id(name: &str) -> NodeId {
    NodeId::new(addr(name), 1)
}

pub(super) fn update(id: &NodeId, incarnation: u64, state: MemberState) -> pb::MemberUpdate {
    let state = match state {
        MemberState::Alive => pb::MemberState::Alive,
        MemberState::Suspect => pb::MemberState::Suspect,
        MemberState::Dead => pb::MemberState::Dead,
        MemberState::Left => pb::MemberState::Left,
    };
    pb::MemberUpdate {
        id: Some(id.to_pb()),
        incarnation,
        state: state as i32,
        ..Default::default()
    }
}

/// An envelope from `from` (incarnation 0) with `body` and `updates`.
pub(super) fn envelope(from: &NodeId, updates: Vec<pb::MemberUpdate>, body: Body) -> pb::Envelope {
    pb::Envelope {
        cluster_id: Config::default().cluster_id,
        from: Some(from.to_pb()),
        incarnation: 0,
        updates,
        broadcasts: vec![],
        body: Some(body),
        ..Default::default()
    }
}

pub(super) fn gossip() -> Body {
    Body::Gossip(pb::Gossip {})
}

/// Machine `me`, which has learned `peers` (all alive, incarnation 0) from
/// an anti-entropy delta of `peers[0]`, with its outputs drained.
fn machine(me: &NodeId, peers: &[NodeId], now: Instant) -> Machine {
    machine_with(Config::default(), me, peers, now)
}

/// [`machine`] with the protocol configuration `cfg`.
pub(super) fn machine_with(cfg: Config, me: &NodeId, peers: &[NodeId], now: Instant) -> Machine {
    let mut m = Machine::new(me.clone(), cfg, 1, now).expect("valid config");
    let owners = peers
        .iter()
        .map(|p| pb::OwnerDelta {
            member: Some(update(p, 0, MemberState::Alive)),
            ..Default::default()
        })
        .collect();
    m.handle_message(
        now,
        envelope(
            &peers[0],
            vec![],
            Body::Delta(pb::Delta {
                owners,
                push: false,
            }),
        ),
    );
    while m.poll_transmit().is_some() {}
    let joined = events(&mut m)
        .iter()
        .filter(|e| matches!(e, Event::Joined(_)))
        .count();
    assert_eq!(joined, peers.len());
    m
}

/// Runs the machine's timers, each at its deadline, up to `until` (a
/// driver that kept up: a late call would count as a stall of the member).
pub(super) fn run_timers(m: &mut Machine, until: Instant) {
    while let Some(t) = m.poll_timeout().filter(|t| *t <= until) {
        m.handle_timeout(t);
    }
    m.handle_timeout(until);
}

// ------------------------------------------------------------ indirect probes

#[test]
fn a_ping_req_is_relayed_once_and_its_ack_goes_back_with_the_original_seq() {
    let now = Instant::now();
    let (a, b, c) = (id("a"), id("b"), id("c"));
    let mut m = machine(&b, &[a.clone(), c.clone()], now);

    // A asks B to probe C.
    let req = pb::PingReq {
        seq: 42,
        target: Some(c.to_pb()),
    };
    m.handle_message(now, envelope(&a, vec![], Body::PingReq(req)));
    let relay_seq = expect_transmit!(m, to: c.addr, _env,
        Body::Ping(p) if p.on_behalf_of == Some(a.to_pb()) => p.seq);
    expect_no_more_transmits(&mut m);
    assert_eq!(events(&mut m), []);

    // C answers B; B answers A with A's sequence number.
    let ack = |seq| {
        Body::Ack(pb::Ack {
            seq,
            target: Some(c.to_pb()),
            ..Default::default()
        })
    };
    let later = now + Duration::from_millis(2);
    m.handle_message(later, envelope(&c, vec![], ack(relay_seq)));
    expect_transmit!(m, to: a.addr,
        Body::Ack(k) if k.seq == 42 && k.target == Some(c.to_pb()));
    expect_no_more_transmits(&mut m);

    // A second ack of the same probe is not relayed again.
    m.handle_message(later, envelope(&c, vec![], ack(relay_seq)));
    expect_no_more_transmits(&mut m);
    assert_eq!(events(&mut m), []);
}

// --------------------------------------------------------------- bucket runs

#[test]
fn differing_buckets_are_answered_with_digests_of_the_merged_runs() {
    let now = Instant::now();
    let me = id("m");
    let peers: Vec<NodeId> = (0..60).map(|i| id(&format!("p{i}"))).collect();
    let mut m = machine(&me, &peers, now);
    let a = &peers[0];

    // A fingerprint that differs: in a cluster of more than 48 members the
    // machine answers with its bucket fingerprints.
    let req = pb::SyncRequest {
        digest_hash: 1,
        members: 61,
    };
    m.handle_message(now, envelope(a, vec![], Body::SyncRequest(req)));
    let ours = expect_transmit!(m, to: a.addr, _env,
        Body::SyncBuckets(b) => b.hashes.clone());
    expect_no_more_transmits(&mut m);
    assert_eq!(ours.len(), 256);

    // The peer's buckets differ in five runs: 10-12, 40, 100-101, 200 and
    // 250. At most four ranges are sent: the closest runs (12 and 40, 28
    // buckets apart) are merged.
    let mut theirs = ours.clone();
    for i in [10, 11, 12, 40, 100, 101, 200, 250] {
        theirs[i] ^= 1;
    }
    let buckets = pb::SyncBuckets { hashes: theirs };
    m.handle_message(now, envelope(a, vec![], Body::SyncBuckets(buckets)));
    let everyone: Vec<NodeAddr> = std::iter::once(&me)
        .chain(&peers)
        .map(|p| p.addr.clone())
        .collect();
    let mut covered = 0;
    for (first, last) in [(10, 40), (100, 101), (200, 200), (250, 250)] {
        let (start, end) = (bucket_range(first).0, bucket_range(last).1);
        let mut expected: Vec<(u64, NodeAddr)> = everyone
            .iter()
            .map(|a| (ring_position(a), a.clone()))
            .filter(|(pos, _)| (start..=end).contains(pos))
            .collect();
        expected.sort();
        let expected: Vec<NodeAddr> = expected.into_iter().map(|(_, a)| a).collect();
        covered += expected.len();
        let got: Vec<NodeAddr> = expect_transmit!(m, to: a.addr, _env,
            Body::SyncDigest(d) if (d.range_start, d.range_end, d.request) == (start, end, false) =>
                d.entries
                    .iter()
                    .filter_map(|e| e.member.as_ref()?.id.as_ref())
                    .map(|id| NodeId::from_pb(id).unwrap().addr)
                    .collect());
        assert_eq!(got, expected, "range of buckets {first}..={last}");
    }
    expect_no_more_transmits(&mut m);
    assert_eq!(events(&mut m), []);
    assert!(covered > 0, "the ranges hold members");
}

// ---------------------------------------------------------------- refutation

/// Member `m` hears from `p` that it is `state` at incarnation 0: it
/// refutes at once, to `p` and by a push to the others.
fn refutes(state: MemberState) {
    let now = Instant::now();
    let me = id("m");
    let (p, q, r) = (id("p"), id("q"), id("r"));
    let mut m = machine(&me, &[p.clone(), q.clone(), r.clone()], now);
    assert_eq!(m.incarnation(), 0);

    m.handle_message(now, envelope(&p, vec![update(&me, 0, state)], gossip()));
    assert_eq!(m.incarnation(), 1, "{state:?}");
    let alive = update(&me, 1, MemberState::Alive);
    expect_transmit!(m, to: p.addr, env,
        Body::Gossip(_) if env.incarnation == 1 && env.updates.first() == Some(&alive) => ());
    let mut pushed = BTreeSet::new();
    for _ in 0..2 {
        let to = m.poll_transmit().expect("a push");
        assert!(matches!(to.msg.body, Some(Body::Gossip(_))), "{to:?}");
        assert!(to.msg.updates.contains(&alive), "{to:?}");
        pushed.insert(to.to);
    }
    assert_eq!(pushed, BTreeSet::from([q.addr.clone(), r.addr.clone()]));
    expect_no_more_transmits(&mut m);
    assert_eq!(events(&mut m), []);

    // A rumor at a lower incarnation than the current one is stale.
    m.handle_message(now, envelope(&q, vec![update(&me, 0, state)], gossip()));
    assert_eq!(m.incarnation(), 1);
    expect_no_more_transmits(&mut m);
    assert_eq!(events(&mut m), []);
    let mine = m.member(now, &me.addr).unwrap();
    assert_eq!((mine.state, mine.incarnation), (MemberState::Alive, 1));
}

#[test]
fn a_suspicion_about_oneself_is_refuted_at_once() {
    refutes(MemberState::Suspect);
}

#[test]
fn a_death_verdict_about_oneself_is_refuted_at_once() {
    refutes(MemberState::Dead);
}

// ---------------------------------------------------------------- tombstones

/// `x`, ended at generation 1, is not revived by stale facts (an `alive`
/// at incarnations `stale` from a third party, a message from `x`'s own old
/// life) but is replaced by generation 2.
fn stays_ended(
    m: &mut Machine,
    now: Instant,
    (p, x): (&NodeId, &NodeId),
    ended: MemberState,
    stale: &[u64],
) {
    assert_eq!(m.member(now, &x.addr).unwrap().state, ended);
    for &inc in stale {
        let stale = vec![update(x, inc, MemberState::Alive)];
        m.handle_message(now, envelope(p, stale, gossip()));
        expect_no_more_transmits(m);
        assert_eq!(events(m), [], "stale alive at incarnation {inc}");
        assert_eq!(m.member(now, &x.addr).unwrap().state, ended);
    }
    m.handle_message(now, envelope(x, vec![], gossip()));
    expect_no_more_transmits(m);
    assert_eq!(events(m), [], "a message from the old life");
    assert_eq!(m.member(now, &x.addr).unwrap().state, ended);

    let reborn = NodeId::new(x.addr.clone(), 2);
    m.handle_message(now, envelope(&reborn, vec![], gossip()));
    expect_no_more_transmits(m);
    let ev = events(m);
    assert!(
        matches!(ev.as_slice(), [Event::Joined(info)]
            if info.addr == x.addr && info.generation == 2 && info.state == MemberState::Alive),
        "{ev:?}"
    );
    let now_x = m.member(now, &x.addr).unwrap();
    assert_eq!((now_x.generation, now_x.state), (2, MemberState::Alive));
}

#[test]
fn a_member_that_left_is_not_revived_by_a_stale_alive() {
    let now = Instant::now();
    let (me, p, x) = (id("m"), id("p"), id("x"));
    let mut m = machine(&me, &[p.clone(), x.clone()], now);
    m.handle_message(
        now,
        envelope(&x, vec![update(&x, 1, MemberState::Left)], gossip()),
    );
    assert!(matches!(events(&mut m).as_slice(), [Event::Left(l)] if *l == x));
    while m.poll_transmit().is_some() {}
    // Left at incarnation 1: an alive at 0 or 1 is older or the same.
    stays_ended(&mut m, now, (&p, &x), MemberState::Left, &[0, 1]);
}

#[test]
fn a_dead_member_is_not_revived_by_a_stale_alive() {
    let now = Instant::now();
    let (me, p, q, x) = (id("m"), id("p"), id("q"), id("x"));
    let mut m = machine(&me, &[p.clone(), q.clone(), x.clone()], now);
    // P suspects X; X does not refute; the suspicion times out here.
    m.handle_message(
        now,
        envelope(&p, vec![update(&x, 0, MemberState::Suspect)], gossip()),
    );
    assert!(matches!(events(&mut m).as_slice(), [Event::Suspected(s)] if *s == x));
    let later = now + Config::default().suspicion_max(4) + Duration::from_secs(1);
    run_timers(&mut m, later);
    while m.poll_transmit().is_some() {}
    let ev = events(&mut m);
    assert!(
        ev.iter().any(|e| matches!(e, Event::Failed(f) if *f == x)),
        "{ev:?}"
    );
    // Dead at incarnation 0: an alive at 0 is the same.
    stays_ended(&mut m, later, (&p, &x), MemberState::Dead, &[0]);
}

// ------------------------------------------------------ oversized records

#[test]
fn a_pushed_record_too_large_to_forward_is_applied_not_forwarded() {
    // A foreign member's key fills almost a whole message: the envelope is
    // within the limit, but forwarded with this member's own envelope and
    // piggyback it would not be.
    let cfg = Config {
        max_message_size: 4096,
        ..Config::default()
    };
    let t0 = Instant::now();
    let (me, x) = (id("m"), id("x"));
    let peers = [x.clone(), id("a"), id("b"), id("c"), id("d")];
    let mut m = machine_with(cfg.clone(), &me, &peers, t0);
    let kv = pb::KeyValue {
        key: "big".into(),
        value: vec![7u8; 3900].into(),
        version: 1,
        ..Default::default()
    };
    let od = pb::OwnerDelta {
        member: Some(update(&x, 0, MemberState::Alive)),
        from_version: 0,
        to_version: 1,
        keys: vec![kv],
        ..Default::default()
    };
    let env = envelope(
        &x,
        vec![],
        Body::Delta(pb::Delta {
            owners: vec![od],
            push: true,
        }),
    );
    assert!(env.encoded_len() <= cfg.max_message_size);
    m.handle_message(t0 + Duration::from_millis(1), env);
    let sent: Vec<_> = std::iter::from_fn(|| m.poll_transmit()).collect();
    for t in &sent {
        assert!(
            t.msg.encoded_len() <= cfg.max_message_size,
            "{} bytes",
            t.msg.encoded_len()
        );
        assert!(
            !matches!(&t.msg.body, Some(Body::Delta(d)) if d.push),
            "the oversized record is not forwarded"
        );
    }
    let got = m.get_key(t0, &x.addr, "big").expect("the key is applied");
    assert_eq!(got.value.len(), 3900);
}

// --------------------------------------------------------------- active view

/// A round's peers: `explore` uniformly random live peers, the rest from
/// the live members of the active view; a member of the view that left is
/// never picked, and with no usable view every peer is random.
#[test]
fn a_round_explores_one_peer_and_takes_the_rest_from_the_active_view() {
    let now = Instant::now();
    let me = id("m");
    let peers: Vec<NodeId> = (0..40).map(|i| id(&format!("p{i}"))).collect();
    let mut m = machine(&me, &peers, now);
    // p1 leaves; the view holds p1..=p5.
    let left = update(&peers[1], 1, MemberState::Left);
    m.handle_message(now, envelope(&peers[1], vec![left], gossip()));
    while m.poll_transmit().is_some() {}
    m.active = crate::active_view::ActiveView::new(8);
    for p in &peers[1..=5] {
        m.active.touch(&p.addr);
    }
    let warm: BTreeSet<NodeAddr> = peers[2..=5].iter().map(|p| p.addr.clone()).collect();
    let mut explored = BTreeSet::new();
    for _ in 0..200 {
        let tick = m.round_peers(3, 1);
        assert_eq!(tick.len(), 3);
        assert_eq!(tick.iter().collect::<BTreeSet<_>>().len(), 3, "{tick:?}");
        assert!(
            !tick.contains(&peers[1].addr),
            "member that left picked: {tick:?}"
        );
        // The last two come from the view's live members.
        assert!(tick[1..].iter().all(|a| warm.contains(a)), "{tick:?}");
        explored.insert(tick[0].clone());

        let extra = m.round_peers(3, 2);
        assert_eq!(extra.len(), 3);
        assert!(warm.contains(&extra[2]), "{extra:?}");
    }
    // The explored peer is any live member, not only the view's.
    assert!(explored.iter().any(|a| !warm.contains(a)));
    assert!(explored.len() > 20, "{} peers explored", explored.len());

    // No live member in the view: every peer is random.
    m.active = crate::active_view::ActiveView::new(8);
    m.active.touch(&peers[1].addr);
    let all = m.round_peers(3, 1);
    assert_eq!(all.len(), 3);
    assert!(!all.contains(&peers[1].addr));
}

// ------------------------------------------------------------------ warm-up

/// Runs `m`'s timers up to `until`, acking every ping at once with `m`'s
/// own digest fingerprint (a peer whose view agrees, so no ack makes `m`
/// active). Returns, per timer that fired while `m` was quiet, the peers
/// it sent a `SyncRequest` to, and records every peer `m` sent anything
/// to in `contacted`.
fn run_quietly(
    m: &mut Machine,
    until: Instant,
    contacted: &mut BTreeSet<NodeAddr>,
) -> Vec<Vec<NodeAddr>> {
    let mut warmed = Vec::new();
    while let Some(t) = m.poll_timeout().filter(|t| *t <= until) {
        let quiet = !m.sync.is_active(m.queue_depth());
        m.handle_timeout(t);
        let mut requests = Vec::new();
        let mut pings = Vec::new();
        while let Some(x) = m.poll_transmit() {
            match &x.msg.body {
                Some(Body::Ping(p)) => pings.push((x.to.clone(), p.seq)),
                Some(Body::SyncRequest(_)) if quiet => {
                    assert!(
                        !contacted.contains(&x.to),
                        "warm-up request to {} contacted before",
                        x.to
                    );
                    requests.push(x.to.clone());
                }
                _ => {}
            }
            contacted.insert(x.to);
        }
        for (to, seq) in pings {
            let from = NodeId::new(to, 1);
            let ack = pb::Ack {
                seq,
                target: Some(from.to_pb()),
                digest_hash: m.table.root_hash(),
                members: m.table.live_count() as u32,
            };
            m.handle_message(t, envelope(&from, vec![], Body::Ack(ack)));
        }
        if !requests.is_empty() {
            warmed.push(requests);
        }
    }
    warmed
}

/// Warm-up (issue #10: a write's eager push waited for handshakes to
/// peers never contacted): once quiet, a member sends its fingerprint to
/// `fanout` alive peers it has sent no message to (what it heard does not
/// count), once per probe period, each peer once, `warm_up_peers` in all;
/// nothing with 0.
#[test]
fn a_quiet_member_contacts_fanout_new_peers_per_probe_period_up_to_its_limit() {
    let now = Instant::now();
    let me = id("m");
    let peers: Vec<NodeId> = (0..60).map(|i| id(&format!("p{i}"))).collect();
    let cfg = Config {
        warm_up_peers: 7,
        // No background round in the window: every quiet request is warm-up.
        push_pull_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    let mut m = machine_with(cfg.clone(), &me, &peers, now);
    // It heard from peers[0] (machine_with) but sent it nothing.
    let mut contacted = BTreeSet::new();
    let warmed = run_quietly(&mut m, now + Duration::from_secs(30), &mut contacted);
    let sizes: Vec<usize> = warmed.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1], "fanout per probe period, then the rest");
    let all: BTreeSet<&NodeAddr> = warmed.iter().flatten().collect();
    assert_eq!(all.len(), 7, "each peer once");

    // Off: no request while quiet.
    let cfg = Config {
        warm_up_peers: 0,
        ..cfg
    };
    let mut m = machine_with(cfg, &me, &peers, now);
    let mut contacted = BTreeSet::new();
    let warmed = run_quietly(&mut m, now + Duration::from_secs(30), &mut contacted);
    assert!(warmed.is_empty(), "{warmed:?}");
}
