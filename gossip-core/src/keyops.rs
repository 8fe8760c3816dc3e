//! Cluster-wide keyring changes (issue #12): one command changes the
//! keyring of every live member and says which did not answer, as Serf's
//! `keys -install/-use/-remove` do.
//!
//! The member an operator asks applies the operation to its own keyring,
//! then sends a `KeyringRequest` straight to each live member it knows (not
//! by gossip: an answer per member is wanted), sealed like every envelope,
//! so only a holder of an installed key can ask. Each member applies it and
//! answers with a `KeyringAnswer`: the outcome and its key ids after it.
//! Operations are idempotent, so the asker resends to the members that have
//! not answered, every `resend`, until all have or `timeout` passes; the
//! report lists every member with its answer, or none.
//!
//! This is the driver's business, not the [`Machine`](crate::Machine)'s:
//! the keyring is not protocol state, and its requests need no timer of the
//! protocol. Requests and answers never reach the machine.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gossip_proto::v1 as pb;
use gossip_proto::v1::Envelope;
use gossip_proto::v1::envelope::Body;
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{debug, info};

use crate::id::{NodeAddr, NodeId};
use crate::keyring::{KeyId, KeyringError, KeyringOp};
use crate::machine::Transmit;
use crate::seal::Sealer;

/// What one member made of a keyring operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum KeyringOutcome {
    /// Done; its keys after it, the primary first.
    Done {
        /// Ids of the member's installed keys, the primary first.
        keys: Vec<KeyId>,
    },
    /// The member refused (e.g. `use` of a key it has not installed); its
    /// keyring is unchanged.
    Failed {
        /// Why, in the member's words.
        error: String,
    },
    /// No answer within the timeout: the member may be down, slow, or
    /// unable to open the request (it lacks the asker's primary key).
    NoAnswer,
}

/// The outcome of a keyring operation on every live member
/// ([`Member::change_keyring`](crate::Member::change_keyring)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyringReport {
    /// Every member asked, the asking member included, by address.
    pub members: BTreeMap<NodeAddr, KeyringOutcome>,
}

impl KeyringReport {
    /// True if every member carried the operation out.
    pub fn is_complete(&self) -> bool {
        self.members
            .values()
            .all(|o| matches!(o, KeyringOutcome::Done { .. }))
    }

    /// The members that did not answer.
    pub fn no_answer(&self) -> Vec<&NodeAddr> {
        self.members
            .iter()
            .filter(|(_, o)| matches!(o, KeyringOutcome::NoAnswer))
            .map(|(a, _)| a)
            .collect()
    }

    /// For each key id, how many members that answered have it installed,
    /// and how many use it as the primary: `(installed, primary)`.
    pub fn key_counts(&self) -> BTreeMap<KeyId, (usize, usize)> {
        let mut counts = BTreeMap::<KeyId, (usize, usize)>::new();
        for outcome in self.members.values() {
            if let KeyringOutcome::Done { keys } = outcome {
                for (i, id) in keys.iter().enumerate() {
                    let c = counts.entry(*id).or_default();
                    c.0 += 1;
                    c.1 += usize::from(i == 0);
                }
            }
        }
        counts
    }
}

/// Whom a keyring operation goes to, and how long to wait for them.
pub(crate) struct Ask {
    /// The live members besides this one.
    pub(crate) peers: Vec<NodeAddr>,
    /// Requests go again to the members that have not answered after this.
    pub(crate) resend: Duration,
    /// The longest wait for answers.
    pub(crate) timeout: Duration,
}

/// One operation this member asked for, waiting for answers.
struct Pending {
    outcomes: BTreeMap<NodeAddr, KeyringOutcome>,
    done: Arc<Notify>,
}

/// The driver's side of keyring changes: the member's keyring (if it
/// encrypts), the operations it waits on, and the envelopes to send that
/// the machine did not produce (requests and answers).
#[derive(Default)]
pub(crate) struct KeyService {
    pub(crate) sealer: Option<Sealer>,
    pending: Mutex<HashMap<u64, Pending>>,
    outgoing: Mutex<Vec<Transmit>>,
    /// Whether `outgoing` may hold something: the driver's loop reads it
    /// after every input, and takes no lock while it is false.
    has_outgoing: AtomicBool,
}

fn lock<M>(m: &Mutex<M>) -> MutexGuard<'_, M> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the driver handles `env` here rather than the machine.
pub(crate) fn is_keyring(env: &Envelope) -> bool {
    matches!(
        env.body,
        Some(Body::KeyringRequest(_) | Body::KeyringAnswer(_))
    )
}

impl KeyService {
    pub(crate) fn new(sealer: Option<Sealer>) -> Self {
        Self {
            sealer,
            ..Self::default()
        }
    }

    /// Envelopes to send now (answers, requests); the driver's loop sends
    /// them with the machine's.
    pub(crate) fn take_outgoing(&self) -> Vec<Transmit> {
        if !self.has_outgoing.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *lock(&self.outgoing))
    }

    /// Queues envelopes for [`KeyService::take_outgoing`].
    fn push_outgoing(&self, transmits: impl IntoIterator<Item = Transmit>) {
        lock(&self.outgoing).extend(transmits);
        self.has_outgoing.store(true, Ordering::Release);
    }

    /// Applies `op` to this member's own keyring.
    fn apply(&self, op: &KeyringOp) -> Result<Vec<KeyId>, KeyringError> {
        self.sealer
            .as_ref()
            .ok_or(KeyringError::NotEnabled)?
            .apply(op)
    }

    /// A keyring request or answer received from a peer (`is_keyring`).
    /// `local` and `cluster_id` address the answer.
    pub(crate) fn on_message(&self, local: &NodeId, cluster_id: &str, env: Envelope) {
        let Some(from) = env.from.as_ref().and_then(|f| NodeId::from_pb(f).ok()) else {
            return;
        };
        match env.body {
            Some(Body::KeyringRequest(req)) => {
                let outcome = KeyringOp::from_pb(&req).and_then(|op| {
                    let ids = self.apply(&op)?;
                    info!(from = %from.addr, ?op, "keyring changed at a peer's request");
                    Ok(ids)
                });
                let answer = match outcome {
                    Ok(ids) => pb::KeyringAnswer {
                        id: req.id,
                        error: String::new(),
                        key_ids: ids
                            .iter()
                            .map(|i| bytes::Bytes::copy_from_slice(i.as_bytes()))
                            .collect(),
                    },
                    Err(e) => {
                        debug!(from = %from.addr, error = %e, "keyring request refused");
                        pb::KeyringAnswer {
                            id: req.id,
                            error: e.to_string(),
                            key_ids: Vec::new(),
                        }
                    }
                };
                self.push_outgoing([Transmit {
                    to: from.addr,
                    msg: envelope(local, cluster_id, Body::KeyringAnswer(answer)),
                }]);
            }
            Some(Body::KeyringAnswer(answer)) => {
                let mut pending = lock(&self.pending);
                let Some(p) = pending.get_mut(&answer.id) else {
                    return;
                };
                // Only members that were asked, and their first answer.
                let Some(slot) = p.outcomes.get_mut(&from.addr) else {
                    return;
                };
                if *slot != KeyringOutcome::NoAnswer {
                    return;
                }
                *slot = if answer.error.is_empty() {
                    KeyringOutcome::Done {
                        keys: answer
                            .key_ids
                            .iter()
                            .filter_map(|b| KeyId::from_bytes(b))
                            .collect(),
                    }
                } else {
                    KeyringOutcome::Failed {
                        error: answer.error.chars().take(512).collect(),
                    }
                };
                if !p.outcomes.values().any(|o| *o == KeyringOutcome::NoAnswer) {
                    p.done.notify_one();
                }
            }
            _ => {}
        }
    }

    /// Applies `op` here and asks every member of `ask.peers` to apply it,
    /// then waits for their answers, resending every `ask.resend` to those
    /// that have not answered, for at most `ask.timeout`. `wake` is the
    /// driver loop's wake-up, so that queued requests go out at once.
    ///
    /// # Errors
    /// [`KeyringError::NotEnabled`] if this member does not encrypt.
    pub(crate) async fn change(
        &self,
        op: KeyringOp,
        local: &NodeId,
        cluster_id: &str,
        ask: Ask,
        wake: &Notify,
    ) -> Result<KeyringReport, KeyringError> {
        let Ask {
            peers,
            resend,
            timeout,
        } = ask;
        let own = match self.apply(&op) {
            Ok(keys) => KeyringOutcome::Done { keys },
            Err(KeyringError::NotEnabled) => return Err(KeyringError::NotEnabled),
            Err(e) => KeyringOutcome::Failed {
                error: e.to_string(),
            },
        };
        info!(
            ?op,
            peers = peers.len(),
            "changing the keyring of every live member"
        );
        let id = rand::random::<u64>();
        let done = Arc::new(Notify::new());
        let mut outcomes: BTreeMap<NodeAddr, KeyringOutcome> = peers
            .iter()
            .map(|a| (a.clone(), KeyringOutcome::NoAnswer))
            .collect();
        outcomes.insert(local.addr.clone(), own);
        lock(&self.pending).insert(
            id,
            Pending {
                outcomes,
                done: done.clone(),
            },
        );
        let request = Body::KeyringRequest(op.to_pb(id));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let waiting: Vec<NodeAddr> = match lock(&self.pending).get(&id) {
                Some(p) => p
                    .outcomes
                    .iter()
                    .filter(|(_, o)| **o == KeyringOutcome::NoAnswer)
                    .map(|(a, _)| a.clone())
                    .collect(),
                None => Vec::new(),
            };
            if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            self.push_outgoing(waiting.into_iter().map(|to| Transmit {
                to,
                msg: envelope(local, cluster_id, request.clone()),
            }));
            wake.notify_one();
            let next = (tokio::time::Instant::now() + resend).min(deadline);
            let _ = tokio::time::timeout_at(next, done.notified()).await;
        }
        let members = lock(&self.pending)
            .remove(&id)
            .map(|p| p.outcomes)
            .unwrap_or_default();
        let report = KeyringReport { members };
        info!(
            complete = report.is_complete(),
            no_answer = report.no_answer().len(),
            "keyring change done"
        );
        Ok(report)
    }
}

/// An envelope from this member that the machine did not produce.
fn envelope(local: &NodeId, cluster_id: &str, body: Body) -> Envelope {
    Envelope {
        cluster_id: cluster_id.to_owned(),
        from: Some(local.to_pb()),
        body: Some(body),
        ..Envelope::default()
    }
}
