//! The membership table: one [`Node`] per known address, with its SWIM
//! record, its scuttlebutt state and its digest fingerprint.
//!
//! Invariants kept here:
//! - precedence: an update replaces a record only if it supersedes it
//!   ([`supersedes`]): higher generation, then higher incarnation, then the
//!   state order alive < suspect < dead, with `left` final for a generation;
//! - `live` lists exactly the live (alive or suspect) peers, self excluded,
//!   for O(1) random choice, and each live node's `live_idx` is its index
//!   there (`NOT_LIVE` otherwise);
//! - `root_hash` is the wrapping sum of the fingerprints of live nodes, and
//!   `buckets[i]` the same sum over the live nodes of ring bucket `i`, both
//!   updated on every change (so comparing views costs O(1), and finding
//!   where they differ costs 256 hashes, not a digest of every member);
//! - `ring` indexes every node by its ring position, for range digests.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use foldhash::quality::RandomState;
use hashbrown::HashTable;

use rand::Rng;

use gossip_proto::v1 as pb;

use crate::event::MemberState;
use crate::id::{NodeAddr, NodeId};
use crate::kv::OwnerState;

/// Precedence rank of a state within one generation and incarnation.
fn rank(s: MemberState) -> u8 {
    match s {
        MemberState::Alive => 0,
        MemberState::Suspect => 1,
        MemberState::Dead => 2,
        MemberState::Left => 3,
    }
}

/// The membership facts one update carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fact {
    pub(crate) id: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) state: MemberState,
}

/// The wire form of a fact (at the edge: the rules work on [`Fact`]).
pub(crate) fn fact_to_pb(f: &Fact) -> pb::MemberUpdate {
    let state = match f.state {
        MemberState::Alive => pb::MemberState::Alive,
        MemberState::Suspect => pb::MemberState::Suspect,
        MemberState::Dead => pb::MemberState::Dead,
        MemberState::Left => pb::MemberState::Left,
    };
    pb::MemberUpdate {
        id: Some(f.id.to_pb()),
        incarnation: f.incarnation,
        state: state as i32,
        accuser: String::new(),
        refused: false,
    }
}

/// A fact from its wire form; `None` for a malformed one (no or bad id,
/// unknown state), which is ignored.
pub(crate) fn fact_from_pb(u: &pb::MemberUpdate) -> Option<Fact> {
    let id = NodeId::from_pb(u.id.as_ref()?).ok()?;
    let state = match pb::MemberState::try_from(u.state).ok()? {
        pb::MemberState::Alive => MemberState::Alive,
        pb::MemberState::Suspect => MemberState::Suspect,
        pb::MemberState::Dead => MemberState::Dead,
        pb::MemberState::Left => MemberState::Left,
        pb::MemberState::Unspecified => return None,
    };
    Some(Fact {
        id,
        incarnation: u.incarnation,
        state,
    })
}

/// Does `new` replace `old`? (SWIM 4.2 with generations and a final `left`.)
pub(crate) fn supersedes(new: &Fact, old: &Fact) -> bool {
    use std::cmp::Ordering::*;
    match new.id.generation.cmp(&old.id.generation) {
        Greater => true,
        Less => false,
        Equal => {
            if old.state == MemberState::Left {
                return false;
            }
            if new.state == MemberState::Left {
                return true;
            }
            match new.incarnation.cmp(&old.incarnation) {
                Greater => true,
                Less => false,
                Equal => rank(new.state) > rank(old.state),
            }
        }
    }
}

/// Everything known about one address.
///
/// Kept small (88 bytes): a member holds one per member, and a simulator of
/// 10,000 members holds 10^8 of them. Times are microseconds since the
/// table's creation ([`Table::since`], [`Table::last_heard`]); the ring
/// position and the fingerprint are recomputed when needed.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) fact: Fact,
    /// When the state last changed here (tombstone age), in us since the
    /// table's epoch.
    since_us: u64,
    /// Last time a message came from this node directly, in us since the
    /// table's epoch; `NEVER` if not yet.
    heard_us: u64,
    /// Whether this member sent this node a message since the node's
    /// generation began here: its transport then holds (or held) a
    /// connection to it (`Machine::warm_up`). Messages heard from the node
    /// do not count: over gRPC they came on the node's connection, not on
    /// one of ours.
    contacted: bool,
    pub(crate) owner: OwnerState,
    /// Index in `Table::live`, or `NOT_LIVE`.
    live_idx: u32,
}

/// `Node::live_idx` of a node not in `Table::live` (self, tombstones).
const NOT_LIVE: u32 = u32::MAX;
/// `Node::heard_us` of a node never heard from directly.
const NEVER: u64 = u64::MAX;

impl Node {
    pub(crate) fn is_live(&self) -> bool {
        self.fact.state.is_live()
    }

    fn new(fact: Fact, since_us: u64) -> Self {
        Self {
            fact,
            since_us,
            heard_us: NEVER,
            contacted: false,
            owner: OwnerState::new(),
            live_idx: NOT_LIVE,
        }
    }

    fn fingerprint(&self) -> u64 {
        fingerprint(&self.fact, self.owner.version)
    }

    fn pos(&self) -> u64 {
        ring_position(&self.fact.id.addr)
    }
}

/// A member's fingerprint: xxh3-64 of [`fingerprint_input`]. The digest
/// fingerprint is the wrapping sum of the live members' (`PROTOCOL.md`,
/// "Digest fingerprint").
pub(crate) fn fingerprint(fact: &Fact, version: u64) -> u64 {
    fingerprint_input(fact, version, xxhash_rust::xxh3::xxh3_64)
}

/// Calls `f` with the bytes a member's fingerprint hashes: the address
/// (UTF-8), the generation and the incarnation (8 bytes little-endian
/// each), the state's precedence rank (1 byte: alive 0, suspect 1, dead 2,
/// left 3) and the owner's version watermark (8 bytes little-endian).
pub(crate) fn fingerprint_input<R>(fact: &Fact, version: u64, f: impl FnOnce(&[u8]) -> R) -> R {
    // On the stack: an address is at most 255 bytes (`NodeAddr::parse`).
    let addr = fact.id.addr.as_str().as_bytes();
    let mut buf = [0u8; 256 + 25];
    let mut n = addr.len().min(256);
    buf[..n].copy_from_slice(&addr[..n]);
    for part in [
        &fact.id.generation.to_le_bytes()[..],
        &fact.incarnation.to_le_bytes()[..],
        &[rank(fact.state)][..],
        &version.to_le_bytes()[..],
    ] {
        buf[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    f(&buf[..n])
}

/// Position of an address on the digest ring, used to split digests into
/// ranges.
pub(crate) fn ring_position(addr: &NodeAddr) -> u64 {
    xxhash_rust::xxh3::xxh3_64(addr.as_str().as_bytes())
}

/// Number of ring buckets whose fingerprints `SyncBuckets` carries.
pub(crate) const BUCKETS: usize = 256;

/// The bucket of a ring position: its top byte.
pub(crate) fn bucket_of(pos: u64) -> usize {
    (pos >> 56) as usize
}

/// The inclusive ring range of bucket `i`.
pub(crate) fn bucket_range(i: usize) -> (u64, u64) {
    let start = (i as u64) << 56;
    (start, start | ((1u64 << 56) - 1))
}

/// How applying a fact changed the table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Stale or duplicate: nothing changed.
    None,
    /// A new address, or a new generation of a known one.
    New { old: Option<Fact> },
    /// Same generation, new incarnation and/or state.
    Updated { old: Fact },
}

/// The table of known nodes, self included.
///
/// Nodes live in one dense vector (`slots`, removal by swap); the address
/// index, the live list and the ring refer to them by slot number, so a
/// member is stored once (about 150 bytes) however many indexes point at it.
/// A simulator holding 10,000 members' views of 10,000 members needs that.
pub(crate) struct Table {
    me: NodeAddr,
    /// The origin of the nodes' times.
    epoch: Instant,
    slots: Vec<Node>,
    /// Slot numbers, hashed by the slot's address.
    index: HashTable<u32>,
    hasher: RandomState,
    /// Slots of the live peers.
    live: Vec<u32>,
    root_hash: u64,
    buckets: Vec<u64>,
    /// (ring position, slot) of every node.
    ring: BTreeSet<(u64, u32)>,
}

/// Grows `v` by an eighth (at least 16) when full, instead of doubling: the
/// tables are the bulk of a large simulation's memory.
pub(crate) fn reserve_one<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(16));
    }
}

impl Table {
    pub(crate) fn new(me: Fact, now: Instant) -> Self {
        let addr = me.id.addr.clone();
        let mut t = Self {
            me: addr,
            epoch: now,
            slots: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::default(),
            live: Vec::new(),
            root_hash: 0,
            buckets: vec![0; BUCKETS],
            ring: BTreeSet::new(),
        };
        let mut node = Node::new(me, 0);
        node.heard_us = 0;
        // The local node takes slot 0 and keeps it: it is never removed, and
        // a removal moves only the last slot.
        t.insert(node);
        t
    }

    fn slot(&self, addr: &NodeAddr) -> Option<u32> {
        let hash = self.hasher.hash_one(addr);
        self.index
            .find(hash, |&i| self.slots[i as usize].fact.id.addr == *addr)
            .copied()
    }

    pub(crate) fn get(&self, addr: &NodeAddr) -> Option<&Node> {
        self.slot(addr).map(|i| &self.slots[i as usize])
    }

    pub(crate) fn me(&self) -> &Node {
        &self.slots[0]
    }

    /// `now` in us since the epoch.
    fn stamp(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(NEVER - 1)
    }

    /// When `n`'s state last changed here.
    pub(crate) fn since(&self, n: &Node) -> Instant {
        self.epoch + Duration::from_micros(n.since_us)
    }

    /// When a message last came from `n` directly.
    pub(crate) fn last_heard(&self, n: &Node) -> Option<Instant> {
        (n.heard_us != NEVER).then(|| self.epoch + Duration::from_micros(n.heard_us))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Node> {
        self.slots.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Live peers, self excluded, in no particular order.
    pub(crate) fn live_peers(&self) -> impl ExactSizeIterator<Item = &NodeAddr> {
        self.live
            .iter()
            .map(|&i| &self.slots[i as usize].fact.id.addr)
    }

    /// Number of live members, self included: the `n` of SWIM's formulas.
    pub(crate) fn live_count(&self) -> usize {
        self.live.len() + 1
    }

    pub(crate) fn root_hash(&self) -> u64 {
        self.root_hash
    }

    pub(crate) fn bucket_hashes(&self) -> &[u64] {
        &self.buckets
    }

    /// Nodes whose ring position lies in `[start, end]`, in ring order.
    pub(crate) fn in_range(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, &Node)> {
        self.ring
            .range((start, 0)..)
            .take_while(move |(p, _)| *p <= end)
            .map(|&(p, i)| (p, &self.slots[i as usize]))
    }

    fn hash_add(&mut self, pos: u64, fp: u64) {
        self.root_hash = self.root_hash.wrapping_add(fp);
        let b = &mut self.buckets[bucket_of(pos)];
        *b = b.wrapping_add(fp);
    }

    fn hash_sub(&mut self, pos: u64, fp: u64) {
        self.root_hash = self.root_hash.wrapping_sub(fp);
        let b = &mut self.buckets[bucket_of(pos)];
        *b = b.wrapping_sub(fp);
    }

    /// Up to `k` distinct random live peers, none of them in `exclude`.
    pub(crate) fn random_live(
        &self,
        rng: &mut impl Rng,
        k: usize,
        exclude: &[&NodeAddr],
    ) -> Vec<NodeAddr> {
        let n = self.live.len();
        // `k` comes from the configuration (`fanout`, `indirect_probes`),
        // which may be any number: never more than the live members, so
        // neither the allocation nor the bounds below can overflow (found
        // by fuzzing the config file, issue #12).
        let k = k.min(n);
        let mut out: Vec<NodeAddr> = Vec::with_capacity(k);
        if n == 0 || k == 0 {
            return out;
        }
        let addr = |i: u32| &self.slots[i as usize].fact.id.addr;
        if n <= k + exclude.len() + 4 {
            // Small table: shuffle a filtered copy.
            let mut all: Vec<&NodeAddr> = self
                .live
                .iter()
                .map(|&i| addr(i))
                .filter(|a| !exclude.contains(a))
                .collect();
            for i in 0..all.len().min(k) {
                let j = rng.random_range(i..all.len());
                all.swap(i, j);
                out.push(all[i].clone());
            }
            return out;
        }
        let mut tries = 0;
        while out.len() < k && tries < 8 * k + 16 {
            tries += 1;
            let a = addr(self.live[rng.random_range(0..n)]);
            if !exclude.contains(&a) && !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// Applies a membership fact. Never changes the local node (refutation
    /// is the machine's job).
    pub(crate) fn apply(&mut self, fact: Fact, now: Instant) -> Change {
        if fact.id.addr == self.me {
            return Change::None;
        }
        match self.get(&fact.id.addr) {
            None => {
                if !fact.state.is_live() {
                    // An unknown tombstone: nothing to forget, nothing to learn.
                    return Change::None;
                }
                let since = self.stamp(now);
                self.insert(Node::new(fact, since));
                Change::New { old: None }
            }
            Some(node) if supersedes(&fact, &node.fact) => {
                let old = node.fact.clone();
                let new_generation = fact.id.generation != old.id.generation;
                let addr = fact.id.addr.clone();
                let since = self.stamp(now);
                self.update(&addr, |n| {
                    if new_generation {
                        n.owner = OwnerState::new();
                        n.heard_us = NEVER;
                        n.contacted = false;
                    }
                    n.fact = fact;
                    n.since_us = since;
                });
                if new_generation {
                    Change::New { old: Some(old) }
                } else {
                    Change::Updated { old }
                }
            }
            Some(_) => Change::None,
        }
    }

    /// Mutates a node and keeps `live` and the hashes in step.
    pub(crate) fn update<R>(
        &mut self,
        addr: &NodeAddr,
        f: impl FnOnce(&mut Node) -> R,
    ) -> Option<R> {
        let i = self.slot(addr)?;
        let node = &mut self.slots[i as usize];
        let was_live = node.is_live();
        let old_fp = node.fingerprint();
        let r = f(node);
        let is_live = node.is_live();
        let (new_fp, pos) = (node.fingerprint(), node.pos());
        if was_live {
            self.hash_sub(pos, old_fp);
        }
        if is_live {
            self.hash_add(pos, new_fp);
        }
        if i != 0 {
            match (was_live, is_live) {
                (false, true) => self.live_add(i),
                (true, false) => self.live_remove(i),
                _ => {}
            }
        }
        Some(r)
    }

    /// Records that a message came from `addr` directly.
    pub(crate) fn heard(&mut self, addr: &NodeAddr, now: Instant) {
        if let Some(i) = self.slot(addr) {
            self.slots[i as usize].heard_us = self.stamp(now);
        }
    }

    /// Records that this member sent `addr` a message.
    pub(crate) fn contacted(&mut self, addr: &NodeAddr) {
        if let Some(i) = self.slot(addr) {
            self.slots[i as usize].contacted = true;
        }
    }

    /// Up to `k` alive peers (not suspects) this member has sent no message
    /// to (`Node::contacted`), chosen uniformly among them. Draws
    /// from `rng` only if there are more than `k`, so once every peer is
    /// contacted the member's random draws are those of a member without
    /// warm-up. O(live members).
    pub(crate) fn uncontacted_alive(&self, rng: &mut impl Rng, k: usize) -> Vec<&NodeAddr> {
        if k == 0 {
            return Vec::new();
        }
        let mut all: Vec<&NodeAddr> = self
            .live
            .iter()
            .map(|&i| &self.slots[i as usize])
            .filter(|node| !node.contacted && node.fact.state == MemberState::Alive)
            .map(|node| &node.fact.id.addr)
            .collect();
        if all.len() > k {
            for i in 0..k {
                let j = rng.random_range(i..all.len());
                all.swap(i, j);
            }
            all.truncate(k);
        }
        all
    }

    fn insert(&mut self, node: Node) {
        let i = self.slots.len() as u32;
        let live = node.is_live();
        let pos = node.pos();
        if live {
            self.hash_add(pos, node.fingerprint());
        }
        self.ring.insert((pos, i));
        let hash = self.hasher.hash_one(&node.fact.id.addr);
        reserve_one(&mut self.slots);
        self.slots.push(node);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, i, |&j| {
            hasher.hash_one(&slots[j as usize].fact.id.addr)
        });
        if live && i != 0 {
            self.live_add(i);
        }
    }

    /// Removes a tombstone for good.
    pub(crate) fn remove(&mut self, addr: &NodeAddr) {
        let Some(i) = self.slot(addr) else { return };
        if i == 0 {
            return;
        }
        self.live_remove(i);
        let hash = self.hasher.hash_one(addr);
        if let Ok(e) = self.index.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        let node = self.slots.swap_remove(i as usize);
        self.ring.remove(&(node.pos(), i));
        if node.is_live() {
            self.hash_sub(node.pos(), node.fingerprint());
        }
        // The last slot moved into `i`: repoint its index entries.
        let last = self.slots.len() as u32;
        if i < last {
            let moved = &self.slots[i as usize];
            let hash = self.hasher.hash_one(&moved.fact.id.addr);
            if let Some(j) = self.index.find_mut(hash, |&j| j == last) {
                *j = i;
            }
            let pos = moved.pos();
            self.ring.remove(&(pos, last));
            self.ring.insert((pos, i));
            if moved.live_idx != NOT_LIVE {
                self.live[moved.live_idx as usize] = i;
            }
        }
    }

    fn live_add(&mut self, i: u32) {
        let n = &mut self.slots[i as usize];
        if n.live_idx == NOT_LIVE {
            n.live_idx = self.live.len() as u32;
            reserve_one(&mut self.live);
            self.live.push(i);
        }
    }

    fn live_remove(&mut self, i: u32) {
        let at = std::mem::replace(&mut self.slots[i as usize].live_idx, NOT_LIVE);
        if at == NOT_LIVE {
            return;
        }
        self.live.swap_remove(at as usize);
        if let Some(&moved) = self.live.get(at as usize) {
            self.slots[moved as usize].live_idx = at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(gen_: u64, inc: u64, state: MemberState) -> Fact {
        Fact {
            id: NodeId::new(NodeAddr::parse("a:1").unwrap(), gen_),
            incarnation: inc,
            state,
        }
    }

    #[track_caller]
    fn check(new: Fact, old: Fact, expected: bool) {
        assert_eq!(supersedes(&new, &old), expected, "{new:?} over {old:?}");
    }

    #[test]
    fn precedence() {
        use MemberState::*;
        check(fact(1, 0, Suspect), fact(1, 0, Alive), true);
        check(fact(1, 0, Alive), fact(1, 0, Suspect), false);
        check(fact(1, 1, Alive), fact(1, 0, Suspect), true);
        check(fact(1, 1, Alive), fact(1, 0, Dead), true);
        check(fact(1, 0, Alive), fact(1, 0, Dead), false);
        check(fact(1, 9, Alive), fact(1, 0, Left), false);
        check(fact(1, 0, Left), fact(1, 5, Alive), true);
        check(fact(2, 0, Alive), fact(1, 9, Left), true);
        check(fact(1, 9, Alive), fact(2, 0, Dead), false);
        check(fact(1, 0, Alive), fact(1, 0, Alive), false);
    }

    /// A table whose local member is `me:1`.
    fn table(now: Instant) -> Table {
        let me = Fact {
            id: NodeId::new(NodeAddr::parse("me:1").unwrap(), 1),
            incarnation: 0,
            state: MemberState::Alive,
        };
        Table::new(me, now)
    }

    #[test]
    fn live_index_and_hash_follow_changes() {
        let now = Instant::now();
        let mut t = table(now);
        let h0 = t.root_hash();
        assert_eq!(
            t.apply(fact(1, 0, MemberState::Alive), now),
            Change::New { old: None }
        );
        assert_eq!(t.live_peers().len(), 1);
        let h1 = t.root_hash();
        assert_ne!(h0, h1);
        assert!(matches!(
            t.apply(fact(1, 0, MemberState::Dead), now),
            Change::Updated { .. }
        ));
        assert_eq!(t.live_peers().len(), 0);
        assert_eq!(t.root_hash(), h0, "tombstones are not in the hash");
        assert_eq!(t.apply(fact(1, 0, MemberState::Alive), now), Change::None);
        t.remove(&NodeAddr::parse("a:1").unwrap());
        assert_eq!(t.len(), 1);
    }

    /// Warm-up's candidates (`Machine::warm_up`): alive peers never sent
    /// to; a message heard does not count; a suspect is no candidate; a new
    /// generation (a restart: its connections are gone) is one again.
    #[test]
    fn uncontacted_alive_peers_are_warm_up_candidates_until_contacted() {
        use rand::SeedableRng;
        let now = Instant::now();
        let mut t = table(now);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let addr = |i: u32| NodeAddr::parse(&format!("m{i}:1")).unwrap();
        let put = |t: &mut Table, i: u32, generation: u64, state: MemberState| {
            let id = NodeId::new(addr(i), generation);
            t.apply(
                Fact {
                    id,
                    incarnation: 0,
                    state,
                },
                now,
            );
        };
        for i in 0..5 {
            put(&mut t, i, 1, MemberState::Alive);
        }
        let set = |v: Vec<&NodeAddr>| v.into_iter().cloned().collect::<BTreeSet<_>>();
        assert_eq!(
            set(t.uncontacted_alive(&mut rng, 9)),
            (0..5).map(addr).collect()
        );
        assert_eq!(t.uncontacted_alive(&mut rng, 2).len(), 2);
        assert!(t.uncontacted_alive(&mut rng, 0).is_empty());

        t.contacted(&addr(0));
        t.contacted(&addr(1));
        t.heard(&addr(3), now);
        put(&mut t, 2, 1, MemberState::Suspect);
        assert_eq!(
            set(t.uncontacted_alive(&mut rng, 9)),
            [addr(3), addr(4)].into()
        );

        // m0 restarts: a new generation, contacted by nobody yet.
        put(&mut t, 0, 2, MemberState::Alive);
        assert_eq!(
            set(t.uncontacted_alive(&mut rng, 9)),
            [addr(0), addr(3), addr(4)].into()
        );
    }

    /// Regression (issue #12, fuzzing the config file): `fanout =
    /// 18446744073709551615` made the first write allocate a vector of that
    /// capacity and panic; any count beyond the live members means all of
    /// them.
    #[test]
    fn random_live_takes_any_count() {
        use rand::SeedableRng;
        let now = Instant::now();
        let mut t = table(now);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert!(t.random_live(&mut rng, usize::MAX, &[]).is_empty());
        for i in 0..3 {
            let id = NodeId::new(NodeAddr::parse(&format!("m{i}:1")).unwrap(), 1);
            t.apply(
                Fact {
                    id,
                    incarnation: 0,
                    state: MemberState::Alive,
                },
                now,
            );
        }
        let excluded = NodeAddr::parse("m0:1").unwrap();
        for k in [4, 1 << 40, usize::MAX] {
            let mut got = t.random_live(&mut rng, k, &[&excluded]);
            got.sort();
            let expected: Vec<NodeAddr> = ["m1:1", "m2:1"]
                .iter()
                .map(|a| NodeAddr::parse(a).unwrap())
                .collect();
            assert_eq!(got, expected, "k = {k}");
        }
    }

    impl Table {
        /// Panics unless `live` and every `live_idx` agree with the states.
        /// Panics unless every index (address, live list, ring, hashes)
        /// agrees with the slots.
        fn check_live_index(&self) {
            for (i, &s) in self.live.iter().enumerate() {
                let n = &self.slots[s as usize];
                assert!(n.is_live() && s != 0, "{:?} listed live", n.fact);
                assert_eq!(n.live_idx as usize, i, "{:?}", n.fact);
            }
            let (mut root, mut buckets) = (0u64, vec![0u64; BUCKETS]);
            for (s, n) in self.slots.iter().enumerate() {
                let listed = n.live_idx != NOT_LIVE;
                assert_eq!(listed, n.is_live() && s != 0, "{:?}", n.fact);
                assert_eq!(self.slot(&n.fact.id.addr), Some(s as u32));
                assert!(self.ring.contains(&(n.pos(), s as u32)));
                if n.is_live() {
                    root = root.wrapping_add(n.fingerprint());
                    let b = &mut buckets[bucket_of(n.pos())];
                    *b = b.wrapping_add(n.fingerprint());
                }
            }
            assert_eq!(self.index.len(), self.slots.len());
            assert_eq!(self.ring.len(), self.slots.len());
            assert_eq!(root, self.root_hash);
            assert_eq!(buckets, self.buckets);
            assert_eq!(self.me().fact.id.addr, self.me);
        }
    }

    /// The per-member record stays small: the tables are the bulk of a
    /// large simulation's memory (10^8 records at 10,000 members).
    #[test]
    fn node_record_stays_small() {
        assert!(size_of::<Node>() <= 88, "{} bytes", size_of::<Node>());
    }

    /// Random joins, deaths, revivals and removals keep the live index exact.
    #[test]
    fn live_index_survives_random_churn() {
        use rand::SeedableRng;
        let now = Instant::now();
        let mut t = table(now);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut inc = 0;
        for _ in 0..3000 {
            let addr = NodeAddr::parse(&format!("n{}:1", rng.random_range(0..50))).unwrap();
            let state = match rng.random_range(0..4) {
                0 => MemberState::Alive,
                1 => MemberState::Suspect,
                2 => MemberState::Dead,
                _ => {
                    t.remove(&addr);
                    t.check_live_index();
                    continue;
                }
            };
            inc += 1;
            t.apply(
                Fact {
                    id: NodeId::new(addr, 1),
                    incarnation: inc,
                    state,
                },
                now,
            );
            t.check_live_index();
        }
        assert!(t.live_peers().len() > 0);
    }
}
