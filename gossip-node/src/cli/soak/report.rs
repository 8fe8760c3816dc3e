//! The report of `gossip-node soak`: what was done to the members, what the
//! checks found, as tables or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::ledger::Mismatch;
use super::observe::{Death, Panic};

/// At most this many examples of each finding are kept in the report.
pub(super) const EXAMPLES: usize = 10;

/// What one soak run did and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakReport {
    /// Number of members.
    pub members: usize,
    /// Where they ran: `netns` (a namespace each) or `loopback`.
    pub network: String,
    /// The transport's name.
    pub transport: String,
    /// Seed of the choice of victims.
    pub seed: u64,
    /// Length of the churn, seconds (as asked).
    pub duration_s: u64,
    /// Members never killed, stopped or paused (gossip addresses).
    pub stable: Vec<String>,
    /// Members killed with SIGKILL (each then restarted).
    pub kills: usize,
    /// Members stopped with SIGTERM (each then restarted).
    pub terms: usize,
    /// Restarts.
    pub restarts: usize,
    /// Pauses: groups of members stopped with SIGSTOP, then SIGCONT.
    pub pauses: usize,
    /// Member-pauses (a pause of 3 members counts 3).
    pub paused_members: usize,
    /// The partitions: who was cut off, from when to when.
    pub cuts: Vec<Cut>,
    /// Members cut off, summed over the partitions.
    pub partitioned_members: usize,
    /// Writes sent (`PUT /kv/{key}`).
    pub writes: u64,
    /// Writes answered with success.
    pub writes_acked: u64,
    /// Keys of the live members' current lives checked at the end.
    pub keys_checked: usize,
    /// Time from the end of the churn (every member running again, writes
    /// stopped) until every live member showed every key and every member,
    /// ms; `None` if that did not happen within the settle timeout.
    pub converged_ms: Option<f64>,
    /// Total of keys not shown as written, over all live members, at the
    /// last check.
    pub mismatches: usize,
    /// Up to `EXAMPLES` of them.
    pub mismatch_examples: Vec<Mismatch>,
    /// Live members that did not list every live member at the last check.
    pub views_incomplete: usize,
    /// Lines of the logs that report a panic (up to `EXAMPLES`).
    pub panics: Vec<Panic>,
    /// Number of them.
    pub panic_count: usize,
    /// Deaths declared, over all members.
    pub deaths: usize,
    /// Deaths of a stable member (never disturbed) declared by another:
    /// false deaths (up to `EXAMPLES`).
    pub false_deaths: Vec<Death>,
    /// Number of them.
    pub false_death_count: usize,
    /// Deaths of a stable member declared by a member that was cut off at
    /// the time (or shortly after its heal): the partitions' doing, not
    /// counted as false deaths.
    pub partition_deaths: usize,
    /// Seconds into the churn at which the resident memory baseline was
    /// read.
    pub rss_baseline_at_s: u64,
    /// Resident memory of each stable member.
    pub rss: Vec<RssReport>,
    /// Largest growth of a stable member's resident memory from the
    /// baseline to the end, percent.
    pub rss_max_growth_pct: Option<f64>,
    /// The checks that failed, in words; empty if all passed.
    pub failures: Vec<String>,
}

/// One partition: members cut off from the rest (not from each other).
#[derive(Clone, Debug, Serialize)]
pub struct Cut {
    /// Their gossip addresses.
    pub members: Vec<String>,
    /// When they were cut off, Unix time in ms.
    pub start_ms: u64,
    /// When they were joined again, Unix time in ms.
    pub end_ms: Option<u64>,
}

impl Cut {
    /// Whether `death` was declared by one of these members while they were
    /// cut off or up to `grace_ms` after the heal (a cut still in place at
    /// the end covers everything after its start).
    pub fn covers(&self, death: &Death, grace_ms: u64) -> bool {
        self.members.contains(&death.observer)
            && death.at_ms.is_some_and(|t| {
                t >= self.start_ms
                    && self
                        .end_ms
                        .is_none_or(|end| t <= end.saturating_add(grace_ms))
            })
    }
}

/// Resident memory of one stable member.
#[derive(Clone, Debug, Serialize)]
pub struct RssReport {
    /// Its gossip address.
    pub member: String,
    /// `VmRSS` at the baseline, bytes.
    pub baseline_bytes: Option<u64>,
    /// `VmRSS` at the end of the churn, bytes.
    pub end_bytes: Option<u64>,
}

impl RssReport {
    /// Growth from baseline to end, percent.
    pub fn growth_pct(&self) -> Option<f64> {
        let (b, e) = (self.baseline_bytes?, self.end_bytes?);
        (b > 0).then(|| (e as f64 - b as f64) * 100.0 / b as f64)
    }
}

impl SoakReport {
    /// The report as text: a summary table and the failures.
    pub fn render(&self, tty: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "gossip-node soak: {} members over {} ({}), churn for {} s (seed {}); {} stable members",
            self.members,
            self.transport,
            self.network,
            self.duration_s,
            self.seed,
            self.stable.len()
        );
        let mut t = crate::cli::term::new_table(tty);
        t.set_header(vec!["what", "figure", "check"]);
        let ok = |pass: bool| if pass { "ok" } else { "FAILED" };
        let rows: Vec<(String, String, &str)> = vec![
            (
                "churn".into(),
                format!(
                    "{} SIGKILL, {} SIGTERM, {} restarts, {} pauses ({} members, SIGSTOP/SIGCONT), {} partitions ({} members cut off)",
                    self.kills,
                    self.terms,
                    self.restarts,
                    self.pauses,
                    self.paused_members,
                    self.cuts.len(),
                    self.partitioned_members
                ),
                "",
            ),
            (
                "writes".into(),
                format!("{} sent, {} answered", self.writes, self.writes_acked),
                "",
            ),
            (
                "keys of live members on every live member".into(),
                format!(
                    "{} keys; {} missing or stale; {} incomplete views; {}",
                    self.keys_checked,
                    self.mismatches,
                    self.views_incomplete,
                    match self.converged_ms {
                        Some(ms) => format!("converged {:.1} s after the churn", ms / 1e3),
                        None => "did NOT converge".to_owned(),
                    }
                ),
                ok(self.converged_ms.is_some()),
            ),
            (
                "panics in the logs".into(),
                self.panic_count.to_string(),
                ok(self.panic_count == 0),
            ),
            (
                "deaths declared (all / of stable members by cut-off members / false)".into(),
                format!(
                    "{} / {} / {}",
                    self.deaths, self.partition_deaths, self.false_death_count
                ),
                ok(!self.failures.iter().any(|f| f.starts_with("false deaths"))),
            ),
            (
                format!(
                    "RSS growth of stable members after {} s",
                    self.rss_baseline_at_s
                ),
                self.rss_max_growth_pct
                    .map_or_else(|| "-".to_owned(), |g| format!("at most {g:+.1} %")),
                ok(!self.failures.iter().any(|f| f.starts_with("RSS"))),
            ),
        ];
        for (what, figure, check) in rows {
            t.add_row(vec![what, figure, check.to_owned()]);
        }
        let _ = writeln!(out, "{t}");
        let mut rss = crate::cli::term::new_table(tty);
        rss.set_header(vec![
            "stable member",
            "RSS at baseline",
            "RSS at end",
            "growth",
        ]);
        let mib = |b: Option<u64>| {
            b.map_or_else(
                || "-".to_owned(),
                |b| format!("{:.1} MiB", b as f64 / 1048576.0),
            )
        };
        for r in &self.rss {
            rss.add_row(vec![
                r.member.clone(),
                mib(r.baseline_bytes),
                mib(r.end_bytes),
                r.growth_pct()
                    .map_or_else(|| "-".to_owned(), |g| format!("{g:+.1} %")),
            ]);
        }
        let _ = writeln!(out, "{rss}");
        for m in &self.mismatch_examples {
            let _ = writeln!(
                out,
                "missing or stale: {} shows {}'s {} as {:?}, expected {:?}",
                m.observer, m.owner, m.key, m.found, m.expected
            );
        }
        for p in &self.panics {
            let _ = writeln!(out, "panic in {}: {}", p.log, p.line);
        }
        for d in &self.false_deaths {
            let _ = writeln!(
                out,
                "false death: {} declared stable member {} (generation {}) dead",
                d.observer, d.member, d.generation
            );
        }
        if self.failures.is_empty() {
            let _ = writeln!(out, "all checks passed");
        } else {
            for f in &self.failures {
                let _ = writeln!(out, "FAILED: {f}");
            }
        }
        out
    }
}
