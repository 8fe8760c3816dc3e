//! `gossip-node simulate` as a user runs it: flags in, a report out, the
//! same report for the same seed, and clear refusals of bad flags.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gossip-node");

fn simulate(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("simulate")
        .args(args)
        .output()
        .expect("cannot run gossip-node")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is not JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

const FIFTY: &[&str] = &["--nodes", "50", "--seed", "1", "--duration", "20", "--json"];

/// `--start converged` installs every view at time zero: no warm-up
/// traffic, and the scenario runs as after a cold start.
#[test]
fn a_converged_start_skips_the_warm_up() {
    let r = json_of(&simulate(&[
        "--nodes",
        "60",
        "--seed",
        "2",
        "--duration",
        "20",
        "--start",
        "converged",
        "--json",
    ]));
    assert_eq!(r["warmup"]["took_ms"], 0.0, "{}", r["warmup"]);
    assert_eq!(r["warmup"]["traffic"]["messages"], 0, "{}", r["warmup"]);
    let u = &r["updates"][0];
    assert_eq!(u["reached"], u["target"], "{u}");
    assert_eq!(r["false_deaths"], 0);
}

#[test]
fn fifty_members_report_spread_detection_and_no_false_deaths() {
    let r = json_of(&simulate(FIFTY));
    assert_eq!(r["nodes"], 50);
    assert_eq!(r["seed"], 1);
    assert_eq!(r["warmup"]["done"], true, "{}", r["warmup"]);

    let expected_bound = 50f64.ln() / 3f64.ln() + 50f64.ln().ln();
    assert!((f(&r["karp_bound_rounds"]) - expected_bound).abs() < 1e-9);

    let u = &r["updates"][0];
    // Every member but the one crashed after the write.
    assert!(u["target"].as_u64().unwrap() >= 49, "{u}");
    assert_eq!(u["reached"], u["target"], "{u}");
    let (p50, p99, p100) = (
        f(&u["p50"]["rounds"]),
        f(&u["p99"]["rounds"]),
        f(&u["p100"]["rounds"]),
    );
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= p100, "{u}");
    assert!(
        p100 < expected_bound,
        "eager push should beat the bound: {u}"
    );
    let series = u["series"].as_array().unwrap();
    assert!(series.len() >= 2);
    assert_eq!(f(&series.last().unwrap()["fraction"]), 1.0);

    let c = &r["crashes"][0];
    assert_eq!(c["member"], 49);
    let suspected = f(&c["first_suspected_after_ms"]);
    let removed = f(&c["removed_by_all_after_ms"]);
    assert!(0.0 < suspected && suspected <= removed, "{c}");
    assert!(removed <= f(&c["detection_bound_ms"]), "{c}");
    assert_eq!(c["still_listed_by"], 0, "{c}");

    assert_eq!(r["false_deaths"], 0);
    assert_eq!(r["end"]["membership_converged"], true);
    let rest = &r["at_rest"];
    assert!(f(&rest["messages_per_member_per_sec"]) > 0.0, "{rest}");
    assert!(f(&rest["bytes_per_member_per_sec"]) > 0.0, "{rest}");
}

#[test]
fn the_same_seed_gives_the_same_report_and_another_seed_another() {
    let a = simulate(FIFTY);
    let b = simulate(FIFTY);
    json_of(&a);
    assert_eq!(
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout)
    );
    let other: Vec<&str> = FIFTY
        .iter()
        .map(|a| if *a == "1" { "2" } else { *a })
        .collect();
    let c = json_of(&simulate(&other));
    assert_eq!(c["seed"], 2);
    assert_ne!(json_of(&a)["updates"], c["updates"]);
}

#[test]
fn plot_writes_an_svg_and_tables_are_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spread.svg");
    let out = simulate(&[
        "--nodes",
        "30",
        "--scenario",
        "update",
        "--duration",
        "3",
        "--plot",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("simulated 30 members"), "{text}");
    assert!(text.contains("log3(N) + ln ln N"), "{text}");
    assert!(text.contains("plot written to"), "{text}");
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
}

#[test]
fn bad_flags_exit_nonzero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let unwritable = dir.path().join("no-such-dir").join("x.svg");
    for (args, expected) in [
        (&["--nodes", "0"][..], "--nodes"),
        (&["--loss", "1.5"], "must be a probability in [0, 1]"),
        (&["--latency", "3..1"], "min > max"),
        (&["--scenario", "meteor"], "invalid value 'meteor'"),
        (
            &[
                "--nodes",
                "5",
                "--duration",
                "1",
                "--plot",
                unwritable.to_str().unwrap(),
            ],
            "cannot write the plot",
        ),
    ] {
        let out = simulate(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(!Path::new(&unwritable).exists());
}
