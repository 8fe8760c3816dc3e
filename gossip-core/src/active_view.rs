//! The active view: the few peers this member exchanged messages with most
//! recently, in either direction (HyParView, Leitão, Pereira and
//! Rodrigues, DSN 2007, §4: gossip over a small set of peers whose
//! connections are open, not over the whole membership).
//!
//! Over a connection-oriented transport (TLS over TCP, QUIC) the first
//! message to a peer pays a handshake that costs far more CPU than the
//! message (issue #10: at 100 members in one process, 3,282 QUIC handshakes
//! before every member listed every other). An anti-entropy round
//! therefore sends one request to a uniformly random live peer, as Karp et
//! al.'s push-pull does (which keeps the O(log n) spread), and the rest of
//! its fanout to live peers of the active view, whose connections are warm.
//! A member at rest contacts one random peer per round and is unchanged.
//!
//! The view is fed by every message sent and received, so it follows the
//! connections a transport keeps (an LRU of recent peers); it holds at most
//! [`crate::Config::active_view`] addresses. Membership is not kept here:
//! the caller filters for live members when it picks.

use std::collections::VecDeque;

use rand::Rng;

use crate::id::NodeAddr;

/// The most recently contacted peers, most recent first.
#[derive(Debug, Default)]
pub(crate) struct ActiveView {
    capacity: usize,
    recent: VecDeque<NodeAddr>,
}

impl ActiveView {
    /// An empty view of at most `capacity` peers (0: always empty).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            recent: VecDeque::with_capacity(capacity),
        }
    }

    /// Records a message to or from `addr`: it becomes the most recent, and
    /// the least recent beyond the capacity is dropped.
    pub(crate) fn touch(&mut self, addr: &NodeAddr) {
        if self.capacity == 0 {
            return;
        }
        if self.recent.front() == Some(addr) {
            return;
        }
        if let Some(at) = self.recent.iter().position(|a| a == addr) {
            if let Some(a) = self.recent.remove(at) {
                self.recent.push_front(a);
            }
            return;
        }
        if self.recent.len() == self.capacity {
            self.recent.pop_back();
        }
        self.recent.push_front(addr.clone());
    }

    /// Up to `k` distinct peers of the view for which `eligible` holds,
    /// chosen uniformly among them.
    pub(crate) fn pick(
        &self,
        rng: &mut impl Rng,
        k: usize,
        eligible: impl Fn(&NodeAddr) -> bool,
    ) -> Vec<NodeAddr> {
        let mut pool: Vec<&NodeAddr> = self.recent.iter().filter(|a| eligible(a)).collect();
        let k = k.min(pool.len());
        for i in 0..k {
            let j = rng.random_range(i..pool.len());
            pool.swap(i, j);
        }
        pool.into_iter().take(k).cloned().collect()
    }

    /// The peers of the view, most recent first.
    #[cfg(test)]
    pub(crate) fn peers(&self) -> Vec<&NodeAddr> {
        self.recent.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn a(port: u16) -> NodeAddr {
        format!("127.0.0.1:{port}").parse().unwrap()
    }

    #[test]
    fn the_most_recent_come_first_and_the_oldest_leave() {
        let mut v = ActiveView::new(3);
        for p in [1, 2, 3, 2, 4] {
            v.touch(&a(p));
        }
        assert_eq!(v.peers(), vec![&a(4), &a(2), &a(3)]);
        let mut off = ActiveView::new(0);
        off.touch(&a(1));
        assert!(off.peers().is_empty());
    }

    #[test]
    fn pick_takes_distinct_eligible_peers_only() {
        let mut v = ActiveView::new(8);
        for p in 1..=6 {
            v.touch(&a(p));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let got = v.pick(&mut rng, 2, |x| *x != a(3));
            assert_eq!(got.len(), 2);
            assert_ne!(got[0], got[1]);
            assert!(!got.contains(&a(3)));
            seen.extend(got);
        }
        // Uniform among the eligible: every one of them is picked.
        assert_eq!(seen.len(), 5);
        assert_eq!(v.pick(&mut rng, 9, |_| true).len(), 6);
        assert!(v.pick(&mut rng, 2, |_| false).is_empty());
    }
}
