//! The scenarios every transport must pass. Each takes a fresh [`Kind`].

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use gossip_core::{Config, Event, MemberState, Membership, Transport, pb};
use prost::Message;

use crate::{Cluster, Kind, test_config, wait_until};

const JOIN: Duration = Duration::from_secs(10);

pub async fn join_through_a_seed<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(2).await;
    c.wait_agree(JOIN, "join", &[0, 1]).await;
    c.shutdown().await;
}

pub async fn chain_of_ten<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(10).await;
    let all: Vec<usize> = (0..10).collect();
    c.wait_agree(JOIN, "a chain of 10 learns everyone", &all)
        .await;
    c.shutdown().await;
}

pub async fn metadata_update_seen_by_all<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(4).await;
    c.wait_agree(JOIN, "join", &[0, 1, 2, 3]).await;
    c.members[2]
        .set_meta(BTreeMap::from([("zone".to_owned(), "b".to_owned())]))
        .unwrap();
    let a = c.addr(2);
    wait_until(JOIN, "metadata", || {
        c.members.iter().all(|m| {
            m.members()
                .iter()
                .any(|x| x.addr == a && x.meta.get("zone").is_some_and(|z| z == "b"))
        })
    })
    .await;
    c.shutdown().await;
}

pub async fn keys_set_delete_and_ttl_seen_by_all<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(4).await;
    c.wait_agree(JOIN, "join", &[0, 1, 2, 3]).await;
    let owner = c.addr(1);
    c.members[1]
        .set_key("k", Bytes::from_static(b"v"), None)
        .unwrap();
    c.members[1]
        .set_key("t", Bytes::from_static(b"x"), Some(Duration::from_secs(1)))
        .unwrap();
    wait_until(JOIN, "set", || {
        c.members
            .iter()
            .all(|m| m.get_key(&owner, "k").is_some_and(|e| e.value == "v"))
    })
    .await;
    c.members[1].delete_key("k").unwrap();
    wait_until(JOIN, "delete", || {
        c.members.iter().all(|m| m.get_key(&owner, "k").is_none())
    })
    .await;
    wait_until(JOIN, "ttl expiry", || {
        c.members.iter().all(|m| m.get_key(&owner, "t").is_none())
    })
    .await;
    c.shutdown().await;
}

/// A value too large for one QUIC datagram or one small frame (8 KB):
/// it travels on the transports' large-message paths (a QUIC stream, a
/// gRPC batch of its own) and reaches everyone intact.
pub async fn large_value_seen_by_all<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(3).await;
    c.wait_agree(JOIN, "join", &[0, 1, 2]).await;
    let owner = c.addr(0);
    let value: Bytes = (0..8192u32).map(|i| (i % 251) as u8).collect();
    c.members[0].set_key("big", value.clone(), None).unwrap();
    wait_until(JOIN, "the 8 KB value everywhere", || {
        c.members
            .iter()
            .all(|m| m.get_key(&owner, "big").is_some_and(|e| e.value == value))
    })
    .await;
    c.shutdown().await;
}

pub async fn broadcast_delivered_exactly_once<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(6).await;
    let all: Vec<usize> = (0..6).collect();
    c.wait_agree(JOIN, "join", &all).await;
    let mut subs: Vec<_> = c.members.iter().map(|m| m.subscribe()).collect();
    let uuid = c.members[4]
        .broadcast(Bytes::from_static(b"hello"), None)
        .unwrap();
    let mut counts = vec![0usize; 6];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        for (i, s) in subs.iter_mut().enumerate() {
            while let Ok(e) = s.try_recv() {
                if matches!(e, Event::Broadcast(b) if b.uuid == uuid && b.payload == "hello") {
                    counts[i] += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Retransmissions have long run out by now: a duplicate would show.
    assert_eq!(counts, vec![1; 6], "deliveries per member");
    c.shutdown().await;
}

pub async fn killed_member_is_removed_within_the_bound<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(5).await;
    let all: Vec<usize> = (0..5).collect();
    c.wait_agree(JOIN, "join", &all).await;
    c.members[3].crash().await;
    let bound = c.config.detection_bound(5);
    let rest = c.running(&[3]);
    let took = c.wait_agree(bound, "detection", &rest).await;
    let a = c.addr(3);
    for i in &rest {
        let st = c.members[*i]
            .all_members()
            .into_iter()
            .find(|m| m.addr == a)
            .map(|m| m.state);
        assert_eq!(st, Some(MemberState::Dead), "member {i}");
    }
    eprintln!("crash detected by all in {took:?} (bound {bound:?})");
    c.shutdown().await;
}

/// Fast protocol timing for the failure-detection scenarios (issue #10):
/// probes every 100 ms with a 50 ms timeout, the other durations halved
/// from [`crate::test_config`] likewise.
pub fn fast_config() -> gossip_core::Config {
    gossip_core::Config {
        gossip_interval: Duration::from_millis(50),
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        seed_retry_initial: Duration::from_millis(50),
        seed_retry_max: Duration::from_millis(250),
        ..crate::test_config()
    }
}

/// A member stops abruptly (no leave; its transport stops listening, so
/// sends to it are refused where the transport can tell): the others drop
/// it within the detection bound. The fast target (at most 10 probe
/// periods) is a benchmark figure, printed here, not asserted.
pub async fn a_stopped_member_is_removed_fast<K: Kind>(kind: K) {
    let mut c = Cluster::with_config(kind, fast_config());
    c.chain(5).await;
    let all: Vec<usize> = (0..5).collect();
    c.wait_agree(JOIN, "join", &all).await;
    // Timed from the stop, not from when `crash` returns (a transport may
    // take a while to close).
    let stopped_at = tokio::time::Instant::now();
    c.members[3].crash().await;
    let crash_took = stopped_at.elapsed();
    let bound = c.config.detection_bound(5);
    let rest = c.running(&[3]);
    let left = bound.saturating_sub(stopped_at.elapsed());
    c.wait_agree(left, "removal of the stopped member", &rest)
        .await;
    let took = stopped_at.elapsed();
    let refused: u64 = rest
        .iter()
        .map(|i| c.members[*i].stats().send_refused)
        .sum();
    eprintln!(
        "stopped member removed by all in {took:?} = {:.1} probe periods (bound {bound:?}; \
         {refused} refusals reported; the stop itself took {crash_took:?})",
        took.as_secs_f64() / c.config.probe_interval.as_secs_f64(),
    );
    c.shutdown().await;
}

/// One member is cut off: every message to and from it is lost (not
/// refused). Nobody declares it dead before the minimum suspicion timeout
/// has passed since the cut; everyone does within the detection bound; and
/// after healing the views become one again.
pub async fn a_partitioned_member_is_not_removed_before_its_time<K: Kind>(kind: K) {
    const CUT: usize = 2;
    let mut c = Cluster::new(kind);
    c.chain(5).await;
    let all: Vec<usize> = (0..5).collect();
    c.wait_agree(JOIN, "join", &all).await;
    let rest = c.running(&[CUT]);
    let cut_addr = c.addr(CUT);
    let mut subs: Vec<_> = rest.iter().map(|i| c.members[*i].subscribe()).collect();
    let cut_at = tokio::time::Instant::now();
    c.faults.partition(&[vec![cut_addr.clone()]]);
    let earliest = c.config.suspicion_min(5);
    let bound = c.config.detection_bound(5) + Duration::from_secs(2);
    // When each of the others was first seen declaring the member dead;
    // events are polled, so a time seen is no earlier than the event.
    let mut failed_at: Vec<Option<Duration>> = vec![None; rest.len()];
    let deadline = cut_at + bound;
    while failed_at.iter().any(Option::is_none) {
        for (j, sub) in subs.iter_mut().enumerate() {
            while let Ok(e) = sub.try_recv() {
                match e {
                    Event::Failed(id) if id.addr == cut_addr => {
                        failed_at[j].get_or_insert(cut_at.elapsed());
                    }
                    Event::Failed(id) => {
                        panic!("member {} declared {id} dead, on the healthy side", rest[j])
                    }
                    _ => {}
                }
            }
        }
        assert!(
            tokio::time::Instant::now() <= deadline,
            "not declared dead by all within {bound:?}: {failed_at:?}; views:{}",
            c.views()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = failed_at
        .iter()
        .flatten()
        .min()
        .copied()
        .unwrap_or_default();
    assert!(
        first >= earliest,
        "declared dead {first:?} after the cut, before the minimum suspicion timeout \
         {earliest:?}: {failed_at:?}"
    );
    eprintln!("partitioned member declared dead after {failed_at:?} (minimum {earliest:?})");
    c.wait_agree(JOIN, "the others drop it", &rest).await;
    c.faults.heal();
    c.wait_agree(Duration::from_secs(20), "one view after healing", &all)
        .await;
    c.shutdown().await;
}

pub async fn leaving_member_is_removed_at_once<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(5).await;
    let all: Vec<usize> = (0..5).collect();
    c.wait_agree(JOIN, "join", &all).await;
    c.members[2].shutdown().await;
    let rest = c.running(&[2]);
    // Far below the probe interval: nobody had to probe.
    let took = c.wait_agree(c.config.probe_interval, "leave", &rest).await;
    eprintln!("leave seen by all in {took:?}");
    c.shutdown().await;
}

pub async fn seed_that_never_answers_is_not_a_member<K: Kind>(kind: K) {
    let silent = kind.bind(None).await;
    let silent_addr = silent.local_addr();
    silent.shutdown().await;
    drop(silent);
    let mut c = Cluster::new(kind);
    c.spawn(None).await;
    c.members[0].add_seed(silent_addr.clone());
    // Several join attempts (the first and two retries, at most
    // `seed_retry_max` apart; a generous limit for a busy machine, where
    // a QUIC attempt may wait out its connect timeout), and at no point is
    // the silent seed a member (issue #13: a fixed sleep here once ended
    // before the third attempt on a loaded machine).
    let member = &c.members[0];
    let mut seen_silent = false;
    wait_until(JOIN, "three join attempts to the silent seed", || {
        seen_silent |= member.members().iter().any(|m| m.addr == silent_addr);
        let stats = member.stats();
        stats.send_failures + stats.messages_sent >= 3
    })
    .await;
    assert!(!seen_silent, "the silent seed was listed as a member");
    let members = member.members();
    assert_eq!(members.len(), 1);
    assert!(members.iter().all(|m| m.addr != silent_addr));
    c.shutdown().await;
}

pub async fn restart_with_a_new_generation_replaces_the_old<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(4).await;
    c.wait_agree(JOIN, "join", &[0, 1, 2, 3]).await;
    let addr = c.addr(3);
    let old_gen = c.members[3].local_id().generation;
    c.members[3].crash().await;
    let cfg = c.config.clone();
    let i = c.spawn_with(Some(&addr), Some(0), cfg).await;
    let new_gen = c.members[i].local_id().generation;
    assert!(new_gen > old_gen);
    let everyone = [0, 1, 2, i];
    wait_until(JOIN, "new generation everywhere", || {
        everyone.iter().all(|m| {
            c.members[*m]
                .members()
                .iter()
                .any(|x| x.addr == addr && x.generation == new_gen)
        }) && c.agree(&everyone)
    })
    .await;
    c.shutdown().await;
}

fn envelope(cluster: &str) -> Vec<u8> {
    pb::Envelope {
        cluster_id: cluster.into(),
        from: Some(pb::NodeId {
            addr: "127.0.0.1:9".into(),
            generation: 1,
        }),
        updates: vec![pb::MemberUpdate {
            id: Some(pb::NodeId {
                addr: "127.0.0.1:9".into(),
                generation: 1,
            }),
            incarnation: 0,
            state: pb::MemberState::Alive as i32,
            ..Default::default()
        }],
        body: Some(pb::envelope::Body::Gossip(pb::Gossip {})),
        ..Default::default()
    }
    .encode_to_vec()
}

pub async fn bad_input_is_rejected_and_changes_nothing<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(2).await;
    c.wait_agree(JOIN, "join", &[0, 1]).await;
    let target = c.addr(0);
    let before = c.members[0].members();

    let garbage = c
        .kind
        .send_raw(&target, Bytes::from_static(&[0xff, 0xff, 0xff, 0x0f]))
        .await;
    let err = garbage.expect_err("garbage accepted");
    assert!(
        err.to_lowercase().contains("decode") || err.contains("malformed"),
        "{err}"
    );

    let huge = Bytes::from(vec![0u8; c.config.max_message_size + 1]);
    let err = c
        .kind
        .send_raw(&target, huge)
        .await
        .expect_err("oversized accepted");
    assert!(
        err.contains("large") || err.contains("exceeds") || err.contains("OutOfRange"),
        "{err}"
    );

    let err = c
        .kind
        .send_raw(&target, Bytes::from(envelope("other")))
        .await
        .expect_err("foreign accepted");
    assert!(err.contains("cluster"), "{err}");
    assert_eq!(c.members[0].stats().rejected_foreign_cluster, 1);

    // A record no writer could make: a key over the limit, from a sender
    // that vouches for itself. Refused whole: neither the key nor the
    // sender is learned.
    let mut planted = pb::Envelope::decode(envelope(&c.config.cluster_id).as_slice()).unwrap();
    let owner = planted.from.clone();
    planted.from = Some(pb::NodeId {
        addr: "127.0.0.1:10".into(),
        generation: 1,
    });
    planted.updates[0].id = planted.from.clone();
    planted.body = Some(pb::envelope::Body::Delta(pb::Delta {
        owners: vec![pb::OwnerDelta {
            member: Some(pb::MemberUpdate {
                id: owner,
                state: pb::MemberState::Alive as i32,
                ..Default::default()
            }),
            keys: vec![pb::KeyValue {
                key: "k".repeat(gossip_core::MAX_KEY_LEN + 1),
                value: Bytes::from_static(b"v"),
                version: 1,
                ..Default::default()
            }],
            to_version: 1,
            ..Default::default()
        }],
        push: true,
    }));
    let malformed = c.members[0].stats().rejected_malformed;
    let err = c
        .kind
        .send_raw(&target, Bytes::from(planted.encode_to_vec()))
        .await
        .expect_err("an over-long key accepted");
    assert!(err.contains("key of 257 bytes"), "{err}");
    assert_eq!(c.members[0].stats().rejected_malformed, malformed + 1);
    assert!(
        c.members[0]
            .members()
            .iter()
            .all(|m| m.addr.as_str() != "127.0.0.1:10"),
        "the sender of a refused envelope is not learned"
    );

    // A whole member of another cluster cannot join through ours.
    let mut foreign = c.config.clone();
    foreign.cluster_id = "elsewhere".into();
    let f = c.spawn_with(None, Some(0), foreign).await;
    let fa = c.addr(f);
    tokio::time::sleep(c.config.probe_interval * 3).await; // Nothing may change: no condition to wait on.
    assert_eq!(
        c.members[f].members().len(),
        1,
        "the foreign member learned nobody"
    );
    assert!(c.members[0].stats().rejected_foreign_cluster > 1);
    let after = c.members[0].members();
    assert!(after.iter().all(|m| m.addr != fa));
    let addrs = |v: &[gossip_core::MemberInfo]| {
        v.iter()
            .map(|m| (m.addr.clone(), m.generation))
            .collect::<Vec<_>>()
    };
    assert_eq!(addrs(&before), addrs(&after), "membership unchanged");
    // A valid frame is still accepted afterwards.
    c.kind
        .send_raw(&target, Bytes::from(envelope(&c.config.cluster_id)))
        .await
        .expect("valid frame");
    c.shutdown().await;
}

pub async fn no_false_deaths_under_twenty_percent_loss<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(5).await;
    let all: Vec<usize> = (0..5).collect();
    c.wait_agree(JOIN, "join", &all).await;
    let mut subs: Vec<_> = c.members.iter().map(|m| m.subscribe()).collect();
    c.faults.set_loss(0.2);
    // 40 probe periods per member under loss.
    tokio::time::sleep(c.config.probe_interval * 40).await; // A fixed observation window.
    c.faults.set_loss(0.0);
    for (i, s) in subs.iter_mut().enumerate() {
        while let Ok(e) = s.try_recv() {
            assert!(
                !matches!(e, Event::Failed(_)),
                "member {i} declared a live member dead: {e:?}"
            );
        }
    }
    c.wait_agree(JOIN, "steady after loss", &all).await;
    c.shutdown().await;
}

/// Warm-up (`Config::warm_up_peers`, issue #10), for transports that keep
/// connections: once the cluster is quiet, every member holds a connection
/// to every other within a few probe periods, where the probes alone take
/// a probe cycle (`n` periods, 60 s here) to reach every member, so a
/// write's eager push does not wait for handshakes. Measured: every member
/// held all 19 connections 6.6 s after the join on both transports; with
/// warm-up off, 1 to 5 per member were still missing at the limit (15 s).
pub async fn a_quiet_cluster_holds_a_connection_to_every_member<K: Kind>(kind: K) {
    let n = 20;
    let config = Config {
        probe_interval: Duration::from_secs(3),
        ..test_config()
    };
    let mut c = Cluster::with_config(kind, config);
    c.chain(n).await;
    let all: Vec<usize> = (0..n).collect();
    c.wait_agree(JOIN, "join", &all).await;
    let held =
        |c: &Cluster<K>| -> Vec<u64> { c.members.iter().map(|m| m.stats().connections).collect() };
    // Quiet 1 s after the join, then `fanout` (3) peers per probe period:
    // at most 7 periods for the 19 peers (21 s) if the join had met none;
    // it met 4 to 10 of them.
    let limit = Duration::from_secs(15);
    let start = tokio::time::Instant::now();
    while held(&c).iter().any(|&h| h < (n - 1) as u64) {
        assert!(
            start.elapsed() <= limit,
            "connections held per member after {limit:?}: {:?} (of {} peers)",
            held(&c),
            n - 1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "every member holds a connection to every other {:?} after the join",
        start.elapsed()
    );
    c.shutdown().await;
}

pub async fn partition_heals_to_one_view<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(6).await;
    let all: Vec<usize> = (0..6).collect();
    c.wait_agree(JOIN, "join", &all).await;
    let left: Vec<_> = (0..3).map(|i| c.addr(i)).collect();
    let right: Vec<_> = (3..6).map(|i| c.addr(i)).collect();
    c.faults.partition(&[left, right]);
    let bound = c.config.detection_bound(6);
    wait_until(bound * 2, "each side drops the other", || {
        c.agree(&[0, 1, 2]) && c.agree(&[3, 4, 5])
    })
    .await;
    c.members[4]
        .set_key("during", Bytes::from_static(b"split"), None)
        .unwrap();
    c.faults.heal();
    let owner = c.addr(4);
    wait_until(Duration::from_secs(20), "one view after healing", || {
        c.agree(&all)
            && c.members
                .iter()
                .all(|m| m.get_key(&owner, "during").is_some())
    })
    .await;
    c.shutdown().await;
}

/// Under mutual TLS, a member whose certificate the cluster CA did not sign
/// never joins, and nobody learns of it.
pub async fn mtls_refuses_a_peer_without_a_cluster_certificate<K: Kind>(kind: K) {
    let mut c = Cluster::new(kind);
    c.chain(3).await;
    c.wait_agree(JOIN, "join", &[0, 1, 2]).await;
    let t = c
        .kind
        .bind_intruder()
        .await
        .expect("an mTLS kind provides an intruder");
    let cfg = c.config.clone();
    let i = c.spawn_transport(t, Some(0), cfg).await;
    let intruder = c.addr(i);
    // Observe a bounded window in which the intruder must NOT get in: several
    // seed retries and probe periods.
    let window = (c.config.seed_retry_max * 4).max(c.config.probe_interval * 10);
    let end = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < end {
        for m in &c.members[..3] {
            assert!(
                m.members().iter().all(|x| x.addr != intruder),
                "the intruder got in:{}",
                c.views()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.members[i].members().len(),
        1,
        "the intruder learned nobody"
    );
    assert!(c.agree(&[0, 1, 2]));
    c.shutdown().await;
}
