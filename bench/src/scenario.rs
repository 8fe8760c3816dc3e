//! The scenarios, run the same way against any [`Cluster`]: join, traffic at
//! rest, spread of a key, detection of a silent crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{Cluster, Sightings, Traffic};
use crate::error::BenchError;
use crate::wire;

/// How long each phase runs or may take.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Settling time after the join before traffic at rest is measured.
    pub(crate) warmup: Duration,
    /// Window over which traffic at rest is measured.
    pub(crate) rest_window: Duration,
    /// Keys set one after another (spread repetitions).
    pub(crate) repetitions: usize,
    /// Pause between two repetitions, so one key's repair traffic is over
    /// before the next is set.
    pub(crate) pause: Duration,
    /// Longest wait for the join.
    pub(crate) join_limit: Duration,
    /// Longest wait for one key to reach every member.
    pub(crate) spread_limit: Duration,
    /// Longest wait for a crashed member to be dropped everywhere.
    pub(crate) detect_limit: Duration,
}

/// What one system did at one cluster size. `None`: the phase failed or
/// timed out (see `errors`).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Outcome {
    /// The system (`ours-grpc`, `chitchat`, ...).
    pub(crate) system: String,
    /// Members.
    pub(crate) n: usize,
    /// From the first member's start until every member lists all `n` as
    /// live, in ms.
    pub(crate) join_ms: Option<f64>,
    /// Process CPU time (user + system, every thread) from the first
    /// member's start until the join was seen, in ms: what the handshakes
    /// and the first exchanges of the join cost (issue #10). Only one
    /// system runs at a time, so the process's CPU is this system's (plus
    /// the bench's own polling).
    pub(crate) join_cpu_ms: Option<f64>,
    /// Application payload bytes sent per member per second at rest.
    pub(crate) rest_bytes_per_member_s: Option<f64>,
    /// Messages (datagrams) sent per member per second at rest.
    pub(crate) rest_messages_per_member_s: Option<f64>,
    /// Bytes on the loopback device per member per second at rest: IP
    /// packets, all headers and framing included. Only measured in a
    /// private network namespace (see `wire.rs`).
    pub(crate) rest_wire_bytes_per_member_s: Option<f64>,
    /// Time for each key to reach every other member, in ms.
    pub(crate) spread_ms: Vec<f64>,
    /// Median of `spread_ms`.
    pub(crate) spread_median_ms: Option<f64>,
    /// From the silent stop of one member until every other member dropped
    /// it from its live members, in ms.
    pub(crate) detect_ms: Option<f64>,
    /// Times a member dropped a member that had not been stopped (one count
    /// per observer), over the whole run.
    pub(crate) false_deaths: usize,
    /// Phases that failed, and why.
    pub(crate) errors: Vec<String>,
}

/// The median of `xs` (mean of the middle two for an even count).
pub(crate) fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Runs every phase against `cluster`, started at `started`, then shuts it
/// down. A failed phase is recorded in `errors` and the next one still runs
/// when it can.
pub(crate) async fn run<C: Cluster>(
    mut cluster: C,
    started: Instant,
    cpu_at_start: Option<Duration>,
    plan: &Plan,
    book: Arc<Sightings>,
) -> Outcome {
    let n = cluster.len();
    let mut out = Outcome {
        system: cluster.name().to_owned(),
        n,
        ..Outcome::default()
    };
    let everyone: Vec<usize> = (0..n).collect();
    tracing::debug!(
        system = out.system,
        start_ms = started.elapsed().as_millis() as u64,
        "every member started"
    );
    match wait_joined(&cluster, &everyone, plan.join_limit).await {
        Ok(()) => {
            out.join_ms = Some(ms(started.elapsed()));
            out.join_cpu_ms = cpu_at_start
                .zip(crate::transport::cpu().ok())
                .map(|(before, now)| ms(now.saturating_sub(before)));
        }
        Err(e) => {
            out.errors.push(e.to_string());
            cluster.shutdown().await;
            return out;
        }
    }
    tracing::info!(
        system = out.system,
        n,
        join_ms = out.join_ms,
        traffic = cluster.traffic_note(),
        "joined"
    );

    tokio::time::sleep(plan.warmup).await;
    let (before, wire_before, t0) = (cluster.traffic(), wire::loopback_bytes(), Instant::now());
    tokio::time::sleep(plan.rest_window).await;
    let (after, wire_after, t1) = (cluster.traffic(), wire::loopback_bytes(), Instant::now());
    let per = |x: u64| x as f64 / n as f64 / (t1 - t0).as_secs_f64();
    out.rest_bytes_per_member_s = Some(per(after.bytes - before.bytes));
    out.rest_messages_per_member_s = Some(per(after.messages - before.messages));
    if let (Some(b), Some(a)) = (wire_before, wire_after) {
        out.rest_wire_bytes_per_member_s = Some(per(a.saturating_sub(b)));
    }
    log_traffic(&out.system, n, before, after);

    tracing::debug!(
        system = out.system,
        traffic = cluster.traffic_note(),
        "before the writes"
    );
    for rep in 0..plan.repetitions {
        // Writers rotate over members other than the seed.
        let writer = 1 + rep % (n - 1).max(1);
        let writer = writer.min(n - 1);
        let key = format!("spread-{rep}");
        let others: Vec<usize> = everyone.iter().copied().filter(|i| *i != writer).collect();
        let t0 = Instant::now();
        let seen = match cluster.set_key(writer, &key, "v").await {
            Ok(()) => {
                book.wait_all(&format!("key:{key}"), &others, plan.spread_limit)
                    .await
            }
            Err(e) => Err(e),
        };
        let [half, most, all] = book.progress_ms(&format!("key:{key}"), &others, t0);
        tracing::debug!(
            system = out.system,
            rep,
            writer,
            half_ms = ?half,
            ninety_pct_ms = ?most,
            all_ms = ?all,
            "key spread"
        );
        match seen {
            Ok(t) => out.spread_ms.push(ms(t.saturating_duration_since(t0))),
            Err(e) => out.errors.push(e.to_string()),
        }
        tokio::time::sleep(plan.pause).await;
    }
    out.spread_median_ms = median(&out.spread_ms);
    tracing::debug!(
        system = out.system,
        traffic = cluster.traffic_note(),
        "after the writes"
    );

    let victim = n - 1;
    let tag = cluster.death_tag(victim);
    book.clear(&tag);
    let survivors: Vec<usize> = (0..victim).collect();
    let t0 = Instant::now();
    cluster.crash(victim).await;
    match book.wait_all(&tag, &survivors, plan.detect_limit).await {
        Ok(t) => out.detect_ms = Some(ms(t.saturating_duration_since(t0))),
        Err(e) => out.errors.push(e.to_string()),
    }
    out.false_deaths = book.count_prefix("dead:", &[tag]);
    cluster.shutdown().await;
    out
}

fn log_traffic(system: &str, n: usize, before: Traffic, after: Traffic) {
    tracing::info!(
        system,
        n,
        bytes = after.bytes - before.bytes,
        messages = after.messages - before.messages,
        "traffic at rest"
    );
}

/// Waits until every member lists all of them as live. Members that got
/// there are not asked again (a healthy cluster does not lose members).
async fn wait_joined<C: Cluster>(
    cluster: &C,
    everyone: &[usize],
    limit: Duration,
) -> Result<(), BenchError> {
    let n = everyone.len();
    let start = Instant::now();
    let mut pending: Vec<usize> = everyone.to_vec();
    loop {
        let mut still = Vec::with_capacity(pending.len());
        for &i in &pending {
            if cluster.live_count(i).await < n {
                still.push(i);
            }
        }
        pending = still;
        tracing::debug!(
            waited_ms = start.elapsed().as_millis() as u64,
            short = pending.len(),
            "members short of the full view"
        );
        if pending.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            let mut views = Vec::with_capacity(pending.len());
            for &i in &pending {
                views.push(format!("{i} sees {}", cluster.live_count(i).await));
            }
            return Err(BenchError::Timeout {
                what: format!(
                    "join of {n} ({} members short of the full view: {})",
                    pending.len(),
                    views.join(", ")
                ),
                limit,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty_lists() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
