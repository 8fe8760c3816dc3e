//! `gossip-node bench` end to end: a small cluster of real processes is
//! started, measured and stopped, and nothing is left running.
#![cfg(all(target_os = "linux", any(feature = "grpc", feature = "quic")))]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gossip-node");

fn bench(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("bench")
        .args(args)
        .output()
        .expect("cannot run gossip-node")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// True if `pid` no longer runs a benchmark node: gone, a zombie, or reused
/// by another program.
fn node_gone(pid: i32) -> bool {
    if let Err(nix::errno::Errno::ESRCH) = kill(Pid::from_raw(pid), None) {
        return true;
    }
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    });
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--cluster-id\0bench"));
    zombie || !ours
}

#[cfg(feature = "grpc")]
#[test]
fn grpc_bench_of_eight_processes_converges_spreads_detects_and_cleans_up() {
    eight_processes("grpc");
}

#[cfg(feature = "quic")]
#[test]
fn quic_bench_of_eight_processes_converges_spreads_detects_and_cleans_up() {
    eight_processes("quic");
}

fn eight_processes(transport: &str) {
    let started = Instant::now();
    let out = bench(&[
        "--processes",
        "8",
        "--kill",
        "2",
        "--rest",
        "1",
        "--settle",
        "0",
        "--transport",
        transport,
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    assert!(started.elapsed() < Duration::from_secs(50), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("stdout is not JSON");

    assert_eq!(r["processes"], 8);
    assert_eq!(r["transport"], transport);
    let pids: Vec<i32> = r["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| i32::try_from(p.as_u64().unwrap()).unwrap())
        .collect();
    assert_eq!(pids.len(), 8);
    for pid in &pids {
        assert!(node_gone(*pid), "node process {pid} still running");
    }

    assert_eq!(r["converged"], true, "{r}");
    assert!(f(&r["converged_ms"]) >= f(&r["startup_ms"]), "{r}");

    let rest = &r["at_rest"];
    assert_eq!(rest["members_measured"], 8, "{rest}");
    assert!(f(&rest["messages_sent_per_member_per_sec"]) > 0.0, "{rest}");
    assert!(f(&rest["bytes_sent_per_member_per_sec"]) > 0.0, "{rest}");

    let key = &r["key"];
    assert_eq!(key["members"], 8, "{key}");
    assert_eq!(key["reached"], 8, "{key}");
    let (p50, p100) = (f(&key["p50_ms"]), f(&key["p100_ms"]));
    assert!(0.0 < p50 && p50 <= p100 && p100 < 10_000.0, "{key}");

    let k = &r["kill"];
    assert_eq!(k["survivors"], 6, "{k}");
    assert_eq!(k["all_removed"], true, "{k}");
    let bound = f(&k["detection_bound_ms"]);
    assert!(bound > 0.0, "{k}");
    let killed = k["killed"].as_array().unwrap();
    assert_eq!(killed.len(), 2, "{k}");
    for (m, pid) in killed.iter().zip(&pids[6..]) {
        assert_eq!(m["pid"], *pid, "{m}");
        let (suspected, removed) = (f(&m["first_suspected_ms"]), f(&m["removed_by_all_ms"]));
        assert!(0.0 < suspected && suspected <= removed, "{m}");
        assert!(removed <= bound, "removal after the detection bound: {m}");
    }
    assert_eq!(k["live_members_dropped"], 0, "{k}");

    let res = &r["resources"];
    assert_eq!(res["processes_read"], 8, "{res}");
    assert!(f(&res["cpu_seconds_mean"]) > 0.0, "{res}");
    assert!(f(&res["peak_rss_mib_max"]) > 1.0, "{res}");
    assert_eq!(r["stop"]["left_running"], 0);
    assert_eq!(r["stop"]["exited_cleanly"], 6);
}

#[test]
fn bad_flags_exit_nonzero_with_a_clear_message_and_start_nothing() {
    for (args, expected) in [
        (
            &["--processes", "4", "--kill", "3"][..],
            "must leave at least 2",
        ),
        (&["--processes", "1"], "--processes"),
        (&["--transport", "carrier-pigeon"], "unknown transport"),
    ] {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("starting"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
