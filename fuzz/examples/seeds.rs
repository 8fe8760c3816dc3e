//! Writes the seed corpora of every target into `fuzz/corpus/<target>/`
//! (`seed-*` files; existing ones are replaced, others kept): real traffic
//! of four machines joining, writing keys, broadcasting and losing a
//! member, as each target reads it. Run once before fuzzing:
//! `cargo run -p gossip-fuzz --example seeds`.

use std::collections::VecDeque;
use std::fs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_core::pb::{Batch, Envelope};
use gossip_core::{Config, KEY_LEN, Key, Keyring, Machine, MessageKind, NodeAddr, NodeId, Sealer};
use gossip_fuzz::{CLUSTER, Target, test_sealer};
use prost::Message;

/// Members of the traced cluster: index 0 is the fuzzed machine
/// (`127.0.0.1:7000`), the others its peers 7001.. (peer bytes 0..).
const MEMBERS: u16 = 4;
/// Simulated time step, ms.
const STEP_MS: u64 = 20;
/// Largest machine script, bytes.
const MAX_SCRIPT: usize = 600;

fn addr(i: u16) -> NodeAddr {
    NodeAddr::from(SocketAddr::from(([127, 0, 0, 1], 7000 + i)))
}

fn write(target: Target, name: &str, bytes: &[u8]) {
    let dir = target.corpus_dir();
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// One received message of machine 0, and the script ops leading to it.
struct Trace {
    /// Machine scripts, cut at MAX_SCRIPT.
    scripts: Vec<Vec<u8>>,
    current: Vec<u8>,
    /// (kind, encoded envelope) of everything machine 0 received.
    received: Vec<(MessageKind, Vec<u8>)>,
}

impl Trace {
    fn op(&mut self, bytes: &[u8]) {
        if self.current.len() + bytes.len() > MAX_SCRIPT {
            let full = std::mem::replace(&mut self.current, vec![2]);
            self.scripts.push(full);
        }
        self.current.extend_from_slice(bytes);
    }
}

fn main() {
    let config = Config {
        cluster_id: CLUSTER.to_owned(),
        ..Config::default()
    };
    let start = Instant::now();
    let mut machines: Vec<Machine> = (0..MEMBERS)
        .map(|i| {
            Machine::new(NodeId::new(addr(i), 1), config.clone(), u64::from(i), start).unwrap()
        })
        .collect();
    for m in machines.iter_mut().skip(1) {
        m.add_seed(start, addr(0));
    }
    let mut trace = Trace {
        scripts: Vec::new(),
        current: vec![2],
        received: Vec::new(),
    };
    let mut last = start;
    let mut alive = [true; MEMBERS as usize];
    let mut queue: VecDeque<(usize, Envelope)> = VecDeque::new();
    for step in 0..1500u64 {
        let now = start + Duration::from_millis(step * STEP_MS);
        match step {
            50 => {
                machines[0]
                    .set_key(now, "color", Bytes::from_static(b"blue"), None)
                    .unwrap();
                trace.op(&[
                    7, 1, 5, b'c', b'o', b'l', b'o', b'r', 4, b'b', b'l', b'u', b'e',
                ]);
            }
            60 => {
                machines[2]
                    .set_key(
                        now,
                        "load",
                        Bytes::from_static(b"0.5"),
                        Some(Duration::from_secs(5)),
                    )
                    .unwrap();
                let _ = machines[1].broadcast(now, Bytes::from_static(b"{\"hi\":1}"), None);
            }
            400 => alive[3] = false, // member 7003 crashes
            _ => {}
        }
        for i in 0..MEMBERS as usize {
            if !alive[i] {
                continue;
            }
            if machines[i].poll_timeout().is_some_and(|t| t <= now) {
                if i == 0 {
                    let ms = now.duration_since(last).as_millis() as u64 / 4;
                    let ms = ms.min(u64::from(u16::MAX)) as u16;
                    trace.op(&[5, ms.to_le_bytes()[0], ms.to_le_bytes()[1]]);
                    last = now;
                }
                machines[i].handle_timeout(now);
            }
            while let Some(t) = machines[i].poll_transmit() {
                let to = (0..MEMBERS).find(|&j| addr(j) == t.to);
                if let Some(j) = to {
                    queue.push_back((j as usize, t.msg));
                }
            }
            while machines[i].poll_event().is_some() {}
        }
        while let Some((j, env)) = queue.pop_front() {
            if !alive[j] {
                continue;
            }
            if j == 0 {
                let bytes = env.encode_to_vec();
                let sender = env.from.as_ref().unwrap().addr.rsplit(':').next().unwrap();
                let sender = sender.parse::<u16>().unwrap() - 7001;
                let ms = now.duration_since(last).as_millis() as u64 / 4;
                if ms > 0 {
                    trace.op(&[5, ms as u8, (ms >> 8) as u8]);
                    last = now;
                }
                let len = bytes.len() as u16;
                let mut op = vec![0, sender as u8, len.to_le_bytes()[0], len.to_le_bytes()[1]];
                op.extend_from_slice(&bytes);
                trace.op(&op);
                trace.received.push((MessageKind::of(&env), bytes));
            }
            machines[j].handle_message(now, env);
            while let Some(t) = machines[j].poll_transmit() {
                if let Some(k) = (0..MEMBERS).find(|&k| addr(k) == t.to) {
                    queue.push_back((k as usize, t.msg));
                }
            }
            while machines[j].poll_event().is_some() {}
        }
    }
    let last_script = std::mem::take(&mut trace.current);
    trace.scripts.push(last_script);
    for (i, s) in trace.scripts.iter().enumerate() {
        write(Target::Machine, &format!("trace-{i:02}"), s);
    }

    // Up to three envelopes of each kind, as the other targets read them.
    let mut per_kind: Vec<(MessageKind, Vec<u8>)> = Vec::new();
    for (kind, bytes) in &trace.received {
        if per_kind.iter().filter(|(k, _)| k == kind).count() < 3 {
            per_kind.push((*kind, bytes.clone()));
        }
    }
    for (n, (kind, bytes)) in per_kind.iter().enumerate() {
        let name = format!("{}-{n:02}", kind.as_str());
        let env = Envelope::decode(&bytes[..]).unwrap();
        // The envelope target's modes (byte 0): the clear gate, the gate
        // with the test keyring given a frame sealed with its primary or
        // second key, and the envelope for the harness to seal.
        write(Target::Envelope, &name, &[&[0u8][..], bytes].concat());
        let sealed = test_sealer(n % 2).seal(env.clone()).encode_to_vec();
        write(
            Target::Envelope,
            &format!("keyed-{name}"),
            &[&[1u8][..], &sealed].concat(),
        );
        let mode = if n % 2 == 0 { 2u8 } else { 5 };
        write(
            Target::Envelope,
            &format!("sealed-{name}"),
            &[&[mode][..], bytes].concat(),
        );
        let batch = Batch {
            envelopes: vec![env.clone()],
        }
        .encode_to_vec();
        write(
            Target::Quic,
            &format!("datagram-{name}"),
            &[&[1u8][..], &batch].concat(),
        );
        let mut stream = vec![2u8];
        stream.extend_from_slice(&(batch.len() as u32).to_be_bytes());
        stream.extend_from_slice(&batch);
        write(Target::Quic, &format!("stream-{name}"), &stream);
        let mut v1 = vec![3u8];
        v1.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        v1.extend_from_slice(bytes);
        write(Target::Quic, &format!("v1-{name}"), &v1);
        let grpc = |tag: u8, msg: &[u8]| {
            let mut out = vec![tag, 0];
            out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            out.extend_from_slice(msg);
            out
        };
        write(Target::Grpc, &format!("stream-{name}"), &grpc(0, &batch));
        write(Target::Grpc, &format!("send-{name}"), &grpc(1, bytes));
    }
    // The keyed gate given what it must refuse: an unsealed envelope, one
    // sealed with a key it does not hold, and one sealed inside a sealed one.
    let (_, first) = &per_kind[0];
    let env = Envelope::decode(&first[..]).unwrap();
    write(
        Target::Envelope,
        "keyed-unsealed",
        &[&[1u8][..], first].concat(),
    );
    let foreign = Sealer::new(Keyring::new(Key::from_bytes(&[7; KEY_LEN]).unwrap()));
    write(
        Target::Envelope,
        "keyed-foreign-key",
        &[&[1u8][..], &foreign.seal(env.clone()).encode_to_vec()].concat(),
    );
    let mut inner = test_sealer(0).seal(env);
    inner.cluster_id.clear();
    write(
        Target::Envelope,
        "sealed-twice",
        &[&[2u8][..], &inner.encode_to_vec()].concat(),
    );
    for (name, reply) in [
        ("answer-one", &b"\x0a\x09malformed\x12\x04nope\x18\x01"[..]),
        ("answer-empty", &b""[..]),
    ] {
        let mut out = vec![2u8, 0];
        out.extend_from_slice(&(reply.len() as u32).to_be_bytes());
        out.extend_from_slice(reply);
        out.extend_from_within(1..);
        write(Target::Grpc, name, &out);
    }
    for (name, hello) in [
        ("hello-v2a", &b"fuzz"[..]),
        ("hello-addr", &b"fuzz\xff127.0.0.1:7001"[..]),
        ("hello-more", &b"fuzz\xff127.0.0.1:7001\xffnew"[..]),
        ("hello-foreign", &b"other"[..]),
    ] {
        write(Target::Quic, name, &[&[0u8][..], hello].concat());
    }
    for (name, reply) in [
        ("reply-ok", &b"\x00"[..]),
        ("reply-refused", &b"\x01foreign cluster"[..]),
        ("reply-bad", &b"\x07"[..]),
    ] {
        write(Target::Quic, name, &[&[4u8][..], reply].concat());
    }

    let readme = include_str!("../../README.md");
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap();
    write(Target::Config, "readme", example.as_bytes());
    write(
        Target::Config,
        "minimal",
        b"listen = \"127.0.0.1:7001\"\nseeds = [\"127.0.0.1:7002\", \"node-2.example:7001\"]\n",
    );
    write(
        Target::Config,
        "timing",
        b"listen = \"[::1]:0\"\ntransport = \"quic\"\nprobe_interval_ms = 1000\nprobe_timeout_ms = 1000\n\
          gossip_interval_ms = 1\nsuspicion_mult = 1\nmax_message_size = 2048\nfanout = 1\n[meta]\na = \"b\"\n",
    );

    let snapshot = br#"{"format": 1, "cluster_id": "fuzz", "addr": "127.0.0.1:7000",
 "generation": 1764460800123, "members": ["127.0.0.1:7001", "node-2.example:7001", "bad"],
 "meta": {"role": "db"},
 "keys": {"app/x": {"value": [49], "expires_at_ms": null},
          "t": {"value": [], "expires_at_ms": 18446744073709551615},
          "old": {"value": [0, 255], "expires_at_ms": 1}}}"#;
    write(Target::Snapshot, "full", snapshot);
    write(
        Target::Snapshot,
        "empty",
        br#"{"format":1,"cluster_id":"fuzz","addr":"","generation":0,"members":[],"meta":{},"keys":{}}"#,
    );
    write(Target::Snapshot, "format-2", br#"{"format": 2}"#);
    write(
        Target::Admin,
        "join",
        b"\x02/join\n{\"seeds\": [\"127.0.0.1:7001\", \"node-2:7001\"], \"timeout_ms\": 100}",
    );
    write(Target::Admin, "meta-get", b"\x00/meta");
    write(
        Target::Admin,
        "meta-put",
        b"\x01/meta\n{\"role\": \"db\", \"zone\": \"eu\"}",
    );
    write(
        Target::Admin,
        "meta-patch",
        b"\x04/meta\n{\"set\": {\"a\": \"b\"}, \"unset\": [\"zone\"]}",
    );
    write(Target::Admin, "leave", b"\x02/leave");
    for (name, request) in [
        ("members", &b"\x00/members?all=true"[..]),
        ("kv", b"\x00/kv"),
        ("put", b"\x01/kv/color?ttl_ms=1000\nblue"),
        ("put-nested", b"\x01/kv/a/b%20c\nx"),
        ("delete", b"\x03/kv/color"),
        (
            "gossip",
            b"\x02/gossip\n{\"payload\":{\"x\":[1,2]},\"ttl\":3}",
        ),
        (
            "gossip-uuid",
            b"\x02/gossip\n{\"payload\":\"hi\",\"uuid\":\"67e55044-10b1-426f-9247-bb680e5fe0c8\"}",
        ),
        ("stats", b"\x00/stats"),
        ("peers", b"\x00/peers"),
        ("messages", b"\x00/messages"),
        ("healthz", b"\x00/healthz"),
        ("metrics", b"\x00/metrics"),
        ("wrong-method", b"\x04/kv"),
    ] {
        write(Target::Admin, name, request);
    }
}
