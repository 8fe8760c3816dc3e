//! The dissemination queue: items piggybacked on outgoing messages, each
//! sent a limited number of times, least-sent first (SWIM section 4.4,
//! memberlist's `TransmitLimitedQueue`). A newer item with the same key
//! replaces the older one.
//!
//! Items are kept in a map by key and in an ordered index by
//! `(times sent, newest first)`, so taking `k` items for a message costs
//! O(k log n), not a sort of the whole queue: after a mass join the queue
//! can hold thousands of items and every message takes from it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Position of an item in the send order: least sent first, then newest.
type Rank = (u32, Reverse<u64>);

struct Item<V> {
    value: V,
    size: usize,
    sent: u32,
    /// Insertion order, to prefer newer items among equally sent ones.
    seq: u64,
}

impl<V> Item<V> {
    fn rank(&self) -> Rank {
        (self.sent, Reverse(self.seq))
    }
}

/// After this many items in a row that do not fit the remaining budget,
/// `take` stops looking (the rest are rarely smaller).
const MAX_MISSES: usize = 16;

pub(crate) struct TransmitQueue<K, V> {
    items: HashMap<K, Item<V>>,
    order: BTreeMap<Rank, K>,
    seq: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> TransmitQueue<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            items: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Queues `value` (encoded size `size` bytes), replacing any item with
    /// the same key.
    pub(crate) fn push(&mut self, key: K, value: V, size: usize) {
        self.seq += 1;
        let item = Item {
            value,
            size,
            sent: 0,
            seq: self.seq,
        };
        self.order.insert(item.rank(), key.clone());
        if let Some(old) = self.items.insert(key, item) {
            self.order.remove(&old.rank());
        }
    }

    /// Takes items for one message: `first` (if queued) then least-sent,
    /// newest first, while they fit in `budget` bytes. Each taken item counts
    /// one transmission and is dropped after `limit` of them.
    pub(crate) fn take(&mut self, budget: usize, limit: u32, first: Option<&K>) -> Vec<V> {
        if self.items.is_empty() || budget == 0 {
            return Vec::new();
        }
        let mut picked: Vec<K> = Vec::new();
        let mut used = 0;
        if let Some(k) = first
            && let Some(it) = self.items.get(k)
            && it.size <= budget
        {
            used = it.size;
            picked.push(k.clone());
        }
        let mut misses = 0;
        for k in self.order.values() {
            if misses >= MAX_MISSES || used >= budget {
                break;
            }
            if Some(k) == first {
                continue;
            }
            let size = self.items.get(k).map_or(usize::MAX, |it| it.size);
            if size > budget - used {
                misses += 1;
                continue;
            }
            misses = 0;
            used += size;
            picked.push(k.clone());
        }
        let mut out = Vec::with_capacity(picked.len());
        for k in picked {
            let Some(it) = self.items.get_mut(&k) else {
                continue;
            };
            self.order.remove(&it.rank());
            it.sent += 1;
            out.push(it.value.clone());
            if it.sent >= limit {
                self.items.remove(&k);
            } else {
                self.order.insert(it.rank(), k);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_sent_first_and_limited() {
        let mut q: TransmitQueue<&str, &str> = TransmitQueue::new();
        q.push("a", "a1", 10);
        q.push("b", "b1", 10);
        assert_eq!(q.take(10, 2, None), vec!["b1"], "newest first on a tie");
        assert_eq!(q.take(10, 2, None), vec!["a1"], "then the least sent");
        assert_eq!(q.take(100, 2, None).len(), 2);
        assert_eq!(q.len(), 0, "dropped after the limit");
        assert!(q.order.is_empty());
    }

    #[test]
    fn replacement_and_preferred_key() {
        let mut q: TransmitQueue<&str, &str> = TransmitQueue::new();
        q.push("a", "a1", 10);
        q.push("b", "b1", 10);
        q.push("a", "a2", 10);
        assert_eq!(q.len(), 2);
        assert_eq!(q.order.len(), 2, "the replaced item left the order");
        assert_eq!(q.take(10, 5, Some(&"a")), vec!["a2"]);
        assert_eq!(q.take(20, 5, Some(&"a")), vec!["a2", "b1"]);
    }

    #[test]
    fn skips_items_that_do_not_fit() {
        let mut q: TransmitQueue<u32, u32> = TransmitQueue::new();
        q.push(1, 1, 5);
        q.push(2, 2, 50);
        q.push(3, 3, 5);
        // Order: 3 (newest), 2 (too big), 1.
        assert_eq!(q.take(12, 9, None), vec![3, 1]);
        assert_eq!(q.take(56, 9, None), vec![2, 3], "least sent first");
    }

    /// The index and the map agree after any sequence of pushes and takes,
    /// and the queue takes exactly what a full sort would.
    #[test]
    fn matches_a_full_sort() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut q: TransmitQueue<u32, u32> = TransmitQueue::new();
        let mut model: HashMap<u32, (u32, u32, u64)> = HashMap::new(); // key -> (value, sent, seq)
        let mut seq = 0;
        for step in 0..2000u32 {
            if rng.random_bool(0.6) {
                let k = rng.random_range(0..40);
                seq += 1;
                q.push(k, step, 10);
                model.insert(k, (step, 0, seq));
            } else {
                let budget = rng.random_range(0..60);
                let got = q.take(budget, 3, None);
                let mut want: Vec<(u32, u32, u64)> =
                    model.iter().map(|(k, (_, s, q))| (*k, *s, *q)).collect();
                want.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
                let want: Vec<u32> = want.iter().take(budget / 10).map(|w| w.0).collect();
                let want_values: Vec<u32> = want.iter().map(|k| model[k].0).collect();
                assert_eq!(got, want_values, "step {step}");
                for k in want {
                    let e = model.get_mut(&k).unwrap();
                    e.1 += 1;
                    if e.1 >= 3 {
                        model.remove(&k);
                    }
                }
            }
            assert_eq!(q.items.len(), q.order.len());
            assert_eq!(q.len(), model.len());
        }
    }
}
