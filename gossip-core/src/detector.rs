//! Failure-detector state (SWIM section 4): the round-robin probe order
//! (SWIM 4.3), the probe in flight, indirect-probe relays, and suspicion
//! timers whose timeout shrinks with independent confirmations (Lifeguard
//! section 4.2). The machine decides; this module only keeps the books.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use foldhash::quality::RandomState;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::id::{NodeAddr, NodeId};

/// Round-trip-time samples kept until the driver takes them.
const MAX_RTT_SAMPLES: usize = 1024;

/// The probe of the current protocol period.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) target: NodeId,
    pub(crate) seq: u64,
    /// When the first ping went out, to measure the round trip.
    pub(crate) sent_at: Instant,
    /// When to fall back to indirect probes if no ack came.
    pub(crate) indirect_at: Instant,
    pub(crate) indirect_sent: bool,
    pub(crate) acked: bool,
}

/// A ping this member sends on behalf of another (an indirect probe).
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) requester: NodeAddr,
    pub(crate) their_seq: u64,
    pub(crate) expires: Instant,
}

/// A running suspicion of one member.
#[derive(Debug)]
pub(crate) struct Suspicion {
    pub(crate) generation: u64,
    pub(crate) incarnation: u64,
    start: Instant,
    confirmers: HashSet<NodeAddr>,
    min: Duration,
    max: Duration,
    /// Confirmations expected before the timeout reaches `min`.
    k: u32,
}

impl Suspicion {
    /// Lifeguard: `max - (max - min) * ln(c + 1) / ln(k + 1)`, at least `min`,
    /// where `c` is the number of independent confirmations so far.
    pub(crate) fn timeout(&self) -> Duration {
        let c = self.confirmers.len().saturating_sub(1) as f64;
        if self.k == 0 || c >= f64::from(self.k) {
            return self.min;
        }
        let frac = (c + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
        let span = self.max.saturating_sub(self.min);
        self.max.saturating_sub(span.mul_f64(frac)).max(self.min)
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.start + self.timeout()
    }
}

pub(crate) struct Detector {
    order: Vec<NodeAddr>,
    next: usize,
    pub(crate) probe: Option<Probe>,
    relays: HashMap<u64, Relay>,
    suspicions: HashMap<NodeAddr, Suspicion, RandomState>,
    seq: u64,
    /// Round-trip times of answered probes not yet taken by the driver.
    rtts: Vec<Duration>,
}

impl Detector {
    pub(crate) fn new() -> Self {
        Self {
            order: Vec::new(),
            next: 0,
            probe: None,
            relays: HashMap::new(),
            suspicions: HashMap::default(),
            seq: 0,
            rtts: Vec::new(),
        }
    }

    /// Keeps a probe's round-trip time for the driver; past
    /// [`MAX_RTT_SAMPLES`] untaken samples (a machine nobody drains, as in
    /// the simulator) new ones are dropped.
    pub(crate) fn record_rtt(&mut self, rtt: Duration) {
        if self.rtts.len() < MAX_RTT_SAMPLES {
            self.rtts.push(rtt);
        }
    }

    /// Takes the recorded round-trip times, oldest first.
    pub(crate) fn take_rtts(&mut self) -> std::vec::Drain<'_, Duration> {
        self.rtts.drain(..)
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The next member to probe: round-robin over a shuffled list of the
    /// live peers, reshuffled after each pass (SWIM 4.3), skipping members
    /// that stopped being live.
    pub(crate) fn next_target(
        &mut self,
        rng: &mut impl Rng,
        live: impl Iterator<Item = NodeAddr>,
        is_live: impl Fn(&NodeAddr) -> bool,
    ) -> Option<NodeAddr> {
        let mut live = Some(live);
        loop {
            while self.next < self.order.len() {
                let a = &self.order[self.next];
                self.next += 1;
                if is_live(a) {
                    return Some(a.clone());
                }
            }
            let live = live.take()?;
            self.order.clear();
            self.order.extend(live);
            self.order.shuffle(rng);
            self.next = 0;
        }
    }

    /// Inserts a new member at a random place in the rest of the current
    /// pass, so it is probed within one pass (SWIM 4.3). O(1): the member
    /// it lands on moves to the end of the pass (an insertion in the middle
    /// would cost O(n) per join, O(n^2) for a mass join).
    pub(crate) fn add_member(&mut self, rng: &mut impl Rng, addr: NodeAddr) {
        let lo = self.next.min(self.order.len());
        crate::members::reserve_one(&mut self.order);
        self.order.push(addr);
        let last = self.order.len() - 1;
        let at = rng.random_range(lo..=last);
        self.order.swap(at, last);
    }

    pub(crate) fn add_relay(&mut self, seq: u64, relay: Relay) {
        self.relays.insert(seq, relay);
    }

    pub(crate) fn take_relay(&mut self, seq: u64) -> Option<Relay> {
        self.relays.remove(&seq)
    }

    pub(crate) fn expire_relays(&mut self, now: Instant) {
        self.relays.retain(|_, r| r.expires > now);
    }

    /// Starts suspecting `id` at `incarnation`, or, if already suspected at
    /// that incarnation, records `confirmer`'s independent suspicion.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn suspect(
        &mut self,
        now: Instant,
        id: &NodeId,
        incarnation: u64,
        confirmer: NodeAddr,
        min: Duration,
        max: Duration,
        k: u32,
    ) {
        match self.suspicions.get_mut(&id.addr) {
            Some(s) if s.generation == id.generation && s.incarnation == incarnation => {
                s.confirmers.insert(confirmer);
            }
            _ => {
                self.suspicions.insert(
                    id.addr.clone(),
                    Suspicion {
                        generation: id.generation,
                        incarnation,
                        start: now,
                        confirmers: HashSet::from([confirmer]),
                        min,
                        max,
                        k,
                    },
                );
            }
        }
    }

    pub(crate) fn clear_suspicion(&mut self, addr: &NodeAddr) {
        self.suspicions.remove(addr);
    }

    /// Removes and returns the suspicions whose timeout has passed.
    pub(crate) fn expired_suspicions(&mut self, now: Instant) -> Vec<(NodeAddr, Suspicion)> {
        let mut due: Vec<NodeAddr> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.deadline() <= now)
            .map(|(a, _)| a.clone())
            .collect();
        // HashMap order differs between processes: sort, so that a run is
        // reproducible from its seed.
        due.sort();
        due.into_iter()
            .filter_map(|a| self.suspicions.remove(&a).map(|s| (a, s)))
            .collect()
    }

    /// Earliest deadline among probes and suspicions.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let probe = self
            .probe
            .as_ref()
            .filter(|p| !p.acked && !p.indirect_sent)
            .map(|p| p.indirect_at);
        let susp = self.suspicions.values().map(Suspicion::deadline).min();
        match (probe, susp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifeguard_timeout_shrinks_with_confirmations() {
        let t0 = Instant::now();
        let id = NodeId::new(NodeAddr::parse("x:1").unwrap(), 1);
        let mut d = Detector::new();
        let (min, max) = (Duration::from_secs(4), Duration::from_secs(24));
        let who = |i: u16| NodeAddr::parse(&format!("c:{i}")).unwrap();
        d.suspect(t0, &id, 0, who(1), min, max, 2);
        let first = d.next_deadline().unwrap() - t0;
        assert_eq!(first, max);
        d.suspect(t0, &id, 0, who(2), min, max, 2);
        let second = d.next_deadline().unwrap() - t0;
        assert!(second < max && second > min, "{second:?}");
        d.suspect(t0, &id, 0, who(3), min, max, 2);
        assert_eq!(d.next_deadline().unwrap() - t0, min);
        assert!(
            d.expired_suspicions(t0 + min - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(d.expired_suspicions(t0 + min).len(), 1);
    }

    #[test]
    fn round_robin_visits_every_live_member_once_per_pass() {
        let mut rng = rand::rng();
        let live: Vec<NodeAddr> = (1..=5)
            .map(|i| NodeAddr::parse(&format!("n:{i}")).unwrap())
            .collect();
        let mut d = Detector::new();
        let mut seen: Vec<NodeAddr> = (0..5)
            .filter_map(|_| d.next_target(&mut rng, live.iter().cloned(), |_| true))
            .collect();
        seen.sort();
        assert_eq!(seen, live);
    }
}
