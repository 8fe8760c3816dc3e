//! Local clusters of real `gossip-node run` child processes, for the demo,
//! the benchmark, the soak and anything else that needs members in
//! separate processes, on loopback or each in its own network namespace.
//!
//! [`ProcessCluster::spawn`] starts [`ClusterSpec::nodes`] children of an
//! executable on free loopback ports (or at [`ClusterSpec::hosts`]), each with an admin endpoint, seeded
//! as [`Seeding`] says, each logging to its own file in
//! [`ClusterSpec::log_dir`]. Dropping the cluster stops every process still
//! running (SIGTERM, a grace period, then SIGKILL), so that an error or a
//! panic leaves nothing behind; Ctrl-C is the caller's to catch (install
//! the handlers before spawning, then let the cluster drop or call
//! [`ProcessCluster::stop_all`]). [`ProcessCluster::kill`] crashes one
//! node with SIGKILL, for failure detection.
//!
//! [`AdminClient`] reads and writes the nodes' admin APIs (`/members`,
//! `/kv`, `/stats`, `PUT /kv/{key}`) with a short timeout, and
//! [`proc_usage`] reads a child's CPU time and peak memory from `/proc`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cli::error::ProcsError;

/// Default of [`ClusterSpec::startup_timeout`].
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Default of [`ClusterSpec::stop_grace`].
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Which members each node is given as `--seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seeding {
    /// No seeds: every node starts alone (the caller's `args` may add some).
    None,
    /// Each node is seeded with the one before it, so that membership has
    /// to spread by gossip. The first node has no seed.
    Chain,
    /// Every node but the first is seeded with the first.
    First,
    /// Each node is seeded with up to this many nodes just before it.
    Previous(usize),
}

impl Seeding {
    /// The positions (from 0) of the seeds of the node at position `i`.
    fn seeds_of(self, i: usize) -> std::ops::Range<usize> {
        match self {
            Seeding::None => 0..0,
            Seeding::Chain => i.saturating_sub(1)..i,
            Seeding::First => 0..usize::from(i > 0),
            Seeding::Previous(k) => i.saturating_sub(k)..i,
        }
    }
}

/// What to start: how many nodes, from which executable, with which flags.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `gossip-node` executable (usually [`std::env::current_exe`]).
    pub exe: PathBuf,
    /// Number of nodes.
    pub nodes: usize,
    /// Directory of the logs, `node-{index}.log` (created if missing).
    pub log_dir: PathBuf,
    /// The seeds of each node.
    pub seeding: Seeding,
    /// Flags after `run --listen ADDR --admin ADDR` given to every node,
    /// e.g. `--transport quic`.
    pub args: Vec<OsString>,
    /// Flags of each node after `args`: `node_args[i]` goes to the node at
    /// position `i` (from 0). Shorter than `nodes` means no extra flags for
    /// the rest.
    pub node_args: Vec<Vec<OsString>>,
    /// How long a node may take to answer on its admin endpoint after it
    /// started ([`ProcessCluster::wait_until_up`]).
    pub startup_timeout: Duration,
    /// How long a node may take to leave after SIGTERM before it is killed
    /// ([`ProcessCluster::stop_all`]).
    pub stop_grace: Duration,
    /// Where each node runs: empty (the default) for loopback on free
    /// ports; otherwise one [`NodeHost`] per node, each in its own network
    /// namespace (see [`crate::cli::netns`]).
    pub hosts: Vec<NodeHost>,
}

/// Where one node runs when it is not on loopback: a network namespace and
/// its addresses there.
#[derive(Clone, Debug)]
pub struct NodeHost {
    /// The namespace it runs in (`ip netns exec NETNS ...`).
    pub netns: String,
    /// Its gossip address, its identity as a member.
    pub listen: SocketAddr,
    /// Its admin endpoint, which this process must be able to reach.
    pub admin: SocketAddr,
}

impl ClusterSpec {
    /// `nodes` nodes of `exe` logging to `log_dir`, chained
    /// ([`Seeding::Chain`]), no extra flags, default timeouts.
    pub fn new(exe: PathBuf, nodes: usize, log_dir: PathBuf) -> Self {
        Self {
            exe,
            nodes,
            log_dir,
            seeding: Seeding::Chain,
            args: Vec::new(),
            node_args: Vec::new(),
            startup_timeout: STARTUP_TIMEOUT,
            stop_grace: STOP_GRACE,
            hosts: Vec::new(),
        }
    }
}

/// One child process.
#[derive(Debug)]
pub struct NodeProc {
    index: usize,
    addr: String,
    admin: SocketAddr,
    pid: u32,
    log: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
}

impl NodeProc {
    /// The node's label, from 1 (its position plus one): its log is
    /// `node-{index}.log`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its gossip address, `127.0.0.1:PORT`: its identity as a member.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its admin endpoint.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its log file (standard output and error).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its exit status, if it has been seen to exit.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// The exit status if the process has ended (reaping it).
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

/// Every process of a local cluster. Dropping it stops them all.
#[derive(Debug)]
pub struct ProcessCluster {
    nodes: Vec<NodeProc>,
    log_dir: PathBuf,
    startup_timeout: Duration,
    stop_grace: Duration,
    /// How long the last stop took, from the SIGTERMs to the last exit of
    /// a process that was running (`None`: never stopped, or none ran).
    stop_took: Option<Duration>,
    /// What the nodes were started with, to restart one.
    spec: ClusterSpec,
    /// The gossip addresses, by position.
    addrs: Vec<String>,
}

impl ProcessCluster {
    /// Starts the nodes of `spec`, in order, without waiting for them to
    /// come up (see [`ProcessCluster::wait_until_up`]).
    ///
    /// # Errors
    /// [`ProcsError::Hosts`] if [`ClusterSpec::hosts`] is neither empty nor
    /// one per node; [`ProcsError::Ports`], [`ProcsError::LogDir`], or
    /// [`ProcsError::Spawn`] for the first node that cannot be started;
    /// the nodes started before it are stopped before the error is returned.
    pub fn spawn(spec: &ClusterSpec) -> Result<Self, ProcsError> {
        let n = spec.nodes;
        let (addrs, admins): (Vec<String>, Vec<SocketAddr>) = if spec.hosts.is_empty() {
            let ports = free_ports(2 * n).map_err(ProcsError::Ports)?;
            (0..n)
                .map(|i| {
                    (
                        format!("127.0.0.1:{}", ports[2 * i]),
                        SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
                    )
                })
                .unzip()
        } else if spec.hosts.len() == n {
            spec.hosts
                .iter()
                .map(|h| (h.listen.to_string(), h.admin))
                .unzip()
        } else {
            return Err(ProcsError::Hosts {
                hosts: spec.hosts.len(),
                nodes: n,
            });
        };
        std::fs::create_dir_all(&spec.log_dir).map_err(|source| ProcsError::LogDir {
            path: spec.log_dir.clone(),
            source,
        })?;
        let mut cluster = Self {
            nodes: Vec::with_capacity(n),
            log_dir: spec.log_dir.clone(),
            startup_timeout: spec.startup_timeout,
            stop_grace: spec.stop_grace,
            stop_took: None,
            spec: spec.clone(),
            addrs: addrs.clone(),
        };
        for (i, addr) in addrs.iter().enumerate() {
            let index = i + 1;
            let admin = admins[i];
            let log = spec.log_dir.join(format!("node-{index}.log"));
            let child = start_node(spec, &addrs, i, admin, &log, false)
                .map_err(|source| ProcsError::Spawn { index, source })?;
            cluster.nodes.push(NodeProc {
                index,
                addr: addr.clone(),
                admin,
                pid: child.id(),
                log,
                child,
                status: None,
            });
        }
        Ok(cluster)
    }

    /// The nodes, in the order started.
    pub fn nodes(&self) -> &[NodeProc] {
        &self.nodes
    }

    /// The nodes, mutably (to poll their exit).
    pub fn nodes_mut(&mut self) -> &mut [NodeProc] {
        &mut self.nodes
    }

    /// The directory of the logs.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The process ids, in the order started.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    /// Waits until every node answers `GET /members` on its admin endpoint.
    ///
    /// # Errors
    /// [`ProcsError::NodeDown`] with the tail of its log for the first node
    /// that exits or does not answer within the startup timeout.
    pub async fn wait_until_up(&mut self, client: &AdminClient) -> Result<(), ProcsError> {
        let deadline = Instant::now() + self.startup_timeout;
        for node in &mut self.nodes {
            loop {
                if client.members(node.admin).await.is_ok() {
                    break;
                }
                let down = |node: &NodeProc, reason: String| ProcsError::NodeDown {
                    index: node.index,
                    addr: node.addr.clone(),
                    reason: format!("{reason}; {}", node.log_tail()),
                };
                if let Some(status) = node.poll_exit() {
                    return Err(down(node, format!("exited with {status}")));
                }
                if Instant::now() >= deadline {
                    let reason = format!(
                        "admin endpoint http://{} did not answer within {}s",
                        node.admin,
                        self.startup_timeout.as_secs()
                    );
                    return Err(down(node, reason));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Crashes the node at position `i` (from 0) with SIGKILL and reaps it:
    /// it leaves no message behind, as a failed machine. Returns false if
    /// there is no such node or it had already exited.
    pub fn kill(&mut self, i: usize) -> bool {
        let Some(node) = self.nodes.get_mut(i) else {
            return false;
        };
        if node.poll_exit().is_some() {
            return false;
        }
        // Killing a process that just exited fails harmlessly.
        let _ = node.child.kill();
        node.status = node.child.wait().ok();
        true
    }

    /// Starts the node at position `i` (from 0) again, after it exited (or
    /// was killed): the same executable, flags, seeds, gossip address and
    /// admin endpoint, its output appended to the same log. Returns false
    /// (and starts nothing) if there is no such node or it is still running.
    ///
    /// # Errors
    /// [`ProcsError::Spawn`] if the process cannot be started.
    pub fn restart(&mut self, i: usize) -> Result<bool, ProcsError> {
        let Some(node) = self.nodes.get_mut(i) else {
            return Ok(false);
        };
        if node.poll_exit().is_none() {
            return Ok(false);
        }
        let child = start_node(&self.spec, &self.addrs, i, node.admin, &node.log, true).map_err(
            |source| ProcsError::Spawn {
                index: node.index,
                source,
            },
        )?;
        node.pid = child.id();
        node.child = child;
        node.status = None;
        Ok(true)
    }

    /// Stops every process still running: SIGTERM, up to the stop grace to
    /// leave, then SIGKILL. Idempotent. Blocks (see
    /// [`ProcessCluster::shutdown`] in async code).
    pub fn stop_all(&mut self) {
        let mut stopping = 0;
        for node in &mut self.nodes {
            if node.poll_exit().is_none() {
                terminate(&mut node.child);
                stopping += 1;
            }
        }
        let start = Instant::now();
        let deadline = start + self.stop_grace;
        loop {
            let mut running = 0;
            for node in &mut self.nodes {
                running += usize::from(node.poll_exit().is_none());
            }
            if running == 0 && stopping > 0 {
                self.stop_took = Some(start.elapsed());
            }
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for node in &mut self.nodes {
            if node.poll_exit().is_none() {
                let _ = node.child.kill();
                node.status = node.child.wait().ok();
            }
        }
    }

    /// How long the last [`ProcessCluster::stop_all`] took from the SIGTERMs
    /// to the last exit (to within 20 ms); `None` if some process had to be
    /// killed or none was running.
    pub fn stop_took(&self) -> Option<Duration> {
        self.stop_took
    }

    /// [`ProcessCluster::stop_all`] on a blocking thread; returns the
    /// cluster with every exit status known.
    ///
    /// # Errors
    /// [`ProcsError::Join`] if the stopping thread panicked (the cluster is
    /// then dropped, which stops what is left).
    pub async fn shutdown(mut self) -> Result<Self, ProcsError> {
        tokio::task::spawn_blocking(move || {
            self.stop_all();
            self
        })
        .await
        .map_err(|e| ProcsError::Join(e.to_string()))
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Starts the node at position `i` of `spec`, logging to `log` (appended
/// to if `append`, else truncated).
fn start_node(
    spec: &ClusterSpec,
    addrs: &[String],
    i: usize,
    admin: SocketAddr,
    log: &Path,
    append: bool,
) -> std::io::Result<Child> {
    let file = if append {
        File::options().create(true).append(true).open(log)?
    } else {
        File::create(log)?
    };
    let mut cmd = match spec.hosts.get(i) {
        Some(host) => crate::cli::netns::Lab::command_in(&host.netns, &spec.exe),
        None => std::process::Command::new(&spec.exe),
    };
    cmd.arg("run")
        .args(["--listen", &addrs[i]])
        .args(["--admin", &admin.to_string()])
        .args(&spec.args)
        .args(spec.node_args.get(i).into_iter().flatten())
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    for seed in spec.seeding.seeds_of(i) {
        cmd.args(["--seed", &addrs[seed]]);
    }
    cmd.spawn()
}

/// Asks a child to leave gracefully (SIGTERM); off Unix, kills it.
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        match i32::try_from(child.id()) {
            Ok(pid) => {
                // The child is not reaped yet, so the pid is still its own;
                // an error means it has already exited.
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            Err(_) => {
                let _ = child.kill();
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
}

/// Ports that were free a moment ago: bound on 127.0.0.1 port 0 all at once
/// (so they differ), then released.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// The last ten lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(10)..].join("\n");
            if tail.is_empty() {
                format!("(log {} is empty)", path.display())
            } else {
                format!("last lines of {}:\n{tail}", path.display())
            }
        }
        Err(e) => format!("(cannot read log {}: {e})", path.display()),
    }
}

/// One entry of `GET /members`: the fields the tools read.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct AdminMember {
    /// The member's address, `host:port`.
    pub addr: String,
    /// `alive` or `suspect` (`/members` lists live members only).
    pub state: String,
    /// Its incarnation.
    #[serde(default)]
    pub incarnation: u64,
}

/// One key of `GET /kv`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct AdminKey {
    /// The value: a string for UTF-8 values.
    pub value: serde_json::Value,
    /// The owner's version of the write.
    pub version: u64,
}

/// `GET /kv`: owner address → key → entry.
pub type AdminKv = BTreeMap<String, BTreeMap<String, AdminKey>>;

/// `GET /stats`: the traffic counters of one member since it started.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct AdminStats {
    /// Messages handed to the transport.
    pub messages_sent: u64,
    /// Encoded bytes handed to the transport.
    pub bytes_sent: u64,
    /// Messages accepted from the transport.
    pub messages_received: u64,
    /// Encoded bytes accepted from the transport.
    pub bytes_received: u64,
    /// Sends that failed or timed out (not counted as sent).
    #[serde(default)]
    pub send_failures: u64,
}

/// A client of the nodes' admin APIs (plain HTTP on loopback, no proxy).
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
}

impl AdminClient {
    /// A client whose every request gives up after `timeout`.
    ///
    /// # Errors
    /// [`ProcsError::Client`] if the HTTP client cannot be built.
    pub fn new(timeout: Duration) -> Result<Self, ProcsError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(ProcsError::Client)?;
        Ok(Self { http })
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        admin: SocketAddr,
        path: &'static str,
    ) -> Result<T, ProcsError> {
        let fail = |source| ProcsError::Admin {
            admin,
            path: path.to_owned(),
            source,
        };
        self.http
            .get(format!("http://{admin}{path}"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(fail)?
            .json()
            .await
            .map_err(fail)
    }

    /// `GET /members` of the node at `admin`: its live members.
    ///
    /// # Errors
    /// [`ProcsError::Admin`] if the request fails or the answer is not JSON
    /// of that shape.
    pub async fn members(&self, admin: SocketAddr) -> Result<Vec<AdminMember>, ProcsError> {
        self.get(admin, "/members").await
    }

    /// `GET /kv` of the node at `admin`.
    ///
    /// # Errors
    /// As [`AdminClient::members`].
    pub async fn kv(&self, admin: SocketAddr) -> Result<AdminKv, ProcsError> {
        self.get(admin, "/kv").await
    }

    /// `GET /stats` of the node at `admin`.
    ///
    /// # Errors
    /// As [`AdminClient::members`].
    pub async fn stats(&self, admin: SocketAddr) -> Result<AdminStats, ProcsError> {
        self.get(admin, "/stats").await
    }

    /// `PUT /kv/{key}` on the node at `admin`: sets a key it owns.
    ///
    /// # Errors
    /// [`ProcsError::Admin`] if the request fails or is refused.
    pub async fn put_key(
        &self,
        admin: SocketAddr,
        key: &str,
        value: String,
    ) -> Result<(), ProcsError> {
        self.http
            .put(format!("http://{admin}/kv/{key}"))
            .body(value)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map(drop)
            .map_err(|source| ProcsError::Admin {
                admin,
                path: format!("/kv/{key}"),
                source,
            })
    }
}

/// CPU time and peak memory of a running process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcUsage {
    /// User plus system CPU time since it started.
    pub cpu: Duration,
    /// Peak resident set size (`VmHWM`), bytes.
    pub peak_rss_bytes: u64,
}

/// Reads the CPU time (`/proc/PID/stat`, fields utime and stime) and the
/// peak resident set (`/proc/PID/status`, `VmHWM`) of a live process.
/// `None` off Linux, if the process is gone or reaped, or if the files do
/// not parse. Assumes the usual 100 clock ticks per second.
pub fn proc_usage(pid: u32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_proc_usage(&stat, &status)
}

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`), 100 on every
/// Linux platform in practice.
const USER_HZ: u64 = 100;

fn parse_proc_usage(stat: &str, status: &str) -> Option<ProcUsage> {
    // The command name, in parentheses, may hold spaces: split after it.
    // Fields after it start with field 3 (state); utime and stime are
    // fields 14 and 15.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    let ticks = utime + stime;
    Some(ProcUsage {
        cpu: Duration::from_millis(ticks * 1000 / USER_HZ),
        peak_rss_bytes: hwm_kb * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_differ() {
        let ports = free_ports(8).unwrap();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 8);
        assert!(ports.iter().all(|p| *p != 0));
    }

    #[test]
    fn seeding_positions() {
        let seeds = |s: Seeding, i| s.seeds_of(i).collect::<Vec<_>>();
        assert_eq!(seeds(Seeding::Chain, 0), Vec::<usize>::new());
        assert_eq!(seeds(Seeding::Chain, 3), vec![2]);
        assert_eq!(seeds(Seeding::First, 0), Vec::<usize>::new());
        assert_eq!(seeds(Seeding::First, 5), vec![0]);
        assert_eq!(seeds(Seeding::Previous(3), 1), vec![0]);
        assert_eq!(seeds(Seeding::Previous(3), 7), vec![4, 5, 6]);
        assert_eq!(seeds(Seeding::None, 7), Vec::<usize>::new());
    }

    #[test]
    fn proc_usage_parses_proc_files() {
        let stat = "1234 (gossip node) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9";
        let status =
            "Name:\tgossip-node\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(
            parse_proc_usage(stat, status),
            Some(ProcUsage {
                cpu: Duration::from_secs(3),
                peak_rss_bytes: 2048 * 1024,
            })
        );
        assert_eq!(parse_proc_usage("1234 (x) S 1", status), None);
        assert_eq!(parse_proc_usage(stat, "Name: x\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn proc_usage_of_this_process() {
        let usage = proc_usage(std::process::id()).unwrap();
        assert!(usage.peak_rss_bytes > 0);
    }
}
