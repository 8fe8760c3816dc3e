//! The polls of `gossip-node bench`: each node is polled in its own loop,
//! so that a slow node does not hold back the measurement of the others.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::ms;
use super::report::{KeyReport, KillReport, KilledMember, RestReport, Totals};
use crate::cli::error::BenchError;
use crate::cli::procs::{AdminClient, AdminStats, proc_usage};

/// Runs `f(i)` for every `i` in `indices` concurrently; the answers in the
/// order of `indices` (`None` for a task that panicked).
async fn each<T, F, Fut>(indices: &[usize], f: F) -> Vec<Option<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let mut set = JoinSet::new();
    for (slot, &i) in indices.iter().enumerate() {
        let fut = f(i);
        set.spawn(async move { (slot, fut.await) });
    }
    let mut out: Vec<Option<T>> = (0..indices.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((slot, v)) = joined {
            out[slot] = Some(v);
        }
    }
    out
}

/// For every node, the time from `since` until its `GET /members` first
/// listed every address of `addrs`; `None` for a node that did not by
/// `deadline`.
pub(super) async fn until_all_listed(
    client: &AdminClient,
    admins: &[SocketAddr],
    addrs: &[String],
    since: Instant,
    deadline: Instant,
) -> Vec<Option<Duration>> {
    let all: Vec<usize> = (0..admins.len()).collect();
    let want: BTreeSet<String> = addrs.iter().cloned().collect();
    each(&all, |i| {
        let (client, admin, want) = (client.clone(), admins[i], want.clone());
        async move {
            loop {
                if let Ok(members) = client.members(admin).await {
                    let seen: BTreeSet<&String> = members.iter().map(|m| &m.addr).collect();
                    if want.iter().all(|a| seen.contains(a)) {
                        return Some(since.elapsed());
                    }
                }
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(super::MEMBERS_POLL).await;
            }
        }
    })
    .await
    .into_iter()
    .map(Option::flatten)
    .collect()
}

/// The `/stats` of every node with the arrival time of its answer (`None`
/// where the request failed).
async fn all_stats(
    client: &AdminClient,
    admins: &[SocketAddr],
) -> Vec<Option<(AdminStats, Instant)>> {
    let all: Vec<usize> = (0..admins.len()).collect();
    each(&all, |i| {
        let (client, admin) = (client.clone(), admins[i]);
        async move {
            let stats = client.stats(admin).await.ok()?;
            Some((stats, Instant::now()))
        }
    })
    .await
    .into_iter()
    .map(Option::flatten)
    .collect()
}

/// Traffic and CPU over a window of `window` with nothing happening. Each
/// node's rates are over its own window, from the arrival of its first
/// `/stats` answer to that of its second (answers can be slow on a busy
/// machine); the rates reported are the means over the nodes.
///
/// # Errors
/// [`BenchError::Measure`] if no node answered `/stats` at both ends.
pub(super) async fn at_rest(
    client: &AdminClient,
    admins: &[SocketAddr],
    pids: &[u32],
    window: Duration,
) -> Result<RestReport, BenchError> {
    let cpu0: Vec<_> = pids.iter().map(|&p| proc_usage(p)).collect();
    let t0 = Instant::now();
    let s0 = all_stats(client, admins).await;
    tokio::time::sleep(window).await;
    let s1 = all_stats(client, admins).await;
    let cpu_seconds = t0.elapsed().as_secs_f64();
    let cpu1: Vec<_> = pids.iter().map(|&p| proc_usage(p)).collect();

    // Per node: the counters' growth and the window, s.
    let deltas: Vec<(AdminStats, f64)> = s0
        .iter()
        .zip(&s1)
        .filter_map(|(a, b)| {
            let ((a, ta), (b, tb)) = (a.as_ref()?, b.as_ref()?);
            let d = AdminStats {
                messages_sent: b.messages_sent.saturating_sub(a.messages_sent),
                bytes_sent: b.bytes_sent.saturating_sub(a.bytes_sent),
                messages_received: b.messages_received.saturating_sub(a.messages_received),
                bytes_received: b.bytes_received.saturating_sub(a.bytes_received),
                send_failures: b.send_failures.saturating_sub(a.send_failures),
            };
            Some((d, tb.duration_since(*ta).as_secs_f64().max(1e-3)))
        })
        .collect();
    if deltas.is_empty() {
        return Err(BenchError::Measure(
            "no node answered GET /stats at both ends of the rest window".into(),
        ));
    }
    let members = deltas.len() as f64;
    let sum = |f: fn(&AdminStats) -> u64| deltas.iter().map(|(d, _)| f(d)).sum::<u64>();
    let per = |f: fn(&AdminStats) -> u64| {
        deltas.iter().map(|(d, w)| f(d) as f64 / w).sum::<f64>() / members
    };
    let cpu_percent: Vec<f64> = cpu0
        .iter()
        .zip(&cpu1)
        .filter_map(|(a, b)| {
            let (a, b) = (a.as_ref()?, b.as_ref()?);
            Some(100.0 * b.cpu.saturating_sub(a.cpu).as_secs_f64() / cpu_seconds)
        })
        .collect();
    let cpu_total: f64 = cpu_percent.iter().sum();
    Ok(RestReport {
        seconds: deltas.iter().map(|(_, w)| w).sum::<f64>() / members,
        members_measured: deltas.len(),
        messages_sent: sum(|d| d.messages_sent),
        bytes_sent: sum(|d| d.bytes_sent),
        messages_sent_per_member_per_sec: per(|d| d.messages_sent),
        bytes_sent_per_member_per_sec: per(|d| d.bytes_sent),
        messages_received_per_member_per_sec: per(|d| d.messages_received),
        bytes_received_per_member_per_sec: per(|d| d.bytes_received),
        send_failures: sum(|d| d.send_failures),
        send_failures_per_member_per_sec: per(|d| d.send_failures),
        cpu_percent_mean: if cpu_percent.is_empty() {
            0.0
        } else {
            cpu_total / cpu_percent.len() as f64
        },
        cpu_percent_total: cpu_total,
    })
}

/// One node's view of the write: when its answer first showed it, and the
/// gap from the previous poll's start (the resolution).
#[derive(Clone, Copy, Debug)]
struct Seen {
    after: Duration,
    gap: Duration,
}

/// The writer (`admins[0]`, member `owner`) sets `key`; every node's
/// `/kv` is polled every `poll` until it shows the write, for at most
/// `limit`.
///
/// # Errors
/// [`BenchError::Procs`] if the write is refused.
pub(super) async fn spread(
    client: &AdminClient,
    admins: &[SocketAddr],
    owner: &str,
    key: &str,
    poll: Duration,
    limit: Duration,
) -> Result<KeyReport, BenchError> {
    let value = format!("written by the benchmark {}", std::process::id());
    let written = Instant::now();
    client.put_key(admins[0], key, value.clone()).await?;
    let deadline = written + limit;
    let all: Vec<usize> = (0..admins.len()).collect();
    let seen = each(&all, |i| {
        let (client, admin) = (client.clone(), admins[i]);
        let (owner, key, value) = (owner.to_owned(), key.to_owned(), value.clone());
        async move {
            let mut previous = written;
            loop {
                let sent = Instant::now();
                let has = client.kv(admin).await.is_ok_and(|kv| {
                    kv.get(&owner)
                        .and_then(|keys| keys.get(&key))
                        .is_some_and(|e| e.value.as_str() == Some(value.as_str()))
                });
                let now = Instant::now();
                if has {
                    return Some(Seen {
                        after: now - written,
                        gap: now - previous,
                    });
                }
                if now >= deadline {
                    return None;
                }
                previous = sent;
                tokio::time::sleep(poll).await;
            }
        }
    })
    .await;
    let seen: Vec<Seen> = seen.into_iter().flatten().flatten().collect();
    let mut after: Vec<f64> = seen.iter().map(|s| ms(s.after)).collect();
    after.sort_by(f64::total_cmp);
    let gaps: Vec<f64> = seen.iter().map(|s| ms(s.gap)).collect();
    let n = admins.len();
    Ok(KeyReport {
        writer: 1,
        members: n,
        reached: seen.len(),
        p50_ms: quantile(&after, n, 0.5),
        p99_ms: quantile(&after, n, 0.99),
        p100_ms: quantile(&after, n, 1.0),
        poll_ms: ms(poll),
        resolution_max_ms: gaps
            .iter()
            .copied()
            .fold(None, |m, g| Some(g.max(m.unwrap_or(g)))),
        resolution_mean_ms: (!gaps.is_empty())
            .then(|| gaps.iter().sum::<f64>() / gaps.len() as f64),
    })
}

/// The time by which a share `q` of `n` members had it, from the sorted
/// times of those that did; `None` if fewer than that many did.
fn quantile(sorted: &[f64], n: usize, q: f64) -> Option<f64> {
    let needed = ((n as f64 * q).ceil() as usize).max(1);
    sorted.get(needed - 1).copied()
}

/// One survivor's view of the victims over time.
#[derive(Clone, Debug, Default)]
struct View {
    /// Per victim: when this survivor first no longer listed it as alive.
    not_alive: Vec<Option<Duration>>,
    /// Per victim: when this survivor last stopped listing it at all
    /// (reset if it lists it again).
    removed: Vec<Option<Duration>>,
    /// Live members this survivor failed to list at some poll.
    live_missing: BTreeSet<usize>,
}

/// Polls every survivor's `/members` every `poll` until it lists none of
/// the victims, for at most `limit` after `killed_at`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn detection(
    client: &AdminClient,
    admins: &[SocketAddr],
    addrs: &[String],
    survivors: &[usize],
    victims: &[usize],
    killed_at: Instant,
    limit: Duration,
    poll: Duration,
) -> KillReport {
    let deadline = killed_at + limit;
    let views = each(survivors, |s| {
        let client = client.clone();
        let admin = admins[s];
        let victim_addrs: Vec<String> = victims.iter().map(|&v| addrs[v].clone()).collect();
        let live: Vec<(usize, String)> = survivors.iter().map(|&l| (l, addrs[l].clone())).collect();
        async move {
            let mut view = View {
                not_alive: vec![None; victim_addrs.len()],
                removed: vec![None; victim_addrs.len()],
                live_missing: BTreeSet::new(),
            };
            loop {
                if let Ok(members) = client.members(admin).await {
                    let t = killed_at.elapsed();
                    for (k, addr) in victim_addrs.iter().enumerate() {
                        match members.iter().find(|m| &m.addr == addr) {
                            Some(m) => {
                                if m.state != "alive" {
                                    view.not_alive[k].get_or_insert(t);
                                }
                                view.removed[k] = None;
                            }
                            None => {
                                view.not_alive[k].get_or_insert(t);
                                view.removed[k].get_or_insert(t);
                            }
                        }
                    }
                    for (l, addr) in &live {
                        if !members.iter().any(|m| &m.addr == addr) {
                            view.live_missing.insert(*l);
                        }
                    }
                    if view.removed.iter().all(Option::is_some) {
                        return view;
                    }
                }
                if Instant::now() >= deadline {
                    return view;
                }
                tokio::time::sleep(poll).await;
            }
        }
    })
    .await;
    let views: Vec<View> = views.into_iter().map(Option::unwrap_or_default).collect();
    let killed: Vec<KilledMember> = victims
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let first = views
                .iter()
                .filter_map(|w| w.not_alive.get(k).copied().flatten())
                .min();
            let all = views
                .iter()
                .map(|w| w.removed.get(k).copied().flatten())
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().max());
            KilledMember {
                index: v + 1,
                addr: addrs[v].clone(),
                pid: 0,
                first_suspected_ms: first.map(ms),
                removed_by_all_ms: all.map(ms),
            }
        })
        .collect();
    let wrongly_dropped: BTreeSet<usize> = views
        .iter()
        .flat_map(|w| w.live_missing.iter().copied())
        .collect();
    let max = |f: fn(&KilledMember) -> Option<f64>| {
        killed
            .iter()
            .map(f)
            .collect::<Option<Vec<f64>>>()
            .and_then(|v| v.into_iter().reduce(f64::max))
    };
    KillReport {
        first_suspected_max_ms: max(|m| m.first_suspected_ms),
        removed_by_all_max_ms: max(|m| m.removed_by_all_ms),
        all_removed: killed.iter().all(|m| m.removed_by_all_ms.is_some()),
        killed,
        survivors: survivors.len(),
        live_members_dropped: wrongly_dropped.len(),
        detection_bound_ms: 0.0,
        poll_ms: ms(poll),
    }
}

/// The counters of the survivors at the end of the run, summed.
pub(super) async fn totals(
    client: &AdminClient,
    admins: &[SocketAddr],
    survivors: &[usize],
) -> Totals {
    let stats = each(survivors, |s| {
        let (client, admin) = (client.clone(), admins[s]);
        async move { client.stats(admin).await.ok() }
    })
    .await;
    let stats: Vec<AdminStats> = stats.into_iter().flatten().flatten().collect();
    Totals {
        members: stats.len(),
        messages_sent: stats.iter().map(|s| s.messages_sent).sum(),
        bytes_sent: stats.iter().map(|s| s.bytes_sent).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_count_members_that_never_got_it() {
        let t = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&t, 4, 0.5), Some(2.0));
        assert_eq!(quantile(&t, 4, 1.0), Some(4.0));
        assert_eq!(quantile(&t, 5, 1.0), None);
        assert_eq!(quantile(&t, 5, 0.5), Some(3.0));
        assert_eq!(quantile(&[], 3, 0.5), None);
        assert_eq!(quantile(&[7.0], 1, 0.99), Some(7.0));
    }
}
