//! The broadcast deduplication cache, bounded by count and by age
//! (requirement 4): a broadcast id seen within `max_age`, among the last
//! `capacity` ids, is not delivered again.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use uuid::Uuid;

pub(crate) struct Dedup {
    seen: HashSet<Uuid>,
    order: VecDeque<(Instant, Uuid)>,
    capacity: usize,
    max_age: Duration,
}

impl Dedup {
    pub(crate) fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            max_age,
        }
    }

    /// Records `id`; true if it was not seen before.
    pub(crate) fn insert(&mut self, now: Instant, id: Uuid) -> bool {
        self.expire(now);
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back((now, id));
        while self.order.len() > self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// True if `id` was seen within the maximum age (and is still among the
    /// last `capacity` ids).
    pub(crate) fn contains(&mut self, now: Instant, id: Uuid) -> bool {
        self.expire(now);
        self.seen.contains(&id)
    }

    /// Forgets ids older than the maximum age.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some((t, id)) = self.order.front().copied() {
            if now.saturating_duration_since(t) < self.max_age {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_age() {
        let t0 = Instant::now();
        let mut d = Dedup::new(2, Duration::from_secs(10));
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert!(d.insert(t0, a));
        assert!(!d.insert(t0, a));
        assert!(d.insert(t0, b));
        assert!(d.insert(t0, c));
        assert_eq!(d.len(), 2, "oldest evicted past capacity");
        assert!(d.insert(t0, a), "evicted id is new again");
        d.expire(t0 + Duration::from_secs(11));
        assert_eq!(d.len(), 0, "aged out");
    }
}
