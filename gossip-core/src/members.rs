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

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use foldhash::quality::RandomState;

use rand::Rng;

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
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) fact: Fact,
    /// When the state last changed here (tombstone age, suspicion start).
    pub(crate) since: Instant,
    /// Last time a message came from this node directly.
    pub(crate) last_heard: Option<Instant>,
    pub(crate) owner: OwnerState,
    fingerprint: u64,
    /// Index in `Table::live`, or `NOT_LIVE`.
    live_idx: u32,
}

/// `Node::live_idx` of a node not in `Table::live` (self, tombstones).
const NOT_LIVE: u32 = u32::MAX;

impl Node {
    pub(crate) fn is_live(&self) -> bool {
        self.fact.state.is_live()
    }
}

fn fingerprint(fact: &Fact, version: u64) -> u64 {
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
    xxhash_rust::xxh3::xxh3_64(&buf[..n])
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
pub(crate) struct Table {
    me: NodeAddr,
    nodes: HashMap<NodeAddr, Node, RandomState>,
    live: Vec<NodeAddr>,
    root_hash: u64,
    buckets: Vec<u64>,
    ring: BTreeSet<(u64, NodeAddr)>,
}

impl Table {
    pub(crate) fn new(me: Fact, now: Instant) -> Self {
        let addr = me.id.addr.clone();
        let mut t = Self {
            me: addr.clone(),
            nodes: HashMap::default(),
            live: Vec::new(),
            root_hash: 0,
            buckets: vec![0; BUCKETS],
            ring: BTreeSet::new(),
        };
        t.insert(
            addr,
            Node {
                fact: me,
                since: now,
                last_heard: Some(now),
                owner: OwnerState::new(),
                fingerprint: 0,
                live_idx: NOT_LIVE,
            },
        );
        t
    }

    pub(crate) fn get(&self, addr: &NodeAddr) -> Option<&Node> {
        self.nodes.get(addr)
    }

    pub(crate) fn me(&self) -> &Node {
        // The local node is inserted at construction and never removed.
        self.nodes
            .get(&self.me)
            .unwrap_or_else(|| unreachable!("local node missing from table"))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Live peers, self excluded.
    pub(crate) fn live_peers(&self) -> &[NodeAddr] {
        &self.live
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
        let lo = (start, NodeAddr::min_value());
        self.ring
            .range(lo..)
            .take_while(move |(p, _)| *p <= end)
            .filter_map(|(p, a)| self.nodes.get(a).map(|n| (*p, n)))
    }

    fn hash_add(&mut self, addr: &NodeAddr, fp: u64) {
        self.root_hash = self.root_hash.wrapping_add(fp);
        let b = &mut self.buckets[bucket_of(ring_position(addr))];
        *b = b.wrapping_add(fp);
    }

    fn hash_sub(&mut self, addr: &NodeAddr, fp: u64) {
        self.root_hash = self.root_hash.wrapping_sub(fp);
        let b = &mut self.buckets[bucket_of(ring_position(addr))];
        *b = b.wrapping_sub(fp);
    }

    /// Up to `k` distinct random live peers, none of them in `exclude`.
    pub(crate) fn random_live(
        &self,
        rng: &mut impl Rng,
        k: usize,
        exclude: &[&NodeAddr],
    ) -> Vec<NodeAddr> {
        let mut out: Vec<NodeAddr> = Vec::with_capacity(k);
        let n = self.live.len();
        if n == 0 || k == 0 {
            return out;
        }
        if n <= k + exclude.len() + 4 {
            // Small table: shuffle a filtered copy.
            let mut all: Vec<&NodeAddr> =
                self.live.iter().filter(|a| !exclude.contains(a)).collect();
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
            let a = &self.live[rng.random_range(0..n)];
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
        let addr = fact.id.addr.clone();
        match self.nodes.get(&addr) {
            None => {
                if !fact.state.is_live() {
                    // An unknown tombstone: nothing to forget, nothing to learn.
                    return Change::None;
                }
                self.insert(
                    addr,
                    Node {
                        fact,
                        since: now,
                        last_heard: None,
                        owner: OwnerState::new(),
                        fingerprint: 0,
                        live_idx: NOT_LIVE,
                    },
                );
                Change::New { old: None }
            }
            Some(node) if supersedes(&fact, &node.fact) => {
                let old = node.fact.clone();
                let new_generation = fact.id.generation != old.id.generation;
                self.update(&addr, |n| {
                    if new_generation {
                        n.owner = OwnerState::new();
                        n.last_heard = None;
                    }
                    n.fact = fact;
                    n.since = now;
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

    /// Mutates a node and keeps `live` and `root_hash` in step.
    pub(crate) fn update<R>(
        &mut self,
        addr: &NodeAddr,
        f: impl FnOnce(&mut Node) -> R,
    ) -> Option<R> {
        let node = self.nodes.get_mut(addr)?;
        let was_live = node.is_live();
        let old_fp = node.fingerprint;
        let r = f(node);
        node.fingerprint = fingerprint(&node.fact, node.owner.version);
        let is_live = node.is_live();
        let new_fp = node.fingerprint;
        if was_live {
            self.hash_sub(addr, old_fp);
        }
        if is_live {
            self.hash_add(addr, new_fp);
        }
        if *addr != self.me {
            match (was_live, is_live) {
                (false, true) => self.live_add(addr),
                (true, false) => self.live_remove(addr),
                _ => {}
            }
        }
        Some(r)
    }

    /// Records that a message came from `addr` directly.
    pub(crate) fn heard(&mut self, addr: &NodeAddr, now: Instant) {
        if let Some(n) = self.nodes.get_mut(addr) {
            n.last_heard = Some(now);
        }
    }

    fn insert(&mut self, addr: NodeAddr, mut node: Node) {
        node.fingerprint = fingerprint(&node.fact, node.owner.version);
        let live = node.is_live();
        if live {
            self.hash_add(&addr, node.fingerprint);
        }
        self.ring.insert((ring_position(&addr), addr.clone()));
        self.nodes.insert(addr.clone(), node);
        if live && addr != self.me {
            self.live_add(&addr);
        }
    }

    /// Removes a tombstone for good.
    pub(crate) fn remove(&mut self, addr: &NodeAddr) {
        if *addr == self.me {
            return;
        }
        self.live_remove(addr);
        if let Some(node) = self.nodes.remove(addr) {
            self.ring.remove(&(ring_position(addr), addr.clone()));
            if node.is_live() {
                self.hash_sub(addr, node.fingerprint);
            }
        }
    }

    fn live_add(&mut self, addr: &NodeAddr) {
        let at = self.live.len() as u32;
        if let Some(n) = self.nodes.get_mut(addr)
            && n.live_idx == NOT_LIVE
        {
            n.live_idx = at;
            self.live.push(addr.clone());
        }
    }

    fn live_remove(&mut self, addr: &NodeAddr) {
        let Some(n) = self.nodes.get_mut(addr) else {
            return;
        };
        let i = std::mem::replace(&mut n.live_idx, NOT_LIVE) as usize;
        if i == NOT_LIVE as usize {
            return;
        }
        self.live.swap_remove(i);
        if let Some(moved) = self.live.get(i)
            && let Some(m) = self.nodes.get_mut(moved)
        {
            m.live_idx = i as u32;
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

    #[test]
    fn live_index_and_hash_follow_changes() {
        let now = Instant::now();
        let me = Fact {
            id: NodeId::new(NodeAddr::parse("me:1").unwrap(), 1),
            incarnation: 0,
            state: MemberState::Alive,
        };
        let mut t = Table::new(me, now);
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
        assert!(t.live_peers().is_empty());
        assert_eq!(t.root_hash(), h0, "tombstones are not in the hash");
        assert_eq!(t.apply(fact(1, 0, MemberState::Alive), now), Change::None);
        t.remove(&NodeAddr::parse("a:1").unwrap());
        assert_eq!(t.len(), 1);
    }

    impl Table {
        /// Panics unless `live` and every `live_idx` agree with the states.
        fn check_live_index(&self) {
            for (i, a) in self.live.iter().enumerate() {
                let n = &self.nodes[a];
                assert!(n.is_live() && *a != self.me, "{a} listed live");
                assert_eq!(n.live_idx as usize, i, "{a}");
            }
            for (a, n) in &self.nodes {
                let listed = n.live_idx != NOT_LIVE;
                assert_eq!(listed, n.is_live() && *a != self.me, "{a}");
            }
        }
    }

    /// Random joins, deaths, revivals and removals keep the live index exact.
    #[test]
    fn live_index_survives_random_churn() {
        use rand::SeedableRng;
        let now = Instant::now();
        let me = Fact {
            id: NodeId::new(NodeAddr::parse("me:1").unwrap(), 1),
            incarnation: 0,
            state: MemberState::Alive,
        };
        let mut t = Table::new(me, now);
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
        assert!(!t.live_peers().is_empty());
    }
}
