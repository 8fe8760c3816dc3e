//! How the simulator and the protocol scale: one simulated minute at 1,000
//! and at 10,000 members, without and with eager push, printing the wall
//! time per simulated minute and the dissemination, traffic and detection
//! figures.
//!
//! ```text
//! cargo run --release -p gossip-sim --example scale -- [options]
//!   --sizes 1000,10000    cluster sizes (default 1000,10000)
//!   --eager off,on        eager push settings (default off,on)
//!   --loss 0              loss rates; several give a false-death sweep
//!   --seed 1              network seed
//!   --settle 60           longest settling, seconds of virtual time
//!   --minutes 1           length of the measured period, in minutes
//!   --scenario update-crash   or `partition` (half the members cut off at
//!                         5 s for 30 s) or `idle`
//!   --start cold          or `converged`: every member starts with the full
//!                         member list (see `Bootstrap::converged`)
//!   --mem-limit-gb G      stop a run whose resident memory passes G GB
//!                         (default: 85 % of MemAvailable)
//! ```
//!
//! Each run: warm-up until full membership, settling until the piggyback
//! queues are empty and the gossip rounds have stopped, then the measured
//! period with a write by member 0 at 5 s and a crash of the last member at
//! 10 s. A run that passes the memory limit stops there and reports how far
//! it got (full membership tables and piggyback queues cost the machines
//! about 0.9 KB per member pair: 0.9 GB at 1,000 members, 60 to 90 GB at
//! 10,000).

use std::time::{Duration, Instant};

use gossip_sim::{Report, Scenario, SimConfig, Simulation, TrafficReport};

/// How the simulator and the protocol scale (see the module doc).
#[derive(Debug, clap::Parser)]
#[command(name = "scale")]
struct Opts {
    /// Cluster sizes.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    sizes: Vec<usize>,
    /// Eager push settings, `on` or `off`.
    #[arg(long, value_delimiter = ',', default_value = "off,on", value_parser = on_off)]
    eager: Vec<bool>,
    /// Loss rates; several give a false-death sweep.
    #[arg(long = "loss", value_delimiter = ',', default_value = "0")]
    losses: Vec<f64>,
    /// Network seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Longest settling, in seconds of virtual time.
    #[arg(long = "settle", default_value_t = 60)]
    settle_secs: u64,
    /// Length of the measured period, in minutes.
    #[arg(long, default_value_t = 1)]
    minutes: u32,
    /// Stop a run whose resident memory passes this many GB (default: 85 %
    /// of MemAvailable).
    #[arg(long = "mem-limit-gb")]
    mem_limit_gb: Option<f64>,
    /// What the measured period holds.
    #[arg(long, value_enum, default_value_t = ScenarioArg::UpdateCrash)]
    scenario: ScenarioArg,
    /// How the members start: `cold`, or `converged` (every member starts
    /// with the full member list; see `Bootstrap::converged`).
    #[arg(long = "start", value_enum, default_value_t = Start::Cold)]
    start: Start,
}

/// The scenario of the measured period.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ScenarioArg {
    /// A write by member 0 at 5 s, a crash of the last member at 10 s.
    UpdateCrash,
    /// Half the members cut off at 5 s for 30 s.
    Partition,
    /// Nothing happens.
    Idle,
}

/// How the members start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Start {
    /// Each knows its seeds only.
    Cold,
    /// Each knows every member.
    Converged,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("`{s}`: expected on or off")),
    }
}

impl Opts {
    fn settle(&self) -> Duration {
        Duration::from_secs(self.settle_secs)
    }

    fn converged(&self) -> bool {
        self.start == Start::Converged
    }

    /// The memory limit in bytes.
    fn mem_limit(&self) -> u64 {
        match self.mem_limit_gb {
            Some(g) => (g * (1u64 << 30) as f64) as u64,
            None => meminfo("MemAvailable").unwrap_or(8 << 30) / 100 * 85,
        }
    }
}

/// A field of /proc/meminfo, in bytes (Linux only).
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident set size of this process, in bytes (Linux only).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn gb(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

fn main() {
    let o = <Opts as clap::Parser>::parse();
    println!(
        "memory limit {:.1} GB; {} core(s)",
        gb(o.mem_limit()),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for &n in &o.sizes {
        for &eager in &o.eager {
            for &loss in &o.losses {
                run(&o, n, eager, loss);
            }
        }
    }
}

fn traffic(label: &str, t: &TrafficReport) {
    let kinds: Vec<String> = t
        .by_kind
        .iter()
        .map(|(k, r)| {
            format!(
                "{k} {:.2}/{:.0}B",
                r.messages_per_member_per_sec, r.bytes_per_member_per_sec
            )
        })
        .collect();
    println!(
        "  {label}: {:.2} msg/member/s, {:.0} B/member/s (piggyback {:.0}) over {:.1} s; {}",
        t.messages_per_member_per_sec,
        t.bytes_per_member_per_sec,
        t.piggyback_bytes_per_member_per_sec,
        t.seconds,
        kinds.join(", ")
    );
}

fn run(o: &Opts, n: usize, eager: bool, loss: f64) {
    let mut cfg = SimConfig::new(n, o.seed);
    cfg.bootstrap.converged = o.converged();
    cfg.protocol.eager_push = eager;
    cfg.loss = loss;
    cfg.duration = Duration::from_secs(60) * o.minutes;
    cfg.scenario = match o.scenario {
        ScenarioArg::UpdateCrash => Scenario::UpdateThenCrash {
            update_at: Duration::from_secs(5),
            crash_at: Duration::from_secs(10),
        },
        ScenarioArg::Partition => Scenario::Partition {
            at: Duration::from_secs(5),
            heal_after: Duration::from_secs(30),
            fraction: 0.5,
        },
        ScenarioArg::Idle => Scenario::Idle,
    };
    println!(
        "\n== {n} members, eager push {eager}, loss {loss}, seed {}",
        o.seed
    );
    let limit = o.mem_limit();
    let over = std::cell::Cell::new(false);
    let mut watch = |s: &Simulation| {
        let r = rss();
        if r > limit {
            over.set(true);
            println!(
                "  STOPPED: resident memory {:.1} GB > limit {:.1} GB at {:.3} s virtual \
                 (membership {:.1} % of pairs, {} events)",
                gb(r),
                gb(limit),
                s.now().as_secs_f64(),
                100.0 * s.membership_fraction(),
                s.events_processed()
            );
        }
        !over.get()
    };

    let wall = Instant::now();
    let mut sim = Simulation::new(&cfg).expect("valid configuration");
    let created = wall.elapsed();
    let wall = Instant::now();
    let warm = sim.warm_up_with(cfg.warmup, &mut watch);
    let warm_wall = wall.elapsed();
    println!(
        "  warm-up: {} (virtual), wall {:.1} s (+{:.2} s to create), {} events, RSS {:.2} GB, \
         piggyback backlog {}",
        warm.map_or("not converged".into(), |d| format!(
            "full membership after {:.0} ms = {:.1} rounds",
            d.as_secs_f64() * 1e3,
            d.as_secs_f64() / cfg.protocol.gossip_interval.as_secs_f64()
        )),
        warm_wall.as_secs_f64(),
        created.as_secs_f64(),
        sim.events_processed(),
        gb(rss()),
        sim.piggyback_backlog()
    );
    if over.get() || warm.is_none() {
        let virt = sim.now().as_secs_f64();
        println!(
            "  wall per simulated second of warm-up: {:.1} s",
            warm_wall.as_secs_f64() / virt.max(1e-9)
        );
        return;
    }
    let wall = Instant::now();
    let settled = sim.settle_with(o.settle(), &mut watch);
    println!(
        "  settle: {} , wall {:.1} s, RSS {:.2} GB",
        settled.map_or(
            format!(
                "queues NOT drained within {} s (backlog {})",
                o.settle_secs,
                sim.piggyback_backlog()
            ),
            |d| format!(
                "at rest (queues drained, rounds stopped) after {:.2} s virtual",
                d.as_secs_f64()
            )
        ),
        wall.elapsed().as_secs_f64(),
        gb(rss())
    );
    if over.get() {
        return;
    }
    sim.begin_measurement();
    let begin = sim.now();
    for s in cfg.scenario.actions(n) {
        sim.schedule(begin + s.at, s.action).expect("valid action");
    }
    let wall = Instant::now();
    let events = sim.events_processed();
    let end = begin + cfg.duration;
    let mut t = begin;
    while t < end && !over.get() {
        t = (t + Duration::from_secs(1)).min(end);
        sim.run_until(t);
        watch(&sim);
    }
    let measured = wall.elapsed();
    let virt = (sim.now() - begin).as_secs_f64();
    println!(
        "  measured: {:.1} s virtual, wall {:.1} s = {:.1} s per simulated minute, {} events \
         ({:.2} us/event), RSS {:.2} GB",
        virt,
        measured.as_secs_f64(),
        measured.as_secs_f64() * 60.0 / virt.max(1e-9),
        sim.events_processed() - events,
        measured.as_secs_f64() * 1e6 / (sim.events_processed() - events).max(1) as f64,
        gb(rss())
    );
    print_report(&sim.report());
}

fn print_report(r: &Report) {
    if let Some(w) = &r.warmup {
        traffic("warm-up traffic", &w.traffic);
    }
    if let Some(s) = &r.settle {
        traffic("settle traffic", &s.traffic);
    }
    if let Some(t) = &r.at_rest {
        traffic("at rest", t);
    }
    traffic("measured", &r.traffic);
    for u in &r.updates {
        let m = |x: &Option<gossip_sim::Milestone>| {
            x.as_ref().map_or("never".into(), |m| {
                format!("{:.1} ms = {:.3} rounds", m.after_ms, m.rounds)
            })
        };
        println!(
            "  update: reached {}/{}; 50 % {}; 99 % {}; 100 % {}; Karp bound {:.2} rounds, \
             ratio p99 {:.3}, p100 {:.3}",
            u.reached,
            u.target,
            m(&u.p50),
            m(&u.p99),
            m(&u.p100),
            r.karp_bound_rounds,
            u.karp_ratio_p99.unwrap_or(f64::NAN),
            u.karp_ratio_p100.unwrap_or(f64::NAN)
        );
    }
    for c in &r.crashes {
        let ms = |x: Option<f64>| x.map_or("never".into(), |v| format!("{:.0} ms", v));
        println!(
            "  crash of {}: first suspected after {}, first failed after {}, removed by all after \
             {} (protocol bound {:.0} ms); still listed by {}",
            c.member,
            ms(c.first_suspected_after_ms),
            ms(c.first_failed_after_ms),
            ms(c.removed_by_all_after_ms),
            c.detection_bound_ms,
            c.still_listed_by
        );
    }
    for p in &r.partitions {
        let ms = |x: Option<f64>| x.map_or("never".into(), |v| format!("{:.0} ms", v));
        println!(
            "  partition into {} groups: sides dropped each other after {}; after the heal, one \
             view again after {}; {} false deaths after the heal (stale verdicts)",
            p.groups,
            ms(p.separated_after_ms),
            ms(p.reconverged_after_heal_ms),
            p.false_deaths_after_heal
        );
    }
    println!(
        "  false deaths {} ({} members; {} over the whole run), false suspicions {}, drops: \
         loss {}, to crashed {}",
        r.false_deaths,
        r.falsely_dead_members,
        r.end.false_deaths_total,
        r.false_suspicions,
        r.drops.loss,
        r.drops.receiver_down
    );
}
