//! What can wake a [`Machine`](super::Machine): one [`Timer`] enum and one
//! table of deadlines (after quinn-proto's `connection/timer.rs`).
//!
//! `Machine::poll_timeout` is the earliest entry of the table;
//! `Machine::handle_timeout` runs the due timers in the order of
//! [`Timer::ALL`]. Each timer is armed by the rule that owns it: the probe
//! period and the indirect-probe fallback by SWIM, the suspicion timer at
//! the first deadline of the ordered map of suspicions, the gossip tick at
//! the next tick *with work* (a quiet member is not woken for idle ticks),
//! and so on; `Machine::rearm` refreshes the derived ones after every input.

use std::time::Instant;

/// One kind of deadline of the machine.
///
/// The order of the variants is the order in which due timers run within
/// one `handle_timeout`: SWIM first (a verdict may make this member learn
/// something), the gossip tick and the extra round last (they send what
/// the others taught this member).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// No ack within the probe timeout: ask `indirect_probes` members to
    /// probe the target, and ping it once more (SWIM 4.1).
    IndirectProbe,
    /// End of a protocol period: judge the last probe, start the next
    /// (SWIM 4.1, 4.3); stretched by Lifeguard's local health (4.3).
    ProbePeriod,
    /// A relay of an indirect probe got no ack in time: it sends the
    /// requester a nack (Lifeguard IV-A).
    RelayNack,
    /// The first deadline among the running suspicions (SWIM 4.2,
    /// Lifeguard 4.2).
    Suspicion,
    /// A seed that has not answered is due for another attempt.
    SeedRetry,
    /// A key with a TTL expires.
    KeyExpiry,
    /// Tombstones past `tombstone_ttl`, expired relays and dedup entries are
    /// collected.
    Gc,
    /// The next gossip tick that has work (anti-entropy round, background
    /// push-pull, contact of a dead member).
    GossipTick,
    /// A round at once, outside the ticks, of a member that has just
    /// learned something.
    ExtraRound,
}

/// Number of [`Timer`] variants.
const COUNT: usize = 9;

impl Timer {
    /// Every timer, in the order `handle_timeout` runs them.
    pub(crate) const ALL: [Timer; COUNT] = [
        Timer::IndirectProbe,
        Timer::ProbePeriod,
        Timer::RelayNack,
        Timer::Suspicion,
        Timer::SeedRetry,
        Timer::KeyExpiry,
        Timer::Gc,
        Timer::GossipTick,
        Timer::ExtraRound,
    ];
}

/// The deadline of every [`Timer`]; `None` when it is not armed.
#[derive(Debug, Default, Clone)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; COUNT],
}

impl TimerTable {
    /// Arms `timer` at `at` (replacing any earlier deadline).
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    /// Arms `timer` at `at`, or disarms it for `None`.
    pub(crate) fn set_opt(&mut self, timer: Timer, at: Option<Instant>) {
        self.at[timer as usize] = at;
    }

    /// Disarms `timer`.
    pub(crate) fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// The deadline of `timer`, if armed.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    /// Whether `timer` is armed at or before `now`.
    pub(crate) fn is_due(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// Disarms `timer` and says whether it was due at `now`.
    pub(crate) fn take_due(&mut self, timer: Timer, now: Instant) -> bool {
        let due = self.is_due(timer, now);
        if due {
            self.stop(timer);
        }
        due
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_table_yields_the_earliest_deadline_and_takes_due_timers_once() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Gc, t0 + Duration::from_secs(2));
        t.set(Timer::ProbePeriod, t0 + Duration::from_secs(1));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert!(!t.take_due(Timer::ProbePeriod, t0));
        assert!(t.take_due(Timer::ProbePeriod, t0 + Duration::from_secs(1)));
        assert!(!t.take_due(Timer::ProbePeriod, t0 + Duration::from_secs(5)));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(2)));
        t.set_opt(Timer::Gc, None);
        assert_eq!(t.next(), None);
        for (i, timer) in Timer::ALL.into_iter().enumerate() {
            assert_eq!(timer as usize, i, "ALL is in declaration order");
        }
    }
}
