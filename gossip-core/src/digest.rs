//! Digests and deltas of the anti-entropy exchange, built from the
//! membership table: pure functions, no state and no I/O (the machine's
//! `sync.rs` decides when to send them).
//!
//! Every builder splits its output so that no message body exceeds the
//! given budget (`Machine::body_budget`).

use std::time::Instant;

use gossip_proto::v1 as pb;
use prost::Message;

use crate::members::{BUCKETS, Node, Table, bucket_range, fact_to_pb};

/// At most this many ring ranges are sent as digests after comparing bucket
/// fingerprints: the closest differing runs of buckets are merged. Each
/// range costs a digest message and its answers, so views that differ in
/// many scattered members (churn in a cluster just above the small-cluster
/// size) would otherwise cost dozens of messages per round instead of a few.
pub(crate) const MAX_DIGEST_RANGES: usize = 4;

/// The ring ranges `(start, end)` (inclusive) whose buckets differ between
/// `ours` and `theirs` (both [`BUCKETS`] long), adjacent buckets merged into
/// runs and the closest runs merged until at most [`MAX_DIGEST_RANGES`]
/// remain.
pub(crate) fn differing_ranges(ours: &[u64], theirs: &[u64]) -> Vec<(u64, u64)> {
    let differ = (0..BUCKETS).filter(|i| ours.get(*i) != theirs.get(*i));
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for i in differ {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => runs.push((i, i)),
        }
    }
    merge_closest_runs(&mut runs, MAX_DIGEST_RANGES);
    runs.into_iter()
        .map(|(first, last)| (bucket_range(first).0, bucket_range(last).1))
        .collect()
}

/// This member's complete digest of the ring range `[start, end]`, split
/// into sub-ranges that each fit in `budget` bytes of body.
pub(crate) fn range_digests(
    table: &Table,
    start: u64,
    end: u64,
    budget: usize,
) -> Vec<pb::SyncDigest> {
    let entries = table.in_range(start, end).map(|(pos, n)| {
        (
            pos,
            pb::DigestEntry {
                member: Some(fact_to_pb(&n.fact)),
                max_version: n.owner.version,
            },
        )
    });
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

/// Request digests for the range `[start, end]` naming the `wants` entries
/// (what this member lacks), split to fit in `budget` bytes each.
pub(crate) fn request_digests(
    start: u64,
    end: u64,
    wants: Vec<pb::DigestEntry>,
    budget: usize,
) -> Vec<pb::SyncDigest> {
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
    chunks
        .into_iter()
        .map(|entries| pb::SyncDigest {
            range_start: start,
            range_end: end,
            entries,
            request: true,
        })
        .collect()
}

/// Merges the two closest adjacent runs of buckets (inclusive `(first,
/// last)`, sorted, disjoint) until at most `max` remain.
pub(crate) fn merge_closest_runs(runs: &mut Vec<(usize, usize)>, max: usize) {
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
pub(crate) fn owner_pieces(
    now: Instant,
    node: &Node,
    since: u64,
    budget: usize,
) -> Vec<pb::OwnerDelta> {
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
pub(crate) fn member_piece(node: &Node) -> pb::OwnerDelta {
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
pub(crate) fn pack(pieces: Vec<pb::OwnerDelta>, budget: usize, push: bool) -> Vec<pb::Delta> {
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
