//! `gossip-node demo`: a local cluster of real `gossip-node run` processes,
//! shown converging in the terminal.
//!
//! The demo starts `--nodes` child processes of the running executable on
//! free loopback ports, each seeded with the one before it (a chain, so that
//! membership has to spread by gossip), each with an admin endpoint, all
//! over `--transport` with `--tls` (self-signed by default; under `mtls` the
//! demo first writes development certificates next to the logs). It sets
//! the key `greeting` on every node through the admin API, then polls every
//! node's `/members` and `/kv` and draws one table row per node until Ctrl-C
//! or `--duration`. On the way out, on success or error, it stops every
//! process it started: SIGTERM, a grace period, then SIGKILL.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{IsTerminal, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use comfy_table::{Table, presets};
use serde::Deserialize;

use crate::config::{TlsKind, check_tls};
use crate::error::DemoError;
use crate::transport::TransportKind;

/// The key the demo sets on every node.
pub const DEMO_KEY: &str = "greeting";
/// The cluster id of the demo's nodes.
pub const DEMO_CLUSTER_ID: &str = "demo";
/// How long a node may take to answer on its admin endpoint after it started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a node may take to leave after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Period of the admin polls.
const TICK: Duration = Duration::from_millis(500);
/// Period of the table prints when standard output is not a terminal.
const PLAIN_PRINT_EVERY: Duration = Duration::from_secs(2);
/// Timeout of one admin request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Flags of `gossip-node demo`.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// Number of nodes to start.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,

    /// Transport of every node: grpc or quic. Default grpc (quic in a build
    /// without the grpc feature).
    #[arg(long, value_name = "NAME")]
    pub transport: Option<String>,

    /// TLS of every node: none (gRPC only), self-signed or mtls (with
    /// development certificates the demo writes).
    #[arg(long, value_enum, default_value_t = TlsKind::SelfSigned, value_name = "MODE")]
    pub tls: TlsKind,

    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
}

/// One child process.
struct NodeProc {
    index: usize,
    addr: String,
    admin: SocketAddr,
    pid: u32,
    child: Child,
    status: Option<ExitStatus>,
}

impl NodeProc {
    /// The exit status if the process has ended (reaping it).
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }
}

/// Every process the demo started. Dropping it stops them all, so that an
/// error or a panic leaves nothing running.
struct Cluster {
    nodes: Vec<NodeProc>,
    log_dir: PathBuf,
}

impl Cluster {
    fn log_path(dir: &Path, index: usize) -> PathBuf {
        dir.join(format!("node-{index}.log"))
    }

    /// Stops every process still running: SIGTERM, up to [`STOP_GRACE`] to
    /// leave, then SIGKILL. Idempotent. Blocks.
    fn stop_all(&mut self) {
        for node in &mut self.nodes {
            if node.poll_exit().is_none() {
                terminate(&mut node.child);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            let mut running = 0;
            for node in &mut self.nodes {
                running += usize::from(node.poll_exit().is_none());
            }
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for node in &mut self.nodes {
            if node.poll_exit().is_none() {
                // Killing a process that just exited fails harmlessly.
                let _ = node.child.kill();
                node.status = node.child.wait().ok();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Asks a child to leave gracefully (SIGTERM); off Unix, kills it.
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        match i32::try_from(child.id()) {
            Ok(pid) => {
                // The child is not reaped yet, so the pid is still its own;
                // an error means it has already exited.
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            Err(_) => {
                let _ = child.kill();
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
}

/// Ports that were free a moment ago: bound on 127.0.0.1 port 0 all at once
/// (so they differ), then released.
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// The last lines of a node's log, for error messages.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(10)..].join("\n");
            if tail.is_empty() {
                format!("(log {} is empty)", path.display())
            } else {
                format!("last lines of {}:\n{tail}", path.display())
            }
        }
        Err(e) => format!("(cannot read log {}: {e})", path.display()),
    }
}

/// What the demo reads from `/members`.
#[derive(Debug, Deserialize)]
struct MemberView {
    addr: String,
}

/// What one poll of a node saw.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NodeView {
    /// The admin endpoint answered.
    Up { members: usize, keys: usize },
    /// The admin endpoint did not answer.
    Unreachable,
    /// The process has exited.
    Exited(String),
}

async fn poll_node(client: &reqwest::Client, admin: SocketAddr, addrs: &[String]) -> NodeView {
    let fetch = async {
        let members: Vec<MemberView> = client
            .get(format!("http://{admin}/members"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let kv: BTreeMap<String, BTreeMap<String, serde_json::Value>> = client
            .get(format!("http://{admin}/kv"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok::<_, reqwest::Error>((members, kv))
    };
    match fetch.await {
        Ok((members, kv)) => NodeView::Up {
            members: members.iter().filter(|m| addrs.contains(&m.addr)).count(),
            keys: addrs
                .iter()
                .filter(|a| kv.get(*a).is_some_and(|keys| keys.contains_key(DEMO_KEY)))
                .count(),
        },
        Err(_) => NodeView::Unreachable,
    }
}

fn render(
    nodes: &[NodeProc],
    views: &[NodeView],
    elapsed: Duration,
    converged: Option<Duration>,
    tty: bool,
) -> String {
    let n = nodes.len();
    let mut table = Table::new();
    table.load_preset(if tty {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::ASCII_FULL_CONDENSED
    });
    table.set_header(vec![
        "node",
        "addr",
        "pid",
        "members seen",
        "keys seen",
        "state",
    ]);
    for (node, view) in nodes.iter().zip(views) {
        let (members, keys, state) = match view {
            NodeView::Up { members, keys } => {
                let state = if *members == n && *keys == n {
                    "converged"
                } else {
                    "joining"
                };
                (
                    format!("{members}/{n}"),
                    format!("{keys}/{n}"),
                    state.to_owned(),
                )
            }
            NodeView::Unreachable => ("-".into(), "-".into(), "unreachable".into()),
            NodeView::Exited(how) => ("-".into(), "-".into(), how.clone()),
        };
        table.add_row(vec![
            node.index.to_string(),
            node.addr.clone(),
            node.pid.to_string(),
            members,
            keys,
            state,
        ]);
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "gossip-node demo: {n} nodes, {:.1}s elapsed, ",
        elapsed.as_secs_f64()
    );
    match converged {
        Some(t) => {
            let _ = write!(out, "converged after {:.1}s", t.as_secs_f64());
        }
        None => out.push_str("converging"),
    }
    if tty {
        out.push_str(" (Ctrl-C to stop)");
    }
    out.push('\n');
    out.push_str(&table.to_string());
    out.push('\n');
    out
}

/// Runs the demo until Ctrl-C, SIGTERM or `duration`, then stops every
/// process it started.
///
/// The nodes are started from [`std::env::current_exe`], so call this from
/// the `gossip-node` binary.
///
/// # Errors
/// [`DemoError::Config`] for an unknown or unavailable transport or a TLS
/// mode it refuses, and any failure to write certificates, start a node or
/// reach its admin endpoint. Every process started is stopped before the
/// error is returned.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let kind = match &args.transport {
        Some(name) => name.parse::<TransportKind>()?,
        None => TransportKind::default(),
    };
    kind.ensure_available()?;
    check_tls(kind, args.tls)?;
    let exe = std::env::current_exe().map_err(DemoError::CurrentExe)?;
    let n = usize::from(args.nodes);
    let mut signals = crate::run::Signals::new()?;

    let ports = free_ports(2 * n).map_err(|source| DemoError::Setup {
        what: "free loopback ports".into(),
        source,
    })?;
    let log_dir = std::env::temp_dir().join(format!("gossip-node-demo-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).map_err(|source| DemoError::Setup {
        what: format!("log directory {}", log_dir.display()),
        source,
    })?;
    let node_tls_args = tls_args(args.tls, &log_dir, n)?;
    let tls = match args.tls {
        TlsKind::None => "without TLS".to_owned(),
        TlsKind::SelfSigned => "with self-signed TLS".to_owned(),
        TlsKind::Mtls => format!(
            "with mutual TLS (development certificates in {})",
            log_dir.join(CERTS_DIR).display()
        ),
    };
    println!(
        "starting {n} gossip-node processes over {kind} {tls}; logs in {}",
        log_dir.display()
    );

    let started = Instant::now();
    let mut cluster = Cluster {
        nodes: Vec::with_capacity(n),
        log_dir,
    };
    for i in 0..n {
        let index = i + 1;
        let addr = format!("127.0.0.1:{}", ports[2 * i]);
        let admin = SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1]));
        let log_path = Cluster::log_path(&cluster.log_dir, index);
        let spawn = || -> std::io::Result<Child> {
            let log = File::create(&log_path)?;
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg("run")
                .args(["--listen", &addr])
                .args(["--admin", &admin.to_string()])
                .args(["--transport", kind.name()])
                .args(&node_tls_args[i])
                .args(["--cluster-id", DEMO_CLUSTER_ID])
                .args(["--meta", &format!("name=node-{index}")])
                .args(["--log-format", "json"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            if let Some(prev) = cluster.nodes.last() {
                cmd.args(["--seed", &prev.addr]);
            }
            cmd.spawn()
        };
        let child = spawn().map_err(|source| DemoError::Spawn { index, source })?;
        let pid = child.id();
        println!("node {index}: gossip {addr}, admin http://{admin}, pid {pid}");
        cluster.nodes.push(NodeProc {
            index,
            addr,
            admin,
            pid,
            child,
            status: None,
        });
    }

    let stop = tokio::select! {
        result = show(&mut cluster, started, args.duration.map(Duration::from_secs)) => result.map(|()| "time is up"),
        signal = signals.recv() => Ok(signal),
    };
    let outcome = match stop {
        Ok(why) => {
            println!("stopping {n} nodes ({why})");
            Ok(())
        }
        Err(e) => {
            println!("stopping {n} nodes after an error");
            Err(e)
        }
    };
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop_all();
        cluster
    })
    .await
    .map_err(|e| DemoError::Io(std::io::Error::other(e)))?;
    let mut clean = true;
    for node in &cluster.nodes {
        let how = node
            .status
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        clean &= node.status.is_some_and(|s| s.success());
        println!("node {} (pid {}) stopped: {how}", node.index, node.pid);
    }
    if clean && outcome.is_ok() {
        // Best effort: the logs of a clean run are of no further use.
        let _ = std::fs::remove_dir_all(&cluster.log_dir);
    } else {
        println!("node logs kept in {}", cluster.log_dir.display());
    }
    outcome
}

/// Where under the log directory the demo writes certificates for `mtls`.
const CERTS_DIR: &str = "certs";

/// The TLS flags of each of the `n` nodes; under `mtls`, writes a
/// development CA and `n` node certificates under `log_dir` first.
fn tls_args(tls: TlsKind, log_dir: &Path, n: usize) -> Result<Vec<Vec<OsString>>, DemoError> {
    let mode: Vec<OsString> = vec!["--tls".into(), tls.name().into()];
    if tls != TlsKind::Mtls {
        return Ok(vec![mode; n]);
    }
    #[cfg(any(feature = "grpc", feature = "quic"))]
    {
        let dir = log_dir.join(CERTS_DIR);
        gossip_tls::generate_dev_certs(&dir, n, &[]).map_err(|e| DemoError::Setup {
            what: format!("development certificates in {}", dir.display()),
            source: std::io::Error::other(e),
        })?;
        Ok((1..=n)
            .map(|i| {
                let files = gossip_tls::dev_node_files(&dir, i);
                let mut args = mode.clone();
                args.extend([
                    "--tls-ca".into(),
                    files.ca_cert.into(),
                    "--tls-cert".into(),
                    files.cert.into(),
                    "--tls-key".into(),
                    files.key.into(),
                ]);
                args
            })
            .collect())
    }
    #[cfg(not(any(feature = "grpc", feature = "quic")))]
    {
        // Unreachable in practice: without a transport the demo stops at
        // `ensure_available`.
        let _ = log_dir;
        Err(DemoError::Setup {
            what: "development certificates".to_owned(),
            source: std::io::Error::other("no transport is compiled in"),
        })
    }
}

/// Waits for the nodes to come up, sets the demo key on each, then draws the
/// table until `duration` after `start` (forever if `None`).
async fn show(
    cluster: &mut Cluster,
    start: Instant,
    duration: Option<Duration>,
) -> Result<(), DemoError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| DemoError::Io(std::io::Error::other(e)))?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();

    wait_until_up(cluster, &client).await?;
    for node in &cluster.nodes {
        let value = format!("hello from {}", node.addr);
        client
            .put(format!("http://{}/kv/{DEMO_KEY}", node.admin))
            .body(value)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| DemoError::Admin {
                index: node.index,
                reason: e.to_string(),
            })?;
    }

    let tty = std::io::stdout().is_terminal();
    let mut drawn_lines = 0;
    let mut last_plain: Option<Instant> = None;
    let mut converged = None;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut polls = tokio::task::JoinSet::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            let (client, admin, addrs) = (client.clone(), node.admin, addrs.clone());
            polls.spawn(async move { (i, poll_node(&client, admin, &addrs).await) });
        }
        let mut views = vec![NodeView::Unreachable; cluster.nodes.len()];
        while let Some(joined) = polls.join_next().await {
            if let Ok((i, view)) = joined {
                views[i] = view;
            }
        }
        for (node, view) in cluster.nodes.iter_mut().zip(views.iter_mut()) {
            if let Some(status) = node.poll_exit() {
                *view = NodeView::Exited(format!("exited ({status})"));
            }
        }
        let n = cluster.nodes.len();
        let all_converged = views.iter().all(|v| {
            *v == NodeView::Up {
                members: n,
                keys: n,
            }
        });
        let elapsed = start.elapsed();
        let newly_converged = all_converged && converged.is_none();
        if newly_converged {
            converged = Some(elapsed);
        }
        let done = duration.is_some_and(|d| elapsed >= d);
        let text = render(&cluster.nodes, &views, elapsed, converged, tty);
        let mut out = std::io::stdout().lock();
        if tty {
            if drawn_lines > 0 {
                // Back to the first line of the previous table, and clear
                // from there down.
                write!(out, "\x1b[{drawn_lines}F\x1b[J")?;
            }
            out.write_all(text.as_bytes())?;
            drawn_lines = text.lines().count();
        } else if newly_converged
            || done
            || last_plain.is_none_or(|t| t.elapsed() >= PLAIN_PRINT_EVERY)
        {
            out.write_all(text.as_bytes())?;
            last_plain = Some(Instant::now());
        }
        out.flush()?;
        if done {
            return Ok(());
        }
    }
}

/// Waits until every node answers on its admin endpoint.
async fn wait_until_up(cluster: &mut Cluster, client: &reqwest::Client) -> Result<(), DemoError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for node in &mut cluster.nodes {
        loop {
            let up = client
                .get(format!("http://{}/members", node.admin))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            let (index, addr) = (node.index, node.addr.clone());
            let log = Cluster::log_path(&cluster.log_dir, index);
            let down = |reason: String| DemoError::NodeDown {
                index,
                addr,
                reason: format!("{reason}; {}", log_tail(&log)),
            };
            if let Some(status) = node.poll_exit() {
                return Err(down(format!("exited with {status}")));
            }
            if Instant::now() >= deadline {
                return Err(down(format!(
                    "admin endpoint http://{} did not answer within {}s",
                    node.admin,
                    STARTUP_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_differ() {
        let ports = free_ports(8).unwrap();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 8);
        assert!(ports.iter().all(|p| *p != 0));
    }

    #[test]
    fn demo_args_parse() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from(["gossip-node", "demo", "--nodes", "3"]).unwrap();
        match cli.command {
            crate::Command::Demo(a) => {
                assert_eq!(a.nodes, 3);
                assert_eq!(a.transport, None);
                assert_eq!(a.tls, TlsKind::SelfSigned);
                assert_eq!(a.duration, None);
            }
            _ => unreachable!(),
        }
        let cli = crate::Cli::try_parse_from([
            "gossip-node",
            "demo",
            "--transport",
            "quic",
            "--tls",
            "mtls",
        ])
        .unwrap();
        match cli.command {
            crate::Command::Demo(a) => {
                assert_eq!(a.transport.as_deref(), Some("quic"));
                assert_eq!(a.tls, TlsKind::Mtls);
            }
            _ => unreachable!(),
        }
        assert!(crate::Cli::try_parse_from(["gossip-node", "demo", "--nodes", "0"]).is_err());
        assert!(crate::Cli::try_parse_from(["gossip-node", "demo", "--tls", "tls"]).is_err());
    }

    #[test]
    fn tls_args_per_mode() {
        let dir = std::env::temp_dir().join("gossip-node-demo-tls-args-test-unused");
        assert_eq!(
            tls_args(TlsKind::SelfSigned, &dir, 2).unwrap(),
            vec![vec![OsString::from("--tls"), OsString::from("self-signed")]; 2]
        );
        assert_eq!(
            tls_args(TlsKind::None, &dir, 1).unwrap(),
            vec![vec![OsString::from("--tls"), OsString::from("none")]]
        );
        assert!(!dir.exists());
    }

    #[cfg(any(feature = "grpc", feature = "quic"))]
    #[test]
    fn tls_args_under_mtls_write_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let args = tls_args(TlsKind::Mtls, tmp.path(), 2).unwrap();
        assert_eq!(args.len(), 2);
        let node2 = gossip_tls::dev_node_files(&tmp.path().join(CERTS_DIR), 2);
        assert_eq!(
            args[1],
            [
                OsString::from("--tls"),
                "mtls".into(),
                "--tls-ca".into(),
                node2.ca_cert.clone().into(),
                "--tls-cert".into(),
                node2.cert.clone().into(),
                "--tls-key".into(),
                node2.key.clone().into(),
            ]
        );
        for path in [node2.ca_cert, node2.cert, node2.key] {
            assert!(path.is_file(), "{}", path.display());
        }
    }
}
