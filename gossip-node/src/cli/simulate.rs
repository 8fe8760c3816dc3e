//! `gossip-node simulate`: the deterministic simulator (`gossip-sim`) from
//! the command line.
//!
//! It runs `--nodes` real protocol state machines under virtual time over a
//! simulated network (`--loss`, `--latency`), warms the cluster up from a
//! cold start, lets it settle, then runs `--scenario` for `--duration`
//! seconds of virtual time, and reports the spread of a write (rounds and
//! time to 50, 99 and 100 % of the members, beside the push-pull bound
//! `log3(N) + ln ln N` of Karp, Schindelhauer, Shenker and Vöcking, 2000),
//! the traffic per member per second, the detection of a crashed member,
//! and the live members wrongly declared dead. Output: tables, or the
//! simulator's report as JSON (`--json`); `--plot FILE.svg` draws the
//! spread of the write beside a model of the bound ([`plot`]). A run is a
//! function of its flags: the same flags give the same figures.

pub mod plot;

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use comfy_table::Table;
use gossip_sim::{LatencyModel, Milestone, Report, Scenario, SimConfig, TrafficReport};

use crate::cli::error::SimulateError;

/// Largest cluster `simulate` accepts (the simulator's own limit is
/// higher; beyond this a run takes hours).
pub const MAX_SIM_NODES: usize = 100_000;

/// When the preset scenarios act, from the start of the measured period.
const UPDATE_AT: Duration = Duration::from_secs(1);
/// When `update-crash` and `crash` crash the last member.
const CRASH_AT: Duration = Duration::from_secs(2);

/// Flags of `gossip-node simulate`.
#[derive(Clone, Debug, Args)]
pub struct SimulateArgs {
    /// Number of members.
    #[arg(long, default_value_t = 100, value_parser = parse_nodes)]
    pub nodes: usize,

    /// Probability that a message is lost, in [0, 1].
    #[arg(long, default_value_t = 0.0, value_parser = parse_loss)]
    pub loss: f64,

    /// A crashed member's address refuses messages (its process died, its
    /// host did not: TCP reset, ICMP port unreachable), which the failure
    /// detector's fast path uses. Default: a crash is silent.
    #[arg(long)]
    pub crash_refuses: bool,

    /// Peers contacted per gossip round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub fanout: u16,

    /// Size of the active view: the recently contacted peers that take all
    /// but one of a round's requests (0: every peer uniformly random).
    #[arg(long, default_value_t = gossip_core::Config::default().active_view as u16)]
    pub active_view: u16,

    /// Peers, in all, a quiet member contacts ahead of need, `fanout` per
    /// probe period (0: off).
    #[arg(long, default_value_t = gossip_core::Config::default().warm_up_peers)]
    pub warm_up_peers: usize,

    /// Seed of the run: the same seed and flags give the same figures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// What happens after the warm-up: update (member 0 writes a key at
    /// 1 s), crash (the last member crashes at 2 s), update-crash (both),
    /// partition (the first half is cut off at 1 s, healed --heal-after
    /// later) or idle (the cost at rest).
    #[arg(long, value_enum, default_value_t = ScenarioKind::UpdateCrash)]
    pub scenario: ScenarioKind,

    /// Length of the measured period, seconds of virtual time.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration: u64,

    /// Partition scenario: how long the network stays split, seconds.
    #[arg(long, default_value_t = 15, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub heal_after: u64,

    /// Period of anti-entropy rounds, ms.
    #[arg(long, default_value_t = 200, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub gossip_interval_ms: u64,

    /// Do not push fresh writes eagerly: measure plain anti-entropy.
    #[arg(long)]
    pub no_eager_push: bool,

    /// How the cluster starts: cold (members learn each other from three
    /// seeds each, by gossip) or converged (every member is handed the full
    /// member list at time zero; for thousands of members, where the cold
    /// start's N^2 exchange dominates the run time).
    #[arg(long, value_enum, default_value_t = StartKind::Cold)]
    pub start: StartKind,

    /// One-way delay of every message, ms: `1` (constant), `0.5..1.5`
    /// (uniform) or `lognormal:MEDIAN:SIGMA` (log-normal, clamped to
    /// [0, 50 x MEDIAN]).
    #[arg(long, default_value = "0.5..1.5", value_parser = parse_latency)]
    pub latency: LatencyModel,

    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Draw the spread of the write over time, beside the push-pull bound,
    /// to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// How the simulated cluster starts (`--start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StartKind {
    /// From seeds, by gossip.
    Cold,
    /// With every view installed at time zero
    /// ([`gossip_sim::Bootstrap::converged`]).
    Converged,
}

/// The scenario presets of `--scenario`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScenarioKind {
    /// Member 0 writes a key.
    Update,
    /// The last member crashes.
    Crash,
    /// Member 0 writes a key, then the last member crashes.
    UpdateCrash,
    /// The first half of the members is cut off, then healed.
    Partition,
    /// Nothing happens.
    Idle,
}

fn parse_nodes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if (1..=MAX_SIM_NODES).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between 1 and {MAX_SIM_NODES}"))
    }
}

fn parse_loss(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err("must be a probability in [0, 1]".to_owned())
    }
}

fn parse_ms(s: &str) -> Result<Duration, String> {
    let ms: f64 = s
        .trim()
        .trim_end_matches("ms")
        .parse()
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))?;
    if ms.is_finite() && (0.0..=3_600_000.0).contains(&ms) {
        Ok(Duration::from_secs_f64(ms / 1e3))
    } else {
        Err(format!("{s:?} ms is out of range (0 to 3600000)"))
    }
}

fn parse_latency(s: &str) -> Result<LatencyModel, String> {
    let model = if let Some(rest) = s.strip_prefix("lognormal:") {
        let (median, sigma) = rest
            .split_once(':')
            .ok_or("expected lognormal:MEDIAN:SIGMA")?;
        let median = parse_ms(median)?;
        let sigma: f64 = sigma
            .parse()
            .map_err(|_| format!("sigma {sigma:?} is not a number"))?;
        LatencyModel::LogNormal {
            median,
            sigma,
            min: Duration::ZERO,
            max: median * 50,
        }
    } else if let Some((min, max)) = s.split_once("..") {
        LatencyModel::Uniform {
            min: parse_ms(min)?,
            max: parse_ms(max)?,
        }
    } else {
        LatencyModel::Constant {
            delay: parse_ms(s)?,
        }
    };
    model.validate().map_err(|e| e.to_string())?;
    Ok(model)
}

/// The simulator's configuration for `args`.
///
/// # Errors
/// [`SimulateError::Sim`] if the simulator refuses it.
pub fn sim_config(args: &SimulateArgs) -> Result<SimConfig, SimulateError> {
    let mut cfg = SimConfig::new(args.nodes, args.seed);
    cfg.bootstrap.converged = args.start == StartKind::Converged;
    cfg.loss = args.loss;
    cfg.refusals = args.crash_refuses;
    cfg.latency = args.latency.clone();
    cfg.protocol.fanout = usize::from(args.fanout);
    cfg.protocol.active_view = usize::from(args.active_view);
    cfg.protocol.warm_up_peers = args.warm_up_peers;
    cfg.protocol.eager_push = !args.no_eager_push;
    cfg.protocol.gossip_interval = Duration::from_millis(args.gossip_interval_ms);
    cfg.duration = Duration::from_secs(args.duration);
    cfg.scenario = match args.scenario {
        ScenarioKind::Update => Scenario::Update { at: UPDATE_AT },
        ScenarioKind::Crash => Scenario::Crash { at: CRASH_AT },
        ScenarioKind::UpdateCrash => Scenario::UpdateThenCrash {
            update_at: UPDATE_AT,
            crash_at: CRASH_AT,
        },
        ScenarioKind::Partition => Scenario::Partition {
            at: UPDATE_AT,
            heal_after: Duration::from_secs(args.heal_after),
            fraction: 0.5,
        },
        ScenarioKind::Idle => Scenario::Idle,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Body of `gossip-node simulate`: runs the simulation with a progress bar
/// on standard error (when it is a terminal) and prints the report.
///
/// # Errors
/// [`SimulateError::Sim`] for a configuration the simulator refuses
/// (nothing runs then), [`SimulateError::Plot`] if the SVG cannot be
/// written, [`SimulateError::Io`] if standard output cannot be written.
pub fn run(args: SimulateArgs) -> Result<(), SimulateError> {
    let cfg = sim_config(&args)?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} simulating {msg} [{bar:40}] {percent:>3}% {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("{} members", cfg.nodes));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let report = gossip_sim::run_scenario(&cfg, &mut |done| {
        bar.set_position((done.clamp(0.0, 1.0) * 1000.0) as u64);
    })?;
    bar.finish_and_clear();

    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&report)).map_err(|source| SimulateError::Plot {
            path: path.clone(),
            source,
        })?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        out.write_all(render(&report, std::io::stdout().is_terminal()).as_bytes())?;
        if let Some(path) = &args.plot {
            writeln!(out, "plot written to {}", path.display())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn table(tty: bool, header: &[&str]) -> Table {
    let mut t = crate::cli::term::new_table(tty);
    t.set_header(header.to_vec());
    t
}

fn opt_ms(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"))
}

fn traffic_row(what: &str, t: &TrafficReport) -> Vec<String> {
    vec![
        what.to_owned(),
        format!("{:.1}", t.seconds),
        format!("{:.2}", t.messages_per_member_per_sec),
        format!("{:.0}", t.bytes_per_member_per_sec),
        t.messages.to_string(),
        t.bytes.to_string(),
    ]
}

/// The report as text: a summary line and one table per measurement.
pub fn render(r: &Report, tty: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "simulated {} members (seed {}, loss {}{}, fanout {}, active view {}, warm-up {}, gossip every {} ms, probe every {} ms, eager push {}): {:.1} s of virtual time",
        r.nodes,
        r.seed,
        r.loss,
        if r.refusals { ", a crash refuses" } else { "" },
        r.fanout,
        r.active_view,
        r.warm_up_peers,
        r.gossip_interval_ms,
        r.probe_interval_ms,
        if r.eager_push { "on" } else { "off" },
        r.end.simulated_ms / 1e3,
    );
    if let Some(w) = &r.warmup {
        match (w.took_ms, w.rounds) {
            (Some(_), Some(_)) if r.bootstrap.converged => {
                let _ = writeln!(
                    out,
                    "warm-up: none, every member started with the full member list (--start converged)"
                );
            }
            (Some(ms), Some(rounds)) => {
                let _ = writeln!(
                    out,
                    "warm-up: every member listed every other one after {ms:.1} ms ({rounds:.1} rounds); \
                     {} pairs of members had exchanged a message (the handshakes a TLS or QUIC transport pays)",
                    w.traffic.new_pairs
                );
            }
            _ => {
                let _ = writeln!(out, "warm-up: membership did NOT converge");
            }
        }
    }
    for u in &r.updates {
        let _ = writeln!(
            out,
            "\nspread of a write by member {} ({}/{} members reached); push-pull bound log3(N) + ln ln N = {:.2} rounds",
            u.writer, u.reached, u.target, r.karp_bound_rounds
        );
        let mut t = table(tty, &["share", "rounds", "virtual time", "rounds / bound"]);
        let row = |share: &str, m: &Option<Milestone>, ratio: Option<f64>| {
            vec![
                share.to_owned(),
                m.as_ref()
                    .map_or_else(|| "-".to_owned(), |m| format!("{:.2}", m.rounds)),
                opt_ms(m.as_ref().map(|m| m.after_ms)),
                ratio.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
            ]
        };
        let ratio50 = u
            .p50
            .as_ref()
            .filter(|_| r.karp_bound_rounds > 0.0)
            .map(|m| m.rounds / r.karp_bound_rounds);
        t.add_row(row("50 %", &u.p50, ratio50));
        t.add_row(row("99 %", &u.p99, u.karp_ratio_p99));
        t.add_row(row("100 %", &u.p100, u.karp_ratio_p100));
        let _ = writeln!(out, "{t}");
    }
    let _ = writeln!(out, "\ntraffic sent, per member per second");
    let mut t = table(
        tty,
        &[
            "window",
            "seconds",
            "messages/member/s",
            "bytes/member/s",
            "messages",
            "bytes",
        ],
    );
    if let Some(rest) = &r.at_rest {
        t.add_row(traffic_row("at rest", rest));
    }
    t.add_row(traffic_row("measured period", &r.traffic));
    let _ = writeln!(out, "{t}");
    for c in &r.crashes {
        let _ = writeln!(
            out,
            "\ncrash of member {} (listed by {} members)",
            c.member, c.listed_at_crash
        );
        let mut t = table(
            tty,
            &[
                "first suspected",
                "first declared dead",
                "removed by all",
                "detection bound",
                "still listed by",
            ],
        );
        t.add_row(vec![
            opt_ms(c.first_suspected_after_ms),
            opt_ms(c.first_failed_after_ms),
            opt_ms(c.removed_by_all_after_ms),
            format!("{:.1} ms", c.detection_bound_ms),
            c.still_listed_by.to_string(),
        ]);
        let _ = writeln!(out, "{t}");
    }
    for p in &r.partitions {
        let _ = writeln!(out, "\npartition into {} groups", p.groups);
        let mut t = table(
            tty,
            &[
                "sides separated",
                "reconverged after heal",
                "false deaths after heal",
            ],
        );
        t.add_row(vec![
            opt_ms(p.separated_after_ms),
            opt_ms(p.reconverged_after_heal_ms),
            p.false_deaths_after_heal.to_string(),
        ]);
        let _ = writeln!(out, "{t}");
    }
    let _ = writeln!(
        out,
        "\nlive members wrongly declared dead: {} ({} distinct members); false suspicions (refuted): {}; membership at the end: {}",
        r.false_deaths,
        r.falsely_dead_members,
        r.false_suspicions,
        if r.end.membership_converged {
            "converged"
        } else {
            "NOT converged"
        }
    );
    for e in &r.end.action_errors {
        let _ = writeln!(out, "action not run: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
        let cli = crate::cli::Cli::try_parse_from(
            ["gossip-node", "simulate"].iter().chain(args).copied(),
        )?;
        match cli.command {
            crate::cli::Command::Simulate(a) => Ok(a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_parse_with_defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.nodes, 100);
        assert_eq!(a.scenario, ScenarioKind::UpdateCrash);
        assert_eq!(
            a.latency,
            LatencyModel::Uniform {
                min: Duration::from_micros(500),
                max: Duration::from_micros(1500)
            }
        );
        let a = parse(&[
            "--nodes",
            "7",
            "--loss",
            "0.25",
            "--latency",
            "2",
            "--no-eager-push",
        ])
        .unwrap();
        let cfg = sim_config(&a).unwrap();
        assert_eq!((cfg.nodes, cfg.loss), (7, 0.25));
        assert_eq!(
            cfg.latency,
            LatencyModel::Constant {
                delay: Duration::from_millis(2)
            }
        );
        assert!(!cfg.protocol.eager_push);
        let a = parse(&["--latency", "lognormal:1:0.5"]).unwrap();
        assert!(matches!(a.latency, LatencyModel::LogNormal { sigma, .. } if sigma == 0.5));
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--nodes", "0"][..],
            &["--nodes", "x"],
            &["--loss", "1.5"],
            &["--loss", "-0.1"],
            &["--loss", "NaN"],
            &["--fanout", "0"],
            &["--latency", "2..1"],
            &["--latency", "fast"],
            &["--latency", "lognormal:1:-1"],
            &["--scenario", "meteor"],
            &["--duration", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn render_shows_every_measurement() {
        let mut cfg = SimConfig::new(12, 3);
        cfg.duration = Duration::from_secs(12);
        let report = gossip_sim::run_scenario(&cfg, &mut |_| {}).unwrap();
        let text = render(&report, false);
        for needle in [
            "simulated 12 members",
            "spread of a write by member 0",
            "log3(N) + ln ln N = ",
            "99 %",
            "at rest",
            "crash of member 11",
            "removed by all",
            "wrongly declared dead: 0",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
    }
}
