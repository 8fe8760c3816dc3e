//! `gossip-node bench`: real `gossip-node run` processes on loopback, and
//! what they cost and how fast they agree.
//!
//! The benchmark starts `--processes` nodes ([`crate::cli::procs`]), every one
//! seeded with the first, with fast protocol timing (gossip every 100 ms,
//! probe every 500 ms by default), and measures in turn:
//!
//! 1. **startup and convergence**: the time from the first spawn until
//!    every admin endpoint answers, and until every node lists all of them;
//! 2. **traffic at rest**: each node's own `GET /stats` counters at the
//!    start and end of a `--rest` window, as messages and bytes sent per
//!    member per second, and the CPU the processes used meanwhile;
//! 3. **spread of a write**: node 1 sets a key through `PUT /kv/{key}`;
//!    every node's `GET /kv` is polled in its own loop every `--poll-ms`
//!    until it shows the write;
//! 4. **failure detection**: the last `--kill` nodes are killed with
//!    SIGKILL; every survivor's `GET /members` is polled every 100 ms until
//!    none lists them: the time until the first survivor no longer lists a
//!    victim as alive (it suspects it or has removed it), and until every
//!    survivor has removed it, beside the protocol's detection bound.
//!
//! Method and resolution: a time is measured from just before the write
//! (or the kill) to the arrival of the first poll answer that shows the
//! change, so it is an upper bound; the change happened after the previous
//! poll of that node was sent. The largest such gap is reported as the
//! resolution. Polls are HTTP requests to processes that compete for the
//! same CPUs, so with many processes on few cores the resolution and the
//! figures themselves include scheduling delays.
//!
//! CPU time (user + system) and peak resident memory (`VmHWM`) of every
//! process are read from `/proc` before it is killed or stopped. On the way
//! out, on success, error or Ctrl-C, every process started is stopped.

mod measure;
mod report;

use std::ffi::OsString;
use std::io::Write as _;
use std::time::{Duration, Instant};

use clap::Args;

pub use report::{
    BenchReport, KeyReport, KillReport, KilledMember, ResourceReport, RestReport, StopReport,
};

use crate::cli::error::BenchError;
use crate::cli::procs::{AdminClient, ClusterSpec, ProcessCluster, Seeding, proc_usage};
use crate::config::{TlsKind, check_tls};
use crate::transport::TransportKind;

/// The key the benchmark writes.
pub const BENCH_KEY: &str = "bench/key";
/// The cluster id of the benchmark's nodes.
pub const BENCH_CLUSTER_ID: &str = "bench";
/// Period of the `GET /members` polls (convergence and detection).
const MEMBERS_POLL: Duration = Duration::from_millis(100);
/// Timeout of one admin request (generous: the machine may be saturated).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of `gossip-node bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Number of `gossip-node run` processes to start.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(3..=1000))]
    pub processes: u16,

    /// Transport of every node: grpc or quic. Default grpc (quic in a build
    /// without the grpc feature).
    #[arg(long, value_name = "NAME")]
    pub transport: Option<String>,

    /// TLS of every node: self-signed (default) or none (gRPC only).
    #[arg(long, value_enum, default_value_t = TlsKind::SelfSigned, value_name = "MODE")]
    pub tls: TlsKind,

    /// Number of processes killed with SIGKILL to measure failure
    /// detection (at most processes - 2).
    #[arg(long, default_value_t = 5)]
    pub kill: u16,

    /// Period of anti-entropy rounds of every node, ms.
    #[arg(long, default_value_t = 100, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub gossip_interval_ms: u64,

    /// Period of failure-detector probes of every node, ms.
    #[arg(long, default_value_t = 500, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub probe_interval_ms: u64,

    /// Time every node waits for a direct ack, ms (at most the probe
    /// interval).
    #[arg(long, default_value_t = 250, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub probe_timeout_ms: u64,

    /// Suspicion timeout multiplier of every node.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub suspicion_mult: u32,

    /// Length of the window over which traffic and CPU at rest are
    /// measured, seconds.
    #[arg(long, default_value_t = 5, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub rest: u64,

    /// Time left to the cluster after it converged, before traffic at rest
    /// is measured (the anti-entropy of the join settles), seconds.
    #[arg(long, default_value_t = 3, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=600))]
    pub settle: u64,

    /// Period of each node's `GET /kv` poll while the write spreads, ms.
    #[arg(long, default_value_t = 20, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub poll_ms: u64,

    /// Longest wait for startup and for convergence, seconds.
    #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,

    /// Keep the nodes' logs (in a temporary directory, printed at the
    /// start) even after a successful run.
    #[arg(long)]
    pub keep_logs: bool,

    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// The protocol configuration the nodes run with, for its bounds.
    fn protocol(&self) -> gossip_core::Config {
        gossip_core::Config {
            gossip_interval: Duration::from_millis(self.gossip_interval_ms),
            probe_interval: Duration::from_millis(self.probe_interval_ms),
            probe_timeout: Duration::from_millis(self.probe_timeout_ms),
            suspicion_mult: self.suspicion_mult,
            ..gossip_core::Config::default()
        }
    }

    /// The flags every node gets.
    fn node_args(&self, kind: TransportKind) -> Vec<OsString> {
        let flags = [
            ("--transport", kind.name().to_owned()),
            ("--tls", self.tls.name().to_owned()),
            ("--cluster-id", BENCH_CLUSTER_ID.to_owned()),
            ("--log-format", "json".to_owned()),
            ("--gossip-interval-ms", self.gossip_interval_ms.to_string()),
            ("--probe-interval-ms", self.probe_interval_ms.to_string()),
            ("--probe-timeout-ms", self.probe_timeout_ms.to_string()),
            ("--suspicion-mult", self.suspicion_mult.to_string()),
        ];
        flags
            .into_iter()
            .flat_map(|(flag, value)| [OsString::from(flag), OsString::from(value)])
            .collect()
    }

    /// Checks what clap cannot.
    fn validate(&self) -> Result<TransportKind, BenchError> {
        let kind = match &self.transport {
            Some(name) => name.parse::<TransportKind>()?,
            None => TransportKind::default(),
        };
        kind.ensure_available()?;
        check_tls(kind, self.tls)?;
        let bad = |reason: String| Err(BenchError::BadArgs(reason));
        if self.tls == TlsKind::Mtls {
            return bad("--tls mtls is not supported by bench (use self-signed or none)".into());
        }
        if self.kill > self.processes.saturating_sub(2) {
            return bad(format!(
                "--kill {} must leave at least 2 of the {} processes running",
                self.kill, self.processes
            ));
        }
        if self.probe_timeout_ms > self.probe_interval_ms {
            return bad(format!(
                "--probe-timeout-ms {} must not exceed --probe-interval-ms {}",
                self.probe_timeout_ms, self.probe_interval_ms
            ));
        }
        Ok(kind)
    }
}

/// Body of `gossip-node bench`: starts the processes, measures, stops them
/// and prints the report (tables, or JSON with `--json`). Progress goes to
/// standard error.
///
/// The nodes are started from [`std::env::current_exe`], so call this from
/// the `gossip-node` binary.
///
/// # Errors
/// [`BenchError::BadArgs`] or [`BenchError::Config`] for flags it refuses
/// (nothing starts then); [`BenchError::Procs`] if a node cannot be started
/// or does not come up; [`BenchError::Interrupted`] on Ctrl-C or SIGTERM;
/// [`BenchError::Io`]. Every process started is stopped before any error
/// is returned. A cluster that does not converge, or a write or crash that
/// is not seen everywhere, is reported, not an error.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let kind = args.validate()?;
    let exe = std::env::current_exe().map_err(BenchError::CurrentExe)?;
    let mut signals = crate::cli::signals::Signals::new()?;
    let n = usize::from(args.processes);
    let log_dir = std::env::temp_dir().join(format!("gossip-node-bench-{}", std::process::id()));
    let mut spec = ClusterSpec::new(exe, n, log_dir);
    spec.seeding = Seeding::First;
    spec.args = args.node_args(kind);
    spec.startup_timeout = Duration::from_secs(args.timeout);
    // A saturated machine can take longer than the default to let every
    // node leave gracefully.
    spec.stop_grace = Duration::from_secs(10);
    eprintln!(
        "bench: starting {n} gossip-node processes over {kind} (TLS {}), logs in {}",
        args.tls,
        spec.log_dir.display()
    );
    let client = AdminClient::new(REQUEST_TIMEOUT)?;
    let started = Instant::now();
    let mut cluster = ProcessCluster::spawn(&spec)?;
    let mut report = BenchReport::new(&args, kind, n, cluster.pids());
    let measured = tokio::select! {
        r = measure_all(&mut cluster, &client, &args, started, &mut report) => r,
        signal = signals.recv() => Err(BenchError::Interrupted(signal)),
    };
    if measured.is_err() {
        eprintln!("bench: stopping {n} processes after an error");
    } else {
        eprintln!("bench: stopping {n} processes");
    }
    let cluster = cluster.shutdown().await?;
    report.stop = StopReport::of(&cluster);
    if measured.is_ok() && report.stop.left_running == 0 && !args.keep_logs {
        // Best effort: the logs of a finished run are of no further use.
        let _ = std::fs::remove_dir_all(cluster.log_dir());
    } else {
        eprintln!("bench: node logs kept in {}", cluster.log_dir().display());
    }
    measured?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        out.write_all(report.render(tty).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// The measurements in order; fills `report` as it goes.
async fn measure_all(
    cluster: &mut ProcessCluster,
    client: &AdminClient,
    args: &BenchArgs,
    started: Instant,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let n = cluster.nodes().len();
    let admins: Vec<_> = cluster.nodes().iter().map(|p| p.admin()).collect();
    let addrs: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|p| p.addr().to_owned())
        .collect();

    cluster.wait_until_up(client).await?;
    report.startup_ms = ms(started.elapsed());
    eprintln!(
        "bench: all {n} admin endpoints up after {:.2} s; waiting for every node to list every node",
        report.startup_ms / 1e3
    );
    let deadline = started + Duration::from_secs(args.timeout);
    let converged = measure::until_all_listed(client, &admins, &addrs, started, deadline).await;
    report.converged = converged.iter().all(Option::is_some);
    report.converged_ms = converged
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max())
        .map(ms);
    match report.converged_ms {
        Some(t) => eprintln!("bench: converged after {:.2} s", t / 1e3),
        None => eprintln!("bench: NOT converged within {} s", args.timeout),
    }

    let pids = cluster.pids();
    if args.settle > 0 {
        eprintln!("bench: letting the cluster settle for {} s", args.settle);
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
    }
    eprintln!("bench: measuring traffic at rest for {} s", args.rest);
    report.at_rest =
        measure::at_rest(client, &admins, &pids, Duration::from_secs(args.rest)).await?;

    eprintln!("bench: node 1 writes {BENCH_KEY}; polling every node's /kv");
    let spread_deadline = Duration::from_secs(args.timeout);
    report.key = measure::spread(
        client,
        &admins,
        &addrs[0],
        BENCH_KEY,
        Duration::from_millis(args.poll_ms),
        spread_deadline,
    )
    .await?;

    let k = usize::from(args.kill);
    let victims: Vec<usize> = (n - k..n).collect();
    let bound = args.protocol().detection_bound(n);
    let mut usage = vec![None; n];
    for &v in &victims {
        usage[v] = proc_usage(pids[v]);
    }
    eprintln!(
        "bench: killing {k} processes with SIGKILL; detection bound {:.1} s",
        bound.as_secs_f64()
    );
    let killed_at = Instant::now();
    for &v in &victims {
        cluster.kill(v);
    }
    let survivors: Vec<usize> = (0..n - k).collect();
    report.kill = measure::detection(
        client,
        &admins,
        &addrs,
        &survivors,
        &victims,
        killed_at,
        bound.mul_f64(1.5) + Duration::from_secs(5),
        MEMBERS_POLL,
    )
    .await;
    report.kill.detection_bound_ms = ms(bound);
    for (m, &v) in report.kill.killed.iter_mut().zip(&victims) {
        m.pid = pids[v];
    }

    for &s in &survivors {
        usage[s] = proc_usage(pids[s]);
    }
    report.resources = ResourceReport::of(&usage, started.elapsed());
    report.totals = measure::totals(client, &admins, &survivors).await;
    Ok(())
}

/// A duration in milliseconds, as reported.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let cli =
            crate::cli::Cli::try_parse_from(["gossip-node", "bench"].iter().chain(args).copied())?;
        match cli.command {
            crate::cli::Command::Bench(a) => Ok(a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_and_node_flags() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.processes, a.kill, a.poll_ms), (100, 5, 20));
        let kind = a.validate().unwrap();
        let flags: Vec<String> = a
            .node_args(kind)
            .into_iter()
            .map(|f| f.into_string().unwrap())
            .collect();
        let joined = flags.join(" ");
        assert!(joined.contains("--gossip-interval-ms 100"), "{joined}");
        assert!(joined.contains("--probe-interval-ms 500"), "{joined}");
        assert!(joined.contains("--cluster-id bench"), "{joined}");
        assert_eq!(a.protocol().probe_interval, Duration::from_millis(500));
    }

    #[test]
    fn bad_flags_are_refused_before_anything_starts() {
        for bad in [
            &["--processes", "1"][..],
            &["--processes", "x"],
            &["--poll-ms", "0"],
            &["--tls", "tls"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        for (bad, expected) in [
            (
                &["--processes", "8", "--kill", "7"][..],
                "must leave at least 2",
            ),
            (&["--transport", "carrier-pigeon"], "unknown transport"),
            (&["--tls", "mtls"], "not supported by bench"),
            (
                &["--probe-interval-ms", "100", "--probe-timeout-ms", "200"],
                "must not exceed",
            ),
        ] {
            let err = parse(bad).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{bad:?}: {err}");
        }
    }
}
