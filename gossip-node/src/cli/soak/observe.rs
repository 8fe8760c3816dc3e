//! What the soak reads from outside the members' admin APIs: resident
//! memory from `/proc`, panics from the logs, and the deaths each member
//! declared, as recorded by its `member-failed` event handler.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The resident set (`VmRSS` of `/proc/PID/status`) of a live process,
/// bytes; `None` if it is gone or the file does not parse (or off Linux).
pub(super) fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// One line of a member's log that reports a panic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Panic {
    /// The log file's name, e.g. `node-3.log`.
    pub log: String,
    /// The line.
    pub line: String,
}

/// The lines containing `panicked` in `logs`; an unreadable log is one
/// such finding too (it cannot be shown to be clean).
pub(super) fn panics<'a>(logs: impl IntoIterator<Item = &'a Path>) -> Vec<Panic> {
    let mut out = Vec::new();
    for path in logs {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                out.extend(
                    text.lines()
                        .filter(|l| l.contains("panicked"))
                        .map(|l| Panic {
                            log: name.clone(),
                            line: l.chars().take(300).collect(),
                        }),
                );
            }
            Err(e) => out.push(Panic {
                log: name,
                line: format!("(cannot read the log: {e})"),
            }),
        }
    }
    out
}

/// The shell command of every member's `member-failed` handler: appends
/// the event (one JSON line), after the time in Unix ms and a space, to
/// `failed-HOST:PORT.jsonl` in `dir`, named after the observing member.
pub(super) fn failed_handler(dir: &Path) -> String {
    // The directory is one the soak created: no single quote in it. One
    // printf is one write, so that lines of two handlers do not mix.
    format!(
        "member-failed=line=$(cat); printf '%s %s\\n' \"$(date +%s%3N)\" \"$line\" >> '{}/failed-'\"$GOSSIP_SELF\"'.jsonl'",
        dir.display()
    )
}

/// A death declared by one member, as its handler recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Death {
    /// The member that declared it (its gossip address).
    pub observer: String,
    /// The member declared dead.
    pub member: String,
    /// The generation declared dead.
    pub generation: u64,
    /// When, Unix time in ms (by the handler's clock).
    pub at_ms: Option<u64>,
}

#[derive(Deserialize)]
struct FailedEvent {
    member: FailedId,
}

#[derive(Deserialize)]
struct FailedId {
    addr: String,
    generation: u64,
}

/// Every death recorded in the `failed-*.jsonl` files of `dir`; lines that
/// do not parse are skipped (a handler killed mid-write with its member).
pub(super) fn deaths(dir: &Path) -> std::io::Result<Vec<Death>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(observer) = name
            .strip_prefix("failed-")
            .and_then(|n| n.strip_suffix(".jsonl"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        out.extend(parse_deaths(observer, &text));
    }
    out.sort_by(|a, b| (&a.observer, &a.member).cmp(&(&b.observer, &b.member)));
    Ok(out)
}

fn parse_deaths(observer: &str, text: &str) -> Vec<Death> {
    text.lines()
        .filter_map(|l| {
            let (at_ms, json) = match l.split_once(' ') {
                Some((t, json)) if t.bytes().all(|b| b.is_ascii_digit()) => (t.parse().ok(), json),
                _ => (None, l),
            };
            let e = serde_json::from_str::<FailedEvent>(json).ok()?;
            Some(Death {
                observer: observer.to_owned(),
                member: e.member.addr,
                generation: e.member.generation,
                at_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_parses() {
        let status = "Name:\tgossip-node\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_rss(status), Some(1000 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn vm_rss_of_this_process() {
        assert!(vm_rss(std::process::id()).is_some_and(|b| b > 0));
    }

    #[test]
    fn deaths_parse_and_partial_lines_are_skipped() {
        let text = concat!(
            r#"1700000000123 {"event":"member-failed","member":{"addr":"127.0.0.1:5","generation":7}}"#,
            "\n",
            r#"{"event":"member-failed","member":{"addr":"127.0.0.1:6","generation":8}}"#,
            "\n",
            r#"1700000000456 {"event":"member-fai"#,
        );
        let death = |member: &str, generation, at_ms| Death {
            observer: "127.0.0.1:4".into(),
            member: member.into(),
            generation,
            at_ms,
        };
        assert_eq!(
            parse_deaths("127.0.0.1:4", text),
            vec![
                death("127.0.0.1:5", 7, Some(1_700_000_000_123)),
                death("127.0.0.1:6", 8, None)
            ]
        );
    }

    /// The handler, run by `sh` as a member runs it, writes lines that
    /// parse, with their time.
    #[cfg(unix)]
    #[test]
    fn the_handler_records_time_and_event() {
        let dir = tempfile::tempdir().unwrap();
        let handler = failed_handler(dir.path());
        let command = handler.strip_prefix("member-failed=").unwrap();
        let event =
            r#"{"event":"member-failed","member":{"addr":"10.78.0.2:7946","generation":3}}"#;
        for _ in 0..2 {
            let mut child = std::process::Command::new("sh")
                .args(["-c", command])
                .env("GOSSIP_SELF", "10.78.0.1:7946")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), event.as_bytes()).unwrap();
            assert!(child.wait().unwrap().success());
        }
        let found = deaths(dir.path()).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|d| d.observer == "10.78.0.1:7946"
            && d.member == "10.78.0.2:7946"
            && d.at_ms.is_some_and(|t| t > 1_700_000_000_000)));
    }

    #[test]
    fn panics_are_found_in_logs() {
        let dir = tempfile::tempdir().unwrap();
        let clean = dir.path().join("node-1.log");
        let bad = dir.path().join("node-2.log");
        std::fs::write(&clean, "started\nstopped\n").unwrap();
        std::fs::write(&bad, "started\nthread 'main' panicked at src/x.rs:1:1:\n").unwrap();
        let found = panics([clean.as_path(), bad.as_path()]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].log, "node-2.log");
        let missing = dir.path().join("node-3.log");
        assert_eq!(panics([missing.as_path()]).len(), 1);
    }
}
