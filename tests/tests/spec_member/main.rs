//! A member written from `PROTOCOL.md` alone (`member.rs`, `view.rs`: the
//! generated protobuf types, tonic and xxh3, nothing of `gossip-core`)
//! joins a cluster of three real members over gRPC, stays alive in it,
//! receives a key, agrees with them on the digest fingerprint, refutes a
//! suspicion, is declared dead while it hangs and comes back by refuting
//! the verdict, and is removed by all of them once it stops (issue #11: "a
//! gRPC client that follows only PROTOCOL.md must be able to join, stay
//! alive, receive keys and be detected when it stops").

mod member;
mod view;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gossip_core::{Config, MemberInfo, MemberState, Membership, NodeAddr};
use gossip_proto::v1 as pb;
use gossip_proto::v1::gossip_service_client::GossipServiceClient;
use gossip_tests::kinds::Grpc;
use gossip_tests::{Cluster, test_config, wait_until};

use member::{SpecConfig, SpecMember};

/// Fast timing: a probe every 100 ms, so the maximum suspicion timeout of
/// a 4-member cluster is 1.2 s.
fn config() -> Config {
    Config {
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        ..test_config()
    }
}

/// How each real member sees the member at `addr`, if at all.
fn seen(cluster: &Cluster<Grpc>, addr: &NodeAddr) -> Vec<Option<MemberInfo>> {
    cluster
        .members
        .iter()
        .map(|m| m.all_members().into_iter().find(|i| &i.addr == addr))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_written_from_the_spec_joins_stays_receives_keys_and_is_detected() {
    let cfg = config();
    let mut cluster = Cluster::with_config(Grpc, cfg.clone());
    cluster.chain(3).await;
    let real = [0, 1, 2];
    cluster
        .wait_agree(Duration::from_secs(15), "three real members", &real)
        .await;

    let meta = BTreeMap::from([("impl".to_owned(), "spec-only".to_owned())]);
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let mut spec = SpecMember::start(SpecConfig {
        cluster_id: cfg.cluster_id.clone(),
        generation,
        meta: meta.clone(),
        probe_timeout: cfg.probe_timeout,
        seed_retry: Duration::from_millis(200),
    });
    let id = spec.id();
    let addr = NodeAddr::parse(&id.addr).expect("a valid address");
    spec.join(cluster.addr(0).as_str());

    // Joins: every real member holds it alive with its metadata, and it
    // holds every real member alive.
    let joined = wait_until(Duration::from_secs(15), "the spec member joins", || {
        seen(&cluster, &addr).iter().all(|i| {
            i.as_ref().is_some_and(|i| {
                i.state == MemberState::Alive && i.generation == generation && i.meta == meta
            })
        })
    })
    .await;
    wait_until(Duration::from_secs(15), "the spec member sees all", || {
        spec.view(|v| {
            real.iter().all(|&i| {
                v.get(cluster.addr(i).as_str())
                    .is_some_and(|r| r.fact.state == view::State::Alive)
            })
        })
    })
    .await;

    // Stays alive for three maximum suspicion timeouts: never declared
    // dead (a suspicion on a busy machine would be refuted).
    let window = cfg.suspicion_max(4) * 3;
    let start = tokio::time::Instant::now();
    while start.elapsed() < window {
        for (i, info) in seen(&cluster, &addr).into_iter().enumerate() {
            let info = info.unwrap_or_else(|| panic!("member {i} forgot the spec member"));
            assert!(
                info.state.is_live(),
                "member {i} holds the spec member {} after {:?}; views:{}",
                info.state.as_str(),
                start.elapsed(),
                cluster.views()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Receives a key set by a real member.
    let owner = cluster.addr(1);
    let version = cluster.members[1]
        .set_key("greeting", Bytes::from_static(b"hello, stranger"), None)
        .expect("a small key");
    let spread = wait_until(
        Duration::from_secs(10),
        "the spec member gets the key",
        || {
            spec.view(|v| {
                v.get(owner.as_str())
                    .and_then(|r| r.keys.get("greeting"))
                    .is_some_and(|k| k.version == version && &k.value[..] == b"hello, stranger")
            })
        },
    )
    .await;

    // Agrees on the digest fingerprint: every real member's pings carry the
    // fingerprint the spec member computes from its own view.
    wait_until(Duration::from_secs(10), "fingerprints agree", || {
        let own = spec.view(|v| v.fingerprint());
        real.iter()
            .all(|&i| spec.ping_hash(cluster.addr(i).as_str()) == Some(own))
    })
    .await;

    let refuted_before = spec.view(|v| v.me().fact.incarnation);

    // Refutes a suspicion: member 1 is told (by a message that names
    // member 2 as its sender) that the spec member is suspect; the
    // suspicion reaches the spec member, which raises its incarnation.
    let accuser = cluster.members[2].local_id();
    let suspect = pb::MemberUpdate {
        id: Some(id.clone()),
        incarnation: 0,
        state: pb::MemberState::Suspect as i32,
        accuser: accuser.addr.to_string(),
        refused: false,
    };
    let env = pb::Envelope {
        cluster_id: cfg.cluster_id.clone(),
        from: Some(accuser.to_pb()),
        incarnation: cluster.members[2]
            .members()
            .into_iter()
            .find(|m| m.addr == accuser.addr)
            .map_or(0, |m| m.incarnation),
        updates: vec![suspect],
        broadcasts: Vec::new(),
        body: Some(pb::envelope::Body::Gossip(pb::Gossip {})),
        sealed: Default::default(),
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addr(1)))
        .expect("an endpoint")
        .connect()
        .await
        .expect("connect to member 1");
    let mut client = GossipServiceClient::new(channel);
    client.send(env).await.expect("member 1 accepts");
    wait_until(Duration::from_secs(10), "the suspicion is refuted", || {
        spec.view(|v| v.me().fact.incarnation >= 1)
            && seen(&cluster, &addr).iter().all(|i| {
                i.as_ref()
                    .is_some_and(|i| i.state == MemberState::Alive && i.incarnation >= 1)
            })
    })
    .await;

    // Hangs (its port stays open, nothing is answered): every real member
    // declares it dead by the slow path (suspicion, then timeout).
    spec.set_silent(true);
    let bound = cfg.detection_bound(4) * 2;
    let declared = wait_until(
        bound,
        "every member declares the hung spec member dead",
        || {
            seen(&cluster, &addr)
                .iter()
                .all(|i| i.as_ref().is_some_and(|i| i.state == MemberState::Dead))
        },
    )
    .await;

    // Works again: contacted as a dead member, it learns the verdict and
    // refutes it, and every real member holds it alive again.
    let before = spec.view(|v| v.me().fact.incarnation);
    spec.set_silent(false);
    let back = wait_until(Duration::from_secs(15), "the spec member is back", || {
        seen(&cluster, &addr).iter().all(|i| {
            i.as_ref()
                .is_some_and(|i| i.state == MemberState::Alive && i.incarnation > before)
        })
    })
    .await;

    // Stops without a word: every real member removes it.
    spec.stop();
    let removed = wait_until(
        bound,
        "every member removes the stopped spec member",
        || {
            seen(&cluster, &addr)
                .iter()
                .all(|i| i.as_ref().is_none_or(|i| !i.state.is_live()))
        },
    )
    .await;
    eprintln!(
        "spec member: joined in {joined:?}, key received in {spread:?}, \
         {refuted_before} refutation(s) before the injected suspicion, declared dead when hung in \
         {declared:?}, back in {back:?}, removed by all once stopped in {removed:?}"
    );
    cluster.shutdown().await;
}
