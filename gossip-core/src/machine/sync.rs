//! Scuttlebutt anti-entropy and eager push.
//!
//! A round: every gossip interval while the member is active (for a while
//! after any change it made or learned, or a differing fingerprint it saw:
//! `Machine::learned`, `Machine::mark_active`), `fanout` random live peers
//! get a `SyncRequest` carrying only the fingerprint of this member's digest
//! (a constant 50-odd bytes whatever the cluster size); a member that has
//! just learned something also runs one round at once. At rest no round runs
//! but one to a single peer per `push_pull_interval`; the fingerprint rides
//! on every probe and ack instead, and the prober compares the one in the
//! ack with its own, so a divergence is still found within a probe interval
//! or two (silence at rest, issue #9 item 7). Nor does a quiet member wake
//! up for the ticks that send nothing: `poll_timeout` names the next tick
//! with work (`next_busy_tick`), and the idle ticks are counted when an
//! input comes (`skip_idle_ticks`). A peer whose fingerprint is
//! the same does not answer. Otherwise, in a small cluster it answers with
//! its complete digest (split into ranges of the ring so no message exceeds
//! the size limit); in a large one it answers with the fingerprints of the
//! 256 ring buckets, and the opener sends complete digests of the differing
//! buckets only. A complete digest is answered with the deltas its sender
//! lacks and a request digest for what the receiver lacks; a request is
//! answered with deltas. Fresh writes are also pushed at once
//! to `fanout` peers, which forward them on first receipt (rumor mongering).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gossip_proto::v1 as pb;
use gossip_proto::v1::envelope::Body;
use prost::Message;
use rand::Rng;

use super::{DEAD_CONTACT_EVERY, Machine, fact_from_pb, fact_to_pb};
use crate::event::Event;
use crate::id::{NodeAddr, NodeId};
use crate::members::{BUCKETS, Node, bucket_range, supersedes};

/// Up to this many known members, a fingerprint mismatch is answered with
/// the complete digest (cheaper than 256 bucket fingerprints, ~2 KiB).
const SMALL_CLUSTER: usize = 48;

/// At most this many ring ranges are sent as digests after comparing bucket
/// fingerprints: the closest differing runs of buckets are merged. Each
/// range costs a digest message and its answers, so views that differ in
/// many scattered members (churn in a cluster just above `SMALL_CLUSTER`)
/// would otherwise cost dozens of messages per round instead of a few.
const MAX_DIGEST_RANGES: usize = 4;

impl Machine {
    pub(super) fn sync_request(&self) -> Body {
        Body::SyncRequest(pb::SyncRequest {
            digest_hash: self.table.root_hash(),
            members: self.table.live_count() as u32,
        })
    }

    /// One tick of the gossip timer. An active member sends a round to
    /// `fanout` peers; a quiet one sends one to a single peer once per
    /// `push_pull_interval` (memberlist's periodic push-pull), else nothing.
    /// Every `DEAD_CONTACT_EVERY` ticks a dead member is contacted whatever
    /// the activity (as memberlist gossips to the dead for a while), so the
    /// sides of a healed partition find each other without any change to
    /// start rounds. A quiet member is woken only for the ticks that do
    /// one of these (`next_busy_tick`); the others are only counted
    /// (`skip_idle_ticks`).
    pub(super) fn gossip_round(&mut self, now: Instant) {
        self.rounds += 1;
        let k = if self.is_active_round() {
            self.cfg.fanout
        } else if now >= self.next_push_pull {
            1
        } else {
            0
        };
        let mut targets = if k > 0 {
            self.table.random_live(&mut self.rng, k, &[])
        } else {
            Vec::new()
        };
        if !targets.is_empty() {
            self.next_push_pull = now + super::push_pull_wait(&self.cfg, &mut self.rng);
        }
        if self.rounds.is_multiple_of(DEAD_CONTACT_EVERY)
            && let Some(dead) = self.random_dead()
        {
            targets.push(dead);
        }
        for t in targets {
            let req = self.sync_request();
            self.send(&t, req);
        }
    }

    /// How many gossip ticks, from the next one (`next_gossip`), would do
    /// nothing at all before one that has work: 0 while the member is active
    /// or an extra round is pending; at rest, the ticks before the first one
    /// at or after `next_push_pull` (if there is a live peer to send it to)
    /// and, while dead members are known, before the next tick that contacts
    /// one (`DEAD_CONTACT_EVERY`). A tick counted here would send nothing
    /// and draw nothing from the RNG, so skipping it changes no output.
    /// `None`: no tick has work (a quiet, isolated member with no dead
    /// member to contact).
    fn idle_ticks(&self) -> Option<u64> {
        if self.is_active() || self.extra_round.is_some() {
            return Some(0);
        }
        let interval = self.cfg.gossip_interval.as_nanos().max(1);
        let push_pull = (self.table.live_peers().len() > 0).then(|| {
            let wait = self
                .next_push_pull
                .saturating_duration_since(self.next_gossip);
            u64::try_from(wait.as_nanos().div_ceil(interval)).unwrap_or(u64::MAX)
        });
        let dead = (!self.dead_pool.is_empty()).then(|| {
            let next = self.rounds + 1;
            (DEAD_CONTACT_EVERY - next % DEAD_CONTACT_EVERY) % DEAD_CONTACT_EVERY
        });
        match (push_pull, dead) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the next gossip tick that has work falls due (see `idle_ticks`);
    /// `Machine::poll_timeout` wakes the driver for it and for no other tick.
    pub(super) fn next_busy_tick(&self) -> Option<Instant> {
        let ticks = u32::try_from(self.idle_ticks()?).ok()?;
        let wait = self.cfg.gossip_interval.checked_mul(ticks)?;
        self.next_gossip.checked_add(wait)
    }

    /// Counts the gossip ticks that fell due before `now` without a
    /// wake-up because they had nothing to do (see `idle_ticks`), keeping
    /// the ticks' phase. Called first by every input, so the tick count
    /// (`rounds`: active rounds, dead contacts, extra rounds once per tick)
    /// and `next_gossip` are what they would be had the member been woken
    /// for every tick. A tick due exactly at `now` is left to
    /// `handle_timeout`, after the input.
    pub(super) fn skip_idle_ticks(&mut self, now: Instant) {
        if now <= self.next_gossip {
            return;
        }
        let interval = self.cfg.gossip_interval.as_nanos().max(1);
        let due = (now - self.next_gossip).as_nanos().div_ceil(interval);
        let idle = self.idle_ticks().map_or(u128::MAX, u128::from);
        let skip = due.min(idle);
        if skip == 0 {
            return;
        }
        self.rounds += u64::try_from(skip).unwrap_or(u64::MAX);
        // `skip` ticks end before `now`, so this cannot overflow.
        let ahead = u64::try_from(skip * interval).unwrap_or(u64::MAX);
        self.next_gossip += Duration::from_nanos(ahead);
    }

    /// A round to `fanout` peers outside the ticks, for a member that has
    /// just learned something (`Machine::learned`); it counts as no tick.
    pub(super) fn extra_round(&mut self, now: Instant) {
        let targets = self.table.random_live(&mut self.rng, self.cfg.fanout, &[]);
        if !targets.is_empty() {
            self.next_push_pull = now + super::push_pull_wait(&self.cfg, &mut self.rng);
        }
        for t in targets {
            let req = self.sync_request();
            self.send(&t, req);
        }
    }

    fn random_dead(&mut self) -> Option<NodeAddr> {
        while !self.dead_pool.is_empty() {
            let i = self.rng.random_range(0..self.dead_pool.len());
            let a = &self.dead_pool[i];
            if self
                .table
                .get(a)
                .is_some_and(|n| n.fact.state == crate::MemberState::Dead)
            {
                return Some(a.clone());
            }
            self.dead_pool.swap_remove(i);
        }
        None
    }

    /// Whether the round of the current tick (`rounds` already counts it)
    /// goes to `fanout` peers.
    fn is_active_round(&self) -> bool {
        self.rounds <= self.active_until || self.queue_depth() > 0
    }

    pub(super) fn on_sync_request(&mut self, now: Instant, from: &NodeId, r: pb::SyncRequest) {
        self.on_fingerprint(now, from, r.digest_hash);
    }

    /// A peer's digest fingerprint, from its `SyncRequest` or from its `Ack`
    /// (probe.rs `on_ack`): if it differs from this member's own, the views
    /// differ, so this member becomes active and answers with its complete
    /// digest (small cluster) or its bucket fingerprints.
    pub(super) fn on_fingerprint(&mut self, _now: Instant, from: &NodeId, digest_hash: u64) {
        if digest_hash == self.table.root_hash() {
            return;
        }
        self.mark_active();
        if self.table.len() <= SMALL_CLUSTER {
            for d in self.range_digests(0, u64::MAX) {
                self.send(&from.addr, Body::SyncDigest(d));
            }
        } else {
            let hashes = self.table.bucket_hashes().to_vec();
            self.send(&from.addr, Body::SyncBuckets(pb::SyncBuckets { hashes }));
        }
    }

    /// The peer's bucket fingerprints: send complete digests of the buckets
    /// (merged into runs of adjacent buckets) where the views differ.
    pub(super) fn on_buckets(&mut self, _now: Instant, from: &NodeId, b: pb::SyncBuckets) {
        // The peer found our fingerprint different from its own.
        self.mark_active();
        if b.hashes.len() != BUCKETS {
            for d in self.range_digests(0, u64::MAX) {
                self.send(&from.addr, Body::SyncDigest(d));
            }
            return;
        }
        let ours = self.table.bucket_hashes();
        let differ: Vec<usize> = (0..BUCKETS).filter(|i| ours[*i] != b.hashes[*i]).collect();
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for i in differ {
            match runs.last_mut() {
                Some((_, end)) if *end + 1 == i => *end = i,
                _ => runs.push((i, i)),
            }
        }
        merge_closest_runs(&mut runs, MAX_DIGEST_RANGES);
        for (first, last) in runs {
            let (start, _) = bucket_range(first);
            let (_, end) = bucket_range(last);
            for d in self.range_digests(start, end) {
                self.send(&from.addr, Body::SyncDigest(d));
            }
        }
    }

    /// This member's complete digest of the ring range `[start, end]`, split
    /// into sub-ranges that each fit in a message.
    fn range_digests(&self, start: u64, end: u64) -> Vec<pb::SyncDigest> {
        let entries = self.table.in_range(start, end).map(|(pos, n)| {
            (
                pos,
                pb::DigestEntry {
                    member: Some(fact_to_pb(&n.fact)),
                    max_version: n.owner.version,
                },
            )
        });
        let budget = self.body_budget();
        let mut out = Vec::new();
        let mut cur = pb::SyncDigest {
            range_start: start,
            range_end: end,
            entries: Vec::new(),
            request: false,
        };
        let mut size = 0;
        let mut last_pos = 0;
        for (pos, e) in entries {
            let s = e.encoded_len() + 3;
            if size + s > budget && !cur.entries.is_empty() {
                cur.range_end = last_pos;
                let next = pb::SyncDigest {
                    range_start: last_pos.saturating_add(1),
                    range_end: end,
                    entries: Vec::new(),
                    request: false,
                };
                out.push(std::mem::replace(&mut cur, next));
                size = 0;
            }
            size += s;
            last_pos = pos;
            cur.entries.push(e);
        }
        out.push(cur);
        out
    }

    pub(super) fn on_digest(&mut self, now: Instant, from: &NodeId, d: pb::SyncDigest) {
        if !d.request {
            // The peer found our fingerprint different from its own.
            self.mark_active();
        }
        let budget = self.body_budget();
        let mut pieces: Vec<pb::OwnerDelta> = Vec::new();
        let mut wants: Vec<pb::DigestEntry> = Vec::new();
        let mut mentioned: HashSet<NodeAddr, foldhash::quality::RandomState> = HashSet::default();
        for e in d.entries {
            let Some(m) = e.member else { continue };
            let Some(theirs) = fact_from_pb(&m) else {
                continue;
            };
            mentioned.insert(theirs.id.addr.clone());
            let own = theirs.id.addr == from.addr;
            self.apply_update(now, m, Some(&from.addr), own);
            let Some(node) = self.table.get(&theirs.id.addr) else {
                continue;
            };
            let ours = &node.fact;
            if ours.id.generation > theirs.id.generation {
                pieces.extend(owner_pieces(now, node, 0, budget));
                continue;
            }
            if ours.id.generation < theirs.id.generation {
                continue;
            }
            let sent = if node.owner.version > e.max_version {
                let p = node
                    .owner
                    .delta(now, &fact_to_pb(ours), e.max_version, budget);
                let any = !p.is_empty();
                pieces.extend(p);
                any
            } else {
                if node.owner.version < e.max_version && !d.request {
                    wants.push(pb::DigestEntry {
                        member: Some(fact_to_pb(ours)),
                        max_version: node.owner.version,
                    });
                }
                false
            };
            if !sent && supersedes(ours, &theirs) {
                pieces.push(member_piece(node));
            }
        }
        if !d.request {
            // Members of the range the peer does not know at all.
            for (_, node) in self.table.in_range(d.range_start, d.range_end) {
                if node.is_live() && !mentioned.contains(&node.fact.id.addr) {
                    pieces.extend(owner_pieces(now, node, 0, budget));
                }
            }
            self.send_request(&from.addr, d.range_start, d.range_end, wants);
        }
        for delta in pack(pieces, budget, false) {
            self.send(&from.addr, Body::Delta(delta));
        }
    }

    fn send_request(&mut self, to: &NodeAddr, start: u64, end: u64, wants: Vec<pb::DigestEntry>) {
        let budget = self.body_budget();
        let mut cur: Vec<pb::DigestEntry> = Vec::new();
        let mut size = 0;
        let mut chunks = Vec::new();
        for w in wants {
            let s = w.encoded_len() + 3;
            if size + s > budget && !cur.is_empty() {
                chunks.push(std::mem::take(&mut cur));
                size = 0;
            }
            size += s;
            cur.push(w);
        }
        if !cur.is_empty() {
            chunks.push(cur);
        }
        for entries in chunks {
            let req = pb::SyncDigest {
                range_start: start,
                range_end: end,
                entries,
                request: true,
            };
            self.send(to, Body::SyncDigest(req));
        }
    }

    pub(super) fn on_delta(&mut self, now: Instant, from: &NodeId, d: pb::Delta) {
        for od in d.owners {
            let Some(m) = od.member.clone() else { continue };
            let Some(fact) = fact_from_pb(&m) else {
                continue;
            };
            let own = fact.id.addr == from.addr;
            self.apply_update(now, m, Some(&from.addr), own);
            let addr = fact.id.addr.clone();
            if addr == self.id.addr {
                continue;
            }
            if self
                .table
                .get(&addr)
                .is_none_or(|n| n.fact.id.generation != fact.id.generation)
            {
                continue;
            }
            let Some(applied) = self.table.update(&addr, |n| n.owner.apply(now, &od)) else {
                continue;
            };
            if applied.news {
                self.learned(now);
            }
            for kv in od.keys.iter().filter(|kv| kv.ttl_ms > 0 && !kv.deleted) {
                if let Some(t) = now.checked_add(Duration::from_millis(kv.ttl_ms)) {
                    self.next_expiry = Some(self.next_expiry.map_or(t, |e| e.min(t)));
                }
            }
            for c in applied.keys {
                self.key_event(addr.clone(), c);
            }
            if applied.meta
                && let Some(n) = self.table.get(&addr)
            {
                let info = self.info(now, n);
                self.events.push_back(Event::Updated(info));
            }
            if d.push && applied.news && self.cfg.eager_push {
                let peers =
                    self.table
                        .random_live(&mut self.rng, self.cfg.fanout, &[&from.addr, &addr]);
                for p in peers {
                    let fwd = pb::Delta {
                        owners: vec![od.clone()],
                        push: true,
                    };
                    self.send(&p, Body::Delta(fwd));
                }
            }
        }
    }

    /// Pushes this member's state newer than `since` to `fanout` peers at
    /// once (eager push of a fresh write).
    pub(super) fn push_own(&mut self, now: Instant, since: u64) {
        if !self.cfg.eager_push {
            return;
        }
        let budget = self.body_budget();
        let me = self.table.me();
        let pieces = me.owner.delta(now, &fact_to_pb(&me.fact), since, budget);
        let deltas = pack(pieces, budget, true);
        let peers = self.table.random_live(&mut self.rng, self.cfg.fanout, &[]);
        for p in &peers {
            for d in &deltas {
                self.send(p, Body::Delta(d.clone()));
            }
        }
    }
}

/// Merges the two closest adjacent runs of buckets (inclusive `(first,
/// last)`, sorted, disjoint) until at most `max` remain.
fn merge_closest_runs(runs: &mut Vec<(usize, usize)>, max: usize) {
    while runs.len() > max.max(1) {
        let Some(i) = (0..runs.len() - 1).min_by_key(|&i| runs[i + 1].0 - runs[i].1) else {
            return;
        };
        runs[i].1 = runs[i + 1].1;
        runs.remove(i + 1);
    }
}

/// Everything of one owner from version `since` on; at least the member
/// fact.
fn owner_pieces(now: Instant, node: &Node, since: u64, budget: usize) -> Vec<pb::OwnerDelta> {
    let p = node
        .owner
        .delta(now, &fact_to_pb(&node.fact), since, budget);
    if p.is_empty() {
        vec![member_piece(node)]
    } else {
        p
    }
}

/// An owner delta that carries only the member fact.
fn member_piece(node: &Node) -> pb::OwnerDelta {
    pb::OwnerDelta {
        member: Some(fact_to_pb(&node.fact)),
        from_version: node.owner.version,
        to_version: node.owner.version,
        reset: false,
        meta: None,
        keys: Vec::new(),
    }
}

/// Packs owner deltas into messages of at most `budget` bytes of body.
fn pack(pieces: Vec<pb::OwnerDelta>, budget: usize, push: bool) -> Vec<pb::Delta> {
    let mut out = Vec::new();
    let mut cur = pb::Delta {
        owners: Vec::new(),
        push,
    };
    let mut size = 0;
    for p in pieces {
        let s = p.encoded_len() + 4;
        if size + s > budget && !cur.owners.is_empty() {
            out.push(std::mem::replace(
                &mut cur,
                pb::Delta {
                    owners: Vec::new(),
                    push,
                },
            ));
            size = 0;
        }
        size += s;
        cur.owners.push(p);
    }
    if !cur.owners.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::merge_closest_runs;

    #[test]
    fn closest_runs_merge_first() {
        let mut runs = vec![(0, 1), (3, 3), (10, 12), (14, 14), (100, 100), (200, 201)];
        merge_closest_runs(&mut runs, 4);
        assert_eq!(runs, vec![(0, 3), (10, 14), (100, 100), (200, 201)]);
        merge_closest_runs(&mut runs, 1);
        assert_eq!(runs, vec![(0, 201)]);
        let mut few = vec![(5, 6)];
        merge_closest_runs(&mut few, 4);
        assert_eq!(few, vec![(5, 6)]);
    }
}
