//! Event handlers over in-memory members and hand-made event streams; the
//! commands are small shell scripts writing to temporary files.

use super::*;
use std::path::Path;

use bytes::Bytes;
use gossip_core::{
    Config, MemNetwork, Member, MemberOptions, MemberState, Membership, NodeAddr, NodeId,
};

fn fast() -> Config {
    Config {
        gossip_interval: Duration::from_millis(50),
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        cluster_id: "handlers-test".to_owned(),
        ..Config::default()
    }
}

async fn started(net: &MemNetwork) -> Arc<Member<gossip_core::MemTransport>> {
    let m = Member::new(fast(), net.transport(), MemberOptions::default()).unwrap();
    m.start().await.unwrap();
    Arc::new(m)
}

#[track_caller]
fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) -> impl Future<Output = ()> {
    let caller = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + timeout;
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {timeout:?} ({caller})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

use std::future::Future;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn handler(name: &str, events: &[&str], command: String) -> HandlerConfig {
    HandlerConfig::new(name.to_owned(), events, &command).unwrap()
}

fn env() -> HandlerEnv {
    HandlerEnv {
        self_addr: "127.0.0.1:7001".to_owned(),
        cluster_id: "c".to_owned(),
    }
}

fn addr(s: &str) -> NodeAddr {
    NodeAddr::parse(s).unwrap()
}

/// Records every event of `member` as handlers get it, from now on.
fn record(member: &dyn Membership) -> (Arc<std::sync::Mutex<Vec<Event>>>, JoinHandle<()>) {
    let mut rx = member.subscribe();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok(e) = rx.recv().await {
            out.lock().unwrap().push(e);
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_handler_gets_every_event_in_the_clusters_order() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.log");
    let app = dir.path().join("app.log");
    let net = MemNetwork::new();
    let a = started(&net).await;
    let b = started(&net).await;
    let c = started(&net).await;
    let a_addr = a.local_id().addr.to_string();
    // The handlers and the reference record subscribe at the same point.
    let (history, recorder) = record(a.as_ref());
    let script = |file: &Path| {
        format!(
            r#"{{ printf '%s %s %s ' "$GOSSIP_EVENT" "$GOSSIP_SELF" "$GOSSIP_CLUSTER_ID"; cat; }} >> '{}'"#,
            file.display()
        )
    };
    let handlers = Handlers::start(
        a.subscribe(),
        vec![
            handler("all", &["*"], script(&all)),
            handler("app", &["key-change:app/"], script(&app)),
        ],
        HandlerEnv {
            self_addr: a_addr.clone(),
            cluster_id: "handlers-test".to_owned(),
        },
    );

    // The cluster's history: B and C join, B changes its metadata and keys,
    // C broadcasts and leaves, B crashes.
    let t = Duration::from_secs(20);
    b.add_seed(a.local_id().addr);
    c.add_seed(a.local_id().addr);
    wait_until("3 members", t, || a.members().len() == 3).await;
    let role = std::collections::BTreeMap::from([("role".to_owned(), "db".to_owned())]);
    b.set_meta(role.clone()).unwrap();
    let b_id = b.local_id();
    wait_until("A sees B's meta", t, || {
        a.members().iter().any(|m| m.id() == b_id && m.meta == role)
    })
    .await;
    b.set_key("app/x", Bytes::from_static(b"1"), None).unwrap();
    b.set_key("other", Bytes::from_static(b"2"), None).unwrap();
    b.set_key("app/y", Bytes::from_static(b"3"), None).unwrap();
    wait_until("A sees B's keys", t, || {
        a.get_key(&b_id.addr, "app/y").is_some() && a.get_key(&b_id.addr, "other").is_some()
    })
    .await;
    let uuid = c.broadcast(Bytes::from_static(b"\"hello\""), None).unwrap();
    let seen_broadcast = || {
        history
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Broadcast(m) if m.uuid == uuid))
    };
    wait_until("A delivers C's broadcast", t, seen_broadcast).await;
    let c_id = c.local_id();
    c.shutdown().await;
    wait_until("A sees C leave", t, || {
        a.all_members()
            .iter()
            .any(|m| m.id() == c_id && m.state == MemberState::Left)
    })
    .await;
    b.crash().await;
    wait_until("A declares B dead", t, || {
        a.all_members()
            .iter()
            .any(|m| m.id() == b_id && m.state == MemberState::Dead)
    })
    .await;

    // The handler wrote exactly the member's event history, in order.
    let expected: Vec<String> = history
        .lock()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {a_addr} handlers-test {}",
                EventKind::of(e).name(),
                event_json(e)
            )
        })
        .collect();
    wait_until("the handler catches up", t, || {
        lines(&all).len() >= expected.len()
    })
    .await;
    assert_eq!(lines(&all), expected);
    // The milestones are there, in the order they happened.
    let kinds: Vec<&str> = expected
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let pos = |kind: &str, needle: &str| {
        expected
            .iter()
            .position(|l| l.starts_with(kind) && l.contains(needle))
            .unwrap_or_else(|| panic!("no {kind} with {needle} in {kinds:?}"))
    };
    let order = [
        pos("member-join", &format!("\"addr\":\"{}\"", b_id.addr)),
        pos("member-update", "\"role\":\"db\""),
        pos("key-change", "\"key\":\"app/x\""),
        pos("key-change", "\"key\":\"other\""),
        pos("key-change", "\"key\":\"app/y\""),
        pos("broadcast", &uuid.to_string()),
        pos("member-leave", &format!("\"addr\":\"{}\"", c_id.addr)),
        pos("member-failed", &format!("\"addr\":\"{}\"", b_id.addr)),
    ];
    assert!(order.is_sorted(), "{order:?} in {kinds:?}");
    // The filtered handler got only the app/ keys, in order.
    let app_expected: Vec<&String> = expected
        .iter()
        .filter(|l| l.starts_with("key-change") && l.contains("\"key\":\"app/"))
        .collect();
    assert_eq!(app_expected.len(), 2);
    wait_until("the app handler catches up", t, || lines(&app).len() >= 2).await;
    assert_eq!(
        lines(&app),
        app_expected.into_iter().cloned().collect::<Vec<_>>()
    );
    let counters = &handlers.stats().handlers;
    assert_eq!(
        counters[0].ok.load(Ordering::Relaxed),
        expected.len() as u64
    );
    assert_eq!(counters[0].dropped.load(Ordering::Relaxed), 0);
    handlers.stop().await;
    recorder.abort();
    a.shutdown().await;
}

/// True if `pid` no longer runs (gone, or a zombie).
fn process_gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_handler_does_not_delay_failure_detection() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let net = MemNetwork::new();
    let a = started(&net).await;
    let b = started(&net).await;
    let c = started(&net).await;
    let mut hang = handler(
        "hang",
        &["*"],
        format!("echo $$ >> '{}'; exec sleep 600", pids.display()),
    );
    hang.timeout = Duration::from_secs(600);
    hang.queue = 1;
    let handlers = Handlers::start(a.subscribe(), vec![hang], env());
    b.add_seed(a.local_id().addr);
    c.add_seed(a.local_id().addr);
    let t = Duration::from_secs(20);
    wait_until("3 members", t, || a.members().len() == 3).await;
    wait_until("the handler hangs", t, || !lines(&pids).is_empty()).await;

    let b_id = b.local_id();
    b.crash().await;
    let crashed = tokio::time::Instant::now();
    // Generous: the bound, plus slack for a busy machine.
    let bound = fast().detection_bound(3) + Duration::from_secs(5);
    wait_until(
        "A declares B dead despite the hanging handler",
        bound,
        || {
            a.all_members()
                .iter()
                .any(|m| m.id() == b_id && m.state == MemberState::Dead)
        },
    )
    .await;
    println!("detected in {:?} (bound {bound:?})", crashed.elapsed());
    // Join B, join C, failed B (at least): more than one running and one
    // waiting.
    let counters = &handlers.stats().handlers[0];
    assert!(counters.dropped.load(Ordering::Relaxed) >= 1);
    assert_eq!(counters.ok.load(Ordering::Relaxed), 0);

    // Stopping kills the hanging command.
    let pid: i32 = lines(&pids)[0].parse().unwrap();
    assert!(!process_gone(pid));
    handlers.stop().await;
    wait_until("the hanging command is killed", t, || process_gone(pid)).await;
    a.shutdown().await;
    c.shutdown().await;
}

fn left(port: u16) -> Event {
    Event::Left(NodeId::new(addr(&format!("127.0.0.1:{port}")), 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_timeouts_and_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (tx, rx) = broadcast::channel(64);
    let mut slow = handler("slow", &["member-leave"], "sleep 30".to_owned());
    slow.timeout = Duration::from_millis(200);
    let mut full = handler("full", &["*"], "sleep 30".to_owned());
    full.queue = 1;
    let handlers = Handlers::start(
        rx,
        vec![
            handler(
                "ok",
                &["member-leave"],
                format!("cat >> '{}'", out.display()),
            ),
            handler(
                "fails",
                &["member-leave"],
                "echo oops >&2; exit 3".to_owned(),
            ),
            slow,
            full,
            handler("never", &["broadcast"], "true".to_owned()),
        ],
        env(),
    );
    for port in 1..=5 {
        tx.send(left(port)).unwrap();
    }
    let c = &handlers.stats().handlers;
    let t = Duration::from_secs(20);
    wait_until("every run ends", t, || {
        c[0].ok.load(Ordering::Relaxed) == 5
            && c[1].failed.load(Ordering::Relaxed) == 5
            && c[2].timed_out.load(Ordering::Relaxed) == 5
    })
    .await;
    // The input, one JSON line per event, in order.
    let got = lines(&out);
    assert_eq!(got.len(), 5);
    for (i, line) in got.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["event"], "member-leave");
        assert_eq!(v["member"]["addr"], format!("127.0.0.1:{}", i + 1));
    }
    // One running, one waiting, the rest dropped (the first event may be
    // taken before the second arrives).
    assert!(c[3].dropped.load(Ordering::Relaxed) >= 3, "{:?}", c[3]);
    assert_eq!(c[4].ok.load(Ordering::Relaxed), 0);

    // GET /metrics serves the counters.
    let member = crate::admin::tests::member().await;
    let admin = crate::admin::Admin::with_handlers(member.clone(), Some(handlers.stats().clone()));
    let req = axum::http::Request::builder()
        .uri("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(admin.router(), req)
        .await
        .unwrap();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let has = |labels: &[&str], value: &str| {
        text.lines()
            .any(|l| labels.iter().all(|x| l.contains(x)) && l.ends_with(&format!(" {value}")))
    };
    let runs = "gossip_handler_runs_total{";
    assert!(
        has(&[runs, "handler=\"ok\"", "result=\"ok\""], "5"),
        "{text}"
    );
    assert!(
        has(&[runs, "handler=\"fails\"", "result=\"failed\""], "5"),
        "{text}"
    );
    assert!(
        has(&[runs, "handler=\"slow\"", "result=\"timeout\""], "5"),
        "{text}"
    );
    let dropped = c[3].dropped.load(Ordering::Relaxed).to_string();
    assert!(
        has(
            &["gossip_handler_dropped_total{", "handler=\"full\""],
            &dropped
        ),
        "{text}"
    );
    admin.stop().await;
    member.shutdown().await;
    // Stop ends every task even with a command running (`full`).
    tokio::time::timeout(Duration::from_secs(10), handlers.stop())
        .await
        .expect("stop returns");
}

#[test]
fn filters_parse_and_match() {
    for kind in EventKind::ALL {
        assert_eq!(
            EventFilter::parse(kind.name()).unwrap(),
            EventFilter::Kind(kind)
        );
    }
    assert_eq!(EventFilter::parse(" * ").unwrap(), EventFilter::Any);
    assert_eq!(
        EventFilter::parse("key-change:app/").unwrap(),
        EventFilter::KeyPrefix("app/".to_owned())
    );
    let err = EventFilter::parse("member-joined").unwrap_err().to_string();
    assert!(
        err.starts_with(
            "invalid event handler: unknown event \"member-joined\" (expected one of: member-join,"
        ),
        "{err}"
    );
    let key = |k: &str| Event::KeyChanged {
        owner: addr("h:1"),
        key: k.to_owned(),
        value: None,
        version: 2,
    };
    let app = EventFilter::parse("key-change:app/").unwrap();
    assert!(app.accepts(&key("app/x")));
    assert!(!app.accepts(&key("ap")));
    assert!(!app.accepts(&left(1)));
    assert!(EventFilter::Kind(EventKind::KeyChange).accepts(&key("x")));
    assert!(EventFilter::Any.accepts(&left(1)));
    assert_eq!(
        event_json(&key("k")),
        serde_json::json!({"event": "key-change", "owner": "h:1", "key": "k", "value": null, "version": 2})
    );
}

#[test]
fn handler_flags_parse() {
    let h = HandlerConfig::parse_flag(
        "handler-1".to_owned(),
        "member-join,key-change:a=b/=echo x=y",
    )
    .unwrap();
    assert_eq!(
        h.events,
        vec![
            EventFilter::Kind(EventKind::MemberJoin),
            EventFilter::KeyPrefix("a".to_owned())
        ]
    );
    assert_eq!(h.command, "b/=echo x=y");
    for (flag, want) in [
        ("member-join", "\"member-join\" is not EVENTS=COMMAND"),
        ("=echo", "handler-1: no event to run on"),
        ("member-join= ", "handler-1: empty command"),
        ("nope=echo", "unknown event \"nope\""),
    ] {
        let err = HandlerConfig::parse_flag("handler-1".to_owned(), flag)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{flag}: {err}");
    }
}
