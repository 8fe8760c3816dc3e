//! What the soak wrote, and whether every live member shows it.
//!
//! The soak driver records every `PUT /kv/{key}` it sends to a member: an
//! answered write is the key's acknowledged value; a write that failed or
//! timed out may or may not have been applied, so it is kept as a possible
//! value until a later write of the key is answered. A member's entries are
//! forgotten when its life ends (SIGKILL or SIGTERM): what the next life
//! shows of them is its own business (a snapshot may bring back older
//! values), and only writes of the current life are checked. A key with no
//! answered write in the current life is not checked: it may be missing or
//! show what a snapshot brought back.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::procs::AdminKv;

/// The soak's writes of one life of one member: key → what it may show.
#[derive(Clone, Debug, Default)]
struct KeyState {
    /// The value of the last answered write, if any.
    acked: Option<String>,
    /// Values of later writes that got no answer (possibly applied).
    pending: Vec<String>,
}

impl KeyState {
    fn accepts(&self, value: &str) -> bool {
        self.acked.as_deref() == Some(value) || self.pending.iter().any(|p| p == value)
    }
}

/// Writes of the current life of every member, by position.
#[derive(Debug)]
pub(super) struct Ledger {
    lives: Vec<BTreeMap<String, KeyState>>,
}

/// One key that a live member does not show as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The member that shows it (its gossip address).
    pub observer: String,
    /// The key's owner (its gossip address).
    pub owner: String,
    /// The key.
    pub key: String,
    /// What the owner last wrote (acknowledged).
    pub expected: Option<String>,
    /// What the observer shows, `None` if the key is missing.
    pub found: Option<String>,
}

impl Ledger {
    /// An empty ledger for `n` members.
    pub(super) fn new(n: usize) -> Self {
        Self {
            lives: vec![BTreeMap::new(); n],
        }
    }

    /// Records the outcome of a write of `value` to `key` by member `i`.
    pub(super) fn record(&mut self, i: usize, key: &str, value: String, answered: bool) {
        let state = self.lives[i].entry(key.to_owned()).or_default();
        if answered {
            state.acked = Some(value);
            state.pending.clear();
        } else {
            state.pending.push(value);
        }
    }

    /// Member `i`'s life ended: its writes are no longer checked.
    pub(super) fn end_life(&mut self, i: usize) {
        self.lives[i].clear();
    }

    /// Number of keys checked (over all members' current lives).
    pub(super) fn keys(&self) -> usize {
        self.lives
            .iter()
            .flat_map(BTreeMap::values)
            .filter(|s| s.acked.is_some())
            .count()
    }

    /// The keys of `owners[i]` (member `i`'s address) that `view` (the
    /// `GET /kv` of the member at `observer`) does not show with a value
    /// the ledger accepts.
    pub(super) fn mismatches(
        &self,
        owners: &[String],
        observer: &str,
        view: &AdminKv,
    ) -> Vec<Mismatch> {
        let mut out = Vec::new();
        for (owner, keys) in owners.iter().zip(&self.lives) {
            let shown = view.get(owner);
            for (key, state) in keys.iter().filter(|(_, s)| s.acked.is_some()) {
                let found = shown.and_then(|m| m.get(key)).map(|e| match &e.value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                if !found.as_deref().is_some_and(|v| state.accepts(v)) {
                    out.push(Mismatch {
                        observer: observer.to_owned(),
                        owner: owner.clone(),
                        key: key.clone(),
                        expected: state.acked.clone(),
                        found,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::procs::AdminKey;

    fn view(entries: &[(&str, &str, &str)]) -> AdminKv {
        let mut kv = AdminKv::new();
        for (owner, key, value) in entries {
            kv.entry((*owner).to_owned()).or_default().insert(
                (*key).to_owned(),
                AdminKey {
                    value: serde_json::Value::String((*value).to_owned()),
                    version: 1,
                },
            );
        }
        kv
    }

    #[test]
    fn last_answered_value_or_a_later_unanswered_one_is_accepted() {
        let owners = vec!["a:1".to_owned(), "b:1".to_owned()];
        let mut l = Ledger::new(2);
        l.record(0, "k", "1".into(), true);
        l.record(0, "k", "2".into(), true);
        assert!(
            l.mismatches(&owners, "x", &view(&[("a:1", "k", "2")]))
                .is_empty()
        );
        let stale = l.mismatches(&owners, "x", &view(&[("a:1", "k", "1")]));
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].expected.as_deref(), Some("2"));
        assert_eq!(stale[0].found.as_deref(), Some("1"));
        // An unanswered write may have been applied, or not.
        l.record(0, "k", "3".into(), false);
        assert!(
            l.mismatches(&owners, "x", &view(&[("a:1", "k", "3")]))
                .is_empty()
        );
        assert!(
            l.mismatches(&owners, "x", &view(&[("a:1", "k", "2")]))
                .is_empty()
        );
        assert_eq!(
            l.mismatches(&owners, "x", &view(&[("a:1", "k", "1")]))
                .len(),
            1
        );
    }

    #[test]
    fn a_missing_key_is_a_mismatch_until_the_life_ends() {
        let owners = vec!["a:1".to_owned(), "b:1".to_owned()];
        let mut l = Ledger::new(2);
        l.record(1, "k", "1".into(), true);
        assert_eq!(l.keys(), 1);
        let missing = l.mismatches(&owners, "x", &view(&[]));
        assert_eq!(missing.len(), 1);
        assert_eq!(
            (missing[0].owner.as_str(), missing[0].found.as_deref()),
            ("b:1", None)
        );
        l.end_life(1);
        assert_eq!(l.keys(), 0);
        assert!(l.mismatches(&owners, "x", &view(&[])).is_empty());
    }

    #[test]
    fn a_key_never_answered_in_this_life_is_not_checked() {
        let owners = vec!["a:1".to_owned()];
        let mut l = Ledger::new(1);
        l.record(0, "k", "1".into(), false);
        assert_eq!(l.keys(), 0);
        assert!(
            l.mismatches(&owners, "x", &view(&[("a:1", "k", "0")]))
                .is_empty()
        );
        assert!(l.mismatches(&owners, "x", &view(&[])).is_empty());
    }
}
