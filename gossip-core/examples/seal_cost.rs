//! What sealing costs per envelope (issue #12): CPU time to seal and open
//! envelopes of typical sizes, against encoding and decoding them in the
//! clear, and the bytes it adds. Run it optimized:
//!
//! ```sh
//! cargo run --release -p gossip-core --example seal_cost
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_core::pb::{self, envelope::Body};
use gossip_core::{Inbound, Key, Keyring, Sealer, Stats, inbound_channel};
use prost::Message;

fn node(i: u32) -> pb::NodeId {
    pb::NodeId {
        addr: format!("10.0.{}.{}:7001", i / 250, i % 250),
        generation: 1_764_460_000_000 + u64::from(i),
    }
}

fn envelope(body: Body, updates: u32) -> pb::Envelope {
    pb::Envelope {
        cluster_id: "prod-eu".into(),
        from: Some(node(0)),
        incarnation: 3,
        updates: (1..=updates)
            .map(|i| pb::MemberUpdate {
                id: Some(node(i)),
                incarnation: 1,
                state: pb::MemberState::Alive as i32,
                ..Default::default()
            })
            .collect(),
        body: Some(body),
        ..Default::default()
    }
}

fn delta(bytes: usize) -> Body {
    Body::Delta(pb::Delta {
        owners: vec![pb::OwnerDelta {
            member: Some(pb::MemberUpdate {
                id: Some(node(1)),
                ..Default::default()
            }),
            keys: vec![pb::KeyValue {
                key: "k".into(),
                value: Bytes::from(vec![7u8; bytes]),
                version: 9,
                ..Default::default()
            }],
            ..Default::default()
        }],
        push: true,
    })
}

/// Mean time of `f` over enough runs to last about 300 ms.
fn time(mut f: impl FnMut()) -> Duration {
    let mut n = 1u32;
    loop {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        let took = start.elapsed();
        if took > Duration::from_millis(300) {
            return took / n;
        }
        n *= 2;
    }
}

fn gate(sealer: Option<&Sealer>) -> (Inbound, tokio::sync::mpsc::Receiver<pb::Envelope>) {
    let stats = std::sync::Arc::new(Stats::default());
    let (inbound, rx) = inbound_channel("prod-eu", 1 << 20, 1, stats);
    match sealer {
        Some(s) => (inbound.with_sealer(s.clone()), rx),
        None => (inbound, rx),
    }
}

fn main() {
    let sealer = Sealer::new(Keyring::new(Key::generate().expect("random key")));
    // A receiver during a rotation: the sender's key is its second one.
    let rotating = Sealer::new(
        Keyring::from_keys([
            Key::generate().expect("random key"),
            sealer.keyring().primary().clone(),
        ])
        .expect("two keys"),
    );
    let cases = [
        (
            "ping",
            envelope(
                Body::Ping(pb::Ping {
                    seq: 1,
                    digest_hash: 42,
                    members: 5,
                    ..Default::default()
                }),
                0,
            ),
        ),
        (
            "ping + 8 updates",
            envelope(
                Body::Ping(pb::Ping {
                    seq: 1,
                    digest_hash: 42,
                    members: 5,
                    ..Default::default()
                }),
                8,
            ),
        ),
        ("delta 1 KiB", envelope(delta(1024), 0)),
        ("delta 60 KiB", envelope(delta(60 * 1024), 0)),
    ];
    println!(
        "| envelope | clear bytes | sealed bytes | encode (clear) | seal + encode | gate (clear) | gate (sealed) | gate (sealed, 2nd key) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, env) in cases {
        let clear = env.encode_to_vec();
        let sealed = sealer.seal(env.clone()).encode_to_vec();
        let encode = time(|| {
            black_box(black_box(&env).encode_to_vec());
        });
        let seal = time(|| {
            black_box(sealer.seal(black_box(env.clone())).encode_to_vec());
        }) - time(|| {
            black_box(black_box(&env).clone());
        });
        let accept = |inbound: &Inbound,
                      rx: &mut tokio::sync::mpsc::Receiver<pb::Envelope>,
                      frame: &[u8]| {
            time(|| {
                inbound.accept_bytes(black_box(frame)).expect("accepted");
                black_box(rx.try_recv().expect("queued"));
            })
        };
        let (plain_gate, mut rx) = gate(None);
        let open_clear = accept(&plain_gate, &mut rx, &clear);
        let (sealed_gate, mut rx) = gate(Some(&sealer));
        let open = accept(&sealed_gate, &mut rx, &sealed);
        let (rotating_gate, mut rx) = gate(Some(&rotating));
        let open2 = accept(&rotating_gate, &mut rx, &sealed);
        println!(
            "| {name} | {} | {} (+{}) | {:.2} us | {:.2} us | {:.2} us | {:.2} us | {:.2} us |",
            clear.len(),
            sealed.len(),
            sealed.len() - clear.len(),
            encode.as_secs_f64() * 1e6,
            seal.as_secs_f64() * 1e6,
            open_clear.as_secs_f64() * 1e6,
            open.as_secs_f64() * 1e6,
            open2.as_secs_f64() * 1e6,
        );
    }
}
