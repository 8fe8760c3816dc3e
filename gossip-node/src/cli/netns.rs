//! Network namespaces and bridges for tools that need real links between
//! members on one machine: the soak's partitions (issue #12, "Soak").
//!
//! A [`Lab`] owns what it creates with iproute2's `ip` (namespaces,
//! bridges, veth pairs) and deletes all of it when dropped, also on an
//! error or a panic. Names carry a prefix, the process id and a counter,
//! so two labs (or two runs) never collide, and what a run killed with
//! SIGKILL left behind is deleted by the next lab of its prefix. Root only: [`available`] says
//! why a lab cannot be built here.
//!
//! A process runs inside a namespace when started as
//! `ip netns exec NS COMMAND`, which enters the namespace and then execs
//! the command: the child's pid is the command's own, so signals reach it.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use thiserror::Error;

/// Failure to build or change a [`Lab`].
#[derive(Debug, Error)]
pub enum NetnsError {
    /// Namespaces cannot be made here (not root, or no `ip`).
    #[error("network namespaces are not available here: {0}")]
    Unavailable(String),
    /// An `ip` command failed.
    #[error("`ip {command}` failed: {reason}")]
    Ip {
        /// The arguments of the command.
        command: String,
        /// Its exit status and standard error, or why it did not start.
        reason: String,
    },
}

/// Why namespaces cannot be made here (`Err`), or `Ok` if they can: the
/// process must be root and iproute2's `ip` must run.
///
/// # Errors
/// [`NetnsError::Unavailable`] with the reason.
pub fn available() -> Result<(), NetnsError> {
    #[cfg(target_os = "linux")]
    {
        if !nix::unistd::geteuid().is_root() {
            return Err(NetnsError::Unavailable(
                "not running as root (network namespaces need it)".into(),
            ));
        }
        match Command::new("ip").arg("-V").stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(NetnsError::Unavailable(format!(
                "`ip -V` failed: {}",
                out.status
            ))),
            Err(e) => Err(NetnsError::Unavailable(format!(
                "iproute2's `ip` not found: {e}"
            ))),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(NetnsError::Unavailable(
            "network namespaces need Linux".into(),
        ))
    }
}

/// Runs `ip args`.
///
/// # Errors
/// [`NetnsError::Ip`] naming the command, with its standard error.
pub fn ip(args: &[&str]) -> Result<(), NetnsError> {
    ip_output(args).map(drop)
}

/// Runs `ip args` and returns its standard output.
///
/// # Errors
/// [`NetnsError::Ip`] naming the command, with its standard error.
pub fn ip_output(args: &[&str]) -> Result<String, NetnsError> {
    let failed = |reason: String| NetnsError::Ip {
        command: args.join(" "),
        reason,
    };
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

static LABS: AtomicUsize = AtomicUsize::new(0);

/// Namespaces, bridges and veth pairs made through one value; all deleted
/// when it is dropped.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
    ports: Vec<String>,
    bridges: Vec<String>,
}

impl Lab {
    /// An empty lab whose names start with `prefix` (at most 2 bytes, so
    /// that names fit Linux's 15 bytes), then the process id and a counter.
    /// First deletes what labs of `prefix` whose process is gone left
    /// behind ([`sweep`]), and says so on standard error.
    ///
    /// # Errors
    /// [`NetnsError::Unavailable`] if [`available`] says so.
    pub fn new(prefix: &str) -> Result<Self, NetnsError> {
        available()?;
        for gone in sweep(prefix) {
            eprintln!("netns: deleted {gone}, left behind by a run whose process is gone");
        }
        let tag = format!(
            "{}{}{}",
            short(prefix),
            std::process::id(),
            // One letter per lab of this process: a..z, then wraps.
            char::from(b'a' + (LABS.fetch_add(1, Ordering::Relaxed) % 26) as u8)
        );
        Ok(Self {
            tag,
            namespaces: Vec::new(),
            ports: Vec::new(),
            bridges: Vec::new(),
        })
    }

    /// A new bridge, up, named after the lab and `suffix` (one letter).
    ///
    /// # Errors
    /// [`NetnsError::Ip`].
    pub fn bridge(&mut self, suffix: char) -> Result<String, NetnsError> {
        let name = format!("{}{suffix}", self.tag);
        ip(&["link", "add", &name, "type", "bridge"])?;
        self.bridges.push(name.clone());
        ip(&["link", "set", &name, "up"])?;
        Ok(name)
    }

    /// Gives the bridge `bridge` the address `cidr` (e.g. `10.79.255.254/16`)
    /// in the lab's own namespace, so that this process can reach the
    /// namespaces plugged into it.
    ///
    /// # Errors
    /// [`NetnsError::Ip`].
    pub fn address_bridge(&self, bridge: &str, cidr: &str) -> Result<(), NetnsError> {
        ip(&["addr", "add", cidr, "dev", bridge])
    }

    /// A new namespace, with its loopback up, named after the lab and `n`.
    ///
    /// # Errors
    /// [`NetnsError::Ip`].
    pub fn namespace(&mut self, n: usize) -> Result<String, NetnsError> {
        let name = format!("{}n{n}", self.tag);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// Plugs namespace `ns` into `bridge`: a veth pair whose inner end is
    /// `inner` in `ns`, with the address `cidr`, and whose outer end (the
    /// returned name, made from the lab, `kind` and `n`) is a port of the
    /// bridge. Both ends are up.
    ///
    /// # Errors
    /// [`NetnsError::Ip`].
    pub fn plug(
        &mut self,
        ns: &str,
        n: usize,
        kind: char,
        inner: &str,
        bridge: &str,
        cidr: &str,
    ) -> Result<String, NetnsError> {
        let port = format!("{}{kind}{n}", self.tag);
        ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", inner, "netns", ns,
        ])?;
        self.ports.push(port.clone());
        ip(&["link", "set", &port, "master", bridge, "up"])?;
        ip(&["-n", ns, "addr", "add", cidr, "dev", inner])?;
        ip(&["-n", ns, "link", "set", inner, "up"])?;
        Ok(port)
    }

    /// Moves the port `port` to the bridge `bridge`: whatever is plugged
    /// into it now reaches only that bridge's other ports.
    ///
    /// # Errors
    /// [`NetnsError::Ip`].
    pub fn move_port(&self, port: &str, bridge: &str) -> Result<(), NetnsError> {
        ip(&["link", "set", port, "master", bridge])
    }

    /// Sets the link `port` up or down (a cable pulled at the switch).
    ///
    /// # Errors
    /// [`NetnsError::Ip`].
    pub fn set_port(&self, port: &str, up: bool) -> Result<(), NetnsError> {
        ip(&["link", "set", port, if up { "up" } else { "down" }])
    }

    /// Runs `f` on a new thread that entered the namespace `ns`, and
    /// returns what it returns (sockets it makes belong to `ns`).
    ///
    /// # Errors
    /// [`NetnsError::Unavailable`] if the thread cannot enter `ns` (or
    /// panicked).
    pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let enter = || -> Result<(), String> {
            #[cfg(target_os = "linux")]
            {
                let file =
                    std::fs::File::open(format!("/run/netns/{ns}")).map_err(|e| e.to_string())?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| e.to_string())
            }
            #[cfg(not(target_os = "linux"))]
            {
                Err("network namespaces need Linux".to_owned())
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| enter().map(|()| f()))
                .join()
                .map_err(|_| "the thread panicked".to_owned())
                .and_then(|r| r)
        })
        .map_err(|e| NetnsError::Unavailable(format!("cannot enter namespace {ns}: {e}")))
    }

    /// A command that runs `program` inside the namespace `ns`.
    pub fn command_in(ns: &str, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }
}

/// The part of `prefix` that starts a lab's names: its first 2 bytes.
fn short(prefix: &str) -> &str {
    &prefix[..prefix.len().min(2)]
}

/// The process id in a lab's name (`prefix`, the id, then a letter), if
/// `name` is one of `prefix`'s.
fn lab_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(short(prefix))?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    rest[digits..]
        .chars()
        .next()
        .filter(char::is_ascii_lowercase)?;
    rest[..digits].parse().ok()
}

/// Deletes the namespaces and links of `prefix`'s labs whose process no
/// longer runs: what a run killed with SIGKILL (no `Drop`) left behind.
/// A lab of a process still running is never touched. Returns what it
/// deleted; best effort (a name that cannot be deleted is skipped).
pub fn sweep(prefix: &str) -> Vec<String> {
    let orphan = |name: &str| {
        lab_pid(name, prefix)
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let mut gone = Vec::new();
    // `ip netns list`: `NAME (id: N)` or `NAME`.
    let namespaces = ip_output(&["netns", "list"]).unwrap_or_default();
    for name in namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        if orphan(name) && ip(&["netns", "del", name]).is_ok() {
            gone.push(format!("namespace {name}"));
        }
    }
    // `ip -o link show`: `N: NAME[@PEER]: <FLAGS> ...`; deleting a
    // namespace deleted its veth pairs already.
    let links = ip_output(&["-o", "link", "show"]).unwrap_or_default();
    for name in links
        .lines()
        .filter_map(|l| l.split(": ").nth(1)?.split('@').next())
    {
        if orphan(name) && ip(&["link", "del", name]).is_ok() {
            gone.push(format!("link {name}"));
        }
    }
    gone
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and so the pairs.
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        for port in &self.ports {
            let _ = ip(&["link", "del", port]);
        }
        for bridge in &self.bridges {
            let _ = ip(&["link", "del", bridge]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    /// Whether a TCP connection from namespace `from` to `to` succeeds
    /// within 1 s.
    fn reaches(from: &str, to: SocketAddr) -> bool {
        Lab::run_in(from, || {
            TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()
        })
        .unwrap()
    }

    #[test]
    fn lab_names_give_their_process_id() {
        assert_eq!(lab_pid("gs4242an3", "gs"), Some(4242));
        assert_eq!(lab_pid("gs4242aB", "gs"), Some(4242));
        assert_eq!(lab_pid("gs4242", "gs"), None, "no lab letter");
        assert_eq!(lab_pid("gsan3", "gs"), None, "no pid");
        assert_eq!(lab_pid("gt4242an3", "gs"), None, "another prefix");
        assert_eq!(lab_pid("eth0", "gs"), None);
    }

    /// A new lab of `prefix`, or `None` after a loud skip of `test` where
    /// namespaces cannot be made; with `GOSSIP_REQUIRE_NETNS_TESTS=1` (set
    /// by `.ci/run`) that fails the test instead.
    fn lab_or_skip(prefix: &str, test: &str) -> Option<Lab> {
        match Lab::new(prefix) {
            Ok(lab) => Some(lab),
            Err(e) => {
                assert_ne!(
                    std::env::var("GOSSIP_REQUIRE_NETNS_TESTS").as_deref(),
                    Ok("1"),
                    "{e}"
                );
                eprintln!("SKIPPED {test}: {e}");
                None
            }
        }
    }

    /// What a lab of a process that is gone left behind is deleted when
    /// the next lab of its prefix is made; a live process's lab is not.
    /// Skips loudly where namespaces cannot be made, and fails instead with
    /// `GOSSIP_REQUIRE_NETNS_TESTS=1` (set by `.ci/run`).
    #[test]
    fn a_new_lab_deletes_what_dead_labs_left() {
        let Some(live) = lab_or_skip("gw", "a_new_lab_deletes_what_dead_labs_left") else {
            return;
        };
        // No process has an id above pid_max.
        let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4_194_304);
        let dead = format!("gw{}an1", max + 1);
        let dead_bridge = format!("gw{}aB", max + 1);
        let live_ns = format!("{}n1", live.tag);
        ip(&["netns", "add", &dead]).unwrap();
        ip(&["link", "add", &dead_bridge, "type", "bridge"]).unwrap();
        ip(&["netns", "add", &live_ns]).unwrap();
        let _next = Lab::new("gw").unwrap();
        assert!(
            ip(&["netns", "exec", &dead, "true"]).is_err(),
            "left: {dead}"
        );
        assert!(
            ip(&["link", "show", &dead_bridge]).is_err(),
            "left: {dead_bridge}"
        );
        assert!(
            ip(&["netns", "exec", &live_ns, "true"]).is_ok(),
            "a live lab's namespace deleted"
        );
        ip(&["netns", "del", &live_ns]).unwrap();
    }

    /// Two namespaces on a bridge reach each other; moved to another
    /// bridge, one no longer does; moved back, it does again. Skips loudly
    /// where namespaces cannot be made, and fails instead with
    /// `GOSSIP_REQUIRE_NETNS_TESTS=1` (set by `.ci/run`).
    #[test]
    fn a_moved_port_partitions_and_heals() {
        let Some(mut lab) = lab_or_skip("gt", "a_moved_port_partitions_and_heals") else {
            return;
        };
        let main = lab.bridge('B').unwrap();
        let cut = lab.bridge('C').unwrap();
        let a = lab.namespace(1).unwrap();
        let b = lab.namespace(2).unwrap();
        lab.plug(&a, 1, 'd', "eth0", &main, "10.80.0.1/24").unwrap();
        let port_b = lab.plug(&b, 2, 'd', "eth0", &main, "10.80.0.2/24").unwrap();
        let to: SocketAddr = "10.80.0.2:7000".parse().unwrap();
        let listener = Lab::run_in(&b, || TcpListener::bind(to)).unwrap().unwrap();
        assert!(reaches(&a, to), "no route before the cut");
        lab.move_port(&port_b, &cut).unwrap();
        assert!(!reaches(&a, to), "reached across the cut");
        lab.move_port(&port_b, &main).unwrap();
        assert!(reaches(&a, to), "no route after the heal");
        drop(listener);
        let names = (a.clone(), main.clone());
        drop(lab);
        assert!(ip(&["netns", "exec", &names.0, "true"]).is_err());
        assert!(ip(&["link", "show", &names.1]).is_err());
    }
}
