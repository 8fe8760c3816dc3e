//! Keyring scenarios (issue #12), generic over the transport like the rest
//! of the suite: a member with a wrong key or none is refused and never
//! joins; a rotation (install, use, remove) under traffic loses no member
//! and no key; a member that cannot answer is named in the report. Each
//! returns the keys it used, so that a caller can look for them in the
//! logs of the run (`tests/keyring.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gossip_core::{Event, Key, KeyId, Keyring, KeyringOp, KeyringOutcome, Membership};

use crate::{Cluster, Kind, wait_until};

const JOIN: Duration = Duration::from_secs(10);
/// How long a keyring command waits for answers.
const ANSWERS: Duration = Duration::from_secs(10);

/// Starts `n` members encrypting with `ring`, each seeded with the one
/// before, and waits until they agree.
async fn keyed_cluster<K: Kind>(kind: K, n: usize, ring: &Keyring) -> Cluster<K> {
    let mut c = Cluster::new(kind);
    for i in 0..n {
        let t = c.kind.bind(None).await;
        let cfg = c.config.clone();
        c.spawn_keyed(t, i.checked_sub(1), cfg, Some(ring.clone()))
            .await;
    }
    let all: Vec<usize> = (0..n).collect();
    c.wait_agree(JOIN, "members sharing a key join", &all).await;
    c
}

fn new_key() -> Key {
    Key::generate().expect("random key")
}

/// Members `who` agree on `who`, and the others in `outsiders` know nobody.
#[track_caller]
fn only_keyed_members<K: Kind>(c: &Cluster<K>, who: &[usize], outsiders: &[usize]) {
    assert!(c.agree(who), "views:{}", c.views());
    for &o in outsiders {
        assert_eq!(
            c.members[o].members().len(),
            1,
            "member {o} learned somebody; views:{}",
            c.views()
        );
    }
}

pub async fn a_member_with_a_wrong_key_or_none_is_rejected<K: Kind>(kind: K) -> Vec<Key> {
    let (key, wrong_key) = (new_key(), new_key());
    let mut c = keyed_cluster(kind, 3, &Keyring::new(key.clone())).await;
    let cfg = c.config.clone();
    let t = c.kind.bind(None).await;
    let wrong = c
        .spawn_keyed(
            t,
            Some(0),
            cfg.clone(),
            Some(Keyring::new(wrong_key.clone())),
        )
        .await;
    let t = c.kind.bind(None).await;
    let none = c.spawn_keyed(t, Some(1), cfg.clone(), None).await;
    // Both knock at their seed, again and again: each knock is refused.
    wait_until(JOIN, "the seeds refuse both", || {
        c.members[0].stats().rejected_decrypt >= 1 && c.members[1].stats().rejected_decrypt >= 1
    })
    .await;
    // The other direction: a keyed member told to join through them sends
    // sealed envelopes, which they refuse.
    c.members[2].add_seed(c.addr(wrong));
    c.members[2].add_seed(c.addr(none));
    wait_until(JOIN, "the outsiders refuse sealed envelopes", || {
        c.members[wrong].stats().rejected_decrypt >= 1
            && c.members[none].stats().rejected_decrypt >= 1
    })
    .await;
    // Nothing may change however long they try: no condition to wait on.
    tokio::time::sleep(cfg.probe_interval * 5).await;
    only_keyed_members(&c, &[0, 1, 2], &[wrong, none]);
    for i in 0..3 {
        assert_eq!(c.members[i].key_ids(), Some(vec![key.id()]));
    }
    assert_eq!(c.members[none].key_ids(), None);
    c.shutdown().await;
    vec![key, wrong_key]
}

/// Asserts that every member answered and holds exactly `want` afterwards.
#[track_caller]
fn check_done(report: &gossip_core::KeyringReport, members: usize, want: &[KeyId]) {
    assert_eq!(report.members.len(), members, "{report:?}");
    assert!(report.is_complete(), "{report:?}");
    for outcome in report.members.values() {
        assert_eq!(
            *outcome,
            KeyringOutcome::Done {
                keys: want.to_vec()
            },
            "{report:?}"
        );
    }
}

pub async fn rotation_under_traffic_loses_no_member_and_no_key<K: Kind>(kind: K) -> Vec<Key> {
    let (old, new) = (new_key(), new_key());
    let mut c = keyed_cluster(kind, 4, &Keyring::new(old.clone())).await;
    let all: Vec<usize> = (0..4).collect();
    let mut events: Vec<_> = c.members.iter().map(|m| m.subscribe()).collect();
    let done = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    // Lets the traffic write twice more, so that every step runs under it.
    let writes = || async {
        let n = written.load(Ordering::SeqCst);
        wait_until(JOIN, "writes", || written.load(Ordering::SeqCst) >= n + 2).await;
    };
    // Each step is asked of a different member, as operators would.
    let rotation = async {
        writes().await;
        let r = c.members[0]
            .change_keyring(KeyringOp::Install(new.clone()), ANSWERS)
            .await
            .unwrap();
        check_done(&r, 4, &[old.id(), new.id()]);
        writes().await;
        let r = c.members[1]
            .change_keyring(KeyringOp::Use(new.clone()), ANSWERS)
            .await
            .unwrap();
        check_done(&r, 4, &[new.id(), old.id()]);
        writes().await;
        // Removing the primary is refused by every member, and changes
        // nothing.
        let r = c.members[2]
            .change_keyring(KeyringOp::Remove(new.clone()), ANSWERS)
            .await
            .unwrap();
        assert_eq!(r.members.len(), 4, "{r:?}");
        assert!(
            r.members.values().all(
                |o| matches!(o, KeyringOutcome::Failed { error } if error.contains("primary"))
            ),
            "{r:?}"
        );
        writes().await;
        let r = c.members[3]
            .change_keyring(KeyringOp::Remove(old.clone()), ANSWERS)
            .await
            .unwrap();
        check_done(&r, 4, &[new.id()]);
        writes().await;
        let r = c.members[0]
            .change_keyring(KeyringOp::List, ANSWERS)
            .await
            .unwrap();
        check_done(&r, 4, &[new.id()]);
        assert_eq!(r.key_counts().get(&new.id()), Some(&(4, 4)));
        done.store(true, Ordering::SeqCst);
    };
    // Every member writes its counter every 20 ms meanwhile.
    let traffic = async {
        let mut n = 0u64;
        while !done.load(Ordering::SeqCst) {
            n += 1;
            for m in &c.members {
                m.set_key("n", Bytes::from(n.to_string()), None).unwrap();
            }
            written.store(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    };
    let ((), last) = tokio::join!(rotation, traffic);
    let want = Bytes::from(last.to_string());
    wait_until(JOIN, "every member has every member's last write", || {
        c.members.iter().all(|m| {
            c.members.iter().all(|o| {
                m.get_key(&o.local_id().addr, "n")
                    .is_some_and(|e| e.value == want)
            })
        })
    })
    .await;
    assert!(c.agree(&all), "views:{}", c.views());
    let refused: u64 = c.members.iter().map(|m| m.stats().rejected_decrypt).sum();
    eprintln!("rotation under {last} rounds of writes; envelopes refused meanwhile: {refused}");
    for (i, rx) in events.iter_mut().enumerate() {
        while let Ok(e) = rx.try_recv() {
            assert!(
                !matches!(e, Event::Failed(_) | Event::Left(_)),
                "member {i} lost a member during the rotation: {e:?}"
            );
        }
    }
    // The old key opens nothing any more.
    let cfg = c.config.clone();
    let t = c.kind.bind(None).await;
    let before = c.members[0].stats().rejected_decrypt;
    let stale = c
        .spawn_keyed(t, Some(0), cfg, Some(Keyring::new(old.clone())))
        .await;
    wait_until(JOIN, "a member with the removed key is refused", || {
        c.members[0].stats().rejected_decrypt > before
    })
    .await;
    only_keyed_members(&c, &all, &[stale]);
    c.shutdown().await;
    vec![old, new]
}

pub async fn a_member_that_does_not_answer_is_reported<K: Kind>(kind: K) -> Vec<Key> {
    let key = new_key();
    let c = keyed_cluster(kind, 3, &Keyring::new(key.clone())).await;
    let silent = c.addr(2);
    c.faults
        .partition(&[vec![c.addr(0), c.addr(1)], vec![silent.clone()]]);
    let next = new_key();
    let r = c.members[0]
        .change_keyring(KeyringOp::Install(next.clone()), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!r.is_complete(), "{r:?}");
    assert_eq!(r.no_answer(), vec![&silent], "{r:?}");
    let both = KeyringOutcome::Done {
        keys: vec![key.id(), next.id()],
    };
    assert_eq!(r.members.get(&c.addr(1)), Some(&both), "{r:?}");
    // Once it is reachable again, the same command completes.
    c.faults.heal();
    c.wait_agree(JOIN, "healed", &[0, 1, 2]).await;
    let r = c.members[1]
        .change_keyring(KeyringOp::Install(next.clone()), ANSWERS)
        .await
        .unwrap();
    check_done(&r, 3, &[key.id(), next.id()]);
    c.shutdown().await;
    vec![key, next]
}
