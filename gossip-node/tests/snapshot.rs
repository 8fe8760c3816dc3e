//! Snapshots with real processes: a member restarted with its `data_dir`
//! and no seeds rejoins through the members it knew and republishes its
//! keys and metadata, even after its seeds restarted without it; a corrupt
//! snapshot is moved aside and the member starts without it.
#![cfg(all(unix, any(feature = "grpc", feature = "quic")))]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

mod support;

use support::{FAST, Node, SHORT_SUSPICION, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);

/// An HTTP/1.0 request to an admin endpoint; the status and the JSON body.
fn http(admin: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {admin}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn get(admin: SocketAddr, path: &str) -> Value {
    http(admin, "GET", path, "").1
}

/// The live members `admin` lists: address to the whole entry.
fn members(admin: SocketAddr) -> Vec<Value> {
    get(admin, "/members")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn lists(admin: SocketAddr, addrs: &[&str]) -> bool {
    let m = members(admin);
    m.len() == addrs.len() && addrs.iter().all(|a| m.iter().any(|x| x["addr"] == *a))
}

/// A free loopback address, for a node to be restarted on.
fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

fn start(addr: &str, cluster: &str, seeds: &[&str], data_dir: Option<&Path>) -> Node {
    let mut args = vec!["--cluster-id", cluster];
    args.extend(FAST);
    args.extend(SHORT_SUSPICION);
    for s in seeds {
        args.extend(["--seed", s]);
    }
    let dir;
    if let Some(d) = data_dir {
        dir = d.display().to_string();
        args.extend(["--data-dir", dir.as_str()]);
    }
    let node = Node::spawn_at(addr, &args);
    assert_eq!(node.addr, addr);
    node
}

fn stop(node: &mut Node) {
    node.signal(Signal::SIGTERM);
    let status = node.wait_exit(DEADLINE);
    assert!(status.success(), "{status}:\n{}", node.logs());
}

#[test]
fn a_member_restarted_without_seeds_rejoins_from_its_snapshot() {
    let cluster = format!("snapshot-{}", std::process::id());
    let data = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..5).map(|_| free_addr()).collect();
    let a: Vec<&str> = addrs.iter().map(String::as_str).collect();
    // Members 1 and 2 are member 4's seeds; 3 and 5 join through 1.
    let mut n1 = start(a[0], &cluster, &[], None);
    let mut n2 = start(a[1], &cluster, &[a[0]], None);
    let n3 = start(a[2], &cluster, &[a[0]], None);
    let mut n4 = start(a[3], &cluster, &[a[0], a[1]], Some(data.path()));
    let n5 = start(a[4], &cluster, &[a[0]], None);
    for n in [&n1, &n2, &n3, &n4, &n5] {
        wait_for(DEADLINE, "5 members", || lists(n.admin, &a));
    }
    // Member 4's own state: a key and metadata set at run time.
    let (status, _) = http(n4.admin, "PUT", "/kv/greeting", "hello from 4");
    assert_eq!(status, 200);
    let (status, _) = http(n4.admin, "PATCH", "/meta", r#"{"set": {"role": "db"}}"#);
    assert_eq!(status, 200);
    wait_for(DEADLINE, "member 3 sees member 4's key", || {
        get(n3.admin, "/kv")[a[3]]["greeting"]["value"] == "hello from 4"
    });
    let old_generation = get(n4.admin, "/healthz")["generation"].as_u64().unwrap();

    // Member 4 stops; then its seeds stop and start again on the same
    // addresses, without it: 1 alone, 2 through 1.
    stop(&mut n4);
    let snapshot: Value =
        serde_json::from_slice(&std::fs::read(data.path().join("snapshot.json")).unwrap()).unwrap();
    assert_eq!(snapshot["generation"], old_generation);
    assert_eq!(snapshot["meta"]["role"], "db");
    assert_eq!(
        snapshot["members"].as_array().unwrap().len(),
        4,
        "{snapshot}"
    );
    stop(&mut n1);
    stop(&mut n2);
    let n1 = start(a[0], &cluster, &[], None);
    let n2 = start(a[1], &cluster, &[a[0]], None);
    wait_for(DEADLINE, "1 and 2 rejoined each other", || {
        lists(n1.admin, &[a[0], a[1]])
    });

    // Member 4 again, same data_dir, no seeds: it rejoins everyone.
    let n4 = start(a[3], &cluster, &[], Some(data.path()));
    let new_generation = get(n4.admin, "/healthz")["generation"].as_u64().unwrap();
    assert!(new_generation > old_generation);
    for n in [&n1, &n2, &n3, &n4, &n5] {
        wait_for(DEADLINE, "5 members again", || lists(n.admin, &a));
    }
    // Its key and metadata are back, at the restarted seeds too.
    for n in [&n1, &n2, &n3] {
        wait_for(DEADLINE, "member 4's key is back", || {
            get(n.admin, "/kv")[a[3]]["greeting"]["value"] == "hello from 4"
        });
        wait_for(DEADLINE, "member 4's metadata is back", || {
            members(n.admin).iter().any(|m| {
                m["addr"] == a[3] && m["meta"]["role"] == "db" && m["generation"] == new_generation
            })
        });
    }
    let logs = n4.logs();
    assert!(logs.contains("rejoining from the snapshot"), "{logs}");
}

#[test]
fn a_corrupt_snapshot_is_moved_aside_and_the_member_starts_without_it() {
    let cluster = format!("corrupt-{}", std::process::id());
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("snapshot.json"), "{\"format\": 1, \"memb").unwrap();
    let mut node = start(&free_addr(), &cluster, &[], Some(data.path()));
    let logs = node.logs();
    assert!(logs.contains("unusable snapshot"), "{logs}");
    assert!(logs.contains("moved aside"), "{logs}");
    let names: Vec<String> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("snapshot.json.corrupt-")),
        "{names:?}"
    );
    assert_eq!(get(node.admin, "/healthz")["status"], "ok");
    // It writes a good snapshot of its own.
    stop(&mut node);
    let text = std::fs::read(data.path().join("snapshot.json")).unwrap();
    let snapshot: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(snapshot["addr"], node.addr.as_str());
}
