//! Seeds given by name: `name:port` stands for every A/AAAA record of the
//! name, each at that port (what a Kubernetes headless service gives), and
//! is resolved again at each retry (issue #11).
//!
//! The protocol core is sans-IO and takes addresses only: resolution is the
//! node's. A seed whose host is an IP address goes to the member as it is
//! (the core retries it with backoff). A seed whose host is a name gets a
//! task of its own that resolves it and records every address as a seed,
//! then, until one of them has answered (is a live member), resolves it
//! again after `seed_retry_initial`, doubling up to `seed_retry_max`; once
//! answered it checks every `seed_retry_max` and starts over whenever the
//! member is isolated (no live peer), so that a member whose peers were all
//! replaced finds the new ones under the same name.
//!
//! Resolution goes through a [`Resolve`] hook: [`SystemResolver`] (the
//! system's resolver, by `tokio::net::lookup_host`) in production, any
//! closure `Fn(&str, u16) -> io::Result<Vec<SocketAddr>>` in tests.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gossip_core::{BoxFuture, Membership, NodeAddr};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Resolves a host name to socket addresses.
pub trait Resolve: Send + Sync + 'static {
    /// Every address of `host` (a name, not an IP address) at `port`.
    ///
    /// # Errors
    /// The resolver's error; the caller retries later.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>>;
}

/// The system's resolver (`getaddrinfo` on a blocking thread, by
/// `tokio::net::lookup_host`): `/etc/hosts`, DNS, ...
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

impl<F> Resolve for F
where
    F: Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
{
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        let result = self(host, port);
        Box::pin(async move { result })
    }
}

/// A seed as given: an address, or a name to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seed {
    /// `ip:port` (`[v6]:port`): used as it is.
    Addr(NodeAddr),
    /// `name:port`: every address of the name.
    Name {
        /// The seed as written.
        seed: NodeAddr,
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl Seed {
    /// Sorts a seed into an address or a name.
    pub fn of(seed: &NodeAddr) -> Self {
        let text = seed.as_str();
        let Some((host, port)) = text.rsplit_once(':') else {
            return Seed::Addr(seed.clone());
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match (bare.parse::<IpAddr>(), port.parse::<u16>()) {
            (Err(_), Ok(port)) => Seed::Name {
                seed: seed.clone(),
                host: bare.to_owned(),
                port,
            },
            _ => Seed::Addr(seed.clone()),
        }
    }
}

/// Resolves `seed` now: itself if it is an address, else the addresses of
/// its name.
///
/// # Errors
/// The resolver's error, or [`std::io::ErrorKind::NotFound`] if the name
/// has no address.
pub async fn resolve_now(
    resolver: &dyn Resolve,
    seed: &NodeAddr,
) -> std::io::Result<Vec<NodeAddr>> {
    match Seed::of(seed) {
        Seed::Addr(a) => Ok(vec![a]),
        Seed::Name { host, port, .. } => {
            let addrs = to_node_addrs(resolver.resolve(&host, port).await?);
            if addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host} has no address"),
                ));
            }
            Ok(addrs)
        }
    }
}

fn to_node_addrs(addrs: Vec<SocketAddr>) -> Vec<NodeAddr> {
    let set: BTreeSet<NodeAddr> = addrs
        .into_iter()
        .filter_map(|a| NodeAddr::parse(&a.to_string()).ok())
        .collect();
    set.into_iter().collect()
}

/// The re-resolving tasks of a member's name seeds.
pub struct SeedResolution {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for SeedResolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedResolution")
            .field("names", &self.tasks.len())
            .finish()
    }
}

/// Retry delays of a name seed.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest.
    pub max: Duration,
}

impl SeedResolution {
    /// Records the address seeds on `member` and starts one task per name
    /// seed. A seed equal to the member's own address, or given twice, is
    /// skipped.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(
        member: Arc<dyn Membership>,
        seeds: &[NodeAddr],
        resolver: Arc<dyn Resolve>,
        backoff: Backoff,
    ) -> Self {
        let me = member.local_id().addr;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut seen = BTreeSet::new();
        for seed in seeds {
            if !seen.insert(seed) {
                continue;
            }
            match Seed::of(seed) {
                Seed::Addr(a) if a == me => {
                    debug!(seed = %a, "skipping a seed that is this member's own address");
                }
                Seed::Addr(a) => member.add_seed(a),
                Seed::Name { seed, host, port } => tasks.push(tokio::spawn(follow_name(
                    member.clone(),
                    seed,
                    host,
                    port,
                    resolver.clone(),
                    backoff,
                    stopped.clone(),
                ))),
            }
        }
        Self { stop, tasks }
    }

    /// Stops the tasks and returns once they have ended.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Resolves one name seed and records its addresses, again and again as the
/// [module documentation](self) says.
async fn follow_name(
    member: Arc<dyn Membership>,
    seed: NodeAddr,
    host: String,
    port: u16,
    resolver: Arc<dyn Resolve>,
    backoff: Backoff,
    mut stopped: watch::Receiver<bool>,
) {
    let me = member.local_id().addr;
    let mut delay = backoff.initial;
    let mut known: BTreeSet<NodeAddr> = BTreeSet::new();
    let mut answered = false;
    loop {
        let live: BTreeSet<NodeAddr> = member
            .members()
            .into_iter()
            .map(|m| m.addr)
            .filter(|a| *a != me)
            .collect();
        if answered && live.is_empty() {
            // Isolated: the name's members may have been replaced.
            answered = false;
            delay = backoff.initial;
        }
        if !answered {
            answered = known.iter().any(|a| live.contains(a));
        }
        if !answered {
            match resolver.resolve(&host, port).await {
                Ok(addrs) => {
                    let addrs = to_node_addrs(addrs);
                    if addrs.is_empty() {
                        warn!(%seed, "seed name has no address; retrying");
                    }
                    for a in addrs.into_iter().filter(|a| *a != me) {
                        if known.insert(a.clone()) {
                            info!(%seed, addr = %a, "seed name resolved to a new address");
                        }
                        member.add_seed(a);
                    }
                }
                Err(e) => warn!(%seed, error = %e, "cannot resolve the seed name; retrying"),
            }
        }
        let wait = if answered { backoff.max } else { delay };
        delay = (delay * 2).min(backoff.max);
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests;
