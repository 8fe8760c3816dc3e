//! The tokio driver over the in-memory transport: lifecycle and a whole
//! cluster. Time is tokio's paused clock, so waits cost no real time, except
//! in the stall tests, which block a real thread and so run in real time.

use std::time::Duration;

use bytes::Bytes;
use gossip_core::{
    Config, Event, FaultController, MemNetwork, MemTransport, Member, MemberOptions, Membership,
    MessageKind,
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

/// Two started members with the default config, B seeded with A.
async fn started_pair(net: &MemNetwork) -> (Member<MemTransport>, Member<MemTransport>) {
    let cfg = Config::default();
    let (a, b) = (member(net, &cfg), member(net, &cfg));
    a.start().await.unwrap();
    b.start().await.unwrap();
    b.add_seed(a.local_id().addr);
    (a, b)
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
    let (a, b) = started_pair(&net).await;
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

/// A send that the transport refuses (nothing listens at the peer) reaches
/// the machine through the driver's loop (issue #10): counted in
/// `send_refused`, and never more than the failed sends.
#[tokio::test(start_paused = true)]
async fn a_refused_send_is_reported_to_the_machine() {
    let net = MemNetwork::new();
    let (a, b) = started_pair(&net).await;
    wait_until(Duration::from_secs(5), "join", || {
        a.members().len() == 2 && b.members().len() == 2
    })
    .await;
    assert_eq!(a.stats().send_refused, 0, "nothing refused while b listens");
    // b stops listening without a word: a's probes to it are refused.
    b.crash().await;
    wait_until(
        Config::default().probe_interval * 4,
        "a refusal reported",
        || a.stats().send_refused > 0,
    )
    .await;
    // Each refusal is a refused batch (also a send failure) or a listener
    // check that found the port refusing.
    let s = a.stats();
    assert!(
        s.send_failures + s.refusal_checks >= s.send_refused,
        "{s:?}"
    );
    a.shutdown().await;
}

/// The protocol timing of the stall test: probes every 100 ms with a 50 ms
/// timeout, short suspicion.
fn fast_config() -> Config {
    Config {
        gossip_interval: Duration::from_millis(50),
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        suspicion_mult: 1,
        seed_retry_initial: Duration::from_millis(50),
        seed_retry_max: Duration::from_millis(200),
        ..Config::default()
    }
}

/// A member that was not running does not accuse (issue #10): three
/// members on one current-thread runtime in real time; a task blocks the
/// only thread for three probe timeouts, several times, at different phases
/// of the probe period. Every member was stalled, none is dead: nobody may be
/// suspected by member 0, nor declared dead by anyone.
///
/// Over the bare in-memory transport an answer is in the inbound queue as
/// soon as the peer ran, and the driver's `biased` select takes frames
/// before timers, so this holds by the driver alone.
#[tokio::test(flavor = "current_thread")]
async fn a_member_that_was_not_running_does_not_accuse() {
    stalls_accuse_nobody(Duration::ZERO).await;
}

/// As above, with 10 ms of delay on every message (a 20 ms round trip,
/// within the 50 ms probe timeout). A probe in flight when the thread
/// blocks gets its ack only after the stall: the driver handles what was
/// received before it judges a late timer, but the verdict on a probe that
/// had no time to be answered is the machine's stall rule.
#[tokio::test(flavor = "current_thread")]
async fn a_member_that_was_not_running_does_not_accuse_over_a_slow_network() {
    stalls_accuse_nobody(Duration::from_millis(10)).await;
}

async fn stalls_accuse_nobody(delay: Duration) {
    let cfg = fast_config();
    let net = MemNetwork::new();
    let faults = FaultController::new(7);
    faults.set_delay(delay);
    let members: Vec<_> = (0..3)
        .map(|_| {
            Member::new(
                cfg.clone(),
                faults.wrap(net.transport()),
                MemberOptions::default(),
            )
            .unwrap()
        })
        .collect();
    for (i, m) in members.iter().enumerate() {
        m.start().await.unwrap();
        if i > 0 {
            m.add_seed(members[0].local_id().addr);
        }
    }
    wait_until(Duration::from_secs(10), "join", || {
        members.iter().all(|m| m.members().len() == 3)
    })
    .await;
    let mut events: Vec<_> = members.iter().map(|m| m.subscribe()).collect();
    let stall = cfg.probe_timeout * 3;
    for phase in [0u32, 17, 33, 50, 71, 89, 5, 61, 43, 97] {
        // Lets the members run for a while, at a different phase of the
        // probe period each time; then blocks the runtime's only thread.
        let resume = tokio::time::Instant::now() + cfg.probe_interval * 2 + phase_ms(phase);
        tokio::time::sleep_until(resume).await;
        tokio::task::spawn(async move { std::thread::sleep(stall) })
            .await
            .unwrap();
    }
    // Some probe periods after the last stall, in which nothing may happen:
    // a fixed observation window, no condition to wait on.
    tokio::time::sleep(cfg.probe_interval * 5).await;
    let s = members[0].stats();
    assert!(
        s.late_wakeups > 0,
        "the stalls were seen as late wake-ups: {s:?}"
    );
    assert!(s.max_lateness_us >= 100_000, "{s:?}");
    let mut accusations = Vec::new();
    for (i, rx) in events.iter_mut().enumerate() {
        while let Ok(e) = rx.try_recv() {
            match e {
                Event::Failed(id) => accusations.push(format!("member {i} declared {id} dead")),
                Event::Suspected(id) if i == 0 => {
                    accusations.push(format!("member 0 suspected {id}"));
                }
                Event::Suspected(id) => eprintln!("member {i} suspected {id}"),
                _ => {}
            }
        }
    }
    assert!(accusations.is_empty(), "after stalls: {accusations:?}");
    for m in &members {
        assert_eq!(m.members().len(), 3, "everyone alive everywhere");
    }
    for m in &members {
        m.shutdown().await;
    }
}

fn phase_ms(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}
