//! Multi-process tests: real `gossip-node` processes on loopback, over each
//! transport compiled in (gRPC and QUIC), with the default self-signed TLS
//! and with mutual TLS.
//!
//! Every node binds port 0 for gossip and admin and reports the bound
//! addresses in its JSON start line, so tests never race for ports. Every
//! wait polls the admin API against a deadline. Every process started is
//! killed when its guard drops, also when a test fails.
#![cfg(all(unix, any(feature = "grpc", feature = "quic")))]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gossip_node::config::{FileConfig, NodeConfig, RunArgs};
use nix::sys::signal::Signal;
use serde_json::Value;

mod support;

use support::{BIN, Node, process_gone};

/// Fast protocol timing, so that failure detection takes seconds.
const FAST: &str = "
gossip_interval_ms = 100
probe_interval_ms = 200
probe_timeout_ms = 100
suspicion_mult = 2
";
/// Allowance for measuring through HTTP polls of separate processes on a
/// busy test machine, added to the protocol's detection bound.
const POLL_SLACK: Duration = Duration::from_millis(500);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A config file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}.toml", unique("gossip-node-test")));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The config of a fresh cluster over `transport`, with fast timing.
fn cluster_toml(name: &str, transport: &str) -> String {
    format!(
        "cluster_id = \"{}\"\ntransport = \"{transport}\"\n{FAST}",
        unique(name)
    )
}

/// A path as a TOML string.
fn toml_path(path: &Path) -> String {
    toml::Value::String(path.to_str().unwrap().to_owned()).to_string()
}

/// The protocol configuration a node started with `toml` runs with.
fn protocol_of(toml: &str) -> gossip_core::Config {
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        ..RunArgs::default()
    };
    let file = FileConfig::parse(toml, "test.toml".as_ref()).unwrap();
    NodeConfig::merge(&args, file).unwrap().protocol
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

async fn get_json(
    client: &reqwest::Client,
    admin: SocketAddr,
    path: &str,
) -> Result<Value, String> {
    let resp = client
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .map_err(|e| format!("GET {path} on {admin}: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("GET {path} on {admin}: {status} {body}"))
    }
}

/// The addresses a node lists in `/members`.
async fn member_addrs(
    client: &reqwest::Client,
    admin: SocketAddr,
) -> Result<BTreeSet<String>, String> {
    let list = get_json(client, admin, "/members").await?;
    Ok(list
        .as_array()
        .ok_or_else(|| format!("/members is not an array: {list}"))?
        .iter()
        .filter_map(|m| m["addr"].as_str().map(str::to_owned))
        .collect())
}

/// Polls `check` until it succeeds or `timeout` passes; returns the time it
/// took, or panics with the last reason it gave.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(()) => return start.elapsed(),
            Err(e) => e,
        };
        assert!(
            start.elapsed() < timeout,
            "{what}: not within {timeout:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node in `nodes` lists exactly `expected`.
async fn until_members(
    what: &str,
    client: &reqwest::Client,
    nodes: &[&Node],
    expected: &BTreeSet<String>,
    timeout: Duration,
) -> Duration {
    eventually(what, timeout, || async {
        for node in nodes {
            let seen = member_addrs(client, node.admin).await?;
            if seen != *expected {
                return Err(format!("{} sees {seen:?}, want {expected:?}", node.addr));
            }
        }
        Ok(())
    })
    .await
}

/// Starts `n` nodes with `config`, each seeded with the one before.
fn chain(n: usize, config: &TempFile) -> Vec<Node> {
    chain_with(n, config, |_| Vec::new())
}

/// Like [`chain`], node `i` (from 1) with the extra flags `extra(i)`.
fn chain_with(n: usize, config: &TempFile, extra: impl Fn(usize) -> Vec<String>) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=n {
        let mut args = vec!["--config".to_owned(), config.path().to_owned()];
        if let Some(prev) = nodes.last() {
            args.extend(["--seed".to_owned(), prev.addr.clone()]);
        }
        args.extend(extra(i));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(Node::spawn(&args));
    }
    nodes
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_five_node_chain_converges_spreads_keys_and_detects_failures() {
    five_node_chain("grpc").await;
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_five_node_chain_converges_spreads_keys_and_detects_failures() {
    five_node_chain("quic").await;
}

/// Five nodes over `transport` (default TLS: self-signed), each seeded with
/// the one before: full membership, a key spreads, a SIGKILLed node is
/// dropped within the detection bound, a SIGTERMed one at once.
async fn five_node_chain(transport: &str) {
    let toml = cluster_toml("chain", transport);
    let config = TempFile::new(&toml);
    let protocol = protocol_of(&toml);
    let client = client();
    let mut nodes = chain(5, &config);

    // Full membership, though each node was told only of the one before.
    let all: BTreeSet<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    until_members(
        "full membership",
        &client,
        &refs,
        &all,
        Duration::from_secs(20),
    )
    .await;

    // A key set on one node reaches every node.
    let owner = nodes[2].addr.clone();
    let put: Value = client
        .put(format!("http://{}/kv/hello?ttl_ms=600000", nodes[2].admin))
        .body("world")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(put["key"], "hello", "{put}");
    let version = put["version"].as_u64().unwrap();
    eventually("key spread", Duration::from_secs(10), || async {
        for node in &nodes {
            let kv = get_json(&client, node.admin, "/kv").await?;
            let entry = &kv[&owner]["hello"];
            if entry["value"] != "world" || entry["version"] != version {
                return Err(format!("{} has {kv}", node.addr));
            }
        }
        Ok(())
    })
    .await;

    // SIGKILL: every other member drops it within the detection bound.
    let bound = protocol.detection_bound(5);
    let killed = nodes.remove(1);
    let mut killed = killed;
    killed.signal(Signal::SIGKILL);
    let started = Instant::now();
    killed.wait_exit(Duration::from_secs(5));
    assert!(
        killed
            .logs()
            .contains(&format!("({transport}, TLS self-signed)")),
        "start line should name the transport and TLS mode:\n{}",
        killed.logs()
    );
    let mut alive: BTreeSet<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    until_members(
        "crash detection",
        &client,
        &refs,
        &alive,
        bound + POLL_SLACK * 4,
    )
    .await;
    let took = started.elapsed();
    eprintln!("{transport}: crash detected everywhere after {took:?} (bound {bound:?})");
    assert!(
        took <= bound + POLL_SLACK,
        "crash detected after {took:?}, bound {bound:?}"
    );

    // SIGTERM: the node leaves gracefully, the others drop it at once, and it
    // exits 0.
    let mut leaving = nodes.remove(2);
    alive.remove(&leaving.addr);
    let quick = protocol.probe_interval * 2;
    leaving.signal(Signal::SIGTERM);
    let started = Instant::now();
    let refs: Vec<&Node> = nodes.iter().collect();
    until_members("graceful leave", &client, &refs, &alive, bound).await;
    let took = started.elapsed();
    eprintln!("{transport}: leave seen everywhere after {took:?}");
    assert!(
        took < quick,
        "leave took {took:?}, want under {quick:?} (2 probe intervals)"
    );
    let status = leaving.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}:\n{}", leaving.logs());
    assert!(!leaving.logs().contains("panicked"), "{}", leaving.logs());
}

/// Runs `gossip-node certs --out dir --nodes n` and checks that it printed
/// every file it wrote.
fn certs(dir: &Path, nodes: usize) {
    let out = Command::new(BIN)
        .args(["certs", "--out", dir.to_str().unwrap(), "--nodes"])
        .arg(nodes.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "certs failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = vec!["ca.pem".to_owned(), "ca-key.pem".to_owned()];
    for i in 1..=nodes {
        files.extend([format!("node-{i}.pem"), format!("node-{i}-key.pem")]);
    }
    for file in files {
        let path = dir.join(&file);
        assert!(path.is_file(), "{file} not written");
        assert!(
            stdout.contains(path.to_str().unwrap()),
            "{file} not printed:\n{stdout}"
        );
    }
    assert!(stdout.contains("tls = \"mtls\""), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_mtls_cluster_admits_only_members_signed_by_its_ca() {
    mtls_cluster("grpc").await;
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_mtls_cluster_admits_only_members_signed_by_its_ca() {
    mtls_cluster("quic").await;
}

/// Three nodes with certificates of the cluster CA (from `gossip-node
/// certs`) reach full membership; an intruder that trusts the cluster CA but
/// presents a certificate of another CA never joins, while a fourth node
/// with the cluster CA's fourth certificate does.
async fn mtls_cluster(transport: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (ours, theirs) = (tmp.path().join("cluster"), tmp.path().join("other"));
    certs(&ours, 4);
    certs(&theirs, 1);
    // The CA from the file, each node's certificate and key from flags.
    let toml = format!(
        "{}tls = \"mtls\"\ntls_ca = {}\n",
        cluster_toml("mtls", transport),
        toml_path(&ours.join("ca.pem"))
    );
    let config = TempFile::new(&toml);
    let node_files = |dir: &Path, i: usize| {
        vec![
            "--tls-cert".to_owned(),
            dir.join(format!("node-{i}.pem"))
                .to_str()
                .unwrap()
                .to_owned(),
            "--tls-key".to_owned(),
            dir.join(format!("node-{i}-key.pem"))
                .to_str()
                .unwrap()
                .to_owned(),
        ]
    };
    let client = client();
    let nodes = chain_with(3, &config, |i| node_files(&ours, i));
    let members: BTreeSet<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    let took = until_members(
        "mTLS membership",
        &client,
        &refs,
        &members,
        Duration::from_secs(20),
    )
    .await;
    eprintln!("{transport}: mTLS cluster of 3 converged after {took:?}");
    assert!(nodes[0].logs().contains("TLS mtls"), "{}", nodes[0].logs());
    for path in [ours.join("node-1-key.pem"), ours.join("ca.pem")] {
        let pem = std::fs::read_to_string(&path).unwrap();
        let body = pem.lines().nth(1).unwrap();
        assert!(!nodes[0].logs().contains(body), "{} logged", path.display());
    }

    // The intruder: the cluster's CA and cluster id, seeded with a member,
    // but its own certificate is signed by another CA.
    let mut args = vec![
        "--config".to_owned(),
        config.path().to_owned(),
        "--seed".to_owned(),
        nodes[0].addr.clone(),
    ];
    args.extend(node_files(&theirs, 1));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let intruder = Node::spawn(&args);

    // A bounded observation window for something that must NOT happen: for
    // at least 3 s, and until the intruder has tried to join at least 3
    // times (it retries its seed with backoff and counts each failed send;
    // at most 10 s), no member lists it and the members stay exactly the
    // three.
    let (window, cap) = (Duration::from_secs(3), Duration::from_secs(10));
    let start = Instant::now();
    let mut failures = 0;
    while start.elapsed() < window || (failures < 3 && start.elapsed() < cap) {
        for node in &nodes {
            let seen = member_addrs(&client, node.admin).await.unwrap();
            assert_eq!(seen, members, "{} lets the intruder in", node.addr);
        }
        let stats = get_json(&client, intruder.admin, "/stats").await.unwrap();
        failures = stats["send_failures"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let watched = start.elapsed();
    eprintln!("{transport}: intruder kept out for {watched:?}, {failures} failed sends");
    assert!(
        failures >= 3,
        "the intruder barely tried: {failures} failed sends"
    );
    let stats = get_json(&client, intruder.admin, "/stats").await.unwrap();
    assert_eq!(stats["messages_received"], 0, "{stats}");
    assert_eq!(stats["messages_sent"], 0, "{stats}");
    let seen = member_addrs(&client, intruder.admin).await.unwrap();
    assert_eq!(seen, BTreeSet::from([intruder.addr.clone()]));

    // The control: a fourth node started the same way but with the cluster
    // CA's fourth certificate joins.
    let mut args = vec![
        "--config".to_owned(),
        config.path().to_owned(),
        "--seed".to_owned(),
        nodes[0].addr.clone(),
    ];
    args.extend(node_files(&ours, 4));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fourth = Node::spawn(&args);
    let mut members = members;
    members.insert(fourth.addr.clone());
    let mut refs = refs;
    refs.push(&fourth);
    until_members(
        "a fourth CA-signed member joins",
        &client,
        &refs,
        &members,
        Duration::from_secs(20),
    )
    .await;
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_grpc_port_is_rejected_and_changes_nothing() {
    use gossip_core::{NodeAddr, Transport, TransportError, pb};
    use gossip_tls::TlsConfig;

    let config = TempFile::new(&cluster_toml("bad-input", "grpc"));
    let client = client();
    let nodes = chain(2, &config);
    let all: BTreeSet<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    until_members("membership", &client, &refs, &all, Duration::from_secs(20)).await;
    let target = &nodes[0];
    let view = |v: Value| -> Vec<(Value, Value, Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["addr"].clone(),
                    m["generation"].clone(),
                    m["state"].clone(),
                )
            })
            .collect()
    };
    let before = view(get_json(&client, target.admin, "/members").await.unwrap());

    // Garbage bytes as the gRPC message, over the node's default
    // self-signed TLS.
    let addr: SocketAddr = target.addr.parse().unwrap();
    let garbage = bytes::Bytes::from_static(b"\xff\xff\xff\xffnot a protobuf envelope\x00\x01");
    let tls = gossip_tls::unverified_client_config(&[gossip_grpc::ALPN_H2]).unwrap();
    let status = gossip_grpc::send_raw_frame_tls(addr, garbage, std::sync::Arc::new(tls))
        .await
        .expect_err("garbage must be refused");
    eprintln!("garbage refused: {status}");
    assert!(!status.message().is_empty(), "{status:?}");

    // A well-formed envelope of another cluster, through a real client.
    let sender = gossip_grpc::GrpcTransport::bind(gossip_grpc::GrpcConfig {
        tls: TlsConfig::SelfSigned,
        ..Default::default()
    })
    .await
    .unwrap();
    let envelope = pb::Envelope {
        cluster_id: "some-other-cluster".into(),
        from: Some(pb::NodeId {
            addr: sender.listen_addr().to_string(),
            generation: 1,
        }),
        updates: vec![pb::MemberUpdate {
            id: Some(pb::NodeId {
                addr: "127.0.0.1:9".into(),
                generation: 1,
            }),
            incarnation: 0,
            state: pb::MemberState::Alive as i32,
            ..Default::default()
        }],
        body: Some(pb::envelope::Body::Gossip(pb::Gossip {})),
        ..Default::default()
    };
    let to = NodeAddr::parse(&target.addr).unwrap();
    let err = sender
        .send(&to, envelope)
        .await
        .expect_err("a foreign cluster id must be refused");
    eprintln!("foreign cluster refused: {err}");
    match &err {
        TransportError::Rejected { reason, .. } => {
            assert!(reason.contains("foreign cluster"), "{err}");
            assert!(reason.contains("some-other-cluster"), "{err}");
        }
        other => panic!("want Rejected, got {other:?}"),
    }
    sender.shutdown().await;

    // Nothing changed: same members, and the rejection was counted.
    let after = view(get_json(&client, target.admin, "/members").await.unwrap());
    assert_eq!(before, after);
    let stats = get_json(&client, target.admin, "/stats").await.unwrap();
    assert!(
        stats["rejected_foreign_cluster"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}

#[test]
fn bad_configuration_exits_nonzero_with_a_clear_message() {
    let unknown_key = TempFile::new("listen = \"127.0.0.1:0\"\nlisten_port = 7001\n");
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--listen", "127.0.0.1:0", "--transport", "x"],
            "unknown transport 'x' (expected one of: grpc, quic)",
        ),
        (
            vec!["--listen", "nowhere"],
            "invalid listen address \"nowhere\"",
        ),
        (
            vec!["--config", unknown_key.path()],
            "unknown field `listen_port`",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--config",
                "/nonexistent/node.toml",
            ],
            "cannot read config file /nonexistent/node.toml",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--tls",
                "mtls",
                "--tls-ca",
                "ca.pem",
            ],
            "tls = \"mtls\" needs `tls_cert` (or --tls-cert FILE)",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--tls-key", "k.pem"],
            "invalid setting `tls_key`: only used with tls = \"mtls\"",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--tls",
                "mtls",
                "--tls-ca",
                "/nonexistent/ca.pem",
                "--tls-cert",
                "/nonexistent/node.pem",
                "--tls-key",
                "/nonexistent/node-key.pem",
            ],
            "/nonexistent/ca.pem",
        ),
    ];
    if cfg!(feature = "quic") {
        cases.push((
            vec![
                "--listen",
                "127.0.0.1:0",
                "--transport",
                "quic",
                "--tls",
                "none",
            ],
            "invalid setting `tls`: \"none\" is not supported by the quic transport",
        ));
    } else {
        cases.push((
            vec!["--listen", "127.0.0.1:0", "--transport", "quic"],
            "transport 'quic' is not available in this build (enable the `quic` feature)",
        ));
    }
    if !cfg!(feature = "grpc") {
        cases.push((
            vec!["--listen", "127.0.0.1:0", "--transport", "grpc"],
            "transport 'grpc' is not available in this build (enable the `grpc` feature)",
        ));
    }
    for (args, expected) in cases {
        let out = Command::new(BIN)
            .arg("run")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[cfg(feature = "grpc")]
#[test]
fn grpc_demo_runs_converges_and_leaves_no_process_behind() {
    demo(&["--transport", "grpc"]);
}

#[cfg(feature = "quic")]
#[test]
fn quic_demo_runs_converges_and_leaves_no_process_behind() {
    demo(&["--transport", "quic"]);
}

/// `gossip-node demo --nodes 3 --duration 6` with `extra` flags (default TLS:
/// self-signed) converges, ends by itself and leaves no process behind.
fn demo(extra: &[&str]) {
    let (status, out, err) = support::run_to_end(
        Command::new(BIN)
            .args(["demo", "--nodes", "3", "--duration", "6"])
            .args(extra),
        Duration::from_secs(60),
    );
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");

    let pids: Vec<i32> = out
        .lines()
        .filter(|l| l.starts_with("node ") && l.contains(", pid "))
        .filter_map(|l| l.rsplit_once(", pid ")?.1.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 3, "{out}");
    for pid in pids {
        assert!(process_gone(pid), "node process {pid} still running\n{out}");
    }
    assert!(out.contains("converged after"), "{out}");
    assert!(out.contains("with self-signed TLS"), "{out}");
    assert_eq!(out.matches("stopped: exit status: 0").count(), 3, "{out}");
}
