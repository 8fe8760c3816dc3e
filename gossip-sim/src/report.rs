//! The figures of a run, and the one-call driver that produces them.

use std::collections::BTreeMap;
use std::time::Duration;

use gossip_core::MessageKind;
use serde::Serialize;

use crate::config::{Bootstrap, LatencyModel, Scenario, SimConfig, nanos};
use crate::error::SimError;
use crate::sim::{Counters, PhaseMark, Simulation};

/// Rounds of push-pull gossip needed to spread a rumor to all `n` members
/// with high probability: `log3(n) + ln(ln(n))` (Karp, Schindelhauer, Shenker
/// and Vöcking, "Randomized rumor spreading", FOCS 2000), for the model in
/// which every member calls one random partner per round. 0 for `n < 2`.
///
/// Our members call `fanout` partners per round (3 by default), so they can
/// beat the bound; a ratio above 1 means dissemination slower than the
/// one-call model.
///
/// ```
/// let b = gossip_sim::karp_bound_rounds(1000);
/// assert!((b - 8.22).abs() < 0.01, "{b}");
/// ```
pub fn karp_bound_rounds(n: usize) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let ln = (n as f64).ln();
    (ln / 3f64.ln() + ln.ln()).max(0.0)
}

/// Everything measured in one run. Times are virtual, in milliseconds, and
/// relative to the event they follow; rounds are times divided by the gossip
/// interval. Identical for identical configurations (no wall-clock figure is
/// included).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Cluster size.
    pub nodes: usize,
    /// Network seed.
    pub seed: u64,
    /// Loss rate at the start.
    pub loss: f64,
    /// Whether a crashed member's address refuses messages
    /// ([`SimConfig::refusals`](crate::SimConfig::refusals)).
    pub refusals: bool,
    /// Latency model.
    pub latency: LatencyModel,
    /// Protocol gossip interval.
    pub gossip_interval_ms: f64,
    /// Protocol probe interval.
    pub probe_interval_ms: f64,
    /// Protocol fanout.
    pub fanout: usize,
    /// Size of the active view (`Config::active_view`; 0: every peer of a
    /// round uniformly random).
    pub active_view: usize,
    /// Peers contacted ahead of need once quiet (`Config::warm_up_peers`;
    /// 0: off).
    pub warm_up_peers: usize,
    /// Whether fresh writes are pushed eagerly.
    pub eager_push: bool,
    /// How the members started (seeds, stagger, converged start).
    pub bootstrap: Bootstrap,
    /// The scenario of the measured period (empty if none was given).
    pub scenario: Option<Scenario>,
    /// [`karp_bound_rounds`] of `nodes`.
    pub karp_bound_rounds: f64,
    /// The warm-up: membership convergence from a cold start.
    pub warmup: Option<PhaseReport>,
    /// Settling: until every piggyback queue is empty.
    pub settle: Option<PhaseReport>,
    /// Traffic of the measured period (of the whole run if no measured
    /// period was begun).
    pub traffic: TrafficReport,
    /// Traffic from the start of the measured period to its first action:
    /// the cost at rest. `None` if no action ran or the window is empty.
    pub at_rest: Option<TrafficReport>,
    /// Tracked writes.
    pub updates: Vec<UpdateReport>,
    /// Tracked crashes.
    pub crashes: Vec<CrashReport>,
    /// Tracked partitions.
    pub partitions: Vec<PartitionReport>,
    /// `Failed` events (in the measured period) about a running member in
    /// its current life, reachable by the observer (same side of any
    /// partition): live members wrongly declared dead.
    pub false_deaths: u64,
    /// Distinct members wrongly declared dead at least once in the measured
    /// period.
    pub falsely_dead_members: usize,
    /// `Failed` events (in the measured period) about running members on the
    /// other side of a partition: expected, not wrong.
    pub partition_deaths: u64,
    /// `Suspected` events (in the measured period) about running, reachable
    /// members; Lifeguard expects some, refuted by the member.
    pub false_suspicions: u64,
    /// Messages that were sent but not delivered, in the measured period.
    pub drops: DropReport,
    /// State at the end of the run.
    pub end: EndReport,
}

/// A phase before the measured period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseReport {
    /// Whether the phase reached its goal (warm-up: full membership;
    /// settle: empty piggyback queues, no member active) within its limit.
    pub done: bool,
    /// Warm-up: virtual time from the start of the simulation to full
    /// membership. Settle: virtual time the cluster took to come to rest.
    pub took_ms: Option<f64>,
    /// `took_ms` in gossip rounds.
    pub rounds: Option<f64>,
    /// Traffic of the phase.
    pub traffic: TrafficReport,
    /// Warm-up only: share of (observer, member) pairs in which the observer
    /// lists the member, over time since the start (one point per 0.1 %).
    pub series: Vec<SeriesPoint>,
}

/// Message rates over a window, per running member and second of virtual
/// time. Messages are counted when sent, lost ones included.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrafficReport {
    /// Length of the window.
    pub seconds: f64,
    /// Mean number of running members over the window.
    pub mean_members: f64,
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent (protobuf encoded size of each envelope).
    pub bytes: u64,
    /// Messages per member per second.
    pub messages_per_member_per_sec: f64,
    /// Bytes per member per second.
    pub bytes_per_member_per_sec: f64,
    /// Of which piggybacked membership updates and broadcasts.
    pub piggyback_bytes_per_member_per_sec: f64,
    /// Pairs of members that exchanged their first message in the window:
    /// the connections (and handshakes) a connection-oriented transport
    /// would open (`Traffic::pairs`).
    pub new_pairs: u64,
    /// By message kind (`ping`, `ack`, `ping_req`, `sync_request`, `sync_buckets`,
    /// `sync_digest`, `delta`, `gossip`); kinds never sent are left out.
    pub by_kind: BTreeMap<&'static str, KindRate>,
}

/// Rates of one message kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindRate {
    /// Messages sent.
    pub messages: u64,
    /// Messages per member per second.
    pub messages_per_member_per_sec: f64,
    /// Bytes per member per second.
    pub bytes_per_member_per_sec: f64,
    /// Mean encoded size.
    pub mean_bytes: f64,
}

/// A point of a time series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Virtual time, ms, relative to the series' origin.
    pub t_ms: f64,
    /// Share reached, in `[0, 1]`.
    pub fraction: f64,
}

/// When a share of the members was reached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Milestone {
    /// Virtual time since the write.
    pub after_ms: f64,
    /// The same in gossip rounds.
    pub rounds: f64,
}

/// The spread of one write.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpdateReport {
    /// The writing member.
    pub writer: usize,
    /// The key.
    pub key: String,
    /// The write's version.
    pub version: u64,
    /// Virtual time of the write, from the start of the simulation.
    pub at_ms: f64,
    /// Members counted: running at the write and not crashed since (the
    /// writer included).
    pub target: u64,
    /// Of which have seen the write (`Event::KeyChanged`).
    pub reached: u64,
    /// Half of them had it.
    pub p50: Option<Milestone>,
    /// 99 % had it.
    pub p99: Option<Milestone>,
    /// All had it.
    pub p100: Option<Milestone>,
    /// `p99` rounds over [`karp_bound_rounds`].
    pub karp_ratio_p99: Option<f64>,
    /// `p100` rounds over [`karp_bound_rounds`].
    pub karp_ratio_p100: Option<f64>,
    /// Share of the target that has it, over time since the write (one
    /// point per 0.1 %, starting at (0, 0)).
    pub series: Vec<SeriesPoint>,
}

/// The detection and removal of one crashed member.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CrashReport {
    /// The member.
    pub member: usize,
    /// Virtual time of the crash, from the start of the simulation.
    pub at_ms: f64,
    /// Running members listing it at the crash.
    pub listed_at_crash: u64,
    /// Until the first `Event::Suspected` about it.
    pub first_suspected_after_ms: Option<f64>,
    /// Until the first `Event::Failed` about it.
    pub first_failed_after_ms: Option<f64>,
    /// Until no running member listed it any more.
    pub removed_by_all_after_ms: Option<f64>,
    /// Running members still listing it at the end.
    pub still_listed_by: u64,
    /// `Failed` events about it.
    pub failed_events: u64,
    /// Times a member listed it again after dropping it.
    pub relisted: u64,
    /// The protocol's own bound on removal
    /// (`Config::detection_bound(nodes)`).
    pub detection_bound_ms: f64,
}

/// One partition and its healing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PartitionReport {
    /// Virtual time of the split, from the start of the simulation.
    pub at_ms: f64,
    /// Number of groups (including group 0, the members in no range).
    pub groups: usize,
    /// Until no running member listed anyone across the cut.
    pub separated_after_ms: Option<f64>,
    /// Virtual time of the heal, from the start of the simulation.
    pub healed_at_ms: Option<f64>,
    /// From the heal until every running member listed every running
    /// member again.
    pub reconverged_after_heal_ms: Option<f64>,
    /// False deaths (counted in [`Report::false_deaths`] too) after the
    /// heal: members declared dead by the other side during the partition
    /// and, once the sides talk again, by their own side as the stale
    /// verdicts arrive, until they refute.
    pub false_deaths_after_heal: u64,
}

/// Messages lost, by cause, in the measured period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DropReport {
    /// Random loss.
    pub loss: u64,
    /// Sender and receiver on different sides of a partition at delivery.
    pub partition: u64,
    /// Receiver crashed at delivery.
    pub receiver_down: u64,
    /// Address of no member.
    pub unknown_address: u64,
}

/// State at the end of the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndReport {
    /// Virtual time.
    pub simulated_ms: f64,
    /// Running members.
    pub running: usize,
    /// Every running member lists exactly the running members.
    pub membership_converged: bool,
    /// Share of (observer, member) pairs listed.
    pub membership_fraction: f64,
    /// Heap entries processed.
    pub events_processed: u64,
    /// Machines whose deadline did not move past `now` after
    /// `handle_timeout(now)` (a machine bug if not zero).
    pub timer_stalls: u64,
    /// `Failed` events about running, reachable members over the whole run
    /// (warm-up and settling included).
    pub false_deaths_total: u64,
    /// Actions that could not run (writer not running, ...).
    pub action_errors: Vec<String>,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Simulation {
    fn rounds(&self, ns: u64) -> f64 {
        ns as f64 / nanos(self.cfg.protocol.gossip_interval).max(1) as f64
    }

    fn traffic(a: &Counters, b: &Counters) -> TrafficReport {
        let seconds = ms(b.at - a.at) / 1e3;
        let member_s = (b.member_ns - a.member_ns) as f64 / 1e9;
        let per = |x: u64| {
            if member_s > 0.0 {
                x as f64 / member_s
            } else {
                0.0
            }
        };
        let (a, b) = (&a.traffic, &b.traffic);
        let mut by_kind = BTreeMap::new();
        for kind in MessageKind::ALL {
            let m = b.sent.messages(kind) - a.sent.messages(kind);
            let by = b.sent.bytes(kind) - a.sent.bytes(kind);
            if m > 0 {
                by_kind.insert(
                    kind.as_str(),
                    KindRate {
                        messages: m,
                        messages_per_member_per_sec: per(m),
                        bytes_per_member_per_sec: per(by),
                        mean_bytes: by as f64 / m as f64,
                    },
                );
            }
        }
        let messages = b.messages() - a.messages();
        let bytes = b.bytes() - a.bytes();
        TrafficReport {
            seconds,
            mean_members: if seconds > 0.0 {
                member_s / seconds
            } else {
                0.0
            },
            messages,
            bytes,
            messages_per_member_per_sec: per(messages),
            bytes_per_member_per_sec: per(bytes),
            piggyback_bytes_per_member_per_sec: per(b.piggyback_bytes - a.piggyback_bytes),
            new_pairs: b.pairs - a.pairs,
            by_kind,
        }
    }

    fn phase(&self, m: &PhaseMark, series: Vec<SeriesPoint>) -> PhaseReport {
        PhaseReport {
            done: m.done_at.is_some(),
            took_ms: m.done_at.map(ms),
            rounds: m.done_at.map(|t| self.rounds(t)),
            traffic: Self::traffic(&m.start, &m.end),
            series,
        }
    }

    /// The figures so far. Call after the run; it can be called at any time.
    pub fn report(&mut self) -> Report {
        let now = self.snapshot();
        let start = self.window.clone().unwrap_or_default();
        let n = self.nodes.len();
        let karp = karp_bound_rounds(n);
        let gossip = &self.cfg.protocol;
        let warmup = self.warmup_mark.as_ref().map(|m| {
            let series = self
                .obs
                .warmup_series
                .iter()
                .map(|&(t, f)| SeriesPoint {
                    t_ms: ms(t),
                    fraction: f,
                })
                .collect();
            self.phase(m, series)
        });
        let settle = self.settle_mark.as_ref().map(|m| self.phase(m, Vec::new()));
        let at_rest = match (&self.window, &self.rest_end) {
            (Some(w), Some(r)) if r.at > w.at => Some(Self::traffic(w, r)),
            _ => None,
        };
        let updates = self
            .obs
            .updates
            .iter()
            .map(|t| {
                let milestone = |x: Option<u64>| {
                    x.map(|ns| Milestone {
                        after_ms: ms(ns),
                        rounds: self.rounds(ns),
                    })
                };
                let ratio =
                    |x: Option<u64>| x.filter(|_| karp > 0.0).map(|ns| self.rounds(ns) / karp);
                UpdateReport {
                    writer: t.owner,
                    key: t.key.clone(),
                    version: t.version,
                    at_ms: ms(t.at),
                    target: t.target,
                    reached: t.reached,
                    p50: milestone(t.t50),
                    p99: milestone(t.t99),
                    p100: milestone(t.t100),
                    karp_ratio_p99: ratio(t.t99),
                    karp_ratio_p100: ratio(t.t100),
                    series: t
                        .series
                        .iter()
                        .map(|&(t, f)| SeriesPoint {
                            t_ms: ms(t),
                            fraction: f,
                        })
                        .collect(),
                }
            })
            .collect();
        let bound = ms(nanos(gossip.detection_bound(n)));
        let crashes = self
            .obs
            .crashes
            .iter()
            .map(|c| CrashReport {
                member: c.member,
                at_ms: ms(c.at),
                listed_at_crash: c.listed_at_crash,
                first_suspected_after_ms: c.first_suspected.map(|t| ms(t - c.at)),
                first_failed_after_ms: c.first_failed.map(|t| ms(t - c.at)),
                removed_by_all_after_ms: c.removed.map(|t| ms(t - c.at)),
                still_listed_by: c.remaining,
                failed_events: c.failed_events,
                relisted: c.relisted,
                detection_bound_ms: bound,
            })
            .collect();
        let partitions = self
            .obs
            .partitions
            .iter()
            .map(|p| PartitionReport {
                at_ms: ms(p.at),
                groups: p.groups,
                separated_after_ms: p.separated.map(|t| ms(t - p.at)),
                healed_at_ms: p.healed.map(ms),
                reconverged_after_heal_ms: p.reconverged.zip(p.healed).map(|(r, h)| ms(r - h)),
                false_deaths_after_heal: p.false_deaths_after_heal,
            })
            .collect();
        let falsely_dead_members = self
            .obs
            .falsely_dead
            .iter()
            .filter(|t| t.is_some_and(|t| t >= start.at))
            .count();
        Report {
            nodes: n,
            seed: self.cfg.seed,
            loss: self.cfg.loss,
            refusals: self.cfg.refusals,
            latency: self.cfg.latency.clone(),
            gossip_interval_ms: ms(nanos(gossip.gossip_interval)),
            probe_interval_ms: ms(nanos(gossip.probe_interval)),
            fanout: gossip.fanout,
            active_view: gossip.active_view,
            warm_up_peers: gossip.warm_up_peers,
            eager_push: gossip.eager_push,
            bootstrap: self.cfg.bootstrap.clone(),
            scenario: self.window.as_ref().map(|_| self.cfg.scenario.clone()),
            karp_bound_rounds: karp,
            warmup,
            settle,
            traffic: Self::traffic(&start, &now),
            at_rest,
            updates,
            crashes,
            partitions,
            false_deaths: now.false_deaths - start.false_deaths,
            falsely_dead_members,
            partition_deaths: now.partition_deaths - start.partition_deaths,
            false_suspicions: now.false_suspicions - start.false_suspicions,
            drops: DropReport {
                loss: now.traffic.dropped_loss - start.traffic.dropped_loss,
                partition: now.traffic.dropped_partition - start.traffic.dropped_partition,
                receiver_down: now.traffic.dropped_down - start.traffic.dropped_down,
                unknown_address: now.traffic.dropped_unknown - start.traffic.dropped_unknown,
            },
            end: EndReport {
                simulated_ms: ms(self.h.now_ns()),
                running: self.running,
                membership_converged: self.obs.converged,
                membership_fraction: self.obs.pair_fraction(self.running),
                events_processed: self.h.processed(),
                timer_stalls: self.h.stalls(),
                false_deaths_total: now.false_deaths,
                action_errors: self.action_errors.clone(),
            },
        }
    }
}

/// Runs the simulation `cfg` describes, in four phases, and reports:
///
/// 1. start every member (see [`Bootstrap`](crate::Bootstrap)) and warm up
///    until every member lists every other one (at most `cfg.warmup`);
/// 2. settle until every piggyback queue is empty and every member's gossip
///    rounds have stopped (at most `cfg.settle`);
/// 3. begin the measured period and schedule `cfg.scenario` relative to it;
/// 4. run for `cfg.duration`.
///
/// `progress` is called with the share of the run done, from 0 to 1, about
/// every 0.5 % (phases that end early skip ahead), so a caller can draw a
/// progress bar.
///
/// # Errors
/// Whatever [`SimConfig::validate`] refuses; nothing runs then.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use gossip_sim::{Scenario, SimConfig, run_scenario};
///
/// let mut cfg = SimConfig::new(30, 1);
/// cfg.duration = Duration::from_secs(3);
/// cfg.scenario = Scenario::Update { at: Duration::from_secs(1) };
/// let report = run_scenario(&cfg, &mut |_done| {}).unwrap();
/// let u = &report.updates[0];
/// assert_eq!(u.reached, u.target);
/// assert!(u.p50.as_ref().unwrap().after_ms <= u.p100.as_ref().unwrap().after_ms);
/// ```
pub fn run_scenario(cfg: &SimConfig, progress: &mut dyn FnMut(f64)) -> Result<Report, SimError> {
    let mut sim = Simulation::new(cfg)?;
    let total = (nanos(cfg.warmup) + nanos(cfg.settle) + nanos(cfg.duration)).max(1) as f64;
    progress(0.0);
    let t0 = sim.h.now_ns();
    sim.warm_up_with(cfg.warmup, &mut |s| {
        progress((s.h.now_ns() - t0) as f64 / total);
        true
    });
    let offset = nanos(cfg.warmup);
    let t1 = sim.h.now_ns();
    sim.settle_with(cfg.settle, &mut |s| {
        progress((offset + (s.h.now_ns() - t1)) as f64 / total);
        true
    });
    let offset = offset + nanos(cfg.settle);
    sim.begin_measurement();
    let begin = sim.now();
    for s in cfg.scenario.actions(cfg.nodes) {
        sim.schedule(begin + s.at, s.action)?;
    }
    let end = begin + cfg.duration;
    let slice = (cfg.duration / 200).max(Duration::from_millis(1));
    let mut t = begin;
    while t < end {
        t = (t + slice).min(end);
        sim.run_until(t);
        progress((offset + nanos(t - begin)) as f64 / total);
    }
    progress(1.0);
    Ok(sim.report())
}
