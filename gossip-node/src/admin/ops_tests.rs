//! `POST /join`, `GET`/`PUT`/`PATCH /meta` and `POST /leave` through
//! `tower::ServiceExt::oneshot`, over in-memory members.

use super::tests::{call, member, pair, wait_until};
use super::*;
use axum::http::Method;
use gossip_core::{Config, MemNetwork, Member as CoreMember, MemberOptions, MemberState};
use serde_json::json;
use std::collections::BTreeMap;

/// Two started members on one network, not joined.
async fn strangers() -> (Arc<dyn Membership>, Arc<dyn Membership>) {
    let net = MemNetwork::new();
    let cfg = Config {
        gossip_interval: Duration::from_millis(50),
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        ..Config::default()
    };
    // Addresses, not names: a seed name would go to the resolver.
    let at = |a: &str| net.transport_at(gossip_core::NodeAddr::parse(a).unwrap());
    let a = CoreMember::new(cfg.clone(), at("10.0.0.1:7000"), MemberOptions::default()).unwrap();
    let b = CoreMember::new(cfg, at("10.0.0.2:7000"), MemberOptions::default()).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    (Arc::new(a), Arc::new(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_says_which_seeds_answered() {
    let (a, b) = strangers().await;
    let app = router(b.clone());
    // Nobody listens at the second address.
    let body = json!({"seeds": [a.local_id().addr.as_str(), "127.0.0.1:9"], "timeout_ms": 2000});
    let (status, answer) = call(&app, Method::POST, "/join", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["answered"], json!([a.local_id().addr.as_str()]));
    assert_eq!(answer["unanswered"], json!(["127.0.0.1:9"]));
    assert_eq!(b.members().len(), 2);
    wait_until("A lists B", || a.members().len() == 2).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_join_requests_are_json_4xx_and_join_nothing() {
    let (a, b) = strangers().await;
    let app = router(b.clone());
    let good = a.local_id().addr.to_string();
    let many: Vec<String> = (1..=65).map(|p| format!("127.0.0.1:{p}")).collect();
    for (body, want) in [
        (
            json!({"seeds": [good, "nohost"]}).to_string(),
            "invalid seed address \"nohost\": missing ':port'",
        ),
        (
            json!({"seeds": [good, "h:0"]}).to_string(),
            "invalid seed address \"h:0\"",
        ),
        (json!({"seeds": []}).to_string(), "`seeds` is empty"),
        (
            json!({"seeds": [good], "timeout_ms": 0}).to_string(),
            "timeout_ms must be between 1 and 60000",
        ),
        (
            json!({"seeds": [good], "timeout_ms": 60001}).to_string(),
            "timeout_ms must be between 1 and 60000",
        ),
        (
            json!({"seeds": many}).to_string(),
            "65 seeds, more than the limit of 64",
        ),
        (json!({"seed": [good]}).to_string(), "invalid JSON body"),
        (json!({"seeds": good}).to_string(), "invalid JSON body"),
        ("not json".to_owned(), "invalid JSON body"),
    ] {
        let (status, json) = call(&app, Method::POST, "/join", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(want), "{body}: {error}");
    }
    // Nothing was recorded: A, reachable all along, never hears from B.
    // (A seed is contacted at once; the in-memory network delivers within
    // milliseconds.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.members().len(), 1, "{:?}", a.members());
    assert_eq!(b.members().len(), 1, "{:?}", b.members());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_is_replaced_and_edited_and_spreads() {
    let (a, b) = pair().await;
    let app = router(b.clone());
    let b_addr = b.local_id().addr;
    let (status, meta) = call(&app, Method::GET, "/meta", "").await;
    assert_eq!((status, meta), (StatusCode::OK, json!({})));

    let put = json!({"role": "db", "zone": "a", "rack": "7"}).to_string();
    let (status, meta) = call(&app, Method::PUT, "/meta", &put).await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    assert_eq!(meta, json!({"role": "db", "zone": "a", "rack": "7"}));
    let (_, shown) = call(&app, Method::GET, "/meta", "").await;
    assert_eq!(shown, meta);

    let patch = json!({"set": {"zone": "b", "tier": "gold"}, "unset": ["rack", "absent"]});
    let (status, meta) = call(&app, Method::PATCH, "/meta", &patch.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    let want = json!({"role": "db", "zone": "b", "tier": "gold"});
    assert_eq!(meta, want);
    let (_, shown) = call(&app, Method::GET, "/meta", "").await;
    assert_eq!(shown, want);

    // A learns B's new metadata by gossip.
    wait_until("A sees B's metadata", || {
        a.members()
            .iter()
            .any(|m| m.addr == b_addr && serde_json::to_value(&m.meta).ok() == Some(want.clone()))
    })
    .await;
    // PUT replaces everything.
    let (_, meta) = call(&app, Method::PUT, "/meta", "{}").await;
    assert_eq!(meta, json!({}));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_meta_requests_are_json_4xx_and_change_nothing() {
    let m = member().await;
    let app = router(m.clone());
    let (_, before) = call(&app, Method::PUT, "/meta", r#"{"role": "db"}"#).await;
    assert_eq!(before, json!({"role": "db"}));
    let too_many: BTreeMap<String, String> =
        (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let too_many = serde_json::to_string(&too_many).unwrap();
    let too_big = json!({"big": "x".repeat(5000)}).to_string();
    let patch_too_big = json!({"set": {"big": "x".repeat(5000)}}).to_string();
    for (method, body, want) in [
        (Method::PUT, too_many.as_str(), StatusCode::BAD_REQUEST),
        (Method::PUT, too_big.as_str(), StatusCode::PAYLOAD_TOO_LARGE),
        (
            Method::PATCH,
            patch_too_big.as_str(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (Method::PUT, r#"{"": "v"}"#, StatusCode::BAD_REQUEST),
        (Method::PUT, r#"{"n": 1}"#, StatusCode::BAD_REQUEST),
        (Method::PUT, r#"["a"]"#, StatusCode::BAD_REQUEST),
        (
            Method::PATCH,
            r#"{"set": {"a": "1"}, "unset": ["a"]}"#,
            StatusCode::BAD_REQUEST,
        ),
        (Method::PATCH, r#"{"unset": [""]}"#, StatusCode::BAD_REQUEST),
        (
            Method::PATCH,
            r#"{"remove": ["role"]}"#,
            StatusCode::BAD_REQUEST,
        ),
        (Method::PATCH, "role=x", StatusCode::BAD_REQUEST),
        (Method::DELETE, "", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let (status, json) = call(&app, method.clone(), "/meta", body).await;
        assert_eq!(status, want, "{method} {body:.60}: {json}");
        assert!(json["error"].is_string(), "{json}");
        let (_, now) = call(&app, Method::GET, "/meta", "").await;
        assert_eq!(now, before, "{method} {body:.60} changed the metadata");
    }
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_announces_the_leave_and_tells_the_runner() {
    let (a, b) = pair().await;
    let admin = Admin::start(b.clone());
    let app = admin.router();
    let requested = tokio::spawn(admin.leave_requested());
    let (status, answer) = call(&app, Method::POST, "/leave", "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "left");
    assert_eq!(answer["addr"], b.local_id().addr.as_str());
    tokio::time::timeout(Duration::from_secs(10), requested)
        .await
        .expect("leave_requested resolves")
        .unwrap();
    // A heard the leave (not a failure).
    let b_addr = b.local_id().addr;
    wait_until("A sees B left", || {
        a.all_members()
            .iter()
            .any(|m| m.addr == b_addr && m.state == MemberState::Left)
    })
    .await;
    let (status, _) = call(&app, Method::GET, "/healthz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Once left, the member refuses what would change it.
    let (status, json) = call(&app, Method::PUT, "/meta", r#"{"a": "b"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    admin.stop().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_through_a_name_says_whether_one_of_its_addresses_answered() {
    let (a, b) = strangers().await;
    let resolver = |host: &str, port: u16| match host {
        "peers.test" => Ok(vec![std::net::SocketAddr::from(([10, 0, 0, 1], port))]),
        _ => Err(std::io::Error::other("no such name")),
    };
    let admin = Admin::start(b.clone()).with_resolver(Arc::new(resolver));
    let app = admin.router();
    let body = json!({"seeds": ["peers.test:7000", "nowhere.test:7000"], "timeout_ms": 1000});
    let (status, answer) = call(&app, Method::POST, "/join", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["answered"], json!(["peers.test:7000"]));
    assert_eq!(answer["unanswered"], json!(["nowhere.test:7000"]));
    assert_eq!(b.members().len(), 2);
    admin.stop().await;
    a.shutdown().await;
    b.shutdown().await;
}
