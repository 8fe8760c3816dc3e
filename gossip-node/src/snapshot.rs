//! Snapshots: what a member needs to rejoin after a restart even when its
//! configured seeds are gone (issue #11; Serf's snapshot).
//!
//! With a `data_dir`, a member keeps `DATA_DIR/snapshot.json`:
//!
//! ```json
//! {"format": 1, "cluster_id": "prod", "addr": "10.0.0.4:7001",
//!  "generation": 1764460800123, "members": ["10.0.0.1:7001", "10.0.0.2:7001"],
//!  "meta": {"role": "db"},
//!  "keys": {"app/x": {"value": [49], "expires_at_ms": null}}}
//! ```
//!
//! - `members`: the addresses of the live members it knew (itself
//!   excluded): on start it joins through them as well as through its
//!   configured seeds.
//! - `meta`, `keys`: its own metadata and live keys (values as bytes, TTLs
//!   as an absolute expiry in ms since the Unix epoch). On start the
//!   metadata replaces the configured one and the keys are set again,
//!   those expired meanwhile excepted.
//! - `generation`: its last generation. The new life takes a generation
//!   above it (and above the clock), so that the cluster drops the old
//!   life's state and takes the republished keys, whatever their versions
//!   (a higher generation supersedes: `gossip_core`'s precedence).
//!
//! It is written at most every [`SNAPSHOT_INTERVAL`] when it changed, and at
//! shutdown, atomically: a temporary file in the same directory, fsync,
//! rename, fsync of the directory. A snapshot that cannot be read or parsed
//! is logged as a warning, moved aside to `snapshot.json.corrupt-<ms>`, and
//! the member starts without it; one of another cluster is ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gossip_core::{Membership, NodeAddr};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::NodeError;

/// The snapshot's file name in the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// Shortest time between two periodic writes: 2 s.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(2);

/// The format written; a file of another format is treated as corrupt.
const FORMAT: u32 = 1;

/// What a member persists. See the [module documentation](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Format version, 1.
    pub format: u32,
    /// The cluster id it was written in.
    pub cluster_id: String,
    /// The member's advertised address when it was written.
    pub addr: String,
    /// The generation of the life that wrote it.
    pub generation: u64,
    /// Addresses of the live members it knew, itself excluded.
    pub members: BTreeSet<String>,
    /// Its own metadata.
    pub meta: BTreeMap<String, String>,
    /// Its own live keys.
    pub keys: BTreeMap<String, SnapshotKey>,
}

/// One key of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotKey {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// When it expires, ms since the Unix epoch; `None`: never.
    pub expires_at_ms: Option<u64>,
}

/// Now, in ms since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Snapshot {
    /// The snapshot of `member` now; `None` once it has left or stopped
    /// (its view is no longer whole: the last snapshot stays).
    pub fn of(member: &dyn Membership, cluster_id: &str) -> Option<Self> {
        let me = member.local_id();
        let now = unix_ms();
        let mut meta = None;
        let mut members = BTreeSet::new();
        for m in member.members() {
            if m.id() == me {
                meta = Some(m.meta);
            } else {
                members.insert(m.addr.to_string());
            }
        }
        let meta = meta?;
        let keys = member
            .kv()
            .remove(&me.addr)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, e)| {
                let key = SnapshotKey {
                    value: e.value.to_vec(),
                    expires_at_ms: e.ttl.map(|t| now.saturating_add(t.as_millis() as u64)),
                };
                (k, key)
            })
            .collect();
        Some(Self {
            format: FORMAT,
            cluster_id: cluster_id.to_owned(),
            addr: me.addr.to_string(),
            generation: me.generation,
            members,
            meta,
            keys,
        })
    }

    /// The generation for the next life: above this one's and at least
    /// `now_ms`.
    pub fn next_generation(&self, now_ms: u64) -> u64 {
        now_ms.max(self.generation.saturating_add(1))
    }

    /// The addresses to join through, those that do not parse skipped.
    pub fn seeds(&self) -> Vec<NodeAddr> {
        self.members
            .iter()
            .filter_map(|a| NodeAddr::parse(a).ok())
            .collect()
    }

    /// Sets the persisted keys on `member` again, skipping those expired by
    /// `now_ms`; returns how many were set. A key the member refuses is
    /// logged and skipped.
    pub fn republish(&self, member: &dyn Membership, now_ms: u64) -> usize {
        let mut set = 0;
        for (key, k) in &self.keys {
            let ttl = match k.expires_at_ms {
                Some(at) if at <= now_ms => continue,
                Some(at) => Some(Duration::from_millis(at - now_ms)),
                None => None,
            };
            match member.set_key(key, Bytes::from(k.value.clone()), ttl) {
                Ok(_) => set += 1,
                Err(e) => warn!(key = %key, error = %e, "cannot republish a persisted key"),
            }
        }
        set
    }
}

/// The snapshot file of one data directory.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// The store of `dir`, created if missing.
    ///
    /// # Errors
    /// [`NodeError::DataDir`] if the directory cannot be created.
    pub fn open(dir: &Path) -> Result<Self, NodeError> {
        std::fs::create_dir_all(dir).map_err(|source| NodeError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The snapshot file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// The persisted snapshot of `cluster_id`, if any. A file that cannot
    /// be read or parsed is moved aside with a warning; one of another
    /// cluster is ignored with a warning. Neither is an error: the member
    /// starts without it.
    pub fn load(&self, cluster_id: &str) -> Option<Snapshot> {
        let path = self.path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.move_aside(&format!("cannot read it: {e}"));
                return None;
            }
        };
        let snapshot = match serde_json::from_slice::<Snapshot>(&text) {
            Ok(s) if s.format == FORMAT => s,
            Ok(s) => {
                self.move_aside(&format!("unknown format {}", s.format));
                return None;
            }
            Err(e) => {
                self.move_aside(&format!("invalid JSON: {e}"));
                return None;
            }
        };
        if snapshot.cluster_id != cluster_id {
            warn!(
                path = %path.display(),
                snapshot_cluster = %snapshot.cluster_id,
                cluster_id,
                "ignoring the snapshot of another cluster"
            );
            return None;
        }
        Some(snapshot)
    }

    fn move_aside(&self, why: &str) {
        let path = self.path();
        let aside = self
            .dir
            .join(format!("{SNAPSHOT_FILE}.corrupt-{}", unix_ms()));
        match std::fs::rename(&path, &aside) {
            Ok(()) => warn!(
                path = %path.display(),
                moved_to = %aside.display(),
                "unusable snapshot ({why}); moved aside, starting without it"
            ),
            Err(e) => warn!(
                path = %path.display(),
                error = %e,
                "unusable snapshot ({why}), and it cannot be moved aside; starting without it"
            ),
        }
    }

    /// Writes `snapshot` atomically: temporary file, fsync, rename, fsync
    /// of the directory.
    ///
    /// # Errors
    /// The I/O error of the step that failed; the previous snapshot is then
    /// intact.
    pub fn write(&self, snapshot: &Snapshot) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(snapshot).map_err(std::io::Error::other)?;
        self.write_bytes(&text)
    }

    fn write_bytes(&self, text: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, self.path())?;
        // The rename itself is durable once the directory is synced.
        #[cfg(unix)]
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// The task that keeps a member's snapshot current.
#[derive(Debug)]
pub struct SnapshotWriter {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SnapshotWriter {
    /// Spawns the task: every `interval`, the snapshot of `member` is
    /// written if it changed since the last write.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(
        store: SnapshotStore,
        member: Arc<dyn Membership>,
        cluster_id: String,
        interval: Duration,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut last: Option<Snapshot> = None;
            loop {
                let snapshot = Snapshot::of(member.as_ref(), &cluster_id);
                if let Some(snapshot) = snapshot.filter(|s| last.as_ref() != Some(s)) {
                    let (store, s) = (store.clone(), snapshot.clone());
                    match tokio::task::spawn_blocking(move || store.write(&s)).await {
                        Ok(Ok(())) => {
                            debug!(members = snapshot.members.len(), "snapshot written");
                            last = Some(snapshot);
                        }
                        Ok(Err(e)) => warn!(error = %e, "cannot write the snapshot"),
                        Err(e) => warn!(error = %e, "snapshot write task failed"),
                    }
                }
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
        Self { stop, task }
    }

    /// Stops the task, then writes the snapshot of `member` one last time
    /// (call it before the member leaves, while its view is whole).
    pub async fn stop(self, store: &SnapshotStore, member: &dyn Membership, cluster_id: &str) {
        self.stop.send_replace(true);
        let _ = self.task.await;
        let Some(snapshot) = Snapshot::of(member, cluster_id) else {
            debug!("member already stopped; the last snapshot stays");
            return;
        };
        let members = snapshot.members.len();
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.write(&snapshot)).await {
            Ok(Ok(())) => info!(members, "snapshot written at shutdown"),
            Ok(Err(e)) => warn!(error = %e, "cannot write the snapshot at shutdown"),
            Err(e) => warn!(error = %e, "snapshot write task failed"),
        }
    }
}

#[cfg(test)]
mod tests;
