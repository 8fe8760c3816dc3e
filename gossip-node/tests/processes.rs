//! Multi-process tests: real `gossip-node` processes over gRPC on loopback.
//!
//! Every node binds port 0 for gossip and admin and reports the bound
//! addresses in its JSON start line, so tests never race for ports. Every
//! wait polls the admin API against a deadline. Every process started is
//! killed when its guard drops, also when a test fails.
#![cfg(all(unix, feature = "grpc"))]

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use gossip_core::{NodeAddr, Transport, TransportError, pb};
use gossip_node::config::{FileConfig, NodeConfig, RunArgs};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gossip-node");
/// Fast protocol timing, so that failure detection takes seconds.
const FAST: &str = "
gossip_interval_ms = 100
probe_interval_ms = 200
probe_timeout_ms = 100
suspicion_mult = 2
";
/// How long a process may take to print its start line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
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

/// The protocol configuration a node started with `toml` runs with.
fn protocol_of(toml: &str) -> gossip_core::Config {
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        ..RunArgs::default()
    };
    let file = FileConfig::parse(toml, "test.toml".as_ref()).unwrap();
    NodeConfig::merge(&args, file).unwrap().protocol
}

/// A running `gossip-node run` process; killed (SIGKILL) on drop.
struct Node {
    child: Child,
    /// The gossip address, advertised and bound.
    addr: String,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

impl Node {
    /// Starts `gossip-node run` on free loopback ports with `extra` flags and
    /// waits for its start line.
    fn spawn(extra: &[&str]) -> Node {
        let mut child = Command::new(BIN)
            .args(["run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(json) = serde_json::from_str::<Value>(&line) {
                    let f = &json["fields"];
                    if f["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("gossip-node started"))
                    {
                        let _ = tx.send((
                            f["advertise"].as_str().unwrap_or_default().to_owned(),
                            f["admin"].as_str().unwrap_or_default().to_owned(),
                        ));
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut node = Node {
            child,
            addr: String::new(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            status: None,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((addr, admin)) => {
                node.addr = addr;
                node.admin = admin
                    .parse()
                    .unwrap_or_else(|_| panic!("bad admin address {admin:?}"));
            }
            Err(_) => panic!("node did not start:\n{}", node.logs()),
        }
        node
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to exit, at most `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.status = Some(s);
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
    let mut nodes: Vec<Node> = Vec::new();
    for _ in 0..n {
        let mut args = vec!["--config", config.path()];
        let seed = nodes.last().map(|p| p.addr.clone());
        if let Some(seed) = &seed {
            args.extend(["--seed", seed.as_str()]);
        }
        nodes.push(Node::spawn(&args));
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_node_chain_converges_spreads_keys_and_detects_failures() {
    let toml = format!("cluster_id = \"{}\"\n{FAST}", unique("chain"));
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
    eprintln!("crash detected everywhere after {took:?} (bound {bound:?})");
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
    eprintln!("leave seen everywhere after {took:?}");
    assert!(
        took < quick,
        "leave took {took:?}, want under {quick:?} (2 probe intervals)"
    );
    let status = leaving.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}:\n{}", leaving.logs());
    assert!(!leaving.logs().contains("panicked"), "{}", leaving.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_grpc_port_is_rejected_and_changes_nothing() {
    let cluster = unique("bad-input");
    let config = TempFile::new(&format!("cluster_id = \"{cluster}\"\n{FAST}"));
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

    // Garbage bytes as the gRPC message.
    let addr: SocketAddr = target.addr.parse().unwrap();
    let garbage = bytes::Bytes::from_static(b"\xff\xff\xff\xffnot a protobuf envelope\x00\x01");
    let status = gossip_grpc::send_raw_frame(addr, garbage)
        .await
        .expect_err("garbage must be refused");
    eprintln!("garbage refused: {status}");
    assert!(!status.message().is_empty(), "{status:?}");

    // A well-formed envelope of another cluster, through a real client.
    let sender = gossip_grpc::GrpcTransport::bind(gossip_grpc::GrpcConfig::default())
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
    let cases: [(Vec<&str>, &str); 5] = [
        (
            vec!["--listen", "127.0.0.1:0", "--transport", "quic"],
            "transport 'quic' is not available in this build (enable the `quic` feature)",
        ),
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
    ];
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

/// The demo, guarded: killed on drop.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// True if `pid` is gone (or a zombie, which runs nothing).
fn process_gone(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => true,
        _ => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true),
    }
}

#[test]
fn demo_runs_converges_and_leaves_no_process_behind() {
    let mut demo = Demo(
        Command::new(BIN)
            .args(["demo", "--nodes", "3", "--duration", "6"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = demo.0.stdout.take().unwrap();
    let mut stderr = demo.0.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().unwrap();
    let err = err.join().unwrap();
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
    assert_eq!(out.matches("stopped: exit status: 0").count(), 3, "{out}");
}
