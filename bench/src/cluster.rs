//! What every system under test provides, and the sightings book that both
//! systems' event hooks write into.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::BenchError;

/// Traffic a cluster has sent so far, summed over its members (crashed ones
/// included: their counters stop).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    /// Application payload bytes handed to the transport: encoded protobuf
    /// envelopes for ours, serialized chitchat datagrams for chitchat.
    pub(crate) bytes: u64,
    /// Messages (our envelopes, chitchat datagrams).
    pub(crate) messages: u64,
}

/// Settings shared by both systems in one run.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Gossip round period (ours: anti-entropy round; chitchat: gossip tick).
    pub(crate) gossip_interval: Duration,
    /// Peers per round (ours: `Config::fanout`; chitchat: fixed at 3).
    pub(crate) fanout: usize,
    /// Ours: probe interval as a multiple of the gossip interval.
    pub(crate) probe_factor: u32,
    /// Ours: `Config::suspicion_mult`.
    pub(crate) suspicion_mult: u32,
    /// Ours: `Config::active_view`.
    pub(crate) active_view: usize,
    /// Ours: `Config::warm_up_peers`.
    pub(crate) warm_up_peers: usize,
    /// Chitchat: phi-accrual threshold.
    pub(crate) phi_threshold: f64,
}

/// A running cluster of one system, `len()` members seeded with member 0,
/// all in this process on loopback.
pub(crate) trait Cluster {
    /// Short name of the system, as in the table (`ours-grpc`, `chitchat`).
    fn name(&self) -> &str;

    /// Number of members started (crashed ones included).
    fn len(&self) -> usize;

    /// How many live members (itself included) member `i` lists.
    async fn live_count(&self, i: usize) -> usize;

    /// Traffic sent so far.
    fn traffic(&self) -> Traffic;

    /// What the members sent so far, by message kind, and the outgoing
    /// connections they hold, in words (logged when the cluster has
    /// joined); empty where the system does not count them.
    fn traffic_note(&self) -> String {
        String::new()
    }

    /// Sets `key` to `value` on member `i`. Every member records the key's
    /// arrival in the sightings book under `key:<key>`.
    async fn set_key(&self, i: usize, key: &str, value: &str) -> Result<(), BenchError>;

    /// The sightings tag under which members record that member `i` was
    /// dropped (`dead:<addr>`).
    fn death_tag(&self, i: usize) -> String;

    /// Stops member `i` without a word: no leave is announced, its socket
    /// closes.
    async fn crash(&mut self, i: usize);

    /// Stops every member still running.
    async fn shutdown(self);
}

/// The first moment each member saw each thing (`key:<key>`,
/// `dead:<addr>`), written by the systems' event hooks as events happen, so
/// times do not depend on how often the runner polls.
#[derive(Debug, Default)]
pub(crate) struct Sightings {
    seen: Mutex<HashMap<String, HashMap<usize, Instant>>>,
}

impl Sightings {
    fn book(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<usize, Instant>>> {
        // A panicking hook cannot leave the map half-written; keep going.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `member` saw `tag` at `at`, unless it already had.
    pub(crate) fn record(&self, tag: String, member: usize, at: Instant) {
        self.book()
            .entry(tag)
            .or_default()
            .entry(member)
            .or_insert(at);
    }

    /// Forgets every sighting of `tag`.
    pub(crate) fn clear(&self, tag: &str) {
        self.book().remove(tag);
    }

    /// The latest sighting of `tag` among `members`, once all of them saw it.
    pub(crate) fn all_seen(&self, tag: &str, members: &[usize]) -> Option<Instant> {
        let book = self.book();
        let seen = book.get(tag)?;
        members
            .iter()
            .map(|m| seen.get(m).copied())
            .try_fold(None::<Instant>, |acc, t| {
                let t = t?;
                Some(Some(acc.map_or(t, |a| a.max(t))))
            })
            .flatten()
    }

    /// How many (tag, member) sightings of tags starting with `prefix` there
    /// are, leaving out the tags in `except`.
    pub(crate) fn count_prefix(&self, prefix: &str, except: &[String]) -> usize {
        self.book()
            .iter()
            .filter(|(tag, _)| tag.starts_with(prefix) && !except.contains(tag))
            .map(|(_, who)| who.len())
            .sum()
    }

    /// Waits until every member in `members` has seen `tag`; returns the
    /// latest sighting.
    ///
    /// # Errors
    /// [`BenchError::Timeout`] after `limit`.
    pub(crate) async fn wait_all(
        &self,
        tag: &str,
        members: &[usize],
        limit: Duration,
    ) -> Result<Instant, BenchError> {
        let start = Instant::now();
        loop {
            if let Some(t) = self.all_seen(tag, members) {
                return Ok(t);
            }
            if start.elapsed() > limit {
                let missing = members.len() - self.seen_by(tag, members);
                return Err(BenchError::Timeout {
                    what: format!("{tag} ({missing} of {} members missing)", members.len()),
                    limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// When the first half, nine in ten, and all of `members` had seen
    /// `tag`, in ms after `t0` (`None` for a share not reached).
    pub(crate) fn progress_ms(
        &self,
        tag: &str,
        members: &[usize],
        t0: Instant,
    ) -> [Option<f64>; 3] {
        let book = self.book();
        let mut times: Vec<f64> = book.get(tag).map_or_else(Vec::new, |s| {
            members
                .iter()
                .filter_map(|m| s.get(m))
                .map(|t| t.saturating_duration_since(t0).as_secs_f64() * 1e3)
                .collect()
        });
        times.sort_by(f64::total_cmp);
        let at = |share: f64| {
            let k = ((members.len() as f64 * share).ceil() as usize).max(1);
            times.get(k - 1).copied()
        };
        [at(0.5), at(0.9), at(1.0)]
    }

    fn seen_by(&self, tag: &str, members: &[usize]) -> usize {
        let book = self.book();
        book.get(tag)
            .map_or(0, |s| members.iter().filter(|m| s.contains_key(m)).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Member i saw the tag i + 1 ms after the write: half of 10 had it
    /// at 5 ms, nine in ten at 9, all at 10; a member that never saw it
    /// leaves "all" unreached.
    #[test]
    fn progress_gives_the_time_of_half_ninety_percent_and_all() {
        let s = Sightings::default();
        let t0 = Instant::now();
        for i in 0..10 {
            s.record("key:a".into(), i, t0 + Duration::from_millis(i as u64 + 1));
        }
        let members: Vec<usize> = (0..10).collect();
        assert_eq!(
            s.progress_ms("key:a", &members, t0),
            [Some(5.0), Some(9.0), Some(10.0)]
        );
        let eleven: Vec<usize> = (0..11).collect();
        assert_eq!(
            s.progress_ms("key:a", &eleven, t0),
            [Some(6.0), Some(10.0), None]
        );
        assert_eq!(s.progress_ms("key:b", &members, t0), [None, None, None]);
    }

    #[test]
    fn all_seen_waits_for_every_member_and_keeps_first_sightings() {
        let s = Sightings::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        let t2 = t0 + Duration::from_millis(9);
        s.record("key:a".into(), 1, t1);
        assert_eq!(s.all_seen("key:a", &[1, 2]), None);
        s.record("key:a".into(), 2, t2);
        s.record("key:a".into(), 1, t2 + Duration::from_secs(1));
        assert_eq!(s.all_seen("key:a", &[1, 2]), Some(t2));
        assert_eq!(s.all_seen("key:b", &[1]), None);
        s.record("dead:x".into(), 3, t0);
        assert_eq!(s.count_prefix("dead:", &[]), 1);
        assert_eq!(s.count_prefix("dead:", &["dead:x".into()]), 0);
        s.clear("key:a");
        assert_eq!(s.all_seen("key:a", &[1, 2]), None);
    }
}
