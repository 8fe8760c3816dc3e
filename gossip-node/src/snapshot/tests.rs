//! The snapshot file: round trip, atomic replacement, corrupt and foreign
//! files, and what a member's snapshot holds.

use super::*;
use gossip_core::{Config, MemNetwork, Member, MemberOptions};

fn sample() -> Snapshot {
    Snapshot {
        format: FORMAT,
        cluster_id: "c".to_owned(),
        addr: "127.0.0.1:7004".to_owned(),
        generation: 42,
        members: ["127.0.0.1:7001".to_owned(), "127.0.0.1:7002".to_owned()].into(),
        meta: [("role".to_owned(), "db".to_owned())].into(),
        keys: [
            (
                "app/x".to_owned(),
                SnapshotKey {
                    value: b"1".to_vec(),
                    expires_at_ms: None,
                },
            ),
            (
                "bin".to_owned(),
                SnapshotKey {
                    value: vec![0xff, 0],
                    expires_at_ms: Some(u64::MAX),
                },
            ),
        ]
        .into(),
    }
}

#[test]
fn a_written_snapshot_loads_back_and_replaces_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(&dir.path().join("data")).unwrap();
    assert_eq!(store.load("c"), None);
    let mut s = sample();
    store.write(&s).unwrap();
    assert_eq!(store.load("c"), Some(s.clone()));
    s.generation = 43;
    s.members.clear();
    store.write(&s).unwrap();
    assert_eq!(store.load("c"), Some(s));
    // Only the snapshot remains: no temporary file.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![SNAPSHOT_FILE.to_owned()]);
}

#[test]
fn a_corrupt_snapshot_is_moved_aside_and_ignored() {
    for text in [
        &b"{\"format\": 1, \"cluster"[..],
        b"\xff\xfe",
        b"[]",
        b"{\"format\": 9}",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        std::fs::write(store.path(), text).unwrap();
        assert_eq!(store.load("c"), None);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with("snapshot.json.corrupt-"), "{names:?}");
        let aside = std::fs::read(dir.path().join(&names[0])).unwrap();
        assert_eq!(aside, text, "moved, not rewritten");
        // The next start finds nothing and can write again.
        assert_eq!(store.load("c"), None);
        store.write(&sample()).unwrap();
        assert!(store.load("c").is_some());
    }
}

#[test]
fn a_snapshot_of_another_cluster_is_ignored_but_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    store.write(&sample()).unwrap();
    assert_eq!(store.load("other"), None);
    assert!(store.path().exists());
    assert!(store.load("c").is_some());
}

#[test]
fn an_unusable_data_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = SnapshotStore::open(&file.join("sub")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot create the data directory"),
        "{err}"
    );
}

#[test]
fn the_next_generation_is_above_the_last_and_the_clock() {
    let s = sample();
    assert_eq!(s.next_generation(10), 43);
    assert_eq!(s.next_generation(1000), 1000);
    let s = Snapshot {
        generation: u64::MAX,
        ..sample()
    };
    assert_eq!(s.next_generation(5), u64::MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_snapshot_holds_its_peers_meta_and_keys_and_republishes_them() {
    let net = MemNetwork::new();
    let cfg = Config {
        gossip_interval: Duration::from_millis(50),
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        ..Config::default()
    };
    let options = MemberOptions {
        meta: [("role".to_owned(), "db".to_owned())].into(),
        ..MemberOptions::default()
    };
    let a = Member::new(cfg.clone(), net.transport(), options).unwrap();
    let b = Member::new(cfg.clone(), net.transport(), MemberOptions::default()).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    a.add_seed(b.local_id().addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.members().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no join");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.set_key("k", Bytes::from_static(b"v"), None).unwrap();
    a.set_key("t", Bytes::from_static(b"w"), Some(Duration::from_secs(60)))
        .unwrap();
    let s = Snapshot::of(&a, "default").unwrap();
    assert_eq!(s.addr, a.local_id().addr.to_string());
    assert_eq!(s.generation, a.local_id().generation);
    assert_eq!(s.members, [b.local_id().addr.to_string()].into());
    assert_eq!(s.meta["role"], "db");
    assert_eq!(s.keys["k"].value, b"v");
    assert_eq!(s.keys["k"].expires_at_ms, None);
    let now = unix_ms();
    let expiry = s.keys["t"].expires_at_ms.unwrap();
    assert!(expiry > now && expiry <= now + 60_000, "{expiry} vs {now}");
    assert_eq!(s.seeds(), vec![b.local_id().addr]);

    // A new member republishes the keys that have not expired.
    let c = Member::new(cfg, net.transport(), MemberOptions::default()).unwrap();
    c.start().await.unwrap();
    assert_eq!(s.republish(&c, now), 2);
    assert_eq!(s.republish(&c, expiry), 1, "the expired key is skipped");
    let mine = c.kv().remove(&c.local_id().addr).unwrap();
    assert_eq!(mine["k"].value, Bytes::from_static(b"v"));
    // Once it has left, a member has no snapshot to give.
    a.shutdown().await;
    assert_eq!(Snapshot::of(&a, "default"), None);
    b.shutdown().await;
    c.shutdown().await;
}
