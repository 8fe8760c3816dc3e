//! CPU per message of the QUIC transport, send plus receive, in one process
//! (issue #9): 50,000 envelopes of about 200 bytes (a ping with piggyback)
//! between two transports on loopback, for the old wire (`gossip/1`: one
//! bidirectional stream and one verdict per message) and the new one
//! (`gossip/2`: batches in datagrams). A measurement, not a test: run with
//!
//! ```text
//! cargo test -p gossip-quic --test cpu_per_message -- --ignored --nocapture
//! ```
//!
//! CPU time is the process's `utime + stime` (what `getrusage(RUSAGE_SELF)`
//! reports) read from `/proc/self/stat`, so it covers every thread: the
//! sender's and the receiver's tasks and quinn's drivers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gossip_core::pb::{self, Envelope};
use gossip_core::{NodeAddr, Stats, Transport, inbound_channel};
use gossip_quic::{QuicConfig, QuicTransport, Wire};
use prost::Message;
use tokio::sync::Semaphore;

const MESSAGES: usize = 50_000;
/// Messages sent one at a time.
const ALONE: usize = 20_000;
/// Most messages the datagram sender runs ahead of the receiver.
const WINDOW: usize = 512;
/// The driver hands at most this many envelopes to one `send_batch`.
const BATCH: usize = 64;

/// A ping with three piggybacked updates, padded to about 200 bytes.
fn envelope(from: &NodeAddr, seq: u64) -> Envelope {
    let update = |i: u64| pb::MemberUpdate {
        id: Some(pb::NodeId {
            addr: format!("10.0.{}.{}:7946", i / 250, i % 250),
            generation: 1_700_000_000_000 + i,
        }),
        incarnation: i,
        state: pb::MemberState::Alive as i32,
        ..Default::default()
    };
    Envelope {
        cluster_id: "bench-cluster".into(),
        from: Some(pb::NodeId {
            addr: from.to_string(),
            generation: 1_700_000_000_000,
        }),
        updates: (0..5).map(update).collect(),
        body: Some(pb::envelope::Body::Ping(pb::Ping {
            seq,
            on_behalf_of: None,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The process's CPU time so far (user + system, all threads).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which ends with ')'): state is field 3;
    // utime and stime are fields 14 and 15, in clock ticks of 10 ms.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn report(
    name: &str,
    how: &str,
    size: usize,
    failed: usize,
    got: usize,
    cpu: Duration,
    elapsed: Duration,
) {
    println!(
        "{name:<28} {how:<14} {size:>4} B  failed {failed:>5}  received {got:>6}  \
         {:>8.0} msg/s  {:>7.1} µs CPU per message delivered",
        got as f64 / elapsed.as_secs_f64(),
        cpu.as_micros() as f64 / got.max(1) as f64,
    );
}

async fn run(name: &str, wire: Wire) {
    let config = QuicConfig {
        wire,
        ..QuicConfig::default()
    };
    let a = QuicTransport::bind(config.clone()).await.unwrap();
    let b = QuicTransport::bind(config).await.unwrap();
    let stats = Arc::new(Stats::default());
    let (inbound, mut rx) = inbound_channel("bench-cluster", 64 * 1024, 4096, stats.clone());
    let (a_inbound, _a_rx) = inbound_channel("bench-cluster", 64 * 1024, 16, Arc::default());
    a.start(a_inbound).await.unwrap();
    b.start(inbound).await.unwrap();
    let to = b.local_addr();
    let from = a.local_addr();
    let size = envelope(&from, 1).encoded_len();
    // Warm up: the connection exists before the measurement.
    a.send(&to, envelope(&from, 0)).await.unwrap();
    rx.recv().await.unwrap();

    // Datagrams have no flow control: a sender far ahead of its receiver
    // loses them in the socket buffer. The sender takes a permit per
    // message, the receiver gives one back per message delivered.
    let window = Arc::new(Semaphore::new(WINDOW));
    let permits = window.clone();
    let received = tokio::spawn(async move {
        let mut n = 0;
        while n < MESSAGES {
            match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
                Ok(Some(_)) => {
                    n += 1;
                    permits.add_permits(1);
                }
                _ => break,
            }
        }
        (n, rx)
    });
    let envelopes: Vec<Envelope> = (1..=MESSAGES as u64).map(|s| envelope(&from, s)).collect();
    let alone: Vec<Envelope> = (0..ALONE as u64).map(|s| envelope(&from, s)).collect();
    let (cpu0, t0) = (cpu(), Instant::now());
    let mut failed = 0;
    match wire {
        // The old path: one call per message, 64 in flight (the old driver
        // spawned a task per message).
        Wire::V1Only => {
            let sends = futures::stream::iter(envelopes)
                .map(|e| a.send(&to, e))
                .buffer_unordered(BATCH);
            failed += sends
                .filter(|r| std::future::ready(r.is_err()))
                .count()
                .await;
        }
        // The new path: batches of 64, as the driver's per-peer task does,
        // at most WINDOW messages ahead of the receiver.
        Wire::Auto => {
            let mut envelopes = envelopes.into_iter();
            loop {
                let batch: Vec<Envelope> = envelopes.by_ref().take(BATCH).collect();
                if batch.is_empty() {
                    break;
                }
                let n = batch.len();
                let wait = window.acquire_many(n as u32);
                match tokio::time::timeout(Duration::from_secs(2), wait).await {
                    Ok(Ok(permit)) => permit.forget(),
                    _ => break,
                }
                if a.send_batch(&to, batch).await.is_err() {
                    failed += n;
                }
            }
        }
    }
    let (got, mut rx) = received.await.unwrap();
    let (cpu1, elapsed) = (cpu(), t0.elapsed());
    report(name, "burst", size, failed, got, cpu1 - cpu0, elapsed);
    println!(
        "    datagrams sent {} received {}; receiver overloaded {}; {:?}",
        a.stats().datagrams_sent,
        b.stats().datagrams_received,
        stats.snapshot().rejected_overloaded,
        a.stats()
    );

    // One at a time, each sent after the previous one arrived: what a member
    // at rest does (a message alone in its packet).
    let (cpu0, t0) = (cpu(), Instant::now());
    let (mut failed, mut got) = (0, 0);
    for msg in alone {
        if a.send(&to, msg).await.is_err() {
            failed += 1;
            continue;
        }
        if tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .is_ok()
        {
            got += 1;
        }
    }
    let (cpu1, elapsed) = (cpu(), t0.elapsed());
    report(
        name,
        "one at a time",
        size,
        failed,
        got,
        cpu1 - cpu0,
        elapsed,
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn cpu_per_message() {
    // QUIC_BENCH=v1 or v2 runs one wire only (e.g. under a profiler).
    let only = std::env::var("QUIC_BENCH").unwrap_or_default();
    if only != "v2" {
        run("gossip/1 (stream + verdict)", Wire::V1Only).await;
    }
    if only != "v1" {
        run("gossip/2 (datagrams)", Wire::Auto).await;
    }
}
