//! The spec member's view of the cluster, written from `PROTOCOL.md` alone:
//! one record per address (section 5), the owners' state and versions
//! (section 8), the digest fingerprint and ring positions (section 9.2),
//! and the answers to digests (sections 9.5 and 9.6). Only the generated
//! protobuf types and xxh3 are used; nothing of `gossip-core`.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use gossip_proto::v1 as pb;
use xxhash_rust::xxh3::xxh3_64;

/// A member state (PROTOCOL.md section 3), in precedence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl State {
    /// The precedence rank (section 5.1), also the byte a fingerprint hashes
    /// (section 9.2): not the protobuf enum number.
    fn rank(self) -> u8 {
        match self {
            State::Alive => 0,
            State::Suspect => 1,
            State::Dead => 2,
            State::Left => 3,
        }
    }

    pub(crate) fn is_live(self) -> bool {
        matches!(self, State::Alive | State::Suspect)
    }

    fn from_pb(n: i32) -> Option<Self> {
        match pb::MemberState::try_from(n).ok()? {
            pb::MemberState::Alive => Some(State::Alive),
            pb::MemberState::Suspect => Some(State::Suspect),
            pb::MemberState::Dead => Some(State::Dead),
            pb::MemberState::Left => Some(State::Left),
            pb::MemberState::Unspecified => None,
        }
    }

    fn to_pb(self) -> i32 {
        let s = match self {
            State::Alive => pb::MemberState::Alive,
            State::Suspect => pb::MemberState::Suspect,
            State::Dead => pb::MemberState::Dead,
            State::Left => pb::MemberState::Left,
        };
        s as i32
    }
}

/// Whether `addr` is `host:port` as section 3 defines it.
pub(crate) fn valid_addr(addr: &str) -> bool {
    addr.len() <= 255
        && addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
}

/// A membership fact (section 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fact {
    pub(crate) addr: String,
    pub(crate) generation: u64,
    pub(crate) incarnation: u64,
    pub(crate) state: State,
}

impl Fact {
    /// `None` for an update section 3 says to ignore.
    pub(crate) fn from_pb(u: &pb::MemberUpdate) -> Option<Self> {
        let id = u.id.as_ref().filter(|id| valid_addr(&id.addr))?;
        Some(Self {
            addr: id.addr.clone(),
            generation: id.generation,
            incarnation: u.incarnation,
            state: State::from_pb(u.state)?,
        })
    }

    pub(crate) fn to_pb(&self) -> pb::MemberUpdate {
        pb::MemberUpdate {
            id: Some(self.id()),
            incarnation: self.incarnation,
            state: self.state.to_pb(),
            accuser: String::new(),
            refused: false,
        }
    }

    pub(crate) fn id(&self) -> pb::NodeId {
        pb::NodeId {
            addr: self.addr.clone(),
            generation: self.generation,
        }
    }

    /// Section 5.1.
    pub(crate) fn supersedes(&self, old: &Fact) -> bool {
        if self.generation != old.generation {
            return self.generation > old.generation;
        }
        if old.state == State::Left {
            return false;
        }
        if self.state == State::Left {
            return true;
        }
        if self.incarnation != old.incarnation {
            return self.incarnation > old.incarnation;
        }
        self.state.rank() > old.state.rank()
    }
}

/// One key of an owner (section 8); TTLs are not kept by this member.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub(crate) value: Bytes,
    pub(crate) version: u64,
    pub(crate) deleted: bool,
}

/// Everything known about one address.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) fact: Fact,
    /// The watermark of the owner's state held (section 8).
    pub(crate) version: u64,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) meta_version: u64,
    pub(crate) keys: BTreeMap<String, Key>,
}

impl Record {
    fn new(fact: Fact) -> Self {
        Self {
            fact,
            version: 0,
            meta: BTreeMap::new(),
            meta_version: 0,
            keys: BTreeMap::new(),
        }
    }

    /// A piece that carries the fact only (section 9.6).
    fn fact_piece(&self) -> pb::OwnerDelta {
        pb::OwnerDelta {
            member: Some(self.fact.to_pb()),
            from_version: self.version,
            to_version: self.version,
            ..Default::default()
        }
    }

    /// The owner's state newer than `since`, as one `OwnerDelta` (section
    /// 9.6; the states of this test are far below the body budget, so no
    /// piece is ever split).
    fn delta_since(&self, since: u64) -> pb::OwnerDelta {
        let mut keys: Vec<(&String, &Key)> = self
            .keys
            .iter()
            .filter(|(_, k)| k.version > since)
            .collect();
        keys.sort_by_key(|(_, k)| k.version);
        pb::OwnerDelta {
            member: Some(self.fact.to_pb()),
            from_version: since.min(self.version),
            to_version: self.version,
            reset: false,
            meta: (self.meta_version > since).then(|| pb::Meta {
                entries: self.meta.clone().into_iter().collect(),
                version: self.meta_version,
            }),
            keys: keys
                .into_iter()
                .map(|(key, k)| pb::KeyValue {
                    key: key.clone(),
                    value: if k.deleted {
                        Bytes::new()
                    } else {
                        k.value.clone()
                    },
                    version: k.version,
                    deleted: k.deleted,
                    ttl_ms: 0,
                })
                .collect(),
        }
    }
}

/// Position of an address on the digest ring (section 9.2).
pub(crate) fn ring_position(addr: &str) -> u64 {
    xxh3_64(addr.as_bytes())
}

/// One record's fingerprint (section 9.2).
fn fingerprint(fact: &Fact, version: u64) -> u64 {
    let mut data = fact.addr.as_bytes().to_vec();
    data.extend_from_slice(&fact.generation.to_le_bytes());
    data.extend_from_slice(&fact.incarnation.to_le_bytes());
    data.push(fact.state.rank());
    data.extend_from_slice(&version.to_le_bytes());
    xxh3_64(&data)
}

/// What applying one fact did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Nothing to do.
    Done,
    /// The fact was about this member and has been refuted (section 5.3):
    /// its incarnation is raised; the caller sends the news.
    Refuted,
}

/// The member's table, its own record included.
pub(crate) struct View {
    me: String,
    records: HashMap<String, Record>,
}

impl View {
    /// A view holding only this member, with `meta` at version 1 if any
    /// (section 8: metadata at version 0 is never taken).
    pub(crate) fn new(me: Fact, meta: BTreeMap<String, String>) -> Self {
        let addr = me.addr.clone();
        let mut own = Record::new(me);
        if !meta.is_empty() {
            own.version = 1;
            own.meta = meta;
            own.meta_version = 1;
        }
        Self {
            me: addr.clone(),
            records: HashMap::from([(addr, own)]),
        }
    }

    pub(crate) fn me(&self) -> &Record {
        &self.records[&self.me]
    }

    pub(crate) fn get(&self, addr: &str) -> Option<&Record> {
        self.records.get(addr)
    }

    /// The live members other than this one.
    pub(crate) fn live_peers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .records
            .values()
            .filter(|r| r.fact.addr != self.me && r.fact.state.is_live())
            .map(|r| r.fact.addr.clone())
            .collect();
        v.sort();
        v
    }

    pub(crate) fn live_count(&self) -> u32 {
        self.records
            .values()
            .filter(|r| r.fact.state.is_live())
            .count() as u32
    }

    /// The digest fingerprint (section 9.2): the wrapping sum of the live
    /// records' fingerprints, this member's own included.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.records
            .values()
            .filter(|r| r.fact.state.is_live())
            .fold(0u64, |sum, r| {
                sum.wrapping_add(fingerprint(&r.fact, r.version))
            })
    }

    /// Applies a fact received from another member (sections 5.2, 5.3).
    /// This member runs no suspicion timers, so it takes `DEAD` verdicts
    /// as they are (section 15, item 4).
    pub(crate) fn apply(&mut self, fact: Fact) -> Applied {
        if fact.addr == self.me {
            let own = &mut self.records.get_mut(&self.me).expect("own record").fact;
            if fact.generation == own.generation
                && fact.state != State::Alive
                && fact.incarnation >= own.incarnation
            {
                own.incarnation = fact.incarnation + 1;
                return Applied::Refuted;
            }
            return Applied::Done;
        }
        match self.records.get_mut(&fact.addr) {
            None if fact.state.is_live() => {
                self.records.insert(fact.addr.clone(), Record::new(fact));
            }
            None => {}
            Some(r) if fact.supersedes(&r.fact) => {
                if fact.generation != r.fact.generation {
                    *r = Record::new(fact);
                } else {
                    r.fact = fact;
                }
            }
            Some(_) => {}
        }
        Applied::Done
    }

    /// Applies an `OwnerDelta` (sections 8 and 9.6): its member fact, then
    /// its state if the record holds the delta's generation.
    pub(crate) fn apply_delta(&mut self, od: &pb::OwnerDelta) -> Applied {
        let Some(fact) = od.member.as_ref().and_then(Fact::from_pb) else {
            return Applied::Done;
        };
        let applied = self.apply(fact.clone());
        if fact.addr == self.me {
            return applied;
        }
        let Some(r) = self
            .records
            .get_mut(&fact.addr)
            .filter(|r| r.fact.generation == fact.generation)
        else {
            return applied;
        };
        if od.reset {
            let incoming: HashSet<&str> = od.keys.iter().map(|k| k.key.as_str()).collect();
            r.keys.retain(|k, _| incoming.contains(k.as_str()));
        }
        if let Some(m) = od.meta.as_ref().filter(|m| m.version > r.meta_version) {
            r.meta = m.entries.clone().into_iter().collect();
            r.meta_version = m.version;
        }
        for kv in &od.keys {
            if r.keys.get(&kv.key).is_none_or(|k| kv.version > k.version) {
                r.keys.insert(
                    kv.key.clone(),
                    Key {
                        value: kv.value.clone(),
                        version: kv.version,
                        deleted: kv.deleted,
                    },
                );
            }
        }
        if (od.reset || od.from_version <= r.version) && od.to_version > r.version {
            r.version = od.to_version;
        }
        applied
    }

    /// This member's complete digest of the whole ring (section 9.5): every
    /// record, tombstones included, in ring order. A view of a few members
    /// fits in one message.
    pub(crate) fn complete_digest(&self) -> pb::SyncDigest {
        let mut records: Vec<&Record> = self.records.values().collect();
        records.sort_by_key(|r| ring_position(&r.fact.addr));
        pb::SyncDigest {
            range_start: 0,
            range_end: u64::MAX,
            entries: records
                .into_iter()
                .map(|r| pb::DigestEntry {
                    member: Some(r.fact.to_pb()),
                    max_version: r.version,
                })
                .collect(),
            request: false,
        }
    }

    /// Answers a digest (section 9.5): applies its facts, and returns the
    /// request digest to send (for a complete digest that shows state this
    /// member lacks), the owner deltas to send, and whether a fact about
    /// this member was refuted.
    pub(crate) fn answer_digest(
        &mut self,
        d: &pb::SyncDigest,
    ) -> (Option<pb::SyncDigest>, Vec<pb::OwnerDelta>, bool) {
        let mut wants = Vec::new();
        let mut pieces = Vec::new();
        let mut mentioned = HashSet::new();
        let mut refuted = false;
        for e in &d.entries {
            let Some(theirs) = e.member.as_ref().and_then(Fact::from_pb) else {
                continue;
            };
            mentioned.insert(theirs.addr.clone());
            refuted |= self.apply(theirs.clone()) == Applied::Refuted;
            let Some(ours) = self.records.get(&theirs.addr) else {
                continue;
            };
            if ours.fact.generation > theirs.generation {
                pieces.push(ours.delta_since(0));
            } else if ours.fact.generation < theirs.generation {
                continue;
            } else if ours.version > e.max_version {
                pieces.push(ours.delta_since(e.max_version));
            } else {
                if ours.version < e.max_version && !d.request {
                    wants.push(pb::DigestEntry {
                        member: Some(ours.fact.to_pb()),
                        max_version: ours.version,
                    });
                }
                if ours.fact.supersedes(&theirs) {
                    pieces.push(ours.fact_piece());
                }
            }
        }
        if d.request {
            return (None, pieces, refuted);
        }
        for r in self.records.values() {
            let pos = ring_position(&r.fact.addr);
            let in_range = d.range_start <= pos && pos <= d.range_end;
            if in_range && r.fact.state.is_live() && !mentioned.contains(&r.fact.addr) {
                pieces.push(r.delta_since(0));
            }
        }
        let request = (!wants.is_empty()).then_some(pb::SyncDigest {
            range_start: d.range_start,
            range_end: d.range_end,
            entries: wants,
            request: true,
        });
        (request, pieces, refuted)
    }
}
