//! The figures of `gossip-node bench`, as JSON and as tables.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::BenchArgs;
use crate::cli::procs::{ProcUsage, ProcessCluster};
use crate::transport::TransportKind;

/// Everything `gossip-node bench` measured. Times are wall-clock
/// milliseconds on this machine.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchReport {
    /// Number of processes started.
    pub processes: usize,
    /// Transport name.
    pub transport: String,
    /// TLS mode.
    pub tls: String,
    /// Gossip interval of every node.
    pub gossip_interval_ms: u64,
    /// Probe interval of every node.
    pub probe_interval_ms: u64,
    /// Probe timeout of every node.
    pub probe_timeout_ms: u64,
    /// Suspicion multiplier of every node.
    pub suspicion_mult: u32,
    /// CPUs available to this machine (all processes share them).
    pub cpus: usize,
    /// Process ids of the nodes, in the order started (node 1 first).
    pub pids: Vec<u32>,
    /// From the first spawn until every admin endpoint answered.
    pub startup_ms: f64,
    /// Whether every node listed every node in time.
    pub converged: bool,
    /// From the first spawn until the last node listed every node.
    pub converged_ms: Option<f64>,
    /// Traffic and CPU at rest.
    pub at_rest: RestReport,
    /// The spread of a write.
    pub key: KeyReport,
    /// Failure detection.
    pub kill: KillReport,
    /// Counters of the survivors at the end.
    pub totals: Totals,
    /// CPU time and peak memory per process.
    pub resources: ResourceReport,
    /// How the processes ended.
    pub stop: StopReport,
}

/// Traffic and CPU over the rest window, from each node's own counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestReport {
    /// Mean length of the nodes' windows, s.
    pub seconds: f64,
    /// Nodes whose `/stats` answered at both ends.
    pub members_measured: usize,
    /// Messages sent by them in the window.
    pub messages_sent: u64,
    /// Bytes sent by them in the window.
    pub bytes_sent: u64,
    /// Messages sent per member per second.
    pub messages_sent_per_member_per_sec: f64,
    /// Bytes sent per member per second.
    pub bytes_sent_per_member_per_sec: f64,
    /// Messages received per member per second.
    pub messages_received_per_member_per_sec: f64,
    /// Bytes received per member per second.
    pub bytes_received_per_member_per_sec: f64,
    /// Sends that failed or timed out in the window (not counted as sent;
    /// a timed-out message may still arrive, so received can exceed sent).
    pub send_failures: u64,
    /// The same per member per second.
    pub send_failures_per_member_per_sec: f64,
    /// Mean CPU use of one process in the window, % of one CPU.
    pub cpu_percent_mean: f64,
    /// CPU use of all processes together, % of one CPU (`cpus` x 100 is
    /// a saturated machine).
    pub cpu_percent_total: f64,
}

/// The spread of one write.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyReport {
    /// The writing node, from 1.
    pub writer: usize,
    /// Nodes polled, the writer included.
    pub members: usize,
    /// Of which showed the write in time.
    pub reached: usize,
    /// Until half of the nodes showed it.
    pub p50_ms: Option<f64>,
    /// Until 99 % of the nodes showed it.
    pub p99_ms: Option<f64>,
    /// Until every node showed it.
    pub p100_ms: Option<f64>,
    /// Period of each node's poll.
    pub poll_ms: f64,
    /// Largest gap between the answer that showed the write and the start
    /// of the previous poll of that node: the worst resolution.
    pub resolution_max_ms: Option<f64>,
    /// Mean of those gaps.
    pub resolution_mean_ms: Option<f64>,
}

/// One killed node.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KilledMember {
    /// Its index, from 1.
    pub index: usize,
    /// Its gossip address.
    pub addr: String,
    /// Its process id.
    pub pid: u32,
    /// Until the first survivor no longer listed it as alive.
    pub first_suspected_ms: Option<f64>,
    /// Until no survivor listed it.
    pub removed_by_all_ms: Option<f64>,
}

/// Failure detection of the killed nodes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KillReport {
    /// The killed nodes.
    pub killed: Vec<KilledMember>,
    /// Nodes left running.
    pub survivors: usize,
    /// Largest `first_suspected_ms` (`None` if one was never suspected).
    pub first_suspected_max_ms: Option<f64>,
    /// Largest `removed_by_all_ms` (`None` if one was not removed by all).
    pub removed_by_all_max_ms: Option<f64>,
    /// Whether every killed node was removed by every survivor.
    pub all_removed: bool,
    /// The protocol's bound on removal, `Config::detection_bound(n)`.
    pub detection_bound_ms: f64,
    /// Survivors that some survivor failed to list at some poll meanwhile:
    /// live members wrongly suspected long enough to be dropped.
    pub live_members_dropped: usize,
    /// Period of each survivor's `/members` poll.
    pub poll_ms: f64,
}

/// Counters of the survivors at the end, summed over them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Survivors whose `/stats` answered.
    pub members: usize,
    /// Messages they sent since they started.
    pub messages_sent: u64,
    /// Bytes they sent since they started.
    pub bytes_sent: u64,
}

/// CPU time and peak memory per process, read from `/proc`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ResourceReport {
    /// Processes read (all of them on Linux).
    pub processes_read: usize,
    /// Wall-clock run time until the reading, s.
    pub wall_seconds: f64,
    /// Mean user + system CPU time per process, s.
    pub cpu_seconds_mean: f64,
    /// Largest, s.
    pub cpu_seconds_max: f64,
    /// Mean peak resident memory per process, MiB.
    pub peak_rss_mib_mean: f64,
    /// Largest, MiB.
    pub peak_rss_mib_max: f64,
}

/// How the processes ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StopReport {
    /// Survivors that left on SIGTERM with exit status 0.
    pub exited_cleanly: usize,
    /// Processes still running after the stop (0 unless something is
    /// badly wrong).
    pub left_running: usize,
    /// Time from SIGTERM to every process gone, ms (`None`: some had to be
    /// killed).
    pub all_exited_ms: Option<u64>,
}

impl BenchReport {
    /// An empty report for `args` and the started `pids`.
    pub(super) fn new(args: &BenchArgs, kind: TransportKind, n: usize, pids: Vec<u32>) -> Self {
        Self {
            processes: n,
            transport: kind.name().to_owned(),
            tls: args.tls.name().to_owned(),
            gossip_interval_ms: args.gossip_interval_ms,
            probe_interval_ms: args.probe_interval_ms,
            probe_timeout_ms: args.probe_timeout_ms,
            suspicion_mult: args.suspicion_mult,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            pids,
            ..Self::default()
        }
    }

    /// The report as text: a summary and one table per measurement.
    pub fn render(&self, tty: bool) -> String {
        let table = |header: &[&str]| {
            let mut t = crate::cli::term::new_table(tty);
            t.set_header(header.to_vec());
            t
        };
        let opt = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "gossip-node bench: {} processes over {} (TLS {}), gossip {} ms, probe {} ms, on {} CPUs",
            self.processes,
            self.transport,
            self.tls,
            self.gossip_interval_ms,
            self.probe_interval_ms,
            self.cpus
        );
        let _ = writeln!(
            out,
            "startup: all admin endpoints up after {:.0} ms; membership {}",
            self.startup_ms,
            match self.converged_ms {
                Some(t) => format!(
                    "converged (every node lists all {}) after {t:.0} ms",
                    self.processes
                ),
                None => "did NOT converge".to_owned(),
            }
        );
        let r = &self.at_rest;
        let _ = writeln!(
            out,
            "\nat rest, over {:.1} s ({} members measured)",
            r.seconds, r.members_measured
        );
        let mut t = table(&[
            "sent msgs/member/s",
            "sent bytes/member/s",
            "recv msgs/member/s",
            "recv bytes/member/s",
            "failed sends/member/s",
            "CPU per process",
            "CPU all processes",
        ]);
        t.add_row(vec![
            format!("{:.1}", r.messages_sent_per_member_per_sec),
            format!("{:.0}", r.bytes_sent_per_member_per_sec),
            format!("{:.1}", r.messages_received_per_member_per_sec),
            format!("{:.0}", r.bytes_received_per_member_per_sec),
            format!("{:.1}", r.send_failures_per_member_per_sec),
            format!("{:.1} %", r.cpu_percent_mean),
            format!(
                "{:.0} % of one CPU ({:.0} % of {} CPUs)",
                r.cpu_percent_total,
                r.cpu_percent_total / self.cpus.max(1) as f64,
                self.cpus
            ),
        ]);
        let _ = writeln!(out, "{t}");
        let k = &self.key;
        let _ = writeln!(
            out,
            "\nspread of a write by node {} ({}/{} nodes showed it)",
            k.writer, k.reached, k.members
        );
        let mut t = table(&[
            "50 %",
            "99 %",
            "100 %",
            "poll period",
            "resolution (mean / max)",
        ]);
        t.add_row(vec![
            opt(k.p50_ms),
            opt(k.p99_ms),
            opt(k.p100_ms),
            format!("{:.0} ms", k.poll_ms),
            format!(
                "{} / {}",
                opt(k.resolution_mean_ms),
                opt(k.resolution_max_ms)
            ),
        ]);
        let _ = writeln!(out, "{t}");
        let d = &self.kill;
        let _ = writeln!(
            out,
            "\nfailure detection: {} nodes killed with SIGKILL, {} survivors, detection bound {:.0} ms",
            d.killed.len(),
            d.survivors,
            d.detection_bound_ms
        );
        let mut t = table(&[
            "node",
            "pid",
            "first survivor stops listing it alive",
            "removed by every survivor",
        ]);
        for m in &d.killed {
            t.add_row(vec![
                m.index.to_string(),
                m.pid.to_string(),
                opt(m.first_suspected_ms),
                opt(m.removed_by_all_ms),
            ]);
        }
        let _ = writeln!(out, "{t}");
        let _ = writeln!(
            out,
            "live members dropped by some survivor meanwhile: {}",
            d.live_members_dropped
        );
        let s = &self.resources;
        let _ = writeln!(out, "\nper process, over {:.0} s", s.wall_seconds);
        let mut t = table(&[
            "CPU time mean",
            "CPU time max",
            "peak RSS mean",
            "peak RSS max",
        ]);
        t.add_row(vec![
            format!("{:.2} s", s.cpu_seconds_mean),
            format!("{:.2} s", s.cpu_seconds_max),
            format!("{:.1} MiB", s.peak_rss_mib_mean),
            format!("{:.1} MiB", s.peak_rss_mib_max),
        ]);
        let _ = writeln!(out, "{t}");
        let _ = writeln!(
            out,
            "totals of the {} survivors: {} messages, {} bytes sent; {} exited cleanly, {} left running; {}",
            self.totals.members,
            self.totals.messages_sent,
            self.totals.bytes_sent,
            self.stop.exited_cleanly,
            self.stop.left_running,
            self.stop.all_exited_ms.map_or_else(
                || "some had to be killed".to_owned(),
                |ms| format!("all gone {ms} ms after SIGTERM"),
            )
        );
        let _ = writeln!(
            out,
            "times are upper bounds: the first poll answer showing the change; with {} processes on {} CPUs they include scheduling delays",
            self.processes, self.cpus
        );
        out
    }
}

impl ResourceReport {
    /// Summary of per-process readings (`None`: not read).
    pub(super) fn of(usage: &[Option<ProcUsage>], wall: Duration) -> Self {
        let read: Vec<&ProcUsage> = usage.iter().flatten().collect();
        let n = read.len().max(1) as f64;
        let mib = |u: &ProcUsage| u.peak_rss_bytes as f64 / (1024.0 * 1024.0);
        Self {
            processes_read: read.len(),
            wall_seconds: wall.as_secs_f64(),
            cpu_seconds_mean: read.iter().map(|u| u.cpu.as_secs_f64()).sum::<f64>() / n,
            cpu_seconds_max: read.iter().map(|u| u.cpu.as_secs_f64()).fold(0.0, f64::max),
            peak_rss_mib_mean: read.iter().map(|u| mib(u)).sum::<f64>() / n,
            peak_rss_mib_max: read.iter().map(|u| mib(u)).fold(0.0, f64::max),
        }
    }
}

impl StopReport {
    /// How the processes of a stopped cluster ended.
    pub(super) fn of(cluster: &ProcessCluster) -> Self {
        Self {
            exited_cleanly: cluster
                .nodes()
                .iter()
                .filter(|n| n.status().is_some_and(|s| s.success()))
                .count(),
            left_running: cluster
                .nodes()
                .iter()
                .filter(|n| n.status().is_none())
                .count(),
            all_exited_ms: cluster.stop_took().map(|d| d.as_millis() as u64),
        }
    }
}
