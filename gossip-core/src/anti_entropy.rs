//! The anti-entropy sub-protocol's own state (scuttlebutt, van Renesse et
//! al. 2008, with memberlist's periodic push-pull): the gossip ticks and
//! their phase, silence at rest (which ticks send a round), the extra round
//! of a member that has just learned something, the background push-pull,
//! and the dead members contacted now and then so that the sides of a
//! healed partition find each other.
//!
//! Its inputs are the clock (`skip_idle_ticks`, `tick`) and what the
//! machine tells it (`mark_active`, `learned`); its outputs are returned
//! values ([`RoundPlan`], the next busy tick). It sends nothing and touches
//! no table: the machine (`machine/sync.rs`) picks the peers and builds the
//! messages, with the pure digest builders of `digest.rs`.

use std::time::{Duration, Instant};

use crate::id::NodeAddr;

/// Every this many gossip ticks, one dead member is also contacted.
pub(crate) const DEAD_CONTACT_EVERY: u64 = 5;

/// What one gossip tick sends (see [`AntiEntropy::tick`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RoundPlan {
    /// How many random live peers get a `SyncRequest`: `fanout` while
    /// active, 1 for a due background push-pull, else 0.
    pub(crate) peers: usize,
    /// Whether a dead member is contacted too.
    pub(crate) contact_dead: bool,
}

/// The state of the gossip rounds of one member.
pub(crate) struct AntiEntropy {
    /// The gossip tick interval (`Config::gossip_interval`).
    interval: Duration,
    /// When gossip tick number `rounds + 1` falls due. Ticks keep this
    /// phase, but a quiet member is not woken for a tick that would do
    /// nothing: such ticks are counted when time has passed them
    /// (`skip_idle_ticks`), and the machine's gossip timer names the first
    /// tick with work (`next_busy_tick`).
    next_tick: Instant,
    /// When a quiet member runs its next background round (at most every
    /// `push_pull_interval`; any round pushes it back).
    next_push_pull: Instant,
    /// The tick (`rounds`) the last extra round was asked in: at most one
    /// per tick.
    extra_round_tick: u64,
    /// Gossip ticks so far (one per `gossip_interval`, whether a round is
    /// sent or not).
    rounds: u64,
    /// Silence at rest: rounds run while `rounds <= active_until` (or the
    /// piggyback queues hold something).
    active_until: u64,
    /// Members declared dead, contacted one at a time every
    /// [`DEAD_CONTACT_EVERY`] ticks (entries no longer dead are dropped
    /// lazily).
    pub(crate) dead_pool: Vec<NodeAddr>,
}

impl AntiEntropy {
    /// Ticks every `interval` from `first_tick`; the first background
    /// push-pull at `first_push_pull`.
    pub(crate) fn new(interval: Duration, first_tick: Instant, first_push_pull: Instant) -> Self {
        Self {
            interval,
            next_tick: first_tick,
            next_push_pull: first_push_pull,
            extra_round_tick: u64::MAX,
            rounds: 0,
            active_until: 0,
            dead_pool: Vec::new(),
        }
    }

    /// Gossip ticks so far.
    #[cfg(test)]
    pub(crate) fn rounds(&self) -> u64 {
        self.rounds
    }

    /// When the next gossip tick falls due (its phase), idle or not.
    #[cfg(test)]
    pub(crate) fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// Rounds run for the next `rounds` ticks (silence at rest).
    pub(crate) fn mark_active(&mut self, rounds: u64) {
        self.active_until = self.active_until.max(self.rounds.saturating_add(rounds));
    }

    /// Whether an extra round may be asked now: none was asked in the
    /// current tick. Records the ask.
    pub(crate) fn ask_extra_round(&mut self) -> bool {
        if self.extra_round_tick == self.rounds {
            return false;
        }
        self.extra_round_tick = self.rounds;
        true
    }

    /// Whether the next tick sends a round to `fanout` peers, with
    /// `queued` piggyback entries waiting.
    pub(crate) fn is_active(&self, queued: usize) -> bool {
        self.rounds < self.active_until || queued > 0
    }

    /// A round to peers ran at `now` (a tick's or an extra one): the
    /// background push-pull is pushed back by `wait`.
    pub(crate) fn ran_round(&mut self, now: Instant, wait: Duration) {
        self.next_push_pull = now + wait;
    }

    /// The gossip tick due at `now`: counts it, moves the phase to `now +
    /// interval`, and says what it sends (see `machine/sync.rs`
    /// `gossip_round`).
    pub(crate) fn tick(&mut self, now: Instant, queued: usize, fanout: usize) -> RoundPlan {
        self.rounds += 1;
        self.next_tick = now + self.interval;
        // The current tick is counted already: active through
        // `active_until` inclusive.
        let peers = if self.rounds <= self.active_until || queued > 0 {
            fanout
        } else if now >= self.next_push_pull {
            1
        } else {
            0
        };
        RoundPlan {
            peers,
            contact_dead: self.rounds.is_multiple_of(DEAD_CONTACT_EVERY)
                && !self.dead_pool.is_empty(),
        }
    }

    /// How many gossip ticks, from the next one, would do nothing at all
    /// before one that has work: 0 while the member is active or an extra
    /// round is pending; at rest, the ticks before the first one at or after
    /// `next_push_pull` (if there is a live peer to send it to) and, while
    /// dead members are known, before the next tick that contacts one. A
    /// tick counted here would send nothing and draw nothing from the RNG,
    /// so skipping it changes no output. `None`: no tick has work.
    fn idle_ticks(&self, queued: usize, extra_pending: bool, has_peers: bool) -> Option<u64> {
        if self.is_active(queued) || extra_pending {
            return Some(0);
        }
        let interval = self.interval.as_nanos().max(1);
        let push_pull = has_peers.then(|| {
            let wait = self
                .next_push_pull
                .saturating_duration_since(self.next_tick);
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

    /// When the next gossip tick that has work falls due (see
    /// `idle_ticks`); the machine's gossip timer is armed there.
    pub(crate) fn next_busy_tick(
        &self,
        queued: usize,
        extra_pending: bool,
        has_peers: bool,
    ) -> Option<Instant> {
        let ticks = u32::try_from(self.idle_ticks(queued, extra_pending, has_peers)?).ok()?;
        let wait = self.interval.checked_mul(ticks)?;
        self.next_tick.checked_add(wait)
    }

    /// Counts the gossip ticks that fell due before `now` without a wake-up
    /// because they had nothing to do, keeping the ticks' phase. Called
    /// first by every input, so the tick count and phase are what they
    /// would be had the member been woken for every tick. A tick due
    /// exactly at `now` is left to the gossip timer, after the input,
    /// unless `through_now` (called last by `handle_timeout`, when no
    /// timer is left to make that tick busy).
    pub(crate) fn skip_idle_ticks(
        &mut self,
        now: Instant,
        through_now: bool,
        queued: usize,
        extra_pending: bool,
        has_peers: bool,
    ) {
        if now < self.next_tick || (now == self.next_tick && !through_now) {
            return;
        }
        let interval = self.interval.as_nanos().max(1);
        let elapsed = (now - self.next_tick).as_nanos();
        let due = if through_now {
            elapsed / interval + 1
        } else {
            elapsed.div_ceil(interval)
        };
        let idle = self
            .idle_ticks(queued, extra_pending, has_peers)
            .map_or(u128::MAX, u128::from);
        let skip = due.min(idle);
        if skip == 0 {
            return;
        }
        self.rounds += u64::try_from(skip).unwrap_or(u64::MAX);
        // `skip` ticks end before `now`, so this cannot overflow.
        let ahead = u64::try_from(skip * interval).unwrap_or(u64::MAX);
        self.next_tick += Duration::from_nanos(ahead);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_quiet_member_skips_idle_ticks_but_keeps_their_phase() {
        let t0 = Instant::now();
        let mut ae = AntiEntropy::new(200 * MS, t0 + 200 * MS, t0 + 1000 * MS);
        assert_eq!(ae.next_busy_tick(0, false, true), Some(t0 + 1000 * MS));
        assert_eq!(
            ae.next_busy_tick(0, false, false),
            None,
            "nobody to talk to"
        );
        ae.skip_idle_ticks(t0 + 800 * MS, false, 0, false, true);
        assert_eq!(ae.rounds(), 3, "ticks at 200..600 ms counted, 800 left");
        ae.skip_idle_ticks(t0 + 800 * MS, true, 0, false, true);
        assert_eq!(ae.rounds(), 4, "ticks at 200..800 ms counted");
        ae.skip_idle_ticks(t0 + 900 * MS, false, 0, false, true);
        assert_eq!(ae.rounds(), 4);
        assert_eq!(ae.next_tick(), t0 + 1000 * MS);
        let plan = ae.tick(t0 + 1000 * MS, 0, 3);
        assert_eq!(plan.peers, 1, "the background push-pull");
        assert!(!plan.contact_dead);
    }

    #[test]
    fn an_active_member_rounds_to_fanout_peers_then_goes_quiet() {
        let t0 = Instant::now();
        let mut ae = AntiEntropy::new(200 * MS, t0, t0 + 30_000 * MS);
        ae.mark_active(2);
        assert!(ae.is_active(0));
        assert_eq!(ae.tick(t0, 0, 3).peers, 3);
        assert_eq!(ae.tick(t0 + 200 * MS, 0, 3).peers, 3);
        assert_eq!(ae.tick(t0 + 400 * MS, 0, 3).peers, 0);
        assert_eq!(ae.tick(t0 + 600 * MS, 5, 3).peers, 3, "queued updates");
        assert!(ae.ask_extra_round());
        assert!(!ae.ask_extra_round(), "one extra round per tick");
    }
}
