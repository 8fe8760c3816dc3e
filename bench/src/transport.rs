//! `gossip-bench transport`: the CPU cost of one message on each sending
//! path, in one process and one run, against a raw UDP socket pair (the
//! floor), with the message sizes the protocol really sends (issue #9).
//!
//! Each path moves `--messages` envelopes from a sender to a receiver on
//! loopback, at most `--window` in flight (sent but not yet handed to the
//! receiver's gate), so that no path is measured dropping messages. The
//! process's CPU time (user + system, `getrusage(RUSAGE_SELF)`: both sides
//! and every thread) over the run is divided by the messages delivered.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use comfy_table::Table;
use gossip_core::{Inbound, NodeAddr, Stats, Transport, inbound_channel, pb};
use gossip_grpc::{GrpcConfig, GrpcTransport};
use gossip_quic::{QuicConfig, QuicTransport};
use prost::Message;

use crate::error::BenchError;

/// Options of `gossip-bench transport`.
#[derive(Debug, Parser)]
#[command(name = "gossip-bench transport")]
pub(crate) struct TransportArgs {
    /// Messages per path and size.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Most messages in flight at once.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Paths to run (udp, grpc-unary, grpc-stream, quic).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "udp,grpc-unary,grpc-stream,quic"
    )]
    paths: Vec<String>,
}

/// The three sizes of message the protocol sends most.
#[derive(Clone, Copy, Debug)]
enum Size {
    /// A gossip round's opener: ~60 bytes.
    Sync,
    /// A probe with a few piggybacked updates: ~200 bytes.
    Ping,
    /// A piece of state: ~4 KB.
    Delta,
}

const CLUSTER: &str = "bench";

fn member(i: u64) -> pb::NodeId {
    pb::NodeId {
        addr: format!("127.0.0.1:{}", 7000 + i),
        generation: 1_764_000_000_000 + i,
    }
}

fn envelope(size: Size, seq: u64) -> pb::Envelope {
    use pb::envelope::Body;
    let body = match size {
        Size::Sync => Body::SyncRequest(pb::SyncRequest {
            digest_hash: seq.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            members: 100,
        }),
        Size::Ping => Body::Ping(pb::Ping {
            seq,
            ..Default::default()
        }),
        Size::Delta => Body::Delta(pb::Delta {
            owners: vec![pb::OwnerDelta {
                member: Some(pb::MemberUpdate {
                    id: Some(member(3)),
                    incarnation: 1,
                    state: pb::MemberState::Alive as i32,
                    ..Default::default()
                }),
                from_version: seq,
                to_version: seq + 16,
                keys: (0..16)
                    .map(|k| pb::KeyValue {
                        key: format!("key-{k}"),
                        value: vec![b'v'; 240].into(),
                        version: seq + k,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            push: false,
        }),
    };
    let updates = match size {
        Size::Ping => (0..5)
            .map(|i| pb::MemberUpdate {
                id: Some(member(10 + i)),
                incarnation: seq % 7,
                state: pb::MemberState::Alive as i32,
                ..Default::default()
            })
            .collect(),
        _ => Vec::new(),
    };
    pb::Envelope {
        cluster_id: CLUSTER.into(),
        from: Some(member(1)),
        updates,
        incarnation: 1,
        body: Some(body),
        ..Default::default()
    }
}

/// Process CPU time so far (user + system, every thread).
pub(crate) fn cpu() -> Result<Duration, BenchError> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF)
        .map_err(|e| BenchError::Args(format!("getrusage failed: {e}")))?;
    let d = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    Ok(d(usage.user_time()) + d(usage.system_time()))
}

/// One measured path at one size.
struct Row {
    path: &'static str,
    size: usize,
    messages: u64,
    wall: Duration,
    cpu: Duration,
}

impl Row {
    fn us_per_message(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.messages.max(1) as f64
    }
}

/// The floor: one UDP datagram per message between two blocking sockets,
/// the receiver on its own thread.
fn udp(frame: &[u8], messages: u64, window: u64) -> Result<(Duration, Duration), BenchError> {
    let io = |e: std::io::Error| BenchError::Args(format!("udp: {e}"));
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    let tx = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    let to = rx.local_addr().map_err(io)?;
    rx.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(io)?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let sender = std::thread::current();
    let cpu0 = cpu()?;
    let start = Instant::now();
    let receiver = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while counter.load(Ordering::Relaxed) < messages {
            match rx.recv_from(&mut buf) {
                Ok((n, _)) => {
                    // Decode, as every real receiver does.
                    if pb::Envelope::decode(&buf[..n]).is_ok() {
                        counter.fetch_add(1, Ordering::Relaxed);
                        // The sender may be waiting for room in the window.
                        sender.unpark();
                    }
                }
                Err(_) => break,
            }
        }
    });
    let mut sent = 0;
    while sent < messages {
        if sent - received.load(Ordering::Relaxed) >= window {
            // Sleep until the receiver makes room, as a real sender would.
            std::thread::park_timeout(Duration::from_millis(5));
            continue;
        }
        tx.send_to(frame, to).map_err(io)?;
        sent += 1;
    }
    receiver
        .join()
        .map_err(|_| BenchError::Args("udp receiver panicked".into()))?;
    let got = received.load(Ordering::Relaxed);
    if got < messages {
        return Err(BenchError::Args(format!(
            "udp: {got} of {messages} datagrams arrived (loopback dropped some; lower --window)"
        )));
    }
    Ok((start.elapsed(), cpu()? - cpu0))
}

/// How a transport path sends one message.
#[derive(Clone, Copy)]
enum Mode {
    /// `Transport::send`, awaited (the first wire version on gRPC).
    Send,
    /// `Transport::send_batch` of one message (the driver's path).
    Batch,
}

async fn transport_path<T: Transport>(
    sender: Arc<T>,
    to: NodeAddr,
    mut rx: tokio::sync::mpsc::Receiver<pb::Envelope>,
    size: Size,
    messages: u64,
    window: u64,
    mode: Mode,
) -> Result<(Duration, Duration), BenchError> {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let notify = Arc::new(tokio::sync::Notify::new());
    let wake = notify.clone();
    let cpu0 = cpu()?;
    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        while let Some(_env) = rx.recv().await {
            if counter.fetch_add(1, Ordering::Relaxed) + 1 >= messages {
                wake.notify_one();
                break;
            }
            wake.notify_one();
        }
        rx
    });
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut inflight = tokio::task::JoinSet::new();
    while received.load(Ordering::Relaxed) < messages {
        if Instant::now() > deadline {
            return Err(BenchError::Args(format!(
                "{} of {messages} messages arrived within 120 s",
                received.load(Ordering::Relaxed)
            )));
        }
        if sent < messages && sent - received.load(Ordering::Relaxed) < window {
            let msg = envelope(size, sent);
            match mode {
                Mode::Batch => sender
                    .send_batch(&to, vec![msg])
                    .await
                    .map_err(|e| BenchError::Args(format!("send: {e}")))?,
                Mode::Send => {
                    // Unary calls wait for their answer: keep `window` of
                    // them in flight, as the old driver's tasks did.
                    let (sender, to) = (sender.clone(), to.clone());
                    inflight.spawn(async move {
                        let _ = sender.send(&to, msg).await;
                    });
                    while inflight.len() as u64 >= window {
                        inflight.join_next().await;
                    }
                }
            }
            sent += 1;
            continue;
        }
        // Wait for the receiver to catch up (or a lost message to be resent).
        if tokio::time::timeout(Duration::from_millis(200), notify.notified())
            .await
            .is_err()
            && sent >= messages
        {
            // Loss: top up so the count can complete.
            sent = received.load(Ordering::Relaxed);
        }
    }
    while inflight.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let used = cpu()? - cpu0;
    drop(receiver.await);
    Ok((elapsed, used))
}

fn receiver_gate(max: usize) -> (Inbound, tokio::sync::mpsc::Receiver<pb::Envelope>) {
    inbound_channel(CLUSTER, max, 4096, Arc::new(Stats::default()))
}

/// Runs every path at every size and prints one table.
pub(crate) async fn run(args: TransportArgs) -> Result<(), BenchError> {
    let sizes = [Size::Sync, Size::Ping, Size::Delta];
    let mut rows = Vec::new();
    for size in sizes {
        let frame = envelope(size, 1).encode_to_vec();
        let bytes = frame.len();
        for path in &args.paths {
            let (path, result): (&'static str, Result<_, BenchError>) = match path.as_str() {
                "udp" => {
                    // Loopback drops datagrams beyond the socket's receive
                    // buffer: a smaller window for large ones.
                    let window = if bytes > 1400 {
                        args.window.min(8)
                    } else {
                        args.window
                    };
                    ("udp (floor)", udp(&frame, args.messages, window))
                }
                "grpc-unary" => ("grpc unary Send", grpc(size, &args, Mode::Send).await),
                "grpc-stream" => ("grpc stream", grpc(size, &args, Mode::Batch).await),
                "quic" => ("quic send_batch", quic(size, &args).await),
                other => {
                    return Err(BenchError::Args(format!(
                        "unknown path {other:?} (udp, grpc-unary, grpc-stream, quic)"
                    )));
                }
            };
            match result {
                Ok((wall, cpu)) => rows.push(Row {
                    path,
                    size: bytes,
                    messages: args.messages,
                    wall,
                    cpu,
                }),
                Err(e) => eprintln!("{path} at {bytes} B: {e}"),
            }
        }
    }
    let mut table = Table::new();
    table.set_header([
        "path",
        "message B",
        "messages/s",
        "CPU µs/message",
        "× UDP floor",
    ]);
    for row in &rows {
        let floor = rows
            .iter()
            .find(|r| r.size == row.size && r.path.starts_with("udp"))
            .map(Row::us_per_message);
        table.add_row([
            row.path.to_owned(),
            row.size.to_string(),
            format!("{:.0}", row.messages as f64 / row.wall.as_secs_f64()),
            format!("{:.1}", row.us_per_message()),
            floor.map_or("-".into(), |f| format!("{:.1}", row.us_per_message() / f)),
        ]);
    }
    println!("{table}");
    println!(
        "CPU: getrusage(RUSAGE_SELF) of this process (sender and receiver), per message delivered; \
         {} messages per cell, at most {} in flight.",
        args.messages, args.window
    );
    Ok(())
}

/// Binds a sender and a started receiver with `bind`, runs `mode` over
/// them, and shuts both down.
async fn pair<T, F, Fut>(
    bind: F,
    size: Size,
    args: &TransportArgs,
    mode: Mode,
) -> Result<(Duration, Duration), BenchError>
where
    T: Transport,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, gossip_core::TransportError>>,
{
    let err = |e: gossip_core::TransportError| BenchError::Args(e.to_string());
    let a = Arc::new(bind().await.map_err(err)?);
    let b = bind().await.map_err(err)?;
    let (inbound, rx) = receiver_gate(64 * 1024);
    b.start(inbound).await.map_err(err)?;
    let to = b.local_addr();
    let result = transport_path(a.clone(), to, rx, size, args.messages, args.window, mode).await;
    a.shutdown().await;
    b.shutdown().await;
    result
}

async fn grpc(
    size: Size,
    args: &TransportArgs,
    mode: Mode,
) -> Result<(Duration, Duration), BenchError> {
    pair(
        || GrpcTransport::bind(GrpcConfig::default()),
        size,
        args,
        mode,
    )
    .await
}

async fn quic(size: Size, args: &TransportArgs) -> Result<(Duration, Duration), BenchError> {
    pair(
        || QuicTransport::bind(QuicConfig::default()),
        size,
        args,
        Mode::Batch,
    )
    .await
}
