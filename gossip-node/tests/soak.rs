//! `gossip-node soak` as a user runs it (issue #12): real processes killed,
//! stopped, paused and restarted while every member writes keys, then the
//! command's own checks (nothing lost, no panic, no false death, bounded
//! memory) must pass and its JSON report must show that the churn happened.
//!
//! As root (with iproute2) every member runs in its own network namespace
//! and the churn includes partitions; elsewhere the soak runs on loopback
//! without them and says so. With `GOSSIP_REQUIRE_NETNS_TESTS=1` (set by
//! `.ci/run`, which runs as root) the report must show partitions.
//!
//! The default test is short (8 members, 20 s of churn) to keep the
//! README's test command fast. The three-minute version of the issue runs
//! with `cargo test -p gossip-node --test soak -- --ignored`, which `.ci/run`
//! runs after the test suite.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod support;

use support::{BIN, run_to_end};

/// Runs the soak with `args` and returns its JSON report, failing with its
/// output if it did not pass.
fn soak(args: &[&str], timeout: Duration) -> Value {
    let mut cmd = Command::new(BIN);
    cmd.args(["soak", "--json", "--seed", "42"]).args(args);
    let (status, stdout, stderr) = run_to_end(&mut cmd, timeout);
    assert!(
        status.success(),
        "soak failed ({status}):\n{stdout}\n{stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{stdout}"))
}

/// The report shows churn of every kind and checks that really ran.
#[track_caller]
fn check_report(r: &Value, members: u64) {
    assert_eq!(r["members"], members, "{r:#}");
    assert!(r["failures"].as_array().is_some_and(Vec::is_empty), "{r:#}");
    for churn in ["kills", "terms", "restarts", "pauses"] {
        assert!(
            r[churn].as_u64().is_some_and(|n| n > 0),
            "no {churn}: {r:#}"
        );
    }
    if std::env::var("GOSSIP_REQUIRE_NETNS_TESTS").as_deref() == Ok("1") {
        assert_eq!(r["network"], "netns", "{r:#}");
    }
    if r["network"] == "netns" {
        let cuts = r["cuts"].as_array().expect("cuts");
        assert!(!cuts.is_empty(), "no partition: {r:#}");
        assert!(
            cuts.iter()
                .all(|c| c["end_ms"].as_u64() > c["start_ms"].as_u64()),
            "a partition not healed: {r:#}"
        );
        assert!(r["partitioned_members"].as_u64() >= Some(cuts.len() as u64));
    } else {
        assert_eq!(r["cuts"].as_array().map(Vec::len), Some(0), "{r:#}");
    }
    // Killed members were declared dead by others: the failure detector and
    // the handlers that count false deaths did run.
    assert!(r["deaths"].as_u64().is_some_and(|n| n > 0), "{r:#}");
    assert_eq!(r["false_death_count"], 0, "{r:#}");
    assert_eq!(r["panic_count"], 0, "{r:#}");
    assert!(r["keys_checked"].as_u64().is_some_and(|n| n > 0), "{r:#}");
    assert_eq!(r["mismatches"], 0, "{r:#}");
    assert!(r["converged_ms"].is_number(), "{r:#}");
    let rss = r["rss"].as_array().expect("rss");
    assert!(!rss.is_empty(), "{r:#}");
    for m in rss {
        assert!(m["baseline_bytes"].as_u64().is_some_and(|b| b > 0), "{r:#}");
        assert!(m["end_bytes"].as_u64().is_some_and(|b| b > 0), "{r:#}");
    }
}

#[test]
fn a_short_soak_loses_nothing() {
    let r = soak(
        &[
            "--members",
            "8",
            "--stable",
            "2",
            "--pause-members",
            "2",
            "--duration",
            "20",
            "--churn-every",
            "4",
            "--pause-every",
            "8",
            "--pause-secs",
            "3",
            "--partition-members",
            "2",
            "--partition-every",
            "7",
            "--partition-secs",
            "5",
        ],
        Duration::from_secs(240),
    );
    check_report(&r, 8);
}

/// The three-minute soak of issue #12 ("CI runs a three-minute version"),
/// kept out of the default run for CI's time budget.
#[test]
#[ignore = "three minutes; run with --ignored"]
fn a_three_minute_soak_loses_nothing() {
    let r = soak(
        &["--members", "20", "--duration", "180"],
        Duration::from_secs(600),
    );
    check_report(&r, 20);
}
