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

use super::{Machine, Rumor, Timer};
use crate::config::ENVELOPE_OVERHEAD;
use crate::digest::{
    differing_ranges, member_piece, owner_pieces, pack, range_digests, request_digests,
};
use crate::event::Event;
use crate::id::{NodeAddr, NodeId};
use crate::members::{BUCKETS, Node, fact_from_pb, fact_to_pb, supersedes};

/// Bytes a forwarded push adds around its one `OwnerDelta` (the `Delta`
/// body's field tags and lengths, and its `push` flag).
const PUSH_FRAMING: usize = 16;

/// Up to this many known members, a fingerprint mismatch is answered with
/// the complete digest (cheaper than 256 bucket fingerprints, ~2 KiB).
const SMALL_CLUSTER: usize = 48;

impl Machine {
    pub(super) fn sync_request(&self) -> Body {
        Body::SyncRequest(pb::SyncRequest {
            digest_hash: self.table.root_hash(),
            members: self.table.live_count() as u32,
        })
    }

    /// One tick of the gossip timer (`AntiEntropy::tick` decides what it
    /// sends). An active member sends a round to `fanout` peers; a quiet
    /// one sends one to a single peer once per `push_pull_interval`
    /// (memberlist's periodic push-pull), else nothing. Every
    /// `DEAD_CONTACT_EVERY` ticks a dead member is contacted whatever the
    /// activity (as memberlist gossips to the dead for a while), so the
    /// sides of a healed partition find each other without any change to
    /// start rounds.
    pub(super) fn gossip_round(&mut self, now: Instant) {
        let plan = self.sync.tick(now, self.queue_depth(), self.cfg.fanout);
        let mut targets = self.round_peers(plan.peers, 1);
        if !targets.is_empty() {
            let wait = super::push_pull_wait(&self.cfg, &mut self.rng);
            self.sync.ran_round(now, wait);
        }
        if plan.contact_dead
            && let Some(dead) = self.random_dead()
        {
            targets.push(dead);
        }
        for t in targets {
            let req = self.sync_request();
            self.send(&t, req);
        }
    }

    /// Counts the idle gossip ticks before `now` (`AntiEntropy::skip_idle_ticks`);
    /// called first by every input, and by `handle_timeout` last with
    /// `through_now` (an idle tick due at `now` is counted, as a wake-up
    /// for it would have).
    pub(super) fn skip_idle_ticks(&mut self, now: Instant, through_now: bool) {
        let queued = self.queue_depth();
        let extra = self.timers.get(Timer::ExtraRound).is_some();
        let peers = self.table.live_peers().len() > 0;
        self.sync
            .skip_idle_ticks(now, through_now, queued, extra, peers);
    }

    /// A round to `fanout` peers outside the ticks, for a member that has
    /// just learned something (`Machine::learned`); it counts as no tick.
    pub(super) fn extra_round(&mut self, now: Instant) {
        // Mostly random: an extra round stands in for the pull of the
        // quiet members, which must find the members a push missed.
        let explore = self.cfg.fanout.saturating_sub(1).max(1);
        let targets = self.round_peers(self.cfg.fanout, explore);
        if !targets.is_empty() {
            let wait = super::push_pull_wait(&self.cfg, &mut self.rng);
            self.sync.ran_round(now, wait);
        }
        for t in targets {
            let req = self.sync_request();
            self.send(&t, req);
        }
    }

    /// The `k` peers of an anti-entropy round: `explore` uniformly random
    /// live peers, then live peers of the active view (warm connections;
    /// `active_view.rs`), then more random live peers if the view has too
    /// few. A tick's round explores with one peer (Karp et al.'s push-pull
    /// call, which bounds the spread); an extra round with all but one.
    /// In the simulator at 1,000 members (10 seeds), this opened 36 % fewer
    /// pairs of members than all-random rounds before every member listed
    /// every other, with the same warm-up time and the same tail of a
    /// write's spread; one explored peer in extra rounds too opened 43 %
    /// fewer, but the warm-up took 13 % longer and half the writes reached
    /// their last member after 60-290 ms instead of 6-10 ms.
    pub(super) fn round_peers(&mut self, k: usize, explore: usize) -> Vec<NodeAddr> {
        let mut out = self.table.random_live(&mut self.rng, k.min(explore), &[]);
        if k <= out.len() {
            return out;
        }
        let table = &self.table;
        let warm = self.active.pick(&mut self.rng, k - out.len(), |a| {
            !out.contains(a) && table.get(a).is_some_and(Node::is_live)
        });
        out.extend(warm);
        if out.len() < k {
            let exclude: Vec<&NodeAddr> = out.iter().collect();
            let more = self
                .table
                .random_live(&mut self.rng, k - out.len(), &exclude);
            out.extend(more);
        }
        out
    }

    /// Warm-up, once per probe period (`Config::warm_up_peers`): a quiet
    /// member sends its digest fingerprint to `fanout` alive peers it has
    /// sent no message to, until it has sent `warm_up_peers` of them.
    /// The message is an ordinary anti-entropy request (a peer whose view
    /// differs answers it); what it is for is the connection it opens
    /// ahead of a write's eager push. Not while rounds run: a join, or a
    /// write spreading, has the CPU and the network first.
    pub(super) fn warm_up(&mut self) {
        let left = self.cfg.warm_up_peers.saturating_sub(self.warmed);
        if left == 0 || self.sync.is_active(self.queue_depth()) {
            return;
        }
        let k = self.cfg.fanout.min(left);
        let peers: Vec<NodeAddr> = self
            .table
            .uncontacted_alive(&mut self.rng, k)
            .into_iter()
            .cloned()
            .collect();
        self.warmed += peers.len();
        for p in peers {
            let req = self.sync_request();
            self.send(&p, req);
        }
    }

    fn random_dead(&mut self) -> Option<NodeAddr> {
        let pool = &mut self.sync.dead_pool;
        while !pool.is_empty() {
            let i = self.rng.random_range(0..pool.len());
            let a = &pool[i];
            if self
                .table
                .get(a)
                .is_some_and(|n| n.fact.state == crate::MemberState::Dead)
            {
                return Some(a.clone());
            }
            pool.swap_remove(i);
        }
        None
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
        if self.table.len() <= SMALL_CLUSTER || !self.buckets_fit() {
            for d in range_digests(&self.table, 0, u64::MAX, self.body_budget()) {
                self.send(&from.addr, Body::SyncDigest(d));
            }
        } else {
            let hashes = self.table.bucket_hashes().to_vec();
            self.send(&from.addr, Body::SyncBuckets(pb::SyncBuckets { hashes }));
        }
    }

    /// Whether the 256 bucket fingerprints (2 KiB) fit in one message with
    /// the envelope: not at the smallest `max_message_size`s, where the
    /// complete digest, split into ranges, is sent instead (issue #14: no
    /// message may exceed the configured size).
    fn buckets_fit(&self) -> bool {
        const BUCKETS_MESSAGE: usize = BUCKETS * 8 + 8;
        BUCKETS_MESSAGE + ENVELOPE_OVERHEAD <= self.cfg.max_message_size
    }

    /// The peer's bucket fingerprints: send complete digests of the buckets
    /// (merged into runs of adjacent buckets) where the views differ.
    pub(super) fn on_buckets(&mut self, _now: Instant, from: &NodeId, b: pb::SyncBuckets) {
        // The peer found our fingerprint different from its own.
        self.mark_active();
        let budget = self.body_budget();
        let ranges = if b.hashes.len() == BUCKETS {
            differing_ranges(self.table.bucket_hashes(), &b.hashes)
        } else {
            vec![(0, u64::MAX)]
        };
        for (start, end) in ranges {
            for d in range_digests(&self.table, start, end, budget) {
                self.send(&from.addr, Body::SyncDigest(d));
            }
        }
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
            let Some(theirs) = e.member.as_ref().and_then(fact_from_pb) else {
                continue;
            };
            mentioned.insert(theirs.id.addr.clone());
            let own = theirs.id.addr == from.addr;
            self.apply_update(
                now,
                theirs.clone(),
                Some(&from.addr),
                own,
                &Rumor::default(),
            );
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
            for req in request_digests(d.range_start, d.range_end, wants, budget) {
                self.send(&from.addr, Body::SyncDigest(req));
            }
        }
        for delta in pack(pieces, budget, false) {
            self.send(&from.addr, Body::Delta(delta));
        }
    }

    pub(super) fn on_delta(&mut self, now: Instant, from: &NodeId, d: pb::Delta) {
        for od in d.owners {
            let Some(fact) = od.member.as_ref().and_then(fact_from_pb) else {
                continue;
            };
            let own = fact.id.addr == from.addr;
            let addr = fact.id.addr.clone();
            let generation = fact.id.generation;
            self.apply_update(now, fact, Some(&from.addr), own, &Rumor::default());
            if addr == self.id.addr {
                continue;
            }
            if self
                .table
                .get(&addr)
                .is_none_or(|n| n.fact.id.generation != generation)
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
                    self.expire_at(t);
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
            // A record too large for one message is left to anti-entropy,
            // which packs it in bounded pieces.
            if d.push
                && applied.news
                && self.cfg.eager_push
                && od.encoded_len() + PUSH_FRAMING <= self.body_budget()
            {
                let k = self.cfg.eager_push_fanout(self.table.live_count());
                let peers = self
                    .table
                    .random_live(&mut self.rng, k, &[&from.addr, &addr]);
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
        let k = self.cfg.eager_push_fanout(self.table.live_count());
        let peers = self.table.random_live(&mut self.rng, k, &[]);
        for p in &peers {
            for d in &deltas {
                self.send(p, Body::Delta(d.clone()));
            }
        }
    }
}
