//! The worked example of `PROTOCOL.md` (section "Worked example"),
//! computed with the code: the bytes one member's fingerprint hashes, the
//! members' fingerprints, the digest fingerprint (their sum), the ring
//! positions, the buckets and the digest range a differing bucket leads
//! to. Every number is asserted here *and* must appear verbatim in
//! `PROTOCOL.md`, so the specification cannot drift from the code
//! unnoticed (issue #11).

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;

use crate::config::Config;
use crate::digest::differing_ranges;
use crate::event::MemberState;
use crate::id::{NodeAddr, NodeId};
use crate::machine::Machine;
use crate::members::{
    BUCKETS, Fact, Table, bucket_of, bucket_range, fingerprint, fingerprint_input, ring_position,
};

/// The specification whose worked example this module checks.
const PROTOCOL_MD: &str = include_str!("../../PROTOCOL.md");

/// The example's members as member A (`10.0.0.1:7001`) sees them:
/// `(address, generation, incarnation, state, version)`.
const EXAMPLE: [(&str, u64, u64, MemberState, u64); 3] = [
    ("10.0.0.1:7001", 1_700_000_000_000, 0, MemberState::Alive, 2),
    (
        "10.0.0.2:7001",
        1_700_000_000_123,
        1,
        MemberState::Suspect,
        0,
    ),
    ("10.0.0.3:7001", 1_700_000_000_456, 0, MemberState::Dead, 3),
];

/// The bytes hashed for A's fingerprint, in hex, as `PROTOCOL.md` prints
/// them.
const INPUT_A: &str =
    "31302e302e302e313a373030310068e5cf8b0100000000000000000000000200000000000000";
/// The members' fingerprints, in the order of [`EXAMPLE`].
const FINGERPRINTS: [u64; 3] = [0x8565c098c1d075ec, 0x5eb71c439d525346, 0x4da330d56cf6e119];
/// The members' ring positions, in the order of [`EXAMPLE`].
const POSITIONS: [u64; 3] = [0xdc805361997ce91e, 0x896e1f30efa8a907, 0x2d495f6a6e1c5a7b];
/// The members' buckets (top byte of the ring position).
const BUCKET_NUMBERS: [usize; 3] = [220, 137, 45];
/// A's digest fingerprint: `FINGERPRINTS[0] + FINGERPRINTS[1]` modulo
/// 2^64 (C, dead, is left out).
const ROOT_A: u64 = 0xe41cdcdc5f22c932;
/// Member P's view differs from A's in one fact only: B alive (not
/// suspect) at incarnation 1. B's fingerprint there, and P's digest
/// fingerprint.
const FINGERPRINT_B_ALIVE: u64 = 0x48f4870479d05af5;
const ROOT_P: u64 = 0xce5a479d3ba0d0e1;
/// The one ring range P asks A's complete digest of: bucket 137.
const RANGE_137: (u64, u64) = (0x8900000000000000, 0x89ffffffffffffff);

fn fact(i: usize) -> Fact {
    let (addr, generation, incarnation, state, _) = EXAMPLE[i];
    Fact {
        id: NodeId::new(NodeAddr::parse(addr).unwrap(), generation),
        incarnation,
        state,
    }
}

fn hex(v: u64) -> String {
    format!("{v:#018x}")
}

/// A's own writes: metadata `role=db` (version 1), then key `color` =
/// `blue` (version 2).
fn own_writes(table: &mut Table, now: Instant) {
    table.update(&fact(0).id.addr, |n| {
        n.owner
            .write_meta(BTreeMap::from([("role".into(), "db".into())]));
        n.owner
            .write(now, "color", Some(Bytes::from_static(b"blue")), None);
    });
}

/// A table whose local member is A, after its own writes, knowing the
/// other members of [`EXAMPLE`] (each first alive, its version set, then
/// in its example state), with B's state replaced by `b_state`.
fn table(now: Instant, b_state: MemberState) -> Table {
    let mut t = Table::new(fact(0), now);
    own_writes(&mut t, now);
    for (i, &(.., version)) in EXAMPLE.iter().enumerate().skip(1) {
        let mut f = fact(i);
        f.state = MemberState::Alive;
        t.apply(f, now);
        t.update(&fact(i).id.addr, |n| n.owner.version = version);
        let mut f = fact(i);
        if i == 1 {
            f.state = b_state;
        }
        t.apply(f, now);
    }
    t
}

/// Panics unless `PROTOCOL.md` prints `text`.
#[track_caller]
fn printed(text: &str, what: &str) {
    assert!(
        PROTOCOL_MD.contains(text),
        "PROTOCOL.md's worked example must print {what} as `{text}`"
    );
}

#[test]
fn fingerprint_input_layout() {
    let input = fingerprint_input(&fact(0), EXAMPLE[0].4, |bytes| {
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    });
    assert_eq!(input, INPUT_A);
    printed(INPUT_A, "the bytes hashed for A");
}

#[test]
fn fingerprints_positions_and_buckets() {
    let now = Instant::now();
    let t = table(now, MemberState::Suspect);
    for (i, (addr, ..)) in EXAMPLE.iter().enumerate() {
        let n = t.get(&fact(i).id.addr).expect("known");
        assert_eq!(n.fact, fact(i));
        assert_eq!(n.owner.version, EXAMPLE[i].4);
        let fp = fingerprint(&n.fact, n.owner.version);
        let pos = ring_position(&n.fact.id.addr);
        assert_eq!(fp, FINGERPRINTS[i], "fingerprint of {addr}");
        assert_eq!(pos, POSITIONS[i], "ring position of {addr}");
        assert_eq!(bucket_of(pos), BUCKET_NUMBERS[i], "bucket of {addr}");
        printed(&hex(fp), "each member's fingerprint");
        printed(&hex(pos), "each member's ring position");
        printed(
            &format!("| {} |", BUCKET_NUMBERS[i]),
            "each member's bucket",
        );
    }
    assert_eq!(ROOT_A, FINGERPRINTS[0].wrapping_add(FINGERPRINTS[1]));
    assert_eq!(t.root_hash(), ROOT_A, "tombstones are left out");
    printed(&hex(ROOT_A), "A's digest fingerprint");
    let mut buckets = vec![0u64; BUCKETS];
    buckets[BUCKET_NUMBERS[0]] = FINGERPRINTS[0];
    buckets[BUCKET_NUMBERS[1]] = FINGERPRINTS[1];
    assert_eq!(t.bucket_hashes(), &buckets[..]);
}

#[test]
fn a_differing_fact_shows_in_its_bucket_only() {
    let now = Instant::now();
    let a = table(now, MemberState::Suspect);
    let p = table(now, MemberState::Alive);
    let b = p.get(&fact(1).id.addr).expect("known");
    assert_eq!(fingerprint(&b.fact, 0), FINGERPRINT_B_ALIVE);
    assert_eq!(p.root_hash(), ROOT_P);
    assert_eq!(ROOT_P, FINGERPRINTS[0].wrapping_add(FINGERPRINT_B_ALIVE));
    let ranges = differing_ranges(p.bucket_hashes(), a.bucket_hashes());
    assert_eq!(ranges, vec![RANGE_137]);
    assert_eq!(bucket_range(BUCKET_NUMBERS[1]), RANGE_137);
    printed(&hex(FINGERPRINT_B_ALIVE), "B's fingerprint in P's view");
    printed(&hex(ROOT_P), "P's digest fingerprint");
    printed(&hex(RANGE_137.0), "the start of bucket 137");
    printed(&hex(RANGE_137.1), "the end of bucket 137");
}

/// The machine counts versions as the example says: A alone, after
/// setting its metadata and one key, has the digest fingerprint
/// `FINGERPRINTS[0]`, and sends it in its `SyncRequest`.
#[test]
fn the_machine_agrees() {
    let now = Instant::now();
    let mut m = Machine::new(fact(0).id, Config::default(), 1, now).expect("valid config");
    m.set_meta(now, BTreeMap::from([("role".into(), "db".into())]))
        .expect("small metadata");
    let v = m
        .set_key(now, "color", Bytes::from_static(b"blue"), None)
        .expect("small key");
    assert_eq!(v, 2);
    assert_eq!(m.digest_hash(), FINGERPRINTS[0]);
    m.add_seed(now, NodeAddr::parse("10.0.0.9:7001").expect("valid"));
    let t = m.poll_transmit().expect("the seed is contacted");
    match t.msg.body {
        Some(Body::SyncRequest(pb::SyncRequest {
            digest_hash,
            members,
        })) => assert_eq!((digest_hash, members), (FINGERPRINTS[0], 1)),
        other => panic!("expected a SyncRequest, got {other:?}"),
    }
}
