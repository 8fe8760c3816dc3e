//! Seed names: sorted from addresses, resolved through the hook to every
//! address, resolved again until one answers; `localhost:PORT` through the
//! system's resolver over a real transport.

use super::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use gossip_core::{Config, MemNetwork, Member, MemberOptions};

fn addr(s: &str) -> NodeAddr {
    NodeAddr::parse(s).unwrap()
}

#[test]
fn seeds_are_sorted_into_addresses_and_names() {
    for a in ["127.0.0.1:7001", "[::1]:7001", "10.1.2.3:1"] {
        assert_eq!(Seed::of(&addr(a)), Seed::Addr(addr(a)), "{a}");
    }
    for (s, host, port) in [
        ("localhost:7001", "localhost", 7001),
        (
            "gossip.default.svc.cluster.local:7946",
            "gossip.default.svc.cluster.local",
            7946,
        ),
    ] {
        assert_eq!(
            Seed::of(&addr(s)),
            Seed::Name {
                seed: addr(s),
                host: host.to_owned(),
                port
            }
        );
    }
}

fn fast() -> Config {
    Config {
        gossip_interval: Duration::from_millis(50),
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        seed_retry_initial: Duration::from_millis(50),
        seed_retry_max: Duration::from_millis(400),
        ..Config::default()
    }
}

async fn member_at(net: &MemNetwork, at: &str) -> Arc<dyn Membership> {
    let m = Member::new(fast(), net.transport_at(addr(at)), MemberOptions::default()).unwrap();
    m.start().await.unwrap();
    Arc::new(m)
}

fn backoff() -> Backoff {
    Backoff {
        initial: fast().seed_retry_initial,
        max: fast().seed_retry_max,
    }
}

#[track_caller]
fn wait_until(what: &str, cond: impl Fn() -> bool) -> impl std::future::Future<Output = ()> {
    let caller = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 20 s ({caller})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_seed_stands_for_every_address_of_the_name() {
    let net = MemNetwork::new();
    // Two members that do not know each other, at the name's two
    // addresses, and a third that knows only the name.
    let a = member_at(&net, "10.0.0.1:7000").await;
    let b = member_at(&net, "10.0.0.2:7000").await;
    let c = member_at(&net, "10.0.0.3:7000").await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let resolver = move |host: &str, port: u16| {
        log.lock().unwrap().push(format!("{host}:{port}"));
        match host {
            "peers.test" => Ok(vec![
                SocketAddr::from(([10, 0, 0, 1], port)),
                SocketAddr::from(([10, 0, 0, 2], port)),
            ]),
            _ => Err(std::io::Error::other("no such name")),
        }
    };
    let seeds = SeedResolution::start(
        c.clone(),
        &[addr("peers.test:7000")],
        Arc::new(resolver),
        backoff(),
    );
    // C reached both: A and B only know each other through C.
    for m in [&a, &b, &c] {
        wait_until("3 members", || m.members().len() == 3).await;
    }
    assert_eq!(asked.lock().unwrap()[0], "peers.test:7000");
    seeds.stop().await;
    for m in [a, b, c] {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_resolved_again_until_one_of_its_addresses_answers() {
    let net = MemNetwork::new();
    let a = member_at(&net, "10.0.0.1:7000").await;
    let c = member_at(&net, "10.0.0.3:7000").await;
    // First the name does not resolve, then it resolves to an address
    // where nobody listens, then to A's.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let resolver = move |_: &str, port: u16| match counted.fetch_add(1, Ordering::SeqCst) {
        0 => Err(std::io::Error::other("temporary failure")),
        1 => Ok(vec![SocketAddr::from(([10, 0, 0, 9], port))]),
        _ => Ok(vec![SocketAddr::from(([10, 0, 0, 1], port))]),
    };
    let seeds = SeedResolution::start(
        c.clone(),
        &[addr("peers.test:7000")],
        Arc::new(resolver),
        backoff(),
    );
    wait_until("C joins A", || c.members().len() == 2).await;
    assert!(calls.load(Ordering::SeqCst) >= 3);
    // Once answered, the name is no longer resolved at every retry.
    let after = calls.load(Ordering::SeqCst);
    tokio::time::sleep(fast().seed_retry_max * 3).await;
    assert!(
        calls.load(Ordering::SeqCst) <= after + 1,
        "{after} then {}",
        calls.load(Ordering::SeqCst)
    );
    seeds.stop().await;
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_seeds_go_to_the_member_without_the_resolver() {
    let net = MemNetwork::new();
    let a = member_at(&net, "10.0.0.1:7000").await;
    let c = member_at(&net, "10.0.0.3:7000").await;
    let resolver = |_: &str, _: u16| -> std::io::Result<Vec<SocketAddr>> {
        panic!("an address seed was resolved")
    };
    let seeds = SeedResolution::start(
        c.clone(),
        &[addr("10.0.0.1:7000"), addr("10.0.0.3:7000")],
        Arc::new(resolver),
        backoff(),
    );
    wait_until("C joins A", || c.members().len() == 2).await;
    seeds.stop().await;
    a.shutdown().await;
    c.shutdown().await;
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_port_is_resolved_by_the_system() {
    use crate::config::NodeConfig;
    use crate::transport::TransportKind;
    let config = |seeds: Vec<NodeAddr>| {
        let mut c = NodeConfig::new("127.0.0.1:0".parse().unwrap());
        c.transport = TransportKind::Grpc;
        c.tls = gossip_tls::TlsConfig::None;
        c.protocol = fast();
        c.seeds = seeds;
        c
    };
    let a = crate::node::start(&config(vec![])).await.unwrap();
    let port = a.listen_addr().port();
    let c = crate::node::start(&config(vec![addr(&format!("localhost:{port}"))]))
        .await
        .unwrap();
    let (am, cm) = (a.member().clone(), c.member().clone());
    wait_until("C joins A through localhost", || {
        am.members().len() == 2 && cm.members().len() == 2
    })
    .await;
    c.shutdown().await;
    a.shutdown().await;
}
