//! The tokio driver over the in-memory transport: lifecycle and a whole
//! cluster. Time is tokio's paused clock, so waits cost no real time.

use std::time::Duration;

use bytes::Bytes;
use gossip_core::{
    Config, Event, MemNetwork, MemTransport, Member, MemberOptions, Membership, MessageKind,
};

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

async fn wait_until(limit: Duration, what: &str, cond: impl Fn() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() <= limit,
            "{what}: not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn member(net: &MemNetwork, cfg: &Config) -> Member<MemTransport> {
    Member::new(cfg.clone(), net.transport(), MemberOptions::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn construction_starts_no_task_and_shutdown_ends_them_all() {
    let net = MemNetwork::new();
    let base = alive_tasks();
    let a = member(&net, &Config::default());
    let b = member(&net, &Config::default());
    assert_eq!(alive_tasks(), base, "constructing a member spawns nothing");
    a.start().await.unwrap();
    b.start().await.unwrap();
    assert!(alive_tasks() > base, "start spawns the driver");
    b.add_seed(a.local_id().addr);
    wait_until(Duration::from_secs(5), "join", || {
        a.members().len() == 2 && b.members().len() == 2
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    // Send tasks are awaited or aborted before shutdown returns.
    assert_eq!(
        alive_tasks(),
        base,
        "shutdown returns once every task ended"
    );
    assert!(
        a.set_key("k", Bytes::new(), None).is_err(),
        "commands after shutdown are refused"
    );
    assert!(a.start().await.is_err(), "a member that left stays down");
}

#[tokio::test(start_paused = true)]
async fn fifty_members_converge_over_the_in_memory_transport() {
    let cfg = Config::default();
    let net = MemNetwork::new();
    let members: Vec<_> = (0..50).map(|_| member(&net, &cfg)).collect();
    for (i, m) in members.iter().enumerate() {
        m.start().await.unwrap();
        if i > 0 {
            m.add_seed(members[i - 1].local_id().addr);
        }
        m.set_key("k", Bytes::from(format!("v{i}")), None).unwrap();
    }
    // Bound: 2 * ceil(log2 50) = 12 gossip rounds after the last start.
    let bound = cfg.gossip_interval * 12;
    let took = wait_until(bound, "convergence", || {
        members
            .iter()
            .all(|m| m.members().len() == 50 && m.kv().len() == 50)
    })
    .await;
    eprintln!(
        "50 members converged in {took:?} ({:.1} rounds)",
        took.as_secs_f64() / cfg.gossip_interval.as_secs_f64()
    );
    for m in &members {
        m.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn events_arrive_in_order_and_a_leave_is_seen_at_once() {
    let net = MemNetwork::new();
    let cfg = Config::default();
    let a = member(&net, &cfg);
    let b = member(&net, &cfg);
    let mut events = a.subscribe();
    a.start().await.unwrap();
    b.start().await.unwrap();
    b.add_seed(a.local_id().addr);
    wait_until(Duration::from_secs(5), "join", || a.members().len() == 2).await;
    b.set_key("x", Bytes::from_static(b"1"), None).unwrap();
    wait_until(Duration::from_secs(5), "key", || {
        a.get_key(&b.local_id().addr, "x").is_some()
    })
    .await;
    let left_at = tokio::time::Instant::now();
    b.shutdown().await;
    wait_until(Duration::from_secs(5), "leave", || a.members().len() == 1).await;
    assert!(
        left_at.elapsed() < cfg.probe_interval,
        "a leave is not detected by probing"
    );
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push(match e {
            Event::Joined(_) => "joined",
            Event::KeyChanged { .. } => "key",
            Event::Left(_) => "left",
            _ => "other",
        });
    }
    kinds.retain(|k| *k != "other");
    assert_eq!(kinds, ["joined", "key", "left"]);
    a.shutdown().await;
}

/// Regression: `shutdown` right after `start` used to hang, because the
/// driver subscribed to the stop signal only once it first ran.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_right_after_start_returns() {
    let net = MemNetwork::new();
    for _ in 0..20 {
        let m = member(&net, &Config::default());
        m.start().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), m.shutdown())
            .await
            .expect("shutdown hung");
    }
}

#[tokio::test(start_paused = true)]
async fn stats_count_messages_by_kind_and_probe_round_trips() {
    let net = MemNetwork::new();
    let cfg = Config::default();
    let a = member(&net, &cfg);
    let b = member(&net, &cfg);
    a.start().await.unwrap();
    b.start().await.unwrap();
    b.add_seed(a.local_id().addr);
    // A probed B and was answered, and B probed A and was answered.
    wait_until(Duration::from_secs(5), "probes both ways", || {
        let s = a.stats();
        s.probe_rtt.count > 0
            && s.received_by_kind.messages(MessageKind::Ping) > 0
            && s.sent_by_kind.messages(MessageKind::Ack) > 0
    })
    .await;
    let s = a.stats();
    let rtt = s.probe_rtt;
    assert_eq!(rtt.counts.iter().sum::<u64>(), rtt.count);
    // The in-memory transport answers at once: under the first bound.
    assert_eq!(rtt.counts[0], rtt.count, "{rtt:?}");
    for kind in [MessageKind::Ping, MessageKind::Ack] {
        assert!(
            s.sent_by_kind.messages(kind) > 0,
            "{} sent: {s:?}",
            kind.as_str()
        );
        assert!(
            s.received_by_kind.messages(kind) > 0,
            "{} received",
            kind.as_str()
        );
        assert!(s.sent_by_kind.bytes(kind) > s.sent_by_kind.messages(kind));
    }
    let sum = |f: &dyn Fn(MessageKind) -> u64| MessageKind::ALL.into_iter().map(f).sum::<u64>();
    let s = a.stats();
    assert_eq!(sum(&|k| s.sent_by_kind.messages(k)), s.messages_sent);
    assert_eq!(sum(&|k| s.sent_by_kind.bytes(k)), s.bytes_sent);
    assert_eq!(
        sum(&|k| s.received_by_kind.messages(k)),
        s.messages_received
    );
    assert_eq!(sum(&|k| s.received_by_kind.bytes(k)), s.bytes_received);
    a.shutdown().await;
    b.shutdown().await;
}
