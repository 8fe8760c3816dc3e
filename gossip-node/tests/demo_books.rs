//! `gossip-node demo books` as a user runs it, with standard output piped
//! (so it prints a plain table every two seconds): three members each show
//! a favourite book from the list shipped with the binary, the versions of
//! their choices grow, and the demo stops every process and exits 0.
#![cfg(all(unix, any(feature = "grpc", feature = "quic")))]

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;
use support::BIN;
/// The titles the demo picks from.
const BOOKS: &str = include_str!("../src/cli/demo_books/books.txt");
/// How long the demo may take in all: its 8 s, starting and stopping.
const DEADLINE: Duration = Duration::from_secs(30);

/// One member row of a printed table.
#[derive(Debug)]
struct Row {
    pid: i32,
    state: String,
    book: String,
    version: u64,
}

/// Every table in `out`, each as member index → row.
fn tables(out: &str) -> Vec<BTreeMap<usize, Row>> {
    let mut tables = Vec::new();
    for line in out.lines() {
        if line.starts_with("gossip-node demo books:") {
            tables.push(BTreeMap::new());
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| 1 | pid | address | state | book | version | sees #1 | ... |"
        let (Some(table), Some(Ok(index))) = (tables.last_mut(), cells.get(1).map(|c| c.parse()))
        else {
            continue;
        };
        assert!(cells.len() >= 7, "short row: {line}");
        table.insert(
            index,
            Row {
                pid: cells[2].parse().unwrap_or_else(|_| panic!("pid in {line}")),
                state: cells[4].to_owned(),
                book: cells[5].to_owned(),
                version: cells[6].parse().unwrap_or(0),
            },
        );
    }
    tables
}

#[test]
fn books_demo_shows_favourites_spreading_and_exits_cleanly() {
    let started = Instant::now();
    let (status, out, err) = support::run_to_end(
        Command::new(BIN).args([
            "demo",
            "books",
            "--nodes",
            "3",
            "--every-secs",
            "1",
            "--duration",
            "8",
        ]),
        DEADLINE,
    );
    let took = started.elapsed();
    assert!(status.success(), "demo failed ({status}):\n{out}\n{err}");
    println!("demo took {took:?}");

    let books: Vec<&str> = BOOKS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let tables = tables(&out);
    assert!(
        tables.len() >= 3,
        "want a table every ~2 s of 8 s, got {}:\n{out}",
        tables.len()
    );
    let (first, last) = (&tables[0], &tables[tables.len() - 1]);
    for table in [first, last] {
        assert_eq!(
            table.keys().copied().collect::<Vec<_>>(),
            [1, 2, 3],
            "{out}"
        );
    }
    for (index, row) in last {
        assert_eq!(row.state, "running", "member {index}:\n{out}");
        assert!(
            books.contains(&row.book.as_str()),
            "member {index}'s {:?} is not a listed book:\n{out}",
            row.book
        );
        assert_eq!(row.pid, first[index].pid, "{out}");
        // Each re-choice is a new write with a higher version; a member that
        // re-chooses about every second for 8 s has made several.
        let versions: Vec<u64> = tables
            .iter()
            .filter_map(|t| t.get(index))
            .map(|r| r.version)
            .collect();
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "member {index}: versions {versions:?}:\n{out}"
        );
        assert!(
            row.version >= first[index].version + 2,
            "member {index}: versions {versions:?}:\n{out}"
        );
    }
    for index in 1..=3 {
        assert!(
            out.contains(&format!(
                "node {index} (pid {}) stopped: exit status: 0",
                last[&index].pid
            )),
            "{out}"
        );
        // The demo reaped its children; none is left running.
        assert!(
            kill(Pid::from_raw(last[&index].pid), None).is_err(),
            "member {index} still runs"
        );
    }
}
