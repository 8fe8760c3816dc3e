//! Replays every fuzz corpus (issue #12): each file of
//! `fuzz/corpus/<target>/` through the function its AFL binary runs, so a
//! change that makes a once-fuzzed input panic fails `cargo test`.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};

use gossip_fuzz::{Target, run};

/// Replays `target`'s corpus; reports every failing file by name, and
/// fails if the corpus is missing or nearly empty (a replay of nothing
/// tests nothing).
fn replay(target: Target) {
    let dir = target.corpus_dir();
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "{}: {} files, a corpus holds at least 3",
        dir.display(),
        files.len()
    );
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("a readable corpus file");
            catch_unwind(AssertUnwindSafe(|| run(target, &data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs of {} panicked: {failed:#?}",
        failed.len(),
        files.len(),
        target.name()
    );
}

#[test]
fn envelope_corpus() {
    replay(Target::Envelope);
}

#[test]
fn machine_corpus() {
    replay(Target::Machine);
}

#[test]
fn quic_corpus() {
    replay(Target::Quic);
}

#[test]
fn grpc_corpus() {
    replay(Target::Grpc);
}

#[test]
fn config_corpus() {
    replay(Target::Config);
}

#[test]
fn admin_corpus() {
    replay(Target::Admin);
}

#[test]
fn snapshot_corpus() {
    replay(Target::Snapshot);
}

#[test]
fn every_target_is_replayed_and_named_once() {
    for (i, t) in Target::ALL.iter().enumerate() {
        assert_eq!(t.name().parse::<Target>(), Ok(*t));
        assert!(Target::ALL[..i].iter().all(|o| o.name() != t.name()));
    }
    assert!("nope".parse::<Target>().is_err());
}
