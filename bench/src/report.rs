//! The result tables (one per gossip interval, with ratios ours / theirs),
//! the machine description, and the JSON report.

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::scenario::Outcome;

/// The machine the run happened on.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    /// Logical cores available to this process.
    pub(crate) cores: usize,
    /// CPU model, from `/proc/cpuinfo` (`unknown` elsewhere).
    pub(crate) cpu: String,
    /// Kernel release, from `/proc/sys/kernel/osrelease`.
    pub(crate) kernel: String,
}

impl Machine {
    /// Reads the machine description.
    pub(crate) fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
        }
    }
}

/// All results of one gossip interval.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct IntervalReport {
    /// The gossip interval of every system in this block, in ms.
    pub(crate) gossip_interval_ms: u64,
    /// Peers per round, both systems.
    pub(crate) fanout: usize,
    /// Ours: probe interval, in ms.
    pub(crate) probe_interval_ms: u64,
    /// Ours: probe timeout, in ms.
    pub(crate) probe_timeout_ms: u64,
    /// Ours: suspicion multiplier.
    pub(crate) suspicion_mult: u32,
    /// chitchat: phi threshold.
    pub(crate) phi_threshold: f64,
    /// One outcome per (system, N).
    pub(crate) outcomes: Vec<Outcome>,
}

/// The whole run, as written by `--json`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    /// Where it ran.
    pub(crate) machine: Machine,
    /// This project's version.
    pub(crate) gossip_version: String,
    /// chitchat's version.
    pub(crate) chitchat_version: String,
    /// What the byte counts include.
    pub(crate) bytes_counted: String,
    /// One block per gossip interval.
    pub(crate) intervals: Vec<IntervalReport>,
}

/// A table row: a metric's label and how to read it from an outcome.
struct Metric {
    label: &'static str,
    get: fn(&Outcome) -> Option<f64>,
    /// Whether a ratio ours / theirs makes sense.
    ratio: bool,
    decimals: usize,
    /// What a missing value means.
    missing: &'static str,
}

const METRICS: &[Metric] = &[
    Metric {
        label: "join: all see all N (ms)",
        get: |o| o.join_ms,
        ratio: true,
        decimals: 0,
        missing: "failed",
    },
    Metric {
        label: "CPU until joined (ms, process)",
        get: |o| o.join_cpu_ms,
        ratio: true,
        decimals: 0,
        missing: "n/a",
    },
    Metric {
        label: "key spread to all, median (ms)",
        get: |o| o.spread_median_ms,
        ratio: true,
        decimals: 1,
        missing: "failed",
    },
    Metric {
        label: "key spread to all, max (ms)",
        get: |o| o.spread_ms.iter().copied().reduce(f64::max),
        ratio: true,
        decimals: 1,
        missing: "failed",
    },
    Metric {
        label: "silent crash dropped by all (ms)",
        get: |o| o.detect_ms,
        ratio: true,
        decimals: 0,
        missing: "failed",
    },
    Metric {
        label: "bytes / member / s at rest",
        get: |o| o.rest_bytes_per_member_s,
        ratio: true,
        decimals: 0,
        missing: "failed",
    },
    Metric {
        label: "wire bytes / member / s at rest",
        get: |o| o.rest_wire_bytes_per_member_s,
        ratio: true,
        decimals: 0,
        missing: "n/a",
    },
    Metric {
        label: "messages / member / s at rest",
        get: |o| o.rest_messages_per_member_s,
        ratio: true,
        decimals: 1,
        missing: "failed",
    },
    Metric {
        label: "false deaths (observer count)",
        get: |o| Some(o.false_deaths as f64),
        ratio: false,
        decimals: 0,
        missing: "failed",
    },
];

fn fmt(x: Option<f64>, decimals: usize, missing: &str) -> String {
    x.map_or_else(|| missing.to_owned(), |v| format!("{v:.decimals$}"))
}

/// `ours / theirs`, also shown as `1/k` when below one half.
pub(crate) fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(o), Some(t)) if t > 0.0 => {
            let r = o / t;
            if r > 0.0 && r < 0.5 {
                format!("{r:.3} (1/{:.0})", 1.0 / r)
            } else {
                format!("{r:.2}")
            }
        }
        _ => "-".to_owned(),
    }
}

/// One table for one interval: rows (N, metric), a column per system, and a
/// ratio column per (ours, chitchat) pair.
pub(crate) fn table(block: &IntervalReport, systems: &[String]) -> Table {
    let ours: Vec<&String> = systems.iter().filter(|s| s.starts_with("ours")).collect();
    let theirs: Vec<&String> = systems
        .iter()
        .filter(|s| s.starts_with("chitchat"))
        .collect();
    let mut header = vec!["N".to_owned(), "metric".to_owned()];
    header.extend(systems.iter().cloned());
    for o in &ours {
        for t in &theirs {
            header.push(format!("{o} / {t}"));
        }
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header);
    let mut sizes: Vec<usize> = block.outcomes.iter().map(|o| o.n).collect();
    sizes.dedup();
    for n in sizes {
        let find = |s: &str| block.outcomes.iter().find(|o| o.n == n && o.system == s);
        for m in METRICS {
            let value = |s: &str| find(s).and_then(|o| (m.get)(o));
            let mut row = vec![Cell::new(n), Cell::new(m.label)];
            for s in systems {
                row.push(
                    Cell::new(fmt(value(s), m.decimals, m.missing))
                        .set_alignment(CellAlignment::Right),
                );
            }
            for o in &ours {
                for t in &theirs {
                    let r = if m.ratio {
                        ratio(value(o), value(t))
                    } else {
                        "-".to_owned()
                    };
                    row.push(Cell::new(r).set_alignment(CellAlignment::Right));
                }
            }
            table.add_row(row);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_below_one_also_read_as_a_fraction() {
        assert_eq!(ratio(Some(10.0), Some(320.0)), "0.031 (1/32)");
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50");
        assert_eq!(ratio(None, Some(2.0)), "-");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "-");
    }
}
