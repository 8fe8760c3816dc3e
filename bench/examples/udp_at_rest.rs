//! The floor of a member at rest: two processes exchanging one UDP
//! datagram each way per period, as a member's probe and its ack, with
//! nothing else. Run the echo side, then the prober, and measure each
//! process's CPU (e.g. `perf stat -e task-clock -p PID -- sleep 15`) over
//! the messages it sent and received (two per period). BENCHMARKS.md,
//! section 5, compares it with two `gossip-node run` members at rest.
//!
//! ```sh
//! cargo build --release -p gossip-bench --example udp_at_rest
//! target/release/examples/udp_at_rest echo 127.0.0.1:17611 &
//! target/release/examples/udp_at_rest probe 127.0.0.1:17612 127.0.0.1:17611 250 &
//! ```

use std::net::UdpSocket;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn run(args: &[String]) -> std::io::Result<()> {
    let usage =
        || std::io::Error::other("usage: udp_at_rest echo ADDR | probe ADDR PEER PERIOD_MS");
    let mode = args.get(1).ok_or_else(usage)?;
    let sock = UdpSocket::bind(args.get(2).ok_or_else(usage)?)?;
    let mut buf = [0u8; 2048];
    match mode.as_str() {
        "echo" => loop {
            let (n, from) = sock.recv_from(&mut buf)?;
            sock.send_to(&buf[..n], from)?;
        },
        "probe" => {
            let peer = args.get(3).ok_or_else(usage)?;
            let ms: u64 = args.get(4).and_then(|p| p.parse().ok()).ok_or_else(usage)?;
            let period = Duration::from_millis(ms);
            let mut next = Instant::now();
            loop {
                next += period;
                // A ~100-byte probe, like a ping with its piggyback.
                sock.send_to(&[7u8; 100], peer)?;
                sock.recv_from(&mut buf)?;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
        }
        _ => Err(usage()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
