//! The SWIM sub-protocol's own state (SWIM section 4, Lifeguard): the
//! round-robin probe order (SWIM 4.3), the probe in flight and its
//! indirect-probe fallback, the relays this member runs for others, the
//! suspicions in an ordered map of deadlines whose timeout shrinks with
//! independent confirmations (Lifeguard 4.2), and the local health
//! multiplier (Lifeguard 4.3).
//!
//! Its inputs are the events of the protocol (a probe period ends, an ack
//! arrives, a ping-req asks for a relay, a member is suspected) and its
//! outputs are returned values ([`AckFor`], the target to suspect, the
//! expired suspicions): it sends nothing and touches no table. The machine
//! (`machine/probe.rs`) turns them into messages and membership changes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use foldhash::quality::RandomState;

use rand::Rng;
use rand::seq::SliceRandom;

use tracing::debug;

use crate::id::{NodeAddr, NodeId};

/// Round-trip-time samples kept until the driver takes them.
const MAX_RTT_SAMPLES: usize = 1024;

/// The probe of the current protocol period.
#[derive(Debug)]
struct Probe {
    target: NodeId,
    seq: u64,
    /// When the first ping went out, to measure the round trip.
    sent_at: Instant,
    /// When to fall back to indirect probes if no ack came.
    indirect_at: Instant,
    indirect_sent: bool,
    acked: bool,
    /// Relays asked to probe indirectly: as many nacks are expected
    /// (Lifeguard IV-A).
    expected_nacks: u32,
    /// Nacks received.
    nacks: u32,
    /// This member's own ping to the target was refused.
    refused: bool,
    /// Relays that reported their ping refused.
    relay_refusals: u32,
}

/// A ping this member sends on behalf of another (an indirect probe).
#[derive(Debug)]
struct Relay {
    requester: NodeAddr,
    their_seq: u64,
    expires: Instant,
    /// The member pinged on the requester's behalf.
    target: NodeAddr,
    /// When to send the requester a nack if no ack came; `None` once
    /// answered (nack sent).
    nack_at: Option<Instant>,
}

/// The refusal fast path's evidence on a probe: this member's own ping to
/// the target was refused and at least one relay's ping too (issue #10,
/// item 4). Returned by [`Swim::confirmed_refusal`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RefusedProbe {
    /// The probe's target.
    pub(crate) target: NodeId,
    /// When the probe's first ping went out: anything heard from the
    /// target since then voids the evidence.
    pub(crate) sent_at: Instant,
}

/// A smoothed round-trip-time estimator (RFC 6298, section 2): `srtt` and
/// `rttvar`, updated from the direct acks of this member's probes.
#[derive(Debug, Default)]
struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimator {
    fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + delta / 4;
                self.srtt = Some(srtt * 7 / 8 + r / 8);
            }
        }
    }

    /// `srtt + 4 * rttvar` (RFC 6298's RTO without its 1 s floor), or
    /// `None` before the first sample.
    fn rto(&self) -> Option<Duration> {
        self.srtt.map(|s| s + self.rttvar * 4)
    }
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

/// What an ack answers (see [`Swim::on_ack`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AckFor {
    /// This member's own probe in flight (first ack: its round trip is
    /// recorded).
    Probe,
    /// A ping this member sent for `requester`'s indirect probe: relay the
    /// ack to it under its own sequence number.
    Relay {
        /// The member that asked for the indirect probe.
        requester: NodeAddr,
        /// The sequence number of the requester's probe.
        their_seq: u64,
    },
    /// Nothing waiting: a late or repeated ack.
    Nothing,
}

/// The state of the SWIM failure detector of one member.
pub(crate) struct Swim {
    order: Vec<NodeAddr>,
    next: usize,
    probe: Option<Probe>,
    relays: HashMap<u64, Relay>,
    suspicions: HashMap<NodeAddr, Suspicion, RandomState>,
    /// The suspicions ordered by deadline (ties by address).
    deadlines: BTreeSet<(Instant, NodeAddr)>,
    seq: u64,
    /// Round-trip times of answered probes not yet taken by the driver.
    rtts: Vec<Duration>,
    /// Lifeguard's local health multiplier, 0 (healthy) to
    /// `max_local_health`.
    local_health: u32,
    max_local_health: u32,
    rtt: RttEstimator,
}

impl Swim {
    /// An empty detector whose local health multiplier is capped at
    /// `max_local_health`.
    pub(crate) fn new(max_local_health: u32) -> Self {
        Self {
            order: Vec::new(),
            next: 0,
            probe: None,
            relays: HashMap::new(),
            suspicions: HashMap::default(),
            deadlines: BTreeSet::new(),
            seq: 0,
            rtts: Vec::new(),
            local_health: 0,
            max_local_health,
            rtt: RttEstimator::default(),
        }
    }

    /// The time to wait for a direct ack before probing indirectly: the
    /// round trips measured so far, as TCP's retransmission timeout (RFC
    /// 6298: smoothed RTT plus four deviations), never below `floor` (the
    /// configured `probe_timeout`) nor above `cap`; `floor` before the
    /// first sample. Lifeguard's stretch applies on top (the caller's).
    pub(crate) fn probe_timeout(&self, floor: Duration, cap: Duration) -> Duration {
        self.rtt.rto().map_or(floor, |rto| rto.min(cap)).max(floor)
    }

    /// Lifeguard's local health multiplier (0 when healthy).
    pub(crate) fn local_health(&self) -> u32 {
        self.local_health
    }

    /// Probe interval and timeout are stretched by this factor
    /// (`local_health + 1`, Lifeguard 4.3).
    pub(crate) fn stretch(&self) -> u32 {
        self.local_health + 1
    }

    /// Lifeguard: the multiplier goes up on a missed probe, a missed nack,
    /// a refutation of this member's own suspicion or a stall of its own
    /// loop...
    pub(crate) fn health_worse(&mut self) {
        self.health_worse_by(1);
    }

    fn health_worse_by(&mut self, delta: u32) {
        let before = self.local_health;
        self.local_health = (self.local_health + delta).min(self.max_local_health);
        if self.local_health > before {
            debug!(
                local_health = self.local_health,
                "local health worse: probing more slowly"
            );
        }
    }

    /// ...and down on an answered probe.
    pub(crate) fn health_better(&mut self) {
        self.local_health = self.local_health.saturating_sub(1);
    }

    /// Starts the probe of `target` at `now`: returns its sequence number.
    /// Without an ack by `now + timeout` the indirect probe falls due
    /// ([`Swim::indirect_due`]).
    pub(crate) fn begin_probe(&mut self, now: Instant, target: NodeId, timeout: Duration) -> u64 {
        let seq = self.next_seq();
        self.probe = Some(Probe {
            target,
            seq,
            sent_at: now,
            indirect_at: now + timeout,
            indirect_sent: false,
            acked: false,
            expected_nacks: 0,
            nacks: 0,
            refused: false,
            relay_refusals: 0,
        });
        seq
    }

    /// Ends the protocol period: forgets the probe in flight, updates the
    /// local health, and returns the target to suspect if it never answered.
    ///
    /// Lifeguard IV-A: an unanswered probe whose relays all sent nacks says
    /// the target is silent but this member's messages get through, so the
    /// local health does not change; each missing nack counts against this
    /// member (its own messages may be what is lost); with no relay asked,
    /// the failed probe itself counts once.
    pub(crate) fn end_period(&mut self) -> Option<NodeId> {
        let p = self.probe.take()?;
        if p.acked {
            self.health_better();
            return None;
        }
        let delta = if p.expected_nacks > 0 {
            p.expected_nacks - p.nacks.min(p.expected_nacks)
        } else {
            1
        };
        self.health_worse_by(delta);
        Some(p.target)
    }

    /// The indirect probe went to `relays` members: as many nacks are
    /// expected.
    pub(crate) fn expect_nacks(&mut self, relays: usize) {
        if let Some(p) = self.probe.as_mut() {
            p.expected_nacks = u32::try_from(relays).unwrap_or(u32::MAX);
        }
    }

    /// A nack for this member's probe `seq`; `refused` if the relay's ping
    /// was refused.
    pub(crate) fn on_nack(&mut self, seq: u64, refused: bool) {
        if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) {
            p.nacks += 1;
            if refused {
                p.relay_refusals += 1;
            }
        }
    }

    /// A message to `addr` was refused. Marks this member's probe of it
    /// refused (returns true if it is the unanswered probe in flight), and
    /// returns the relays run for others towards `addr` that have not
    /// answered yet (`(requester, their_seq)`): each gets a refused nack at
    /// once, and no other.
    pub(crate) fn refused(&mut self, addr: &NodeAddr) -> (bool, Vec<(NodeAddr, u64)>) {
        let mine = match self.probe.as_mut() {
            Some(p) if p.target.addr == *addr && !p.acked => {
                p.refused = true;
                true
            }
            _ => false,
        };
        let nacks = self.take_nacks(|r| r.target == *addr && r.nack_at.is_some());
        (mine, nacks)
    }

    /// If the probe in flight was refused to this member and to at least
    /// one relay, and no ack came: the evidence, taken (it is acted on once).
    pub(crate) fn confirmed_refusal(&mut self) -> Option<RefusedProbe> {
        let p = self.probe.as_mut()?;
        if p.acked || !p.refused || p.relay_refusals == 0 {
            return None;
        }
        p.refused = false;
        Some(RefusedProbe {
            target: p.target.clone(),
            sent_at: p.sent_at,
        })
    }

    /// Makes the indirect probe due at `now` (the target refused the
    /// direct ping: no point waiting for its ack).
    pub(crate) fn hurry_indirect(&mut self, now: Instant) {
        if let Some(p) = self.probe.as_mut().filter(|p| !p.indirect_sent) {
            p.indirect_at = p.indirect_at.min(now);
        }
    }

    /// The relays whose nack fell due at `now` (no ack from the target in
    /// time): `(requester, their_seq)`, each once.
    pub(crate) fn due_nacks(&mut self, now: Instant) -> Vec<(NodeAddr, u64)> {
        self.take_nacks(|r| r.nack_at.is_some_and(|t| t <= now))
    }

    /// The relays that `answer` selects, marked answered (no nack later):
    /// `(requester, their_seq)`, sorted (HashMap order differs between
    /// processes).
    fn take_nacks(&mut self, answer: impl Fn(&Relay) -> bool) -> Vec<(NodeAddr, u64)> {
        let mut nacks: Vec<(NodeAddr, u64)> = self
            .relays
            .values_mut()
            .filter(|r| answer(r))
            .map(|r| {
                r.nack_at = None;
                (r.requester.clone(), r.their_seq)
            })
            .collect();
        nacks.sort();
        nacks
    }

    /// The first nack deadline among the relays.
    pub(crate) fn next_nack_deadline(&self) -> Option<Instant> {
        self.relays.values().filter_map(|r| r.nack_at).min()
    }

    /// This member was not running for `late` (its timers fired that late):
    /// every SWIM deadline is pushed back by it, and to no earlier than
    /// `now + grace`, so that no probe is judged, no relay nacks and no
    /// suspicion expires before the answers that arrived meanwhile are
    /// handled. Returns the probe period's new deadline for `period`.
    pub(crate) fn postpone(
        &mut self,
        now: Instant,
        late: Duration,
        grace: Duration,
        period: Instant,
    ) -> Instant {
        let later = |d: Instant| (d + late).max(now + grace);
        if let Some(p) = self.probe.as_mut().filter(|p| !p.indirect_sent) {
            p.indirect_at = later(p.indirect_at);
        }
        for r in self.relays.values_mut() {
            if let Some(t) = r.nack_at {
                r.nack_at = Some(later(t));
            }
        }
        self.deadlines.clear();
        for (addr, s) in self.suspicions.iter_mut() {
            let to = later(s.deadline());
            s.start += to - s.deadline();
            self.deadlines.insert((s.deadline(), addr.clone()));
        }
        later(period)
    }

    /// When the indirect probe falls due: the probe is unanswered and its
    /// fallback not yet sent.
    pub(crate) fn indirect_deadline(&self) -> Option<Instant> {
        self.probe
            .as_ref()
            .filter(|p| !p.acked && !p.indirect_sent)
            .map(|p| p.indirect_at)
    }

    /// If the indirect probe is due at `now`, marks it sent and returns the
    /// target and the probe's sequence number.
    pub(crate) fn indirect_due(&mut self, now: Instant) -> Option<(NodeId, u64)> {
        let p = self.probe.as_mut()?;
        if p.acked || p.indirect_sent || now < p.indirect_at {
            return None;
        }
        p.indirect_sent = true;
        Some((p.target.clone(), p.seq))
    }

    /// An ack with sequence number `seq` arrived at `now` from `from`.
    pub(crate) fn on_ack(&mut self, now: Instant, seq: u64, from: &NodeAddr) -> AckFor {
        if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) {
            if !p.acked {
                p.acked = true;
                let rtt = now.saturating_duration_since(p.sent_at);
                // Only the target's own answer measures the round trip to
                // it (a relayed ack took four hops). Measured from the
                // first ping even when the second one was answered (Karn's
                // ambiguity): an overestimate only makes the timeout
                // longer, and without it a round trip above the timeout
                // would never be learned.
                let direct = from == &p.target.addr;
                self.record_rtt(rtt);
                if direct {
                    self.rtt.sample(rtt);
                }
            }
            return AckFor::Probe;
        }
        match self.relays.remove(&seq) {
            Some(r) => AckFor::Relay {
                requester: r.requester,
                their_seq: r.their_seq,
            },
            None => AckFor::Nothing,
        }
    }

    /// Runs a relay for `requester`'s probe `their_seq` of `target`: a nack
    /// at `nack_at` if no ack came by then, the relay forgotten at
    /// `expires`; returns the sequence number of the ping to send to the
    /// target.
    pub(crate) fn relay(
        &mut self,
        requester: NodeAddr,
        their_seq: u64,
        target: NodeAddr,
        nack_at: Instant,
        expires: Instant,
    ) -> u64 {
        let seq = self.next_seq();
        self.relays.insert(
            seq,
            Relay {
                requester,
                their_seq,
                expires,
                target,
                nack_at: Some(nack_at),
            },
        );
        seq
    }

    /// Keeps a probe's round-trip time for the driver; past
    /// [`MAX_RTT_SAMPLES`] untaken samples (a machine nobody drains, as in
    /// the simulator) new ones are dropped.
    fn record_rtt(&mut self, rtt: Duration) {
        if self.rtts.len() < MAX_RTT_SAMPLES {
            self.rtts.push(rtt);
        }
    }

    /// Takes the recorded round-trip times, oldest first.
    pub(crate) fn take_rtts(&mut self) -> std::vec::Drain<'_, Duration> {
        self.rtts.drain(..)
    }

    fn next_seq(&mut self) -> u64 {
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

    /// Makes `addr` the next member probed (a message to it was refused, so
    /// its probe will likely be refused too and take the fast path). O(1):
    /// the member whose turn it was moves to the end of the pass; `addr`
    /// keeps its own later turn too.
    pub(crate) fn probe_next(&mut self, addr: &NodeAddr) {
        match self.order.get(self.next) {
            Some(a) if a == addr => {}
            Some(a) => {
                let displaced = a.clone();
                self.order[self.next] = addr.clone();
                self.order.push(displaced);
            }
            None => self.order.push(addr.clone()),
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

    pub(crate) fn expire_relays(&mut self, now: Instant) {
        self.relays.retain(|_, r| r.expires > now);
    }

    /// Starts suspecting `id` at `incarnation`, or, if already suspected at
    /// that incarnation, records `confirmer`'s independent suspicion (which
    /// may bring the deadline closer). True if `confirmer` is a new accuser
    /// of this suspicion that counts (at most K confirmations do).
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
    ) -> bool {
        if let Some(s) = self.suspicions.get_mut(&id.addr)
            && s.generation == id.generation
            && s.incarnation == incarnation
        {
            let before = s.deadline();
            // Past K confirmations the timeout is at its minimum: another
            // accuser changes nothing and is not worth gossiping.
            let counted = s.confirmers.len() <= s.k as usize;
            let new = counted && s.confirmers.insert(confirmer);
            let after = s.deadline();
            if after != before {
                self.deadlines.remove(&(before, id.addr.clone()));
                self.deadlines.insert((after, id.addr.clone()));
            }
            return new;
        }
        self.clear_suspicion(&id.addr);
        let s = Suspicion {
            generation: id.generation,
            incarnation,
            start: now,
            confirmers: HashSet::from([confirmer]),
            min,
            max,
            k,
        };
        self.deadlines.insert((s.deadline(), id.addr.clone()));
        self.suspicions.insert(id.addr.clone(), s);
        true
    }

    /// Whether `addr` is suspected here in `generation`.
    pub(crate) fn is_suspected(&self, addr: &NodeAddr, generation: u64) -> bool {
        self.suspicions
            .get(addr)
            .is_some_and(|s| s.generation == generation)
    }

    /// Ends the suspicion of `addr`, if any.
    pub(crate) fn clear_suspicion(&mut self, addr: &NodeAddr) {
        if let Some(s) = self.suspicions.remove(addr) {
            self.deadlines.remove(&(s.deadline(), addr.clone()));
        }
    }

    /// Removes and returns the suspicions whose timeout has passed, sorted
    /// by address (so that a run is reproducible from its seed).
    pub(crate) fn expired_suspicions(&mut self, now: Instant) -> Vec<(NodeAddr, Suspicion)> {
        let mut due = Vec::new();
        while let Some((t, _)) = self.deadlines.first()
            && *t <= now
        {
            if let Some((_, a)) = self.deadlines.pop_first() {
                due.push(a);
            }
        }
        due.sort();
        due.into_iter()
            .filter_map(|a| self.suspicions.remove(&a).map(|s| (a, s)))
            .collect()
    }

    /// The first deadline among the running suspicions.
    pub(crate) fn next_suspicion_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifeguard_timeout_shrinks_with_confirmations() {
        let t0 = Instant::now();
        let id = NodeId::new(NodeAddr::parse("x:1").unwrap(), 1);
        let mut d = Swim::new(0);
        let (min, max) = (Duration::from_secs(4), Duration::from_secs(24));
        let who = |i: u16| NodeAddr::parse(&format!("c:{i}")).unwrap();
        d.suspect(t0, &id, 0, who(1), min, max, 2);
        let first = d.next_suspicion_deadline().unwrap() - t0;
        assert_eq!(first, max);
        d.suspect(t0, &id, 0, who(2), min, max, 2);
        let second = d.next_suspicion_deadline().unwrap() - t0;
        assert!(second < max && second > min, "{second:?}");
        d.suspect(t0, &id, 0, who(3), min, max, 2);
        assert_eq!(d.next_suspicion_deadline().unwrap() - t0, min);
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
        let mut d = Swim::new(0);
        let mut seen: Vec<NodeAddr> = (0..5)
            .filter_map(|_| d.next_target(&mut rng, live.iter().cloned(), |_| true))
            .collect();
        seen.sort();
        assert_eq!(seen, live);
    }
}
