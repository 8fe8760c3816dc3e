//! The terminal client against real processes: two `gossip-node run`
//! processes on loopback, and the `members`, `kv`, `broadcast`, `join`,
//! `meta` and `leave` commands
//! run as processes against their admin APIs, checked by what they print and
//! their exit status.
//!
//! Nodes bind port 0 and report their addresses in their JSON start line.
//! Every wait polls against a deadline. Every node is killed when its guard
//! drops, also when a test fails.
#![cfg(all(unix, any(feature = "grpc", feature = "quic")))]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::{BIN, Node};

/// How long a node may take to start, and a condition to come true.
const DEADLINE: Duration = Duration::from_secs(20);

/// Client commands against a node's admin API.
trait AdminCli {
    /// Runs a client command against this node's admin API.
    fn cli(&self, args: &[&str]) -> Output;
}

impl AdminCli for Node {
    fn cli(&self, args: &[&str]) -> Output {
        cli(&self.admin.to_string(), args)
    }
}

/// Runs `gossip-node ARGS --admin ADMIN` (ARGS' first word is the command).
fn cli(admin: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--admin", admin])
        .env_remove("GOSSIP_ADMIN")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command's standard output; fails the test if it did not succeed.
#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Polls `f` until it returns `Some`, at most [`DEADLINE`].
#[track_caller]
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET path` on an admin endpoint, parsed as JSON (plain HTTP/1.0).
fn get_json(admin: SocketAddr, path: &str) -> Value {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {admin}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

fn cluster_id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[test]
fn members_kv_and_broadcast_through_the_admin_api() {
    let cluster = cluster_id("client");
    let a = Node::spawn_fast(&cluster, &["--meta", "name=alpha"]);
    let b = Node::spawn_fast(&cluster, &["--seed", &a.addr]);

    // members --json: the node's GET /members, both members alive.
    let members = wait_for("both members listed", || {
        let out = a.cli(&["members", "--json"]);
        let list: Value = serde_json::from_str(&ok(out)).unwrap();
        (list.as_array().unwrap().len() == 2).then_some(list)
    });
    let addrs: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["addr"].as_str().unwrap())
        .collect();
    let mut want = vec![a.addr.as_str(), b.addr.as_str()];
    want.sort_unstable();
    assert_eq!(addrs, want);
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] == "alive")
    );

    // The table: every member, the metadata, no color codes into a pipe.
    let table = ok(a.cli(&["members"]));
    for needle in [
        a.addr.as_str(),
        b.addr.as_str(),
        "alive",
        "name=alpha",
        "INCARNATION",
    ] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }
    assert!(
        !table.contains('\u{1b}'),
        "escape codes in a pipe:\n{table}"
    );
    assert!(
        table.contains(&format!("{} *", a.addr)),
        "self not marked:\n{table}"
    );

    // kv set / get / delete.
    let set = ok(a.cli(&["kv", "set", "greeting", "hello world", "--ttl-ms", "600000"]));
    assert!(set.starts_with("set \"greeting\" (version "), "{set}");
    assert_eq!(ok(a.cli(&["kv", "get", "greeting"])), "hello world\n");
    let entry: Value =
        serde_json::from_str(&ok(a.cli(&["kv", "get", "greeting", "--json"]))).unwrap();
    assert_eq!(entry["owner"], a.addr.as_str());
    assert_eq!(entry["value"], "hello world");
    assert!(entry["ttl_ms"].as_u64().unwrap() <= 600_000);
    // B learns A's key by gossip.
    wait_for("B sees A's key", || {
        let out = b.cli(&["kv", "get", "greeting", "--owner", &a.addr]);
        (out.status.success() && stdout(&out) == "hello world\n").then_some(())
    });
    let deleted: Value =
        serde_json::from_str(&ok(a.cli(&["kv", "delete", "greeting", "--json"]))).unwrap();
    assert_eq!(deleted["key"], "greeting");
    assert!(deleted["version"].as_u64().unwrap() > entry["version"].as_u64().unwrap());
    let gone = a.cli(&["kv", "get", "greeting"]);
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("no key \"greeting\""),
        "{}",
        stderr(&gone)
    );
    // Deleting it again: the node's 404 and its JSON error.
    let again = a.cli(&["kv", "delete", "greeting"]);
    assert!(!again.status.success());
    let err = stderr(&again);
    assert!(err.contains("404: no key \"greeting\""), "{err}");

    // broadcast: a JSON payload reaches B's GET /messages unchanged.
    let uuid = ok(a.cli(&[
        "broadcast",
        r#"{"deploy": "v2", "canary": [1, 2]}"#,
        "--ttl",
        "3",
    ]));
    let uuid = uuid.trim().to_owned();
    assert_eq!(uuid.len(), 36, "{uuid}");
    let got = wait_for("B delivers the broadcast", || {
        let list = get_json(b.admin, "/messages");
        list.as_array()
            .unwrap()
            .iter()
            .find(|m| m["uuid"] == uuid.as_str())
            .cloned()
    });
    assert_eq!(
        got["payload"],
        serde_json::json!({"deploy": "v2", "canary": [1, 2]})
    );
    assert_eq!(got["origin"], a.addr.as_str());
    // Text that is not JSON goes as a JSON string; a chosen id, twice.
    let id = "0b7d2c3e-0000-4000-8000-000000000001";
    let first = ok(b.cli(&["broadcast", "just words", "--uuid", id]));
    assert_eq!(first.trim(), id);
    let second = ok(b.cli(&["broadcast", "just words", "--uuid", id, "--json"]));
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["duplicate"], true);
    let got = wait_for("A delivers the text", || {
        let list = get_json(a.admin, "/messages");
        list.as_array()
            .unwrap()
            .iter()
            .find(|m| m["uuid"] == id)
            .cloned()
    });
    assert_eq!(got["payload"], "just words");

    // The node refuses a bad request; the client shows its error and fails.
    let bad = a.cli(&["broadcast", "x", "--ttl", "0"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("ttl must be between 1 and 64"),
        "{}",
        stderr(&bad)
    );
    assert!(stderr(&bad).contains("400"), "{}", stderr(&bad));

    // GOSSIP_ADMIN stands in for --admin.
    let out = Command::new(BIN)
        .args(["members", "--json"])
        .env("GOSSIP_ADMIN", format!("http://{}", b.admin))
        .output()
        .unwrap();
    let list: Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // B leaves gracefully: gone from `members`, listed as left by --all.
    let pid = nix::unistd::Pid::from_raw(b.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_for("A drops B", || {
        let list: Value = serde_json::from_str(&ok(a.cli(&["members", "--json"]))).unwrap();
        (list.as_array().unwrap().len() == 1).then_some(())
    });
    let all: Value = serde_json::from_str(&ok(a.cli(&["members", "--all", "--json"]))).unwrap();
    let left = all
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["addr"] == b.addr.as_str())
        .unwrap_or_else(|| panic!("B missing from {all}"));
    assert_eq!(left["state"], "left", "{all}");
    let table = ok(a.cli(&["members", "--all"]));
    assert!(table.contains("left"), "{table}");
    assert!(
        table.contains("1 live member (1 alive, 0 suspect), 0 dead, 1 left"),
        "{table}"
    );
    drop(b);
    drop(a);
}

#[test]
fn an_unreachable_node_is_a_clear_error_and_a_failure() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{port}");
    for args in [
        &["members"][..],
        &["members", "--json"],
        &["kv", "get", "k"],
        &["kv", "set", "k", "v"],
        &["broadcast", "hi"],
        &["join", "127.0.0.1:7001"],
        &["meta"],
        &["meta", "set", "a=b"],
        &["leave"],
    ] {
        let out = cli(&admin, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.starts_with("error: cannot reach the node's admin API at http://127.0.0.1:"),
            "{args:?}: {err}"
        );
        assert!(err.contains("gossip-node run --admin"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    let out = cli("https://127.0.0.1:1", &["members"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid admin URL"),
        "{}",
        stderr(&out)
    );
}

/// The state `admin` lists for the member at `addr` (`GET /members?all=true`).
fn state_of(admin: SocketAddr, addr: &str) -> Option<String> {
    get_json(admin, "/members?all=true")
        .as_array()?
        .iter()
        .find(|m| m["addr"] == addr)
        .and_then(|m| m["state"].as_str().map(str::to_owned))
}

#[test]
fn join_meta_and_leave_at_run_time() {
    let cluster = cluster_id("operate");
    // A runs an event handler that records the membership events.
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    let handler = format!(
        "member-join,member-update,member-leave=printf '%s ' \"$GOSSIP_EVENT\" >> '{}'; cat >> '{}'",
        events.display(),
        events.display()
    );
    // Two members that know nothing of each other.
    let a = Node::spawn_fast(&cluster, &["--meta", "role=web", "--handler", &handler]);
    let mut b = Node::spawn_fast(&cluster, &[]);
    assert_eq!(get_json(a.admin, "/members").as_array().unwrap().len(), 1);

    // join: a bad address is refused and joins nothing.
    let bad = b.cli(&["join", &a.addr, "nohost"]);
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(
        err.contains("400: invalid seed address \"nohost\": missing ':port'"),
        "{err}"
    );
    // A port nobody listens on: bind one, note it, close it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    // join through A (answers) and a silent address (does not).
    let out = ok(b.cli(&["join", &a.addr, &silent, "--timeout-ms", "3000"]));
    assert!(out.contains(&format!("{}: answered", a.addr)), "{out}");
    assert!(out.contains(&format!("{silent}: no answer")), "{out}");
    wait_for("A lists B", || {
        (get_json(a.admin, "/members").as_array().unwrap().len() == 2).then_some(())
    });
    // Only silent addresses: a failure that says so.
    let none = b.cli(&["join", &silent, "--timeout-ms", "300"]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("none of 1 address(es) answered"),
        "{}",
        stderr(&none)
    );

    // meta: show, set, unset; A sees B's metadata.
    assert_eq!(ok(a.cli(&["meta"])), "role=web\n");
    assert_eq!(ok(b.cli(&["meta"])), "");
    assert_eq!(
        ok(b.cli(&["meta", "set", "role=db", "zone=eu-1", "rack=r7"])),
        "rack=r7\nrole=db\nzone=eu-1\n"
    );
    assert_eq!(
        ok(b.cli(&["meta", "unset", "rack"])),
        "role=db\nzone=eu-1\n"
    );
    let json: Value = serde_json::from_str(&ok(b.cli(&["meta", "--json"]))).unwrap();
    assert_eq!(json, serde_json::json!({"role": "db", "zone": "eu-1"}));
    wait_for("A sees B's metadata", || {
        let members = get_json(a.admin, "/members");
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["addr"] == b.addr.as_str() && m["meta"] == json)
            .then_some(())
    });
    // Bad input: refused, nothing changed.
    let big = format!("big={}", "x".repeat(5000));
    for args in [
        &["meta", "set", "novalue"][..],
        &["meta", "set", "=v"],
        &["meta", "set", &big],
    ] {
        let out = b.cli(args);
        assert!(!out.status.success(), "{args:.3?} succeeded");
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    assert!(stderr(&b.cli(&["meta", "set", &big])).contains("413"));
    assert_eq!(ok(b.cli(&["meta"])), "role=db\nzone=eu-1\n");

    // leave: B announces it and its process ends by itself, cleanly.
    let out = ok(b.cli(&["leave"]));
    assert_eq!(
        out,
        format!("{} left the cluster; it is stopping\n", b.addr)
    );
    let status = b.wait_exit(DEADLINE);
    assert!(status.success(), "{status}:\n{}", b.logs());
    wait_for("A sees B left", || {
        (state_of(a.admin, &b.addr).as_deref() == Some("left")).then_some(())
    });

    // A's handler saw B join, change its metadata and leave, in that order.
    let seen = wait_for("the handler records B's leave", || {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        text.lines()
            .any(|l| l.starts_with("member-leave ") && l.contains(&b.addr))
            .then_some(text)
    });
    let kinds: Vec<&str> = seen
        .lines()
        .filter(|l| l.contains(&format!("\"addr\":\"{}\"", b.addr)))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"member-join"), "{seen}");
    assert!(kinds.contains(&"member-update"), "{seen}");
    assert_eq!(kinds.last(), Some(&"member-leave"), "{seen}");
    let mut s = TcpStream::connect(a.admin).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gossip_handler_runs_total{")
                && l.contains("handler=\"handler-1\"")
                && l.contains("result=\"ok\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
}
