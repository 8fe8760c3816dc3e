//! Shared by the process tests of `gossip-node`: a `gossip-node run` child
//! process started on free loopback ports, its log, and its end.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_gossip-node");
/// How long a node may take to print its start line.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `gossip-node run` process; killed on drop unless it exited.
pub(crate) struct Node {
    pub(crate) child: Child,
    /// The gossip address, advertised and bound.
    pub(crate) addr: String,
    pub(crate) admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    pub(crate) status: Option<ExitStatus>,
}

impl Node {
    /// Starts `gossip-node run` on free loopback ports with `extra` flags and
    /// waits for its start line.
    pub(crate) fn spawn(extra: &[&str]) -> Node {
        Node::spawn_with(Command::new(BIN), "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    /// As [`Node::spawn`], listening for gossip on `listen`.
    pub(crate) fn spawn_at(listen: &str, extra: &[&str]) -> Node {
        Node::spawn_with(Command::new(BIN), listen, "127.0.0.1:0", extra)
    }

    /// Starts `program run --listen listen --admin admin` with `extra` flags
    /// and waits for its start line. `program` is the binary under test, or
    /// a command that execs it (such as `ip netns exec NS BIN`), so that the
    /// child's pid is the node's.
    pub(crate) fn spawn_with(
        mut program: Command,
        listen: &str,
        admin: &str,
        extra: &[&str],
    ) -> Node {
        let mut child = program
            .args(["run", "--listen", listen, "--admin", admin])
            .args(["--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(json) = serde_json::from_str::<Value>(&line) {
                    let f = &json["fields"];
                    if f["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("gossip-node started"))
                    {
                        let _ = tx.send((
                            f["advertise"].as_str().unwrap_or_default().to_owned(),
                            f["admin"].as_str().unwrap_or_default().to_owned(),
                        ));
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut node = Node {
            child,
            addr: String::new(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            status: None,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((addr, admin)) => {
                node.addr = addr;
                node.admin = admin
                    .parse()
                    .unwrap_or_else(|_| panic!("bad admin address {admin:?}"));
            }
            Err(_) => panic!("node did not start:\n{}", node.logs()),
        }
        node
    }

    pub(crate) fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub(crate) fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to exit, at most `timeout`.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.status = Some(s);
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kills the child on drop unless it has exited.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads all of `r` on a thread of its own.
fn read_in_background(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Runs `cmd` with its standard output and error captured until it exits by
/// itself, at most `timeout` (a panic otherwise; the process is killed
/// whatever happens). Returns its status, standard output and error.
pub(crate) fn run_to_end(cmd: &mut Command, timeout: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = read_in_background(child.stdout.take().unwrap());
    let err = read_in_background(child.stderr.take().unwrap());
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// True if `pid` is gone (or a zombie, which runs nothing).
pub(crate) fn process_gone(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => true,
        _ => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true),
    }
}

/// Fast protocol timing for process tests: gossip 100 ms, probe 200 ms,
/// probe timeout 100 ms.
pub(crate) const FAST: [&str; 6] = [
    "--gossip-interval-ms",
    "100",
    "--probe-interval-ms",
    "200",
    "--probe-timeout-ms",
    "100",
];

/// With [`FAST`], a suspicion timeout of 2 x max(1, log10 n) probe periods,
/// so that a killed member is dropped within seconds.
pub(crate) const SHORT_SUSPICION: [&str; 2] = ["--suspicion-mult", "2"];

impl Node {
    /// As [`Node::spawn`], a member of `cluster` with [`FAST`] timing and
    /// `extra` flags.
    pub(crate) fn spawn_fast(cluster: &str, extra: &[&str]) -> Node {
        let mut args = vec!["--cluster-id", cluster];
        args.extend(FAST);
        args.extend(extra);
        Node::spawn(&args)
    }
}

/// Polls `f` every 100 ms until it holds; fails the test naming `what` if
/// it does not within `deadline`.
#[track_caller]
pub(crate) fn wait_for(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
