//! `GET /metrics`: a member's counters in the Prometheus text format.
//!
//! Each member has its own recorder (several members can live in one
//! process, as in tests), never the global one. The core keeps plain atomic
//! counters ([`StatsSnapshot`]); at every scrape they are copied into the
//! recorder (`absolute` for counters, `set` for gauges) and rendered. The
//! probe round-trip histogram is accumulated by the core in fixed buckets
//! ([`RTT_BUCKETS_US`]), which the recorder cannot take as they are, so it
//! is appended to the recorder's output in the same text format.
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `gossip_messages_sent_total`, `gossip_bytes_sent_total` | counter | `kind` |
//! | `gossip_messages_received_total`, `gossip_bytes_received_total` | counter | `kind` |
//! | `gossip_messages_rejected_total` | counter | `reason`: `oversized`, `malformed`, `foreign_cluster`, `overloaded` |
//! | `gossip_send_failures_total` | counter | |
//! | `gossip_send_dropped_total` | counter | |
//! | `gossip_send_refused_total` | counter | |
//! | `gossip_refusal_checks_total` | counter | |
//! | `gossip_driver_late_wakeups_total` | counter | |
//! | `gossip_driver_max_lateness_seconds` | gauge | |
//! | `gossip_messages_rejected_by_peer_total` | counter | |
//! | `gossip_connections` | gauge | |
//! | `gossip_connections_evicted_total` | counter | |
//! | `gossip_members` | gauge | `state`: `alive`, `suspect`, `dead`, `left` |
//! | `gossip_dissemination_queue_depth` | gauge | |
//! | `gossip_probe_rtt_seconds` | histogram | |
//! | `gossip_handler_runs_total` | counter | `handler`, `result`: `ok`, `failed`, `timeout` |
//! | `gossip_handler_dropped_total` | counter | `handler` |
//!
//! `kind` is one of `ping`, `ack`, `ping_req`, `sync_request`,
//! `sync_digest`, `delta`, `gossip`, `sync_buckets`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use gossip_core::{
    MemberInfo, MemberState, MessageKind, RTT_BUCKETS_US, RttSnapshot, StatsSnapshot,
};
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::handlers::HandlerStats;

/// The Prometheus recorder of one member.
pub(super) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const STATES: [MemberState; 4] = [
    MemberState::Alive,
    MemberState::Suspect,
    MemberState::Dead,
    MemberState::Left,
];

impl Metrics {
    pub(super) fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for dir in ["sent", "received"] {
                describe_counter!(
                    format!("gossip_messages_{dir}_total"),
                    format!("Messages {dir}, by message kind.")
                );
                describe_counter!(
                    format!("gossip_bytes_{dir}_total"),
                    format!("Encoded bytes of the messages {dir}, by message kind.")
                );
            }
            describe_counter!(
                "gossip_messages_rejected_total",
                "Received frames refused, by reason."
            );
            describe_counter!(
                "gossip_send_failures_total",
                "Sends that failed, timed out or found too many sends in flight."
            );
            describe_counter!(
                "gossip_send_dropped_total",
                "Messages dropped because the peer's outbound queue was full."
            );
            describe_counter!(
                "gossip_send_refused_total",
                "Batches refused because nothing listens at the peer, reported to the failure detector."
            );
            describe_counter!(
                "gossip_refusal_checks_total",
                "Listener checks run for the failure detector after an unanswered probe or for an indirect probe."
            );
            describe_counter!(
                "gossip_driver_late_wakeups_total",
                "Timer wake-ups of the driver later than their deadline by more than the lateness bound."
            );
            describe_gauge!(
                "gossip_driver_max_lateness_seconds",
                "Longest lateness of a timer wake-up of the driver."
            );
            describe_counter!(
                "gossip_messages_rejected_by_peer_total",
                "Sent frames that the peer reported it rejected."
            );
            describe_gauge!(
                "gossip_connections",
                "Outgoing connections the transport holds (at most max_connections)."
            );
            describe_counter!(
                "gossip_connections_evicted_total",
                "Outgoing connections closed as least recently used or idle."
            );
            describe_gauge!(
                "gossip_members",
                "Members this member knows, tombstones included, by state."
            );
            describe_gauge!(
                "gossip_dissemination_queue_depth",
                "Membership updates and broadcasts waiting to be piggybacked."
            );
            describe_counter!(
                "gossip_handler_runs_total",
                "Event handler runs, by handler and result (ok, failed, timeout)."
            );
            describe_counter!(
                "gossip_handler_dropped_total",
                "Events an event handler did not get: its queue was full or it fell behind."
            );
        });
        Self { recorder, handle }
    }

    /// The text of a scrape: `stats` and `members` (every member known,
    /// tombstones included) as metrics.
    pub(super) fn render(
        &self,
        stats: &StatsSnapshot,
        members: &[MemberInfo],
        handlers: Option<&HandlerStats>,
    ) -> String {
        metrics::with_local_recorder(&self.recorder, || {
            for kind in MessageKind::ALL {
                let k = kind.as_str();
                let (sent, received) = (&stats.sent_by_kind, &stats.received_by_kind);
                counter!("gossip_messages_sent_total", "kind" => k).absolute(sent.messages(kind));
                counter!("gossip_bytes_sent_total", "kind" => k).absolute(sent.bytes(kind));
                counter!("gossip_messages_received_total", "kind" => k)
                    .absolute(received.messages(kind));
                counter!("gossip_bytes_received_total", "kind" => k).absolute(received.bytes(kind));
            }
            for (reason, n) in [
                ("oversized", stats.rejected_oversized),
                ("malformed", stats.rejected_malformed),
                ("foreign_cluster", stats.rejected_foreign_cluster),
                ("decrypt", stats.rejected_decrypt),
                ("overloaded", stats.rejected_overloaded),
            ] {
                counter!("gossip_messages_rejected_total", "reason" => reason).absolute(n);
            }
            counter!("gossip_send_failures_total").absolute(stats.send_failures);
            counter!("gossip_send_dropped_total").absolute(stats.send_dropped);
            counter!("gossip_send_refused_total").absolute(stats.send_refused);
            counter!("gossip_refusal_checks_total").absolute(stats.refusal_checks);
            counter!("gossip_driver_late_wakeups_total").absolute(stats.late_wakeups);
            gauge!("gossip_driver_max_lateness_seconds")
                .set(stats.max_lateness_us as f64 / 1_000_000.0);
            counter!("gossip_messages_rejected_by_peer_total").absolute(stats.rejected_by_peer);
            gauge!("gossip_connections").set(stats.connections as f64);
            counter!("gossip_connections_evicted_total").absolute(stats.connections_evicted);
            for state in STATES {
                let n = members.iter().filter(|m| m.state == state).count();
                gauge!("gossip_members", "state" => state.as_str()).set(n as f64);
            }
            gauge!("gossip_dissemination_queue_depth").set(stats.queue_depth as f64);
            for h in handlers.map_or(&[][..], |h| &h.handlers) {
                let name = h.name.clone();
                for (result, n) in [
                    ("ok", &h.ok),
                    ("failed", &h.failed),
                    ("timeout", &h.timed_out),
                ] {
                    counter!("gossip_handler_runs_total", "handler" => name.clone(), "result" => result)
                        .absolute(n.load(Ordering::Relaxed));
                }
                counter!("gossip_handler_dropped_total", "handler" => name)
                    .absolute(h.dropped.load(Ordering::Relaxed));
            }
        });
        let mut text = self.handle.render();
        write_rtt_histogram(&mut text, &stats.probe_rtt);
        text
    }
}

/// Appends `gossip_probe_rtt_seconds` as a Prometheus histogram: cumulative
/// buckets, `+Inf`, sum and count.
fn write_rtt_histogram(out: &mut String, h: &RttSnapshot) {
    const NAME: &str = "gossip_probe_rtt_seconds";
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {NAME} Round-trip time of answered probes, from the ping to the first ack (direct or relayed)."
    );
    let _ = writeln!(out, "# TYPE {NAME} histogram");
    let mut cumulative = 0;
    for (bound_us, n) in RTT_BUCKETS_US.iter().zip(h.counts) {
        cumulative += n;
        let le = *bound_us as f64 / 1e6;
        let _ = writeln!(out, "{NAME}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{NAME}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{NAME}_sum {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{NAME}_count {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_in_seconds() {
        let mut h = RttSnapshot::default();
        h.counts[0] = 2; // <= 0.5 ms
        h.counts[2] = 1; // <= 2.5 ms
        h.counts[RTT_BUCKETS_US.len()] = 1; // > 5 s
        h.count = 4;
        h.sum_us = 6_001_500;
        let mut text = String::new();
        write_rtt_histogram(&mut text, &h);
        for line in [
            "# TYPE gossip_probe_rtt_seconds histogram",
            "gossip_probe_rtt_seconds_bucket{le=\"0.0005\"} 2",
            "gossip_probe_rtt_seconds_bucket{le=\"0.001\"} 2",
            "gossip_probe_rtt_seconds_bucket{le=\"0.0025\"} 3",
            "gossip_probe_rtt_seconds_bucket{le=\"5\"} 3",
            "gossip_probe_rtt_seconds_bucket{le=\"+Inf\"} 4",
            "gossip_probe_rtt_seconds_sum 6.0015",
            "gossip_probe_rtt_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }

    #[test]
    fn two_recorders_do_not_share_values() {
        let (a, b) = (Metrics::new(), Metrics::new());
        let stats = StatsSnapshot {
            send_failures: 7,
            ..StatsSnapshot::default()
        };
        let text_a = a.render(&stats, &[], None);
        let text_b = b.render(&StatsSnapshot::default(), &[], None);
        assert!(text_a.contains("gossip_send_failures_total 7"), "{text_a}");
        assert!(text_b.contains("gossip_send_failures_total 0"), "{text_b}");
    }
}
