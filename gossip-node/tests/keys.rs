//! Encryption with a shared key between real processes (issue #12):
//! `keygen`, members started with `--encrypt-key` and `--keyring-file`, a
//! member with another key refused and counted, a rotation with `keys
//! install`, `keys use` and `keys remove` through the admin APIs, the
//! keyring files following it, a restart that reads its file, and no key
//! in any process's log or in any answer of the admin API.
#![cfg(all(unix, any(feature = "grpc", feature = "quic")))]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

mod support;

use support::{BIN, Node, wait_for};

/// How long a condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `gossip-node ARGS` (against `admin` if given).
fn cli(admin: Option<SocketAddr>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if let Some(a) = admin {
        cmd.args(["--admin", &a.to_string()]);
    }
    cmd.env_remove("GOSSIP_ADMIN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}): {}",
        o.status,
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `GET path` on an admin endpoint: the body.
fn get(admin: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {admin}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned()
}

fn peers(n: &Node) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(&get(n.admin, "/peers")).unwrap_or_default()
}

fn keygen() -> String {
    let key = ok(cli(None, &["keygen"])).trim().to_owned();
    assert_eq!(key.len(), 44, "{key}");
    key
}

fn keyring_file(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

#[test]
fn a_cluster_rotates_its_key_and_refuses_strangers() {
    let cluster = format!("keys-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2, stranger_key) = (keygen(), keygen(), keygen());
    assert_ne!(k1, k2);
    let file_a = dir.path().join("a.json");
    let file_b = dir.path().join("b.json");
    let fa = file_a.to_str().unwrap();
    let fb = file_b.to_str().unwrap();
    let a = Node::spawn_fast(&cluster, &["--encrypt-key", &k1, "--keyring-file", fa]);
    let mut b = Node::spawn_fast(
        &cluster,
        &[
            "--encrypt-key",
            &k1,
            "--keyring-file",
            fb,
            "--seed",
            &a.addr,
        ],
    );
    wait_for(DEADLINE, "A and B join", || {
        peers(&a) == [b.addr.clone()] && peers(&b) == [a.addr.clone()]
    });
    assert_eq!(
        keyring_file(&file_a),
        std::slice::from_ref(&k1),
        "created from encrypt_key"
    );

    // A member with another key knocks and is refused, and counted.
    let stranger = Node::spawn_fast(
        &cluster,
        &["--encrypt-key", &stranger_key, "--seed", &a.addr],
    );
    wait_for(DEADLINE, "A refuses the stranger", || {
        get(a.admin, "/metrics").contains("gossip_messages_rejected_total{reason=\"decrypt\"}")
            && serde_json::from_str::<Value>(&get(a.admin, "/stats")).unwrap()["rejected_decrypt"]
                .as_u64()
                .is_some_and(|n| n >= 1)
    });
    std::thread::sleep(Duration::from_secs(1)); // Nothing may change: no condition to wait on.
    assert_eq!(peers(&a), [b.addr.clone()]);
    assert!(peers(&stranger).is_empty());

    // The rotation, each step through another member.
    let install = ok(cli(Some(a.admin), &["keys", "install", &k2]));
    assert!(
        install.contains(&a.addr) && install.contains(&b.addr),
        "{install}"
    );
    assert!(install.contains("installed on 2 of 2 members"), "{install}");
    ok(cli(Some(b.admin), &["keys", "use", &k2]));
    // The primary cannot be removed: refused by both, a failure.
    let refused = cli(Some(a.admin), &["keys", "remove", &k2]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("refused"), "{}", text(&refused));
    ok(cli(Some(a.admin), &["keys", "remove", &k1]));
    let list = ok(cli(Some(b.admin), &["keys", "list"]));
    assert_eq!(
        list.lines().filter(|l| l.starts_with("key ")).count(),
        1,
        "{list}"
    );
    assert!(
        list.contains("installed on 2 of 2 members, primary on 2"),
        "{list}"
    );
    let json: Value =
        serde_json::from_str(&ok(cli(Some(a.admin), &["keys", "list", "--json"]))).unwrap();
    assert_eq!(json["complete"], true, "{json}");
    wait_for(DEADLINE, "the keyring files follow", || {
        keyring_file(&file_a) == [k2.clone()] && keyring_file(&file_b) == [k2.clone()]
    });
    assert_eq!(
        peers(&a),
        [b.addr.clone()],
        "nobody lost during the rotation"
    );

    // B restarts with the old key still configured: its file wins.
    let b_logs = b.logs();
    b.signal(nix::sys::signal::Signal::SIGTERM);
    b.wait_exit(DEADLINE);
    let b2 = Node::spawn_fast(
        &cluster,
        &[
            "--encrypt-key",
            &k1,
            "--keyring-file",
            fb,
            "--seed",
            &a.addr,
        ],
    );
    wait_for(DEADLINE, "B rejoins with the rotated key", || {
        peers(&b2) == [a.addr.clone()]
    });

    // No key anywhere: logs, /stats, /members, the dashboard.
    let mut seen = vec![b_logs, a.logs(), b2.logs(), stranger.logs()];
    for path in ["/stats", "/members", "/", "/metrics", "/keys"] {
        seen.push(get(a.admin, path));
    }
    for key in [&k1, &k2, &stranger_key] {
        for (i, t) in seen.iter().enumerate() {
            assert!(!t.contains(key.as_str()), "a key in output {i}");
            assert!(
                !t.contains(key.trim_end_matches('=')),
                "a key in output {i}"
            );
        }
    }
}

#[test]
fn a_bad_key_is_refused_before_anything_starts() {
    let out = Command::new(BIN)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--encrypt-key",
            "c2VjcmV0",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("encrypt_key") && !t.contains("c2VjcmV0"), "{t}");
}
