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
//!
//! `gossip-node demo books` runs the same cluster with another show: every
//! member keeps re-choosing its favourite book ([`crate::cli::demo_books`]).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::cli::error::DemoError;
use crate::cli::procs::{AdminClient, ClusterSpec, NodeProc, ProcessCluster, Seeding};
use crate::config::{TlsKind, check_tls};
use crate::transport::TransportKind;

/// The key the demo sets on every node.
pub const DEMO_KEY: &str = "greeting";
/// The cluster id of the demo's nodes.
pub const DEMO_CLUSTER_ID: &str = "demo";
/// Period of the admin polls.
const TICK: Duration = Duration::from_millis(500);
/// Period of the table prints when standard output is not a terminal.
const PLAIN_PRINT_EVERY: Duration = Duration::from_secs(2);
/// Timeout of one admin request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What a demo shows once its cluster is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoCase {
    /// Every member re-chooses its favourite book every `--every-secs`; the
    /// table shows which version of each member's choice every member has
    /// seen ([`crate::cli::demo_books`]).
    Books,
}

/// Flags of `gossip-node demo`.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// What to show: omitted, the cluster converging (a key set on every
    /// member); `books`, members re-choosing their favourite book.
    #[arg(value_enum, value_name = "CASE")]
    pub case: Option<DemoCase>,

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

    /// `books` only: mean period, in seconds, at which each member
    /// re-chooses its favourite book (each wait is jittered by ±50%).
    #[arg(long, value_name = "SECS", default_value_t = 10, requires = "case",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub every_secs: u64,
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

async fn poll_node(client: &AdminClient, admin: SocketAddr, addrs: &[String]) -> NodeView {
    let fetch = async {
        Ok::<_, crate::cli::error::ProcsError>((
            client.members(admin).await?,
            client.kv(admin).await?,
        ))
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
    let mut table = crate::cli::term::new_table(tty);
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
            node.index().to_string(),
            node.addr().to_owned(),
            node.pid().to_string(),
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
    let mut signals = crate::cli::signals::Signals::new()?;

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
    let mut spec = ClusterSpec::new(exe, n, log_dir);
    spec.seeding = Seeding::Chain;
    spec.args = ["--transport", kind.name()]
        .into_iter()
        .chain(["--cluster-id", DEMO_CLUSTER_ID, "--log-format", "json"])
        .map(OsString::from)
        .collect();
    spec.node_args = node_tls_args
        .into_iter()
        .enumerate()
        .map(|(i, mut args)| {
            args.extend(["--meta".into(), format!("name=node-{}", i + 1).into()]);
            args
        })
        .collect();
    let mut cluster = ProcessCluster::spawn(&spec)?;
    for node in cluster.nodes() {
        println!(
            "node {}: gossip {}, admin http://{}, pid {}",
            node.index(),
            node.addr(),
            node.admin(),
            node.pid()
        );
    }

    let duration = args.duration.map(Duration::from_secs);
    let body = async {
        match args.case {
            None => show(&mut cluster, started, duration).await,
            Some(DemoCase::Books) => {
                let every = Duration::from_secs(args.every_secs);
                crate::cli::demo_books::show(&mut cluster, started, duration, every).await
            }
        }
    };
    let stop = tokio::select! {
        result = body => result.map(|()| "time is up"),
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
    let cluster = cluster.shutdown().await?;
    let mut clean = true;
    for node in cluster.nodes() {
        let how = node
            .status()
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        clean &= node.status().is_some_and(|s| s.success());
        println!("node {} (pid {}) stopped: {how}", node.index(), node.pid());
    }
    if clean && outcome.is_ok() {
        // Best effort: the logs of a clean run are of no further use.
        let _ = std::fs::remove_dir_all(cluster.log_dir());
    } else {
        println!("node logs kept in {}", cluster.log_dir().display());
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
    cluster: &mut ProcessCluster,
    start: Instant,
    duration: Option<Duration>,
) -> Result<(), DemoError> {
    let client = AdminClient::new(REQUEST_TIMEOUT)?;
    let addrs: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.addr().to_owned())
        .collect();

    cluster.wait_until_up(&client).await?;
    for node in cluster.nodes() {
        let value = format!("hello from {}", node.addr());
        client
            .put_key(node.admin(), DEMO_KEY, value)
            .await
            .map_err(|e| DemoError::Admin {
                index: node.index(),
                reason: match std::error::Error::source(&e) {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                },
            })?;
    }

    let mut screen = Screen::new();
    let mut converged = None;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut polls = tokio::task::JoinSet::new();
        for (i, node) in cluster.nodes().iter().enumerate() {
            let (client, admin, addrs) = (client.clone(), node.admin(), addrs.clone());
            polls.spawn(async move { (i, poll_node(&client, admin, &addrs).await) });
        }
        let mut views = vec![NodeView::Unreachable; cluster.nodes().len()];
        while let Some(joined) = polls.join_next().await {
            if let Ok((i, view)) = joined {
                views[i] = view;
            }
        }
        for (node, view) in cluster.nodes_mut().iter_mut().zip(views.iter_mut()) {
            if let Some(status) = node.poll_exit() {
                *view = NodeView::Exited(format!("exited ({status})"));
            }
        }
        let n = cluster.nodes().len();
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
        let text = render(cluster.nodes(), &views, elapsed, converged, screen.tty());
        screen.draw(&text, newly_converged || done)?;
        if done {
            return Ok(());
        }
    }
}

/// Successive tables on standard output: on a terminal, each drawn over the
/// one before; otherwise appended, at most one every [`PLAIN_PRINT_EVERY`]
/// unless forced.
pub(crate) struct Screen {
    tty: bool,
    drawn_lines: usize,
    last_plain: Option<Instant>,
}

impl Screen {
    /// A screen on standard output.
    pub(crate) fn new() -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            drawn_lines: 0,
            last_plain: None,
        }
    }

    /// Whether standard output is a terminal.
    pub(crate) fn tty(&self) -> bool {
        self.tty
    }

    /// Shows `text`: over the previous text on a terminal; otherwise if
    /// `force` or [`PLAIN_PRINT_EVERY`] has passed since the last print.
    pub(crate) fn draw(&mut self, text: &str, force: bool) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.tty {
            if self.drawn_lines > 0 {
                // Back to the first line of the previous table, and clear
                // from there down.
                write!(out, "\x1b[{}F\x1b[J", self.drawn_lines)?;
            }
            out.write_all(text.as_bytes())?;
            self.drawn_lines = text.lines().count();
        } else if force
            || self
                .last_plain
                .is_none_or(|t| t.elapsed() >= PLAIN_PRINT_EVERY)
        {
            out.write_all(text.as_bytes())?;
            self.last_plain = Some(Instant::now());
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_args_parse() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["gossip-node", "demo", "--nodes", "3"]).unwrap();
        match cli.command {
            crate::cli::Command::Demo(a) => {
                assert_eq!(a.nodes, 3);
                assert_eq!(a.transport, None);
                assert_eq!(a.tls, TlsKind::SelfSigned);
                assert_eq!(a.duration, None);
                assert_eq!(a.case, None);
                assert_eq!(a.every_secs, 10);
            }
            _ => unreachable!(),
        }
        let cli = crate::cli::Cli::try_parse_from([
            "gossip-node",
            "demo",
            "--transport",
            "quic",
            "--tls",
            "mtls",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Demo(a) => {
                assert_eq!(a.transport.as_deref(), Some("quic"));
                assert_eq!(a.tls, TlsKind::Mtls);
            }
            _ => unreachable!(),
        }
        let cli = crate::cli::Cli::try_parse_from([
            "gossip-node",
            "demo",
            "books",
            "--nodes",
            "3",
            "--every-secs",
            "2",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Demo(a) => {
                assert_eq!(a.case, Some(DemoCase::Books));
                assert_eq!((a.nodes, a.every_secs), (3, 2));
            }
            _ => unreachable!(),
        }
        for bad in [
            &["--nodes", "0"][..],
            &["--every-secs", "2"],
            &["books", "--every-secs", "0"],
            &["novels"],
        ] {
            let args = ["gossip-node", "demo"].iter().chain(bad);
            assert!(crate::cli::Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        assert!(crate::cli::Cli::try_parse_from(["gossip-node", "demo", "--tls", "tls"]).is_err());
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
