//! `gossip-node soak`: real `gossip-node run` processes under churn for a
//! given time, then checks that nothing was lost (issue #12, "Soak").
//!
//! The soak starts `--members` processes ([`crate::cli::procs`]; each
//! seeded with the three before it, each with its own data directory, so a
//! restarted member also rejoins through its snapshot). The first
//! `--stable` members are never disturbed; the others churn for
//! `--duration` seconds:
//!
//! - every `--churn-every` seconds, the members taken down at the previous
//!   turn are restarted (same address, new generation), one other is killed
//!   with SIGKILL and one more is stopped with SIGTERM (it leaves
//!   gracefully);
//! - every `--pause-every` seconds, `--pause-members` members are stopped
//!   with SIGSTOP for `--pause-secs` seconds, then SIGCONT: a hung host;
//! - every `--partition-every` seconds, `--partition-members` members are
//!   cut off from the rest (not from each other) for `--partition-secs`
//!   seconds, then joined again: a partition. This needs a network
//!   namespace per member (`--network netns`, root only; `net`);
//!   `--network auto`, the default, uses them where it can and otherwise
//!   says loudly that it runs on loopback without partitions;
//! - every `--write-interval-ms`, every member that is running and not
//!   paused (cut-off members too: the soak reaches them on a management
//!   link) sets one of its `--keys` keys `soak/N` to a new value through
//!   `PUT /kv/{key}` of its admin API.
//!
//! At the end every paused member is resumed and every stopped one
//! restarted, writes stop, and the checks run:
//!
//! 1. **nothing lost**: within `--settle-timeout`, every live member lists
//!    every member and shows every key written by a member in its current
//!    life with its last value (`ledger`);
//! 2. **no panic**: no log contains `panicked`;
//! 3. **no false death**: no member declared a stable member dead (each
//!    member's `member-failed` event handler appends the event and its time
//!    to a file), except a member that was cut off at the time, or up to
//!    `--partition-grace` seconds after its heal: those are counted apart,
//!    as the partition's deaths. At most `--max-false-deaths` are
//!    tolerated;
//! 4. **bounded memory**: the resident memory (`VmRSS`) of every stable
//!    member grew by at most `--max-rss-growth-pct` from the baseline to the
//!    end. The baseline is read 300 s into the churn, or, for runs shorter
//!    than 360 s, a third of the way in (the report says when).
//!
//! The report is a table (or JSON with `--json`); the command fails if a
//! check fails. Every process started is stopped on the way out.

mod ledger;
mod net;
mod observe;
mod report;

use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use thiserror::Error;
use tokio::task::JoinSet;

pub use ledger::Mismatch;
pub use observe::{Death, Panic};
pub use report::{Cut, RssReport, SoakReport};

use crate::cli::error::ProcsError;
use crate::cli::netns::NetnsError;
use crate::cli::procs::{AdminClient, ClusterSpec, ProcessCluster, Seeding};
use crate::error::ConfigError;
use crate::transport::TransportKind;
use ledger::Ledger;
use net::SoakNet;

/// The cluster id of the soak's members.
pub const SOAK_CLUSTER_ID: &str = "soak";
/// Timeout of one admin request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Resident memory baseline of runs of at least 360 s: 300 s in.
const RSS_BASELINE: Duration = Duration::from_secs(300);

/// Flags of `gossip-node soak`.
#[derive(Clone, Debug, Args)]
pub struct SoakArgs {
    /// Number of `gossip-node run` processes.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(4..=500))]
    pub members: u16,

    /// Length of the churn, seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS", value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub duration: u64,

    /// Members never killed, stopped or paused (the first ones); default a
    /// quarter of them.
    #[arg(long)]
    pub stable: Option<u16>,

    /// Period of the kill/terminate/restart turns, seconds.
    #[arg(long, default_value_t = 5, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub churn_every: u64,

    /// Period of the pauses (SIGSTOP), seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub pause_every: u64,

    /// Length of a pause, seconds.
    #[arg(long, default_value_t = 5, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub pause_secs: u64,

    /// Members paused together.
    #[arg(long, default_value_t = 3)]
    pub pause_members: u16,

    /// Where the members run: one network namespace each (`netns`, root
    /// only; needed for partitions), loopback (`loopback`, no partitions),
    /// or `auto`: namespaces where they can be made, else loopback.
    #[arg(long, value_enum, default_value_t = Network::Auto)]
    pub network: Network,

    /// Period of the partitions, seconds (with namespaces only).
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub partition_every: u64,

    /// Length of a partition, seconds.
    #[arg(long, default_value_t = 15, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub partition_secs: u64,

    /// Members cut off together.
    #[arg(long, default_value_t = 3)]
    pub partition_members: u16,

    /// How long after its heal a cut-off member's declarations of death
    /// still count as the partition's, not as false deaths, seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub partition_grace: u64,

    /// Period of the write rounds, ms.
    #[arg(long, default_value_t = 500, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub write_interval_ms: u64,

    /// Keys each member cycles through.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub keys: u16,

    /// Longest wait, after the churn, for every live member to show every
    /// key and member, seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub settle_timeout: u64,

    /// Largest growth of a stable member's resident memory, percent.
    #[arg(long, default_value_t = 10.0)]
    pub max_rss_growth_pct: f64,

    /// False deaths tolerated.
    #[arg(long, default_value_t = 0)]
    pub max_false_deaths: usize,

    /// Transport of every member: grpc or quic (default grpc, quic in a
    /// build without the grpc feature).
    #[arg(long, value_name = "NAME")]
    pub transport: Option<String>,

    /// Seed of the choice of victims (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Keep the logs and data directories even after a run that passed.
    #[arg(long)]
    pub keep_logs: bool,

    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Where the soak's members run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// Namespaces where they can be made, else loopback (said loudly).
    Auto,
    /// One network namespace per member; fails where it cannot be made.
    Netns,
    /// All on 127.0.0.1: no partitions.
    Loopback,
}

/// Failure of `gossip-node soak`.
#[derive(Debug, Error)]
pub enum SoakError {
    /// Flags that cannot work together; nothing was started.
    #[error("{0}")]
    BadArgs(String),
    /// The transport is unknown or not built in.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The path of the running executable is unknown.
    #[error("cannot find the gossip-node executable")]
    CurrentExe(#[source] std::io::Error),
    /// A member could not be started, restarted or reached.
    #[error(transparent)]
    Procs(#[from] ProcsError),
    /// The members' network namespaces could not be made or changed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A signal could not be sent to a member.
    #[error("cannot send {signal} to member {index}: {reason}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The member's index, from 1.
        index: usize,
        /// What failed.
        reason: String,
    },
    /// SIGINT or SIGTERM arrived; the members were stopped.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    /// Writing the report or reading the logs failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The run finished and these checks failed (the report was printed).
    #[error("soak checks failed: {}", .0.join("; "))]
    ChecksFailed(Vec<String>),
}

impl SoakArgs {
    fn stable(&self) -> usize {
        usize::from(self.stable.unwrap_or((self.members / 4).max(1)))
    }

    fn validate(&self) -> Result<TransportKind, SoakError> {
        let kind = match &self.transport {
            Some(name) => name.parse::<TransportKind>()?,
            None => TransportKind::default(),
        };
        kind.ensure_available()?;
        let (n, stable) = (usize::from(self.members), self.stable());
        // A churn turn takes two members down; a pause and a partition
        // must find members that are neither down nor stable.
        let churnable = n.saturating_sub(stable);
        let needed = 2 + usize::from(self.pause_members) + usize::from(self.partition_members);
        if stable == 0 || churnable < needed {
            return Err(SoakError::BadArgs(format!(
                "--stable {stable} of --members {n} must be at least 1 and leave at least {needed} members to churn (2 down at a time plus --pause-members {} plus --partition-members {})",
                self.pause_members, self.partition_members
            )));
        }
        if self.max_rss_growth_pct.is_nan() || self.max_rss_growth_pct < 0.0 {
            return Err(SoakError::BadArgs(
                "--max-rss-growth-pct must be >= 0".into(),
            ));
        }
        Ok(kind)
    }

    /// When, into the churn, the memory baseline is read.
    fn rss_baseline(&self) -> Duration {
        let d = Duration::from_secs(self.duration);
        if d >= RSS_BASELINE + Duration::from_secs(60) {
            RSS_BASELINE
        } else {
            d / 3
        }
    }
}

/// A small deterministic generator (SplitMix64) for the choice of victims.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// One of `from`, `None` if it is empty.
    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        let len = u64::try_from(from.len()).ok().filter(|&l| l > 0)?;
        let at = usize::try_from(self.next() % len).ok()?;
        from.get(at).copied()
    }
}

/// What the driver did to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    /// Running and written to.
    Up,
    /// Killed or stopped: restart at the next turn.
    Down,
    /// Stopped with SIGSTOP.
    Paused,
    /// Running, written to, cut off from the others.
    Cut,
}

/// Unix time now, ms.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Body of `gossip-node soak`: runs the soak and prints the report.
///
/// The members are started from [`std::env::current_exe`], so call this
/// from the `gossip-node` binary.
///
/// # Errors
/// [`SoakError::BadArgs`] or [`SoakError::Config`] for flags it refuses;
/// [`SoakError::Procs`] or [`SoakError::Signal`] if a member cannot be
/// started or signalled; [`SoakError::Interrupted`]; [`SoakError::Io`];
/// [`SoakError::ChecksFailed`] after the report if a check failed. Every
/// process started is stopped before any error is returned.
pub async fn run(args: SoakArgs) -> Result<(), SoakError> {
    let kind = args.validate()?;
    let exe = std::env::current_exe().map_err(SoakError::CurrentExe)?;
    let mut signals = crate::cli::signals::Signals::new()?;
    let n = usize::from(args.members);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let net = match args.network {
        Network::Loopback => None,
        Network::Netns => Some(SoakNet::build(n)?),
        Network::Auto => match SoakNet::build(n) {
            Ok(net) => Some(net),
            Err(e) => {
                eprintln!(
                    "\n*** soak: running on loopback WITHOUT PARTITIONS: {e} ***\n\
                     *** (run as root with iproute2 for one network namespace per member) ***\n"
                );
                None
            }
        },
    };
    let dir = std::env::temp_dir().join(format!("gossip-node-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut spec = ClusterSpec::new(exe, n, dir.clone());
    if let Some(net) = &net {
        spec.hosts = net.hosts().to_vec();
    }
    spec.seeding = Seeding::Previous(3);
    spec.args = [
        "--transport",
        kind.name(),
        "--cluster-id",
        SOAK_CLUSTER_ID,
        "--log-format",
        "json",
        "--handler",
        &observe::failed_handler(&dir),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    spec.node_args = (1..=n)
        .map(|i| {
            let data = dir.join(format!("data-{i}"));
            vec![OsString::from("--data-dir"), data.into_os_string()]
        })
        .collect();
    spec.startup_timeout = Duration::from_secs(60);
    spec.stop_grace = Duration::from_secs(10);
    eprintln!(
        "soak: starting {n} members over {kind} for {} s of churn (seed {seed}); logs in {}",
        args.duration,
        dir.display()
    );
    let client = AdminClient::new(REQUEST_TIMEOUT)?;
    let mut cluster = ProcessCluster::spawn(&spec)?;
    let mut report = SoakReport {
        members: n,
        network: if net.is_some() { "netns" } else { "loopback" }.to_owned(),
        transport: kind.name().to_owned(),
        seed,
        duration_s: args.duration,
        ..SoakReport::default()
    };
    let outcome = tokio::select! {
        r = soak(&mut cluster, net.as_ref(), &client, &args, Rng(seed), &mut report) => r,
        signal = signals.recv() => Err(SoakError::Interrupted(signal)),
    };
    eprintln!("soak: stopping {n} members");
    // A paused member cannot leave: resume everything before stopping.
    for node in cluster.nodes() {
        let _ = send(node.pid(), node.index(), Sig::Cont);
    }
    let cluster = cluster.shutdown().await?;
    drop(net);
    outcome?;
    let logs: Vec<PathBuf> = cluster
        .nodes()
        .iter()
        .map(|p| p.log_path().to_owned())
        .collect();
    let panics = observe::panics(logs.iter().map(PathBuf::as_path));
    report.panic_count = panics.len();
    report.panics = panics.into_iter().take(report::EXAMPLES).collect();
    let deaths = observe::deaths(&dir)?;
    report.deaths = deaths.len();
    let grace_ms = args.partition_grace.saturating_mul(1000);
    let (of_partitions, false_deaths): (Vec<Death>, Vec<Death>) = deaths
        .into_iter()
        .filter(|d| report.stable.contains(&d.member))
        .partition(|d| report.cuts.iter().any(|c| c.covers(d, grace_ms)));
    report.partition_deaths = of_partitions.len();
    report.false_death_count = false_deaths.len();
    report.false_deaths = false_deaths.into_iter().take(report::EXAMPLES).collect();
    report.failures = failures(&report, &args);
    if report.failures.is_empty() && !args.keep_logs {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("soak: logs and data kept in {}", dir.display());
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        out.write_all(report.render(tty).as_bytes())?;
    }
    out.flush()?;
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(SoakError::ChecksFailed(report.failures.clone()))
    }
}

/// The checks that fail, in words.
fn failures(r: &SoakReport, args: &SoakArgs) -> Vec<String> {
    let mut out = Vec::new();
    if r.converged_ms.is_none() {
        out.push(format!(
            "not converged within {} s: {} keys missing or stale, {} incomplete views",
            args.settle_timeout, r.mismatches, r.views_incomplete
        ));
    }
    if r.panic_count > 0 {
        out.push(format!("{} panics in the logs", r.panic_count));
    }
    if r.false_death_count > args.max_false_deaths {
        out.push(format!(
            "false deaths: {} (at most {} tolerated)",
            r.false_death_count, args.max_false_deaths
        ));
    }
    match r.rss_max_growth_pct {
        Some(g) if g > args.max_rss_growth_pct => out.push(format!(
            "RSS of a stable member grew by {g:.1} % (at most {} %)",
            args.max_rss_growth_pct
        )),
        Some(_) => {}
        None => out.push("RSS of the stable members could not be read".to_owned()),
    }
    out
}

/// The churn and the end checks that need the members running.
async fn soak(
    cluster: &mut ProcessCluster,
    net: Option<&SoakNet>,
    client: &AdminClient,
    args: &SoakArgs,
    mut rng: Rng,
    report: &mut SoakReport,
) -> Result<(), SoakError> {
    let n = cluster.nodes().len();
    let stable = args.stable();
    let admins: Vec<SocketAddr> = cluster.nodes().iter().map(|p| p.admin()).collect();
    let addrs: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|p| p.addr().to_owned())
        .collect();
    report.stable = addrs[..stable].to_vec();
    cluster.wait_until_up(client).await?;
    let ledger = Ledger::new(n);
    let all: Vec<usize> = (0..n).collect();
    eprintln!("soak: all {n} members up; waiting for one view");
    let deadline = Instant::now() + Duration::from_secs(args.settle_timeout);
    if check(client, &admins, &addrs, &all, &ledger).await.1 > 0 {
        wait_converged(client, &admins, &addrs, &all, &ledger, deadline).await;
    }

    let mut ledger = ledger;
    let mut cond = vec![Condition::Up; n];
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    let churn_every = Duration::from_secs(args.churn_every);
    let pause_every = Duration::from_secs(args.pause_every);
    let tick = Duration::from_millis(args.write_interval_ms);
    let (mut next_churn, mut next_pause) = (start + churn_every, start + pause_every);
    let mut resume_at: Option<Instant> = None;
    let partition_every = Duration::from_secs(args.partition_every);
    let mut next_partition = start + partition_every;
    let mut heal_at: Option<Instant> = None;
    let rss_at = start + args.rss_baseline();
    let mut rss_base: Option<Vec<Option<u64>>> = None;
    let mut seq: u64 = 0;
    let mut last_log = start;
    eprintln!("soak: churning for {} s", args.duration);
    while Instant::now() < end {
        let now = Instant::now();
        if resume_at.is_some_and(|t| now >= t) {
            resume_at = None;
            resume(cluster, &mut cond)?;
        }
        if let Some(net) = net {
            if heal_at.is_some_and(|t| now >= t) {
                heal_at = None;
                heal(net, &mut cond, report)?;
            }
            if now >= next_partition && heal_at.is_none() {
                next_partition += partition_every;
                let mut cut = Vec::new();
                for _ in 0..args.partition_members {
                    let up: Vec<usize> =
                        (stable..n).filter(|&i| cond[i] == Condition::Up).collect();
                    if let Some(v) = rng.pick(&up) {
                        cond[v] = Condition::Cut;
                        cut.push(v);
                    }
                }
                net.cut(&cut)?;
                report.partitioned_members += cut.len();
                report.cuts.push(Cut {
                    members: cut.iter().map(|&i| addrs[i].clone()).collect(),
                    start_ms: unix_ms(),
                    end_ms: None,
                });
                heal_at = Some(now + Duration::from_secs(args.partition_secs));
            }
        }
        if now >= next_churn {
            next_churn += churn_every;
            restart_down(cluster, &mut cond, report)?;
            let candidates = |cond: &[Condition]| -> Vec<usize> {
                (stable..n).filter(|&i| cond[i] == Condition::Up).collect()
            };
            if let Some(v) = rng.pick(&candidates(&cond)) {
                cluster.kill(v);
                ledger.end_life(v);
                cond[v] = Condition::Down;
                report.kills += 1;
            }
            if let Some(v) = rng.pick(&candidates(&cond)) {
                let node = &cluster.nodes()[v];
                send(node.pid(), node.index(), Sig::Term)?;
                ledger.end_life(v);
                cond[v] = Condition::Down;
                report.terms += 1;
            }
        }
        if now >= next_pause && resume_at.is_none() {
            next_pause += pause_every;
            let mut paused = 0;
            for _ in 0..args.pause_members {
                let up: Vec<usize> = (stable..n).filter(|&i| cond[i] == Condition::Up).collect();
                if let Some(v) = rng.pick(&up) {
                    let node = &cluster.nodes()[v];
                    send(node.pid(), node.index(), Sig::Stop)?;
                    cond[v] = Condition::Paused;
                    paused += 1;
                }
            }
            report.pauses += 1;
            report.paused_members += paused;
            resume_at = Some(now + Duration::from_secs(args.pause_secs));
        }
        if rss_base.is_none() && now >= rss_at {
            rss_base = Some(stable_rss(cluster, stable));
            report.rss_baseline_at_s = now.duration_since(start).as_secs();
        }
        let up: Vec<usize> = (0..n)
            .filter(|&i| matches!(cond[i], Condition::Up | Condition::Cut))
            .collect();
        write_round(client, &admins, &up, args.keys, seq, &mut ledger, report).await;
        seq += 1;
        if now.duration_since(last_log) >= Duration::from_secs(30) {
            last_log = now;
            eprintln!(
                "soak: {} s: {} kills, {} terms, {} pauses, {} partitions, {} writes answered",
                now.duration_since(start).as_secs(),
                report.kills,
                report.terms,
                report.pauses,
                report.cuts.len(),
                report.writes_acked
            );
        }
        let next = now + tick;
        tokio::time::sleep_until(next.into()).await;
    }

    // The end: read memory first (before restarts add load), then bring
    // every member back and wait for one view.
    let rss_end = stable_rss(cluster, stable);
    let rss_base = rss_base.unwrap_or_else(|| vec![None; stable]);
    report.rss = (0..stable)
        .map(|i| RssReport {
            member: addrs[i].clone(),
            baseline_bytes: rss_base[i],
            end_bytes: rss_end[i],
        })
        .collect();
    report.rss_max_growth_pct = report
        .rss
        .iter()
        .map(RssReport::growth_pct)
        .collect::<Option<Vec<f64>>>()
        .and_then(|g| g.into_iter().reduce(f64::max));
    resume(cluster, &mut cond)?;
    if let Some(net) = net {
        heal(net, &mut cond, report)?;
    }
    // A member stopped with SIGTERM gets up to the stop grace to leave.
    let grace = Instant::now() + Duration::from_secs(10);
    while cluster
        .nodes_mut()
        .iter_mut()
        .enumerate()
        .any(|(i, p)| cond[i] == Condition::Down && p.poll_exit().is_none())
        && Instant::now() < grace
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, c) in cond.iter().enumerate() {
        if *c == Condition::Down && cluster.nodes_mut()[i].poll_exit().is_none() {
            cluster.kill(i);
        }
    }
    restart_down(cluster, &mut cond, report)?;
    cluster.wait_until_up(client).await?;
    report.keys_checked = ledger.keys();
    eprintln!("soak: churn over; every member running; waiting for one view");
    let settled = Instant::now();
    let deadline = settled + Duration::from_secs(args.settle_timeout);
    let (examples, mismatches, incomplete) =
        wait_converged(client, &admins, &addrs, &all, &ledger, deadline).await;
    report.mismatches = mismatches;
    report.views_incomplete = incomplete;
    report.mismatch_examples = examples;
    if mismatches == 0 && incomplete == 0 {
        report.converged_ms = Some(settled.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}

/// Resumes every paused member (SIGCONT).
fn resume(cluster: &ProcessCluster, cond: &mut [Condition]) -> Result<(), SoakError> {
    for (node, c) in cluster.nodes().iter().zip(cond) {
        if *c == Condition::Paused {
            send(node.pid(), node.index(), Sig::Cont)?;
            *c = Condition::Up;
        }
    }
    Ok(())
}

/// Joins every cut-off member to the others again and records the time.
fn heal(net: &SoakNet, cond: &mut [Condition], report: &mut SoakReport) -> Result<(), SoakError> {
    let cut: Vec<usize> = (0..cond.len())
        .filter(|&i| cond[i] == Condition::Cut)
        .collect();
    if cut.is_empty() {
        return Ok(());
    }
    net.heal(&cut)?;
    for i in cut {
        cond[i] = Condition::Up;
    }
    if let Some(last) = report.cuts.last_mut() {
        last.end_ms.get_or_insert_with(unix_ms);
    }
    Ok(())
}

/// Restarts every member marked down (it has exited).
fn restart_down(
    cluster: &mut ProcessCluster,
    cond: &mut [Condition],
    report: &mut SoakReport,
) -> Result<(), SoakError> {
    for (i, c) in cond.iter_mut().enumerate() {
        if *c == Condition::Down && cluster.nodes_mut()[i].poll_exit().is_some() {
            cluster.restart(i)?;
            *c = Condition::Up;
            report.restarts += 1;
        }
    }
    Ok(())
}

/// `VmRSS` of the stable members (the first `stable`).
fn stable_rss(cluster: &ProcessCluster, stable: usize) -> Vec<Option<u64>> {
    cluster.nodes()[..stable]
        .iter()
        .map(|p| observe::vm_rss(p.pid()))
        .collect()
}

/// One write by every member of `up`, concurrently; recorded in `ledger`.
async fn write_round(
    client: &AdminClient,
    admins: &[SocketAddr],
    up: &[usize],
    keys: u16,
    seq: u64,
    ledger: &mut Ledger,
    report: &mut SoakReport,
) {
    let key = format!("soak/{}", seq % u64::from(keys));
    let mut set = JoinSet::new();
    for &i in up {
        let (client, admin, key) = (client.clone(), admins[i], key.clone());
        let value = format!("{}.{seq}", i + 1);
        set.spawn(async move {
            let answered = client.put_key(admin, &key, value.clone()).await.is_ok();
            (i, key, value, answered)
        });
    }
    while let Some(joined) = set.join_next().await {
        if let Ok((i, key, value, answered)) = joined {
            report.writes += 1;
            report.writes_acked += u64::from(answered);
            ledger.record(i, &key, value, answered);
        }
    }
}

/// Checks every member of `live`: up to [`report::EXAMPLES`] mismatches,
/// their total, and the number of members that do not list every member
/// of `live` (or did not answer).
async fn check(
    client: &AdminClient,
    admins: &[SocketAddr],
    addrs: &[String],
    live: &[usize],
    ledger: &Ledger,
) -> (Vec<Mismatch>, usize, usize) {
    let mut set = JoinSet::new();
    for &i in live {
        let (client, admin) = (client.clone(), admins[i]);
        set.spawn(async move { (i, client.members(admin).await, client.kv(admin).await) });
    }
    let (mut examples, mut total, mut incomplete) = (Vec::new(), 0, 0);
    while let Some(joined) = set.join_next().await {
        let Ok((i, members, kv)) = joined else {
            incomplete += 1;
            continue;
        };
        let listed = members.is_ok_and(|m| {
            live.iter()
                .all(|&j| m.iter().any(|x| x.addr == addrs[j] && x.state == "alive"))
        });
        incomplete += usize::from(!listed);
        match kv {
            Ok(view) => {
                let found = ledger.mismatches(addrs, &addrs[i], &view);
                total += found.len();
                examples.extend(found);
            }
            Err(_) => incomplete += usize::from(listed),
        }
    }
    examples.truncate(report::EXAMPLES);
    (examples, total, incomplete)
}

/// [`check`] every 500 ms until it finds nothing or `deadline` passes; the
/// last result.
async fn wait_converged(
    client: &AdminClient,
    admins: &[SocketAddr],
    addrs: &[String],
    live: &[usize],
    ledger: &Ledger,
    deadline: Instant,
) -> (Vec<Mismatch>, usize, usize) {
    loop {
        let found = check(client, admins, addrs, live, ledger).await;
        if (found.1 == 0 && found.2 == 0) || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The signals the soak sends.
#[derive(Clone, Copy, Debug)]
enum Sig {
    Term,
    Stop,
    Cont,
}

/// Sends `sig` to the process `pid` (member `index`). A process that has
/// already exited but is not reaped yet still takes the signal harmlessly.
fn send(pid: u32, index: usize, sig: Sig) -> Result<(), SoakError> {
    let name = match sig {
        Sig::Term => "SIGTERM",
        Sig::Stop => "SIGSTOP",
        Sig::Cont => "SIGCONT",
    };
    #[cfg(unix)]
    {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let signal = match sig {
            Sig::Term => Signal::SIGTERM,
            Sig::Stop => Signal::SIGSTOP,
            Sig::Cont => Signal::SIGCONT,
        };
        let pid = i32::try_from(pid).map_err(|e| SoakError::Signal {
            signal: name,
            index,
            reason: e.to_string(),
        })?;
        kill(Pid::from_raw(pid), signal).map_err(|e| SoakError::Signal {
            signal: name,
            index,
            reason: e.to_string(),
        })
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        Err(SoakError::Signal {
            signal: name,
            index,
            reason: "signals need Unix".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<SoakArgs, clap::Error> {
        let cli =
            crate::cli::Cli::try_parse_from(["gossip-node", "soak"].iter().chain(args).copied())?;
        match cli.command {
            crate::cli::Command::Soak(a) => Ok(a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_and_baseline() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.members, a.stable(), a.duration), (20, 5, 300));
        assert!(a.validate().is_ok());
        assert_eq!(a.rss_baseline(), Duration::from_secs(100));
        let long = parse(&["--duration", "3600"]).unwrap();
        assert_eq!(long.rss_baseline(), RSS_BASELINE);
    }

    #[test]
    fn bad_flags_are_refused_before_anything_starts() {
        for bad in [
            &["--members", "3"][..],
            &["--duration", "1"],
            &["--write-interval-ms", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        for bad in [
            &["--members", "8", "--stable", "4"][..],
            &["--stable", "0"],
            &["--transport", "carrier-pigeon"],
            &["--max-rss-growth-pct=-1"],
        ] {
            assert!(parse(bad).unwrap().validate().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rng_picks_from_the_list_only() {
        let mut rng = Rng(7);
        assert_eq!(rng.pick(&[]), None);
        for _ in 0..100 {
            assert!(rng.pick(&[3, 5, 9]).is_some_and(|v| [3, 5, 9].contains(&v)));
        }
    }
}
