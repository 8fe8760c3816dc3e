//! Starting a member and its admin endpoint from a [`NodeConfig`]: the
//! node an application embeds, and what `gossip-node run` starts.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gossip_core::{Membership, NodeAddr};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::handlers::{HandlerEnv, Handlers};
use crate::seeds::{Backoff, Resolve, SeedResolution, SystemResolver};
use crate::snapshot::{SNAPSHOT_INTERVAL, SnapshotStore, SnapshotWriter, unix_ms};
use crate::transport::start_member;

/// How long in-flight admin requests may take to finish at shutdown (the
/// admin endpoint drains while the member leaves, so a stop stays within
/// about 2 s; issue #9 item 6).
const ADMIN_DRAIN: Duration = Duration::from_secs(1);

/// A running member and its admin endpoint. Call [`NodeHandle::shutdown`] to
/// stop them: dropping the handle stops the admin endpoint but leaves the
/// member running until its last `Arc` is gone, without announcing a leave.
pub struct NodeHandle {
    member: Arc<dyn Membership>,
    listen_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    admin: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// The admin endpoint's state and its message log task.
    endpoint: Option<Admin>,
    /// The event handlers' tasks.
    handlers: Handlers,
    /// The task that keeps the keyring file (issue #12).
    keyring_task: Option<JoinHandle<()>>,
    /// The snapshot's store and writer task, with a data directory.
    snapshot: Option<(SnapshotStore, SnapshotWriter)>,
    /// The cluster id, for the last snapshot.
    cluster_id: String,
    /// The tasks re-resolving seed names.
    seeds: SeedResolution,
}

impl fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeHandle")
            .field("id", &self.member.local_id())
            .field("listen_addr", &self.listen_addr)
            .field("admin_addr", &self.admin_addr)
            .finish()
    }
}

impl NodeHandle {
    /// The member.
    pub fn member(&self) -> &Arc<dyn Membership> {
        &self.member
    }

    /// The address the transport is bound to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The address the member advertises: its identity.
    pub fn advertise_addr(&self) -> NodeAddr {
        self.member.local_id().addr
    }

    /// The address the admin endpoint is bound to, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Resolves once the admin API's `POST /leave` has made the member leave
    /// the cluster; the caller then calls [`NodeHandle::shutdown`] to stop
    /// the rest, as it does on SIGTERM. Never resolves without an admin
    /// endpoint.
    pub fn leave_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let left = self.endpoint.as_ref().map(Admin::leave_requested);
        async move {
            match left {
                Some(left) => left.await,
                None => std::future::pending().await,
            }
        }
    }

    /// Leaves the cluster gracefully while the admin endpoint stops taking
    /// new requests (`GET /healthz` answers 503 to those in flight), and
    /// returns once every task of the member and of the endpoint has ended.
    pub async fn shutdown(mut self) {
        self.seeds.stop().await;
        // The last snapshot while the member's view is whole.
        if let Some((store, writer)) = self.snapshot.take() {
            writer
                .stop(&store, self.member.as_ref(), &self.cluster_id)
                .await;
        }
        if let Some(endpoint) = &self.endpoint {
            endpoint.set_stopping();
        }
        let admin = self.admin.take().map(|(stop, task)| {
            // The server may already have ended; then there is nobody to tell.
            let _ = stop.send(());
            task
        });
        self.member.shutdown().await;
        if let Some(mut task) = admin {
            match tokio::time::timeout(ADMIN_DRAIN, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "admin endpoint task ended abnormally"),
                Err(_) => {
                    warn!("admin endpoint did not drain in time; aborting it");
                    task.abort();
                }
            }
        }
        if let Some(endpoint) = self.endpoint.take() {
            endpoint.stop().await;
        }
        self.handlers.stop().await;
        if let Some(task) = self.keyring_task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Starts a member as configured: binds the admin endpoint (if any) first so
/// that a busy port fails before the member joins, then binds and starts the
/// transport, records the seeds and serves the admin API.
///
/// # Errors
/// [`NodeError::Config`] if the configuration does not validate,
/// [`NodeError::AdminBind`], [`NodeError::Transport`] or
/// [`NodeError::Member`] if a part cannot start; nothing is left running.
pub async fn start(config: &NodeConfig) -> Result<NodeHandle, NodeError> {
    start_with(config, Arc::new(SystemResolver)).await
}

/// As [`start`], resolving seed names (`name:port`, in the configuration,
/// the snapshot and `POST /join`) through `resolver` instead of the
/// system's resolver: for tests, or a service-discovery lookup of the
/// application's.
///
/// # Errors
/// As [`start`].
pub async fn start_with(
    config: &NodeConfig,
    resolver: Arc<dyn Resolve>,
) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    let admin_listener = match config.admin {
        Some(addr) => {
            let bind = async {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let bound = listener.local_addr()?;
                Ok((listener, bound))
            };
            Some(
                bind.await
                    .map_err(|source| NodeError::AdminBind { addr, source })?,
            )
        }
        None => None,
    };
    let cluster_id = config.protocol.cluster_id.clone();
    let store = config
        .data_dir
        .as_deref()
        .map(SnapshotStore::open)
        .transpose()?;
    let snapshot = store.as_ref().and_then(|s| s.load(&cluster_id));
    let mut config = config.clone();
    let mut generation = None;
    if let Some(s) = &snapshot {
        if s.meta != config.meta {
            info!(
                entries = s.meta.len(),
                "the snapshot's metadata replaces the configured metadata"
            );
            config.meta = s.meta.clone();
        }
        generation = Some(s.next_generation(unix_ms()));
        config.seeds.extend(s.seeds());
        info!(
            members = s.members.len(),
            keys = s.keys.len(),
            previous_generation = s.generation,
            "rejoining from the snapshot"
        );
    }
    let config = &config;
    let started = start_member(config, generation).await?;
    let member = started.member;
    let handlers = Handlers::start(
        started.events,
        config.handlers.clone(),
        HandlerEnv {
            self_addr: member.local_id().addr.to_string(),
            cluster_id: config.protocol.cluster_id.clone(),
        },
    );
    let mut admin_addr = None;
    let mut admin = None;
    let mut endpoint = None;
    if let Some((listener, addr)) = admin_listener {
        let (stop, stopped) = oneshot::channel::<()>();
        let started = Admin::with_handlers(member.clone(), Some(handlers.stats().clone()))
            .with_resolver(resolver.clone());
        let app = started.router();
        endpoint = Some(started);
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender also means stop.
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "admin endpoint failed");
            }
        });
        admin_addr = Some(addr);
        admin = Some((stop, task));
    }
    if let Some(s) = &snapshot {
        s.republish(member.as_ref(), unix_ms());
    }
    let snapshot = store.map(|store| {
        let writer = SnapshotWriter::start(
            store.clone(),
            member.clone(),
            cluster_id.clone(),
            SNAPSHOT_INTERVAL,
        );
        (store, writer)
    });
    // Last, once everything that watches the member is ready.
    let seeds = SeedResolution::start(
        member.clone(),
        &config.seeds,
        resolver,
        Backoff {
            initial: config.protocol.seed_retry_initial,
            max: config.protocol.seed_retry_max,
        },
    );
    Ok(NodeHandle {
        member,
        listen_addr: started.listen_addr,
        admin_addr,
        admin,
        endpoint,
        handlers,
        keyring_task: started.keyring_task,
        snapshot,
        cluster_id,
        seeds,
    })
}

#[cfg(all(test, any(feature = "grpc", feature = "quic")))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    /// `GET path` over a fresh connection; the status line and the body.
    async fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_ends_every_task_of_the_member_and_its_admin_endpoint() {
        let base = alive_tasks();
        let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
        config.admin = Some("127.0.0.1:0".parse().unwrap());
        let node = start(&config).await.unwrap();
        let admin = node.admin_addr().unwrap();
        let (status, body) = get(admin, "/healthz").await;
        assert!(status.ends_with("200 OK"), "{status}: {body}");
        assert!(body.contains("\"status\":\"ok\""), "{body}");
        // The message log task records the member's own broadcast.
        let uuid = node
            .member()
            .broadcast(bytes::Bytes::from_static(b"\"hi\""), None)
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = get(admin, "/messages").await;
            if body.contains(&uuid.to_string()) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "not logged: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(alive_tasks() > base);
        node.shutdown().await;
        // Every task ends. A finished connection task can still be counted
        // for a moment after shutdown returns (seen: under 25 ms).
        let stopped = tokio::time::Instant::now();
        let deadline = stopped + Duration::from_secs(10);
        while alive_tasks() != base {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} tasks still alive 10 s after shutdown",
                alive_tasks() - base
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
