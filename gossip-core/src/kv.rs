//! One owner's versioned state (metadata and keys), scuttlebutt style: every
//! write is stamped by its owner with the next version of the owner's
//! counter; replicas apply an entry only if its version is newer than theirs,
//! so out-of-order and duplicate deliveries never roll a value back.
//!
//! `version` is the watermark: the highest version up to which this copy is
//! known to be complete. A delta `(from, to]` advances it only if it starts at
//! or below it (contiguity); entries are still applied key by key otherwise.
//! Deleted keys stay as tombstones for the tombstone TTL; once purged,
//! `gc_version` records how far, and a peer behind it gets a full reset.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gossip_proto::v1 as pb;

use crate::event::KeyEntry;

/// Bytes a key/value costs in a message beyond the key and the value.
pub(crate) const ENTRY_OVERHEAD: usize = 32;

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    pub(crate) version: u64,
    pub(crate) deleted: bool,
    pub(crate) expires_at: Option<Instant>,
    /// When it became a tombstone (deleted or expired), for GC.
    pub(crate) since: Instant,
}

impl Entry {
    fn visible(&self, now: Instant) -> bool {
        !self.deleted && self.expires_at.is_none_or(|e| now < e)
    }

    fn size(&self, key: &str) -> usize {
        key.len() + self.value.len() + ENTRY_OVERHEAD
    }

    fn to_pb(&self, key: &str, now: Instant) -> pb::KeyValue {
        let expired = !self.deleted && !self.visible(now);
        pb::KeyValue {
            key: key.to_owned(),
            value: if self.deleted || expired {
                Bytes::new()
            } else {
                self.value.clone()
            },
            version: self.version,
            deleted: self.deleted || expired,
            ttl_ms: self
                .expires_at
                .map(|e| e.saturating_duration_since(now).as_millis().max(1) as u64)
                .unwrap_or(0),
        }
    }
}

/// A change of one key, as reported in `Event::KeyChanged`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyChange {
    pub(crate) key: String,
    pub(crate) value: Option<Bytes>,
    pub(crate) version: u64,
}

/// What applying a delta changed.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) keys: Vec<KeyChange>,
    pub(crate) meta: bool,
    /// Anything new at all (keys, meta or watermark).
    pub(crate) news: bool,
}

/// The replicated state of one owner: its version watermark, and behind one
/// pointer (most members of a large cluster have no keys or metadata, and a
/// member holds one `OwnerState` per member) its metadata and keys. Reads
/// go through `Deref` (an absent part reads as empty); writes through
/// `DerefMut`, which allocates the part on first use.
#[derive(Debug)]
pub(crate) struct OwnerState {
    pub(crate) version: u64,
    data: Option<Box<OwnerData>>,
}

/// The metadata and keys of an [`OwnerState`].
#[derive(Debug, Default)]
pub(crate) struct OwnerData {
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) meta_version: u64,
    pub(crate) keys: BTreeMap<String, Entry>,
    pub(crate) gc_version: u64,
}

/// What an owner without metadata or keys reads as.
static EMPTY: OwnerData = OwnerData {
    meta: BTreeMap::new(),
    meta_version: 0,
    keys: BTreeMap::new(),
    gc_version: 0,
};

impl std::ops::Deref for OwnerState {
    type Target = OwnerData;
    fn deref(&self) -> &OwnerData {
        self.data.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for OwnerState {
    fn deref_mut(&mut self) -> &mut OwnerData {
        self.data.get_or_insert_with(Box::default)
    }
}

impl OwnerState {
    pub(crate) fn new() -> Self {
        Self {
            version: 0,
            data: None,
        }
    }

    pub(crate) fn get(&self, now: Instant, key: &str) -> Option<KeyEntry> {
        let e = self.keys.get(key)?;
        e.visible(now).then(|| KeyEntry {
            value: e.value.clone(),
            version: e.version,
            ttl: e.expires_at.map(|x| x.saturating_duration_since(now)),
        })
    }

    pub(crate) fn visible(&self, now: Instant) -> BTreeMap<String, KeyEntry> {
        self.keys
            .keys()
            .filter_map(|k| self.get(now, k).map(|e| (k.clone(), e)))
            .collect()
    }

    // ---- the owner's own writes ----

    /// Sets (`Some`) or deletes (`None`) a key of the local member. Returns
    /// the change, or `None` when deleting a key that is not there.
    pub(crate) fn write(
        &mut self,
        now: Instant,
        key: &str,
        value: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Option<KeyChange> {
        if value.is_none() && self.get(now, key).is_none() {
            return None;
        }
        self.version += 1;
        let entry = Entry {
            deleted: value.is_none(),
            value: value.clone().unwrap_or_default(),
            version: self.version,
            expires_at: ttl.and_then(|t| now.checked_add(t)),
            since: now,
        };
        self.keys.insert(key.to_owned(), entry);
        Some(KeyChange {
            key: key.to_owned(),
            value,
            version: self.version,
        })
    }

    pub(crate) fn write_meta(&mut self, meta: BTreeMap<String, String>) -> u64 {
        self.version += 1;
        self.meta = meta;
        self.meta_version = self.version;
        self.version
    }

    /// Expires keys whose TTL has passed. The owner turns them into versioned
    /// deletions (so every replica converges); a replica only hides them.
    pub(crate) fn expire(&mut self, now: Instant, is_owner: bool) -> Vec<KeyChange> {
        let due: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, e)| !e.deleted && e.expires_at.is_some_and(|x| x <= now))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in due {
            if is_owner {
                if let Some(c) = self.write(now, &key, None, None) {
                    out.push(c);
                } else {
                    // Already invisible: still stamp the deletion.
                    self.version += 1;
                    let v = self.version;
                    if let Some(e) = self.keys.get_mut(&key) {
                        *e = Entry {
                            value: Bytes::new(),
                            version: v,
                            deleted: true,
                            expires_at: None,
                            since: now,
                        };
                    }
                    out.push(KeyChange {
                        key,
                        value: None,
                        version: v,
                    });
                }
            } else if let Some(e) = self.keys.get_mut(&key) {
                e.deleted = true;
                e.value = Bytes::new();
                e.since = now;
                out.push(KeyChange {
                    key,
                    value: None,
                    version: e.version,
                });
            }
        }
        out
    }

    /// Purges tombstones older than `ttl`.
    pub(crate) fn gc(&mut self, now: Instant, ttl: Duration) {
        if self.data.is_none() {
            return;
        }
        let mut gc_version = self.gc_version;
        self.keys.retain(|_, e| {
            let keep = !e.deleted || now.saturating_duration_since(e.since) < ttl;
            if !keep {
                gc_version = gc_version.max(e.version);
            }
            keep
        });
        self.gc_version = gc_version;
    }

    // ---- replication ----

    /// Applies a delta of this owner's current generation.
    pub(crate) fn apply(&mut self, now: Instant, d: &pb::OwnerDelta) -> Applied {
        let mut out = Applied::default();
        if d.reset {
            let incoming: std::collections::HashSet<&str> =
                d.keys.iter().map(|kv| kv.key.as_str()).collect();
            let gone: Vec<String> = self
                .keys
                .keys()
                .filter(|k| !incoming.contains(k.as_str()))
                .cloned()
                .collect();
            for k in gone {
                if let Some(e) = self.keys.remove(&k)
                    && !e.deleted
                {
                    out.keys.push(KeyChange {
                        key: k,
                        value: None,
                        version: d.to_version,
                    });
                }
            }
            self.gc_version = self.gc_version.max(d.to_version);
        }
        if let Some(m) = &d.meta
            && m.version > self.meta_version
        {
            self.meta_version = m.version;
            self.meta = m.entries.clone().into_iter().collect();
            out.meta = true;
            out.news = true;
        }
        for kv in &d.keys {
            let newer = self
                .keys
                .get(&kv.key)
                .is_none_or(|e| kv.version > e.version);
            if !newer {
                continue;
            }
            // Last reported visible: not yet a tombstone (an entry past its
            // TTL that `expire` has not processed yet still counts).
            let was_visible = self.keys.get(&kv.key).is_some_and(|e| !e.deleted);
            let expires_at = (kv.ttl_ms > 0 && !kv.deleted)
                .then(|| now.checked_add(Duration::from_millis(kv.ttl_ms)))
                .flatten();
            let e = Entry {
                value: kv.value.clone(),
                version: kv.version,
                deleted: kv.deleted,
                expires_at,
                since: now,
            };
            let visible = e.visible(now);
            self.keys.insert(kv.key.clone(), e);
            out.news = true;
            if visible || was_visible {
                out.keys.push(KeyChange {
                    key: kv.key.clone(),
                    value: visible.then(|| kv.value.clone()),
                    version: kv.version,
                });
            }
        }
        if (d.reset || d.from_version <= self.version) && d.to_version > self.version {
            self.version = d.to_version;
            out.news = true;
        }
        out
    }

    /// The pieces of state a peer that knows versions up to `since` lacks,
    /// each at most `budget` bytes of entries. Empty if the peer is up to date.
    pub(crate) fn delta(
        &self,
        now: Instant,
        member: &pb::MemberUpdate,
        since: u64,
        budget: usize,
    ) -> Vec<pb::OwnerDelta> {
        if since >= self.version {
            return Vec::new();
        }
        let reset = since < self.gc_version;
        let mut entries: Vec<(&String, &Entry)> = self
            .keys
            .iter()
            .filter(|(_, e)| {
                e.version <= self.version
                    && if reset {
                        e.visible(now)
                    } else {
                        e.version > since
                    }
            })
            .collect();
        entries.sort_by_key(|(_, e)| e.version);
        let meta = (reset || self.meta_version > since).then(|| pb::Meta {
            entries: self.meta.clone().into_iter().collect(),
            version: self.meta_version,
        });
        let mut pieces = Vec::new();
        let mut cur = pb::OwnerDelta {
            member: Some(member.clone()),
            from_version: since,
            to_version: since,
            reset,
            meta,
            keys: Vec::new(),
        };
        let mut size: usize = cur
            .meta
            .as_ref()
            .map(|m| m.entries.iter().map(|(k, v)| k.len() + v.len() + 8).sum())
            .unwrap_or(0);
        for (k, e) in entries {
            let s = e.size(k);
            if size + s > budget && (!cur.keys.is_empty() || cur.meta.is_some()) {
                let to = cur
                    .keys
                    .last()
                    .map(|kv| kv.version)
                    .unwrap_or(self.meta_version);
                cur.to_version = to.max(cur.from_version);
                let next_from = cur.to_version;
                pieces.push(std::mem::replace(
                    &mut cur,
                    pb::OwnerDelta {
                        member: Some(member.clone()),
                        from_version: next_from,
                        to_version: next_from,
                        reset: false,
                        meta: None,
                        keys: Vec::new(),
                    },
                ));
                size = 0;
            }
            size += s;
            cur.keys.push(e.to_pb(k, now));
        }
        cur.to_version = self.version;
        pieces.push(cur);
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> pb::MemberUpdate {
        pb::MemberUpdate::default()
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn out_of_order_and_duplicates_never_roll_back() {
        let now = Instant::now();
        let mut owner = OwnerState::new();
        owner.write(now, "k", Some(b("v1")), None);
        let d1 = owner.delta(now, &member(), 0, 1 << 20);
        owner.write(now, "k", Some(b("v2")), None);
        let d2 = owner.delta(now, &member(), 1, 1 << 20);

        let mut replica = OwnerState::new();
        replica.apply(now, &d2[0]);
        assert_eq!(replica.get(now, "k").unwrap().value, b("v2"));
        assert_eq!(replica.version, 0, "gap: watermark must not advance");
        let applied = replica.apply(now, &d1[0]);
        assert!(applied.keys.is_empty(), "older write ignored");
        assert_eq!(replica.get(now, "k").unwrap().value, b("v2"));
        assert_eq!(replica.version, 1);
        replica.apply(now, &d2[0]);
        assert_eq!(replica.version, 2);
        // Duplicate delivery changes nothing.
        assert!(!replica.apply(now, &d2[0]).news);
    }

    #[test]
    fn deltas_are_bounded_and_reassemble() {
        let now = Instant::now();
        let mut owner = OwnerState::new();
        for i in 0..100 {
            owner.write(
                now,
                &format!("key{i:03}"),
                Some(Bytes::from(vec![7u8; 100])),
                None,
            );
        }
        owner.write_meta(BTreeMap::from([("role".into(), "db".into())]));
        let pieces = owner.delta(now, &member(), 0, 1000);
        assert!(pieces.len() >= 10);
        let mut replica = OwnerState::new();
        for p in &pieces {
            let size: usize = p
                .keys
                .iter()
                .map(|kv| kv.key.len() + kv.value.len() + ENTRY_OVERHEAD)
                .sum();
            assert!(size <= 1000, "piece of {size} bytes");
            replica.apply(now, p);
        }
        assert_eq!(replica.version, owner.version);
        assert_eq!(replica.visible(now).len(), 100);
        assert_eq!(replica.meta.get("role").map(String::as_str), Some("db"));
        assert!(owner.delta(now, &member(), owner.version, 1000).is_empty());
    }

    #[test]
    fn ttl_expiry_owner_deletes_replica_hides() {
        let now = Instant::now();
        let later = now + Duration::from_secs(2);
        let mut owner = OwnerState::new();
        owner.write(now, "t", Some(b("x")), Some(Duration::from_secs(1)));
        let mut replica = OwnerState::new();
        replica.apply(now, &owner.delta(now, &member(), 0, 1 << 20)[0]);
        assert!(replica.get(now, "t").is_some());
        assert!(replica.get(later, "t").is_none(), "hidden once expired");
        let hidden = replica.expire(later, false);
        assert_eq!(hidden.len(), 1);
        let deleted = owner.expire(later, true);
        assert_eq!(deleted[0].value, None);
        assert_eq!(deleted[0].version, 2);
        let applied = replica.apply(later, &owner.delta(later, &member(), 1, 1 << 20)[0]);
        assert!(
            applied.keys.is_empty(),
            "no second event for an expired key"
        );
        assert_eq!(replica.version, 2);
    }

    #[test]
    fn peer_behind_purged_tombstones_gets_reset() {
        let now = Instant::now();
        let mut owner = OwnerState::new();
        owner.write(now, "a", Some(b("1")), None);
        owner.write(now, "b", Some(b("2")), None);
        let mut replica = OwnerState::new();
        replica.apply(now, &owner.delta(now, &member(), 0, 1 << 20)[0]);
        owner.write(now, "a", None, None);
        let later = now + Duration::from_secs(100);
        owner.gc(later, Duration::from_secs(60));
        assert_eq!(owner.gc_version, 3);
        let d = owner.delta(later, &member(), replica.version, 1 << 20);
        assert!(d[0].reset);
        let applied = replica.apply(later, &d[0]);
        assert_eq!(
            applied.keys,
            vec![KeyChange {
                key: "a".into(),
                value: None,
                version: 3
            }]
        );
        assert!(replica.get(later, "a").is_none());
        assert!(replica.get(later, "b").is_some());
    }
}
