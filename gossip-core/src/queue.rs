//! The dissemination queue: items piggybacked on outgoing messages, each
//! sent a limited number of times, least-sent first (SWIM section 4.4,
//! memberlist's `TransmitLimitedQueue`). A newer item with the same key
//! replaces the older one.

use std::collections::HashMap;
use std::hash::Hash;

struct Item<V> {
    value: V,
    size: usize,
    sent: u32,
    /// Insertion order, to prefer newer items among equally sent ones.
    seq: u64,
}

pub(crate) struct TransmitQueue<K, V> {
    items: HashMap<K, Item<V>>,
    seq: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> TransmitQueue<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            items: HashMap::new(),
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
        self.items.insert(
            key,
            Item {
                value,
                size,
                sent: 0,
                seq: self.seq,
            },
        );
    }

    /// Takes items for one message: `first` (if queued) then least-sent,
    /// newest first, while they fit in `budget` bytes. Each taken item counts
    /// one transmission and is dropped after `limit` of them.
    pub(crate) fn take(&mut self, budget: usize, limit: u32, first: Option<&K>) -> Vec<V> {
        if self.items.is_empty() || budget == 0 {
            return Vec::new();
        }
        let mut order: Vec<(&K, u32, u64)> = self
            .items
            .iter()
            .map(|(k, it)| (k, it.sent, it.seq))
            .collect();
        order.sort_by(|a, b| {
            let fa = Some(a.0) == first;
            let fb = Some(b.0) == first;
            fb.cmp(&fa).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2))
        });
        let mut picked: Vec<K> = Vec::new();
        let mut used = 0;
        for (k, _, _) in order {
            let size = self.items[k].size;
            if used + size > budget {
                continue;
            }
            used += size;
            picked.push(k.clone());
        }
        let mut out = Vec::with_capacity(picked.len());
        for k in picked {
            let done = match self.items.get_mut(&k) {
                Some(it) => {
                    it.sent += 1;
                    out.push(it.value.clone());
                    it.sent >= limit
                }
                None => false,
            };
            if done {
                self.items.remove(&k);
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
    }

    #[test]
    fn replacement_and_preferred_key() {
        let mut q: TransmitQueue<&str, &str> = TransmitQueue::new();
        q.push("a", "a1", 10);
        q.push("b", "b1", 10);
        q.push("a", "a2", 10);
        assert_eq!(q.len(), 2);
        assert_eq!(q.take(10, 5, Some(&"a")), vec!["a2"]);
    }
}
