//! `gossip-bench`: runs the same loopback scenarios for this project and for
//! chitchat (crates.io) at the same gossip interval and fanout, and prints a
//! table with the ratios ours / theirs (issue #4). See `bench/README.md`.
//!
//! ```sh
//! cargo run --release -p gossip-bench -- --nodes 10,50,100 --interval-ms 100,1000
//! ```
//!
//! `gossip-bench transport` measures instead the CPU cost of one message on
//! each sending path against a raw UDP floor (issue #9; `transport.rs`).

mod cluster;
mod error;
mod hog;
mod ours;
mod report;
mod scenario;
mod theirs;
mod transport;
mod wire;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitchat::ProtocolVersion;
use clap::{Parser, ValueEnum};

use crate::cluster::{Settings, Sightings};
use crate::error::BenchError;
use crate::ours::Ours;
use crate::report::{IntervalReport, Machine, Report};
use crate::scenario::{Outcome, Plan};
use crate::theirs::Chitchat;

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    /// This project over gRPC (plaintext HTTP/2).
    OursGrpc,
    /// This project over QUIC (self-signed TLS).
    OursQuic,
    /// chitchat with its plain digest (protocol V0, its default).
    Chitchat,
    /// chitchat with its compressed digest (protocol V1).
    ChitchatV1,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::OursGrpc => "ours-grpc",
            System::OursQuic => "ours-quic",
            System::Chitchat => "chitchat",
            System::ChitchatV1 => "chitchat-v1",
        }
    }
}

/// Same scenarios, this project against chitchat, N members in one process
/// on loopback.
#[derive(Debug, Parser)]
#[command(name = "gossip-bench", version)]
struct Args {
    /// Cluster sizes.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    nodes: Vec<usize>,
    /// Gossip intervals in ms, one table each.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    interval_ms: Vec<u64>,
    /// Systems to run, in this order.
    #[arg(long, value_delimiter = ',', default_value = "ours-grpc,chitchat")]
    systems: Vec<System>,
    /// Keys set one after another per cluster; the median is reported.
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Window for traffic at rest, in s (default: the longer of 5 s and 10
    /// gossip intervals).
    #[arg(long)]
    rest_secs: Option<u64>,
    /// Settling time after the join before traffic at rest is measured, in s
    /// (default: the longer of 3 s and 20 gossip intervals).
    #[arg(long)]
    warmup_secs: Option<u64>,
    /// Ours: probe interval as a multiple of the gossip interval.
    #[arg(long, default_value_t = 2)]
    probe_factor: u32,
    /// Ours: suspicion multiplier (minimum suspicion timeout =
    /// mult x max(1, log10 N) x probe interval).
    #[arg(long, default_value_t = 2)]
    suspicion_mult: u32,
    /// Ours: size of the active view (`Config::active_view`; 0: every peer
    /// of an anti-entropy round uniformly random).
    #[arg(long, default_value_t = gossip_core::Config::default().active_view)]
    active_view: usize,
    /// Ours: peers a quiet member contacts ahead of need
    /// (`Config::warm_up_peers`; 0: off).
    #[arg(long, default_value_t = gossip_core::Config::default().warm_up_peers)]
    warm_up_peers: usize,
    /// chitchat: phi-accrual threshold (its default is 8).
    #[arg(long, default_value_t = 8.0)]
    phi: f64,
    /// Longest wait for the join, in s.
    #[arg(long, default_value_t = 120)]
    join_limit_secs: u64,
    /// Longest wait for a crashed member to be dropped everywhere, in s.
    #[arg(long, default_value_t = 120)]
    detect_limit_secs: u64,
    /// Also write every result to this JSON file.
    #[arg(long)]
    json: Option<String>,
    /// Keeps every core busy while the benchmark runs: one busy-loop
    /// thread per CPU, at normal priority, competing with the members (a
    /// loaded host; issue #10).
    #[arg(long)]
    cpu_hog: bool,
}

/// The fanout both systems use: chitchat's is fixed.
const FANOUT: usize = theirs::CHITCHAT_FANOUT;

fn plan(args: &Args, interval: Duration) -> Plan {
    let secs = |s: Option<u64>, floor: Duration, rounds: u32| {
        s.map_or((interval * rounds).max(floor), Duration::from_secs)
    };
    Plan {
        warmup: secs(args.warmup_secs, Duration::from_secs(3), 20),
        rest_window: secs(args.rest_secs, Duration::from_secs(5), 10),
        repetitions: args.repetitions,
        pause: (interval * 5).max(Duration::from_millis(500)),
        join_limit: Duration::from_secs(args.join_limit_secs),
        spread_limit: (interval * 100).max(Duration::from_secs(10)),
        detect_limit: Duration::from_secs(args.detect_limit_secs),
    }
}

async fn run_one(system: System, n: usize, settings: &Settings, plan: &Plan) -> Outcome {
    let book = Arc::new(Sightings::default());
    let name = system.name();
    let started = Instant::now();
    let cpu_at_start = transport::cpu().ok();
    let result = match system {
        System::OursGrpc => {
            match Ours::start(name, n, settings, book.clone(), ours::bind_grpc).await {
                Ok(c) => Ok(scenario::run(c, started, cpu_at_start, plan, book).await),
                Err(e) => Err(e),
            }
        }
        System::OursQuic => {
            match Ours::start(name, n, settings, book.clone(), ours::bind_quic).await {
                Ok(c) => Ok(scenario::run(c, started, cpu_at_start, plan, book).await),
                Err(e) => Err(e),
            }
        }
        System::Chitchat | System::ChitchatV1 => {
            let protocol = if system == System::Chitchat {
                ProtocolVersion::V0
            } else {
                ProtocolVersion::V1
            };
            match Chitchat::start(name, n, settings, protocol, book.clone()).await {
                Ok(c) => Ok(scenario::run(c, started, cpu_at_start, plan, book).await),
                Err(e) => Err(e),
            }
        }
    };
    result.unwrap_or_else(|e| Outcome {
        system: name.to_owned(),
        n,
        errors: vec![e.to_string()],
        ..Outcome::default()
    })
}

fn check(args: &Args) -> Result<(), BenchError> {
    if args.nodes.iter().any(|n| *n < 3) {
        return Err(BenchError::Args(
            "every cluster size must be at least 3".into(),
        ));
    }
    if args.interval_ms.contains(&0) {
        return Err(BenchError::Args(
            "the gossip interval must be positive".into(),
        ));
    }
    if args.systems.is_empty() {
        return Err(BenchError::Args("name at least one system".into()));
    }
    if args.probe_factor == 0 || args.suspicion_mult == 0 {
        return Err(BenchError::Args(
            "--probe-factor and --suspicion-mult must be positive".into(),
        ));
    }
    Ok(())
}

async fn bench(args: Args) -> Result<(), BenchError> {
    check(&args)?;
    let machine = Machine::detect();
    println!(
        "machine: {} cores, {}, Linux {}; gossip {}, chitchat {}",
        machine.cores,
        machine.cpu,
        machine.kernel,
        env!("CARGO_PKG_VERSION"),
        theirs::CHITCHAT_VERSION
    );
    // Runs until the end of `bench`.
    let _hog = args.cpu_hog.then(|| {
        let hog = hog::CpuHog::start();
        println!(
            "cpu hog: {} busy-loop threads at normal priority",
            hog.threads()
        );
        hog
    });
    let names: Vec<String> = args.systems.iter().map(|s| s.name().to_owned()).collect();
    let mut intervals = Vec::new();
    for &interval_ms in &args.interval_ms {
        let interval = Duration::from_millis(interval_ms);
        let settings = Settings {
            gossip_interval: interval,
            fanout: FANOUT,
            probe_factor: args.probe_factor,
            suspicion_mult: args.suspicion_mult,
            active_view: args.active_view,
            warm_up_peers: args.warm_up_peers,
            phi_threshold: args.phi,
        };
        let plan = plan(&args, interval);
        let ours_config = ours::config(&settings);
        let mut block = IntervalReport {
            gossip_interval_ms: interval_ms,
            fanout: FANOUT,
            probe_interval_ms: ours_config.probe_interval.as_millis() as u64,
            probe_timeout_ms: ours_config.probe_timeout.as_millis() as u64,
            suspicion_mult: ours_config.suspicion_mult,
            phi_threshold: args.phi,
            outcomes: Vec::new(),
        };
        for &n in &args.nodes {
            for &system in &args.systems {
                eprintln!(
                    "running {} with {n} members, interval {interval_ms} ms",
                    system.name()
                );
                let outcome = run_one(system, n, &settings, &plan).await;
                for e in &outcome.errors {
                    eprintln!("  {}: {e}", system.name());
                }
                block.outcomes.push(outcome);
                // Let closed sockets and leftover tasks wind down.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        println!(
            "\ngossip interval {interval_ms} ms, fanout {FANOUT}; ours: probe {} ms, probe timeout {} ms, \
             suspicion_mult {}, active view {}, warm-up peers {}; chitchat: phi {}; warm-up {:?}, rest window {:?}, {} keys",
            block.probe_interval_ms,
            block.probe_timeout_ms,
            block.suspicion_mult,
            args.active_view,
            args.warm_up_peers,
            block.phi_threshold,
            plan.warmup,
            plan.rest_window,
            plan.repetitions
        );
        println!("{}", report::table(&block, &names));
        intervals.push(block);
    }
    println!(
        "bytes: application payload only (ours: encoded protobuf envelopes; chitchat: UDP \
         datagram payloads), no framing. wire bytes: IP packets on the loopback device, all \
         headers, TCP acks, HTTP/2, TLS and QUIC included (n/a unless run in a private network \
         namespace: unshare --net)."
    );
    if let Some(path) = &args.json {
        let report = Report {
            machine,
            gossip_version: env!("CARGO_PKG_VERSION").to_owned(),
            chitchat_version: theirs::CHITCHAT_VERSION.to_owned(),
            bytes_counted: "application payload bytes: encoded protobuf envelopes (ours), UDP \
                            datagram payloads (chitchat); no transport framing"
                .to_owned(),
            intervals,
        };
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })?;
        println!("results written to {path}");
    }
    Ok(())
}

/// What the command line asks for: the side-by-side scenarios, or the
/// transport paths' cost (`gossip-bench transport ...`).
enum Job {
    SideBySide(Args),
    Transport(transport::TransportArgs),
}

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    let job = if argv.get(1).map(String::as_str) == Some("transport") {
        argv.remove(1);
        Job::Transport(transport::TransportArgs::parse_from(argv))
    } else {
        Job::SideBySide(Args::parse_from(argv))
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match job {
        Job::SideBySide(args) => runtime.block_on(bench(args)),
        Job::Transport(args) => runtime.block_on(transport::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_and_bad_sizes_are_refused() {
        let args = Args::parse_from([
            "gossip-bench",
            "--nodes",
            "10,50",
            "--interval-ms",
            "100,1000",
            "--systems",
            "ours-grpc,chitchat-v1",
        ]);
        assert_eq!(args.nodes, vec![10, 50]);
        assert_eq!(args.systems, vec![System::OursGrpc, System::ChitchatV1]);
        assert!(!args.cpu_hog);
        assert!(Args::parse_from(["gossip-bench", "--cpu-hog"]).cpu_hog);
        assert!(check(&args).is_ok());
        let p = plan(&args, Duration::from_millis(1000));
        assert_eq!(p.rest_window, Duration::from_secs(10));
        assert_eq!(p.warmup, Duration::from_secs(20));
        let small = Args::parse_from(["gossip-bench", "--nodes", "2"]);
        assert!(check(&small).is_err());
    }
}
