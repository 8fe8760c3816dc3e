//! Sealing and opening envelopes with the keyring (issue #12), in the one
//! place every transport shares: the driver's sending path seals each
//! envelope just before it goes to the transport (`outbox.rs`), and the
//! [`Inbound`](crate::Inbound) gate opens each received one before it
//! checks anything else about it. So gRPC, QUIC and the in-memory transport
//! get it alike, with or without TLS.
//!
//! The wire form is in `proto/gossip.proto` (`Envelope.sealed`): only the
//! cluster id stays in the clear, authenticated as the associated data;
//! the sender's id, the piggyback and the body are inside. The nonce is
//! 24 random bytes per envelope (XChaCha20-Poly1305), drawn from the
//! thread's cryptographic generator (`rand::rng()`, seeded from the
//! operating system), so that members sharing a key never need to agree on
//! nonces and a repeat is as likely as guessing a 192-bit number.

use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use bytes::Bytes;
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{Tag, XNonce};
use gossip_proto::v1::Envelope;
use prost::Message;
use rand::RngCore;
use tokio::sync::watch;

use crate::error::Rejection;
use crate::keyring::{KeyId, Keyring, KeyringError, KeyringOp};

/// Nonce length in bytes (XChaCha20-Poly1305).
const NONCE_LEN: usize = 24;
/// Authentication tag length in bytes (Poly1305).
const TAG_LEN: usize = 16;
/// Most bytes sealing adds to an envelope's encoded length: the `sealed`
/// field's key and length (at most 1 + 5 bytes), the nonce and the tag. The
/// cluster id moves from the inner envelope to the outer one and costs
/// nothing more. Receivers that encrypt accept frames up to
/// `max_message_size` plus this.
pub const SEAL_OVERHEAD: usize = 1 + 5 + NONCE_LEN + TAG_LEN;

/// A running member's keyring, shared by its sending path and its
/// [`Inbound`](crate::Inbound) gate: seals envelopes with the primary key,
/// opens them with any installed key, and applies keyring operations.
/// Cloning shares the keyring. `Debug` shows key ids only.
#[derive(Clone)]
pub struct Sealer {
    ring: Arc<RwLock<Keyring>>,
    /// Bumped after every change, for whoever persists the keyring.
    changed: Arc<watch::Sender<u64>>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("keys", &self.ids()).finish()
    }
}

impl Sealer {
    /// A sealer over `keyring`.
    pub fn new(keyring: Keyring) -> Self {
        Self {
            ring: Arc::new(RwLock::new(keyring)),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Keyring> {
        // A keyring is replaced whole under the lock: never half-changed.
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the keyring (to write the keyring file).
    pub fn keyring(&self) -> Keyring {
        self.read().clone()
    }

    /// The ids of the installed keys, the primary first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.read().ids()
    }

    /// Applies one operation to the keyring and returns the ids of its keys
    /// after it, the primary first.
    ///
    /// # Errors
    /// Those of [`Keyring::apply`]; the keyring is then unchanged.
    pub fn apply(&self, op: &KeyringOp) -> Result<Vec<KeyId>, KeyringError> {
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        let before = ring.clone();
        ring.apply(op)?;
        let ids = ring.ids();
        let changed = *ring != before;
        drop(ring);
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(ids)
    }

    /// A receiver that sees a new value after every change of the keyring.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Seals `env` with the primary key: returns the envelope that goes on
    /// the wire (`cluster_id` and `sealed` only).
    pub fn seal(&self, mut env: Envelope) -> Envelope {
        let cluster_id = std::mem::take(&mut env.cluster_id);
        let mut buf = Vec::with_capacity(NONCE_LEN + env.encoded_len() + TAG_LEN);
        buf.resize(NONCE_LEN, 0);
        rand::rng().fill_bytes(&mut buf[..NONCE_LEN]);
        // Encoding into a Vec cannot fail: it grows as needed.
        let _ = env.encode(&mut buf);
        let nonce = XNonce::try_from(&buf[..NONCE_LEN]).unwrap_or_default();
        let cipher = self.read().primary().cipher();
        let tag = cipher
            .encrypt_inout_detached(
                &nonce,
                cluster_id.as_bytes(),
                (&mut buf[NONCE_LEN..]).into(),
            )
            // Only messages of 256 GiB and more are refused; an envelope is
            // at most `max_message_size`.
            .unwrap_or_default();
        buf.extend_from_slice(&tag);
        Envelope {
            cluster_id,
            sealed: Bytes::from(buf),
            ..Envelope::default()
        }
    }

    /// Opens a sealed envelope with the first installed key that
    /// authenticates it, and returns the envelope inside, with the clear
    /// cluster id.
    ///
    /// # Errors
    /// [`Rejection::Decrypt`] if it is not sealed or no installed key opens
    /// it; [`Rejection::Malformed`] if what it holds is not an envelope.
    pub fn open(&self, env: Envelope) -> Result<Envelope, Rejection> {
        let sealed = &env.sealed;
        if sealed.is_empty() {
            return Err(Rejection::Decrypt(
                "an unsealed envelope: this member encrypts",
            ));
        }
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Rejection::Decrypt(
                "a sealed envelope too short to hold a nonce and a tag",
            ));
        }
        let nonce = XNonce::try_from(&sealed[..NONCE_LEN]).unwrap_or_default();
        let (ciphertext, tag) = sealed[NONCE_LEN..].split_at(sealed.len() - NONCE_LEN - TAG_LEN);
        let tag = Tag::try_from(tag).unwrap_or_default();
        let mut plain = vec![0u8; ciphertext.len()];
        let aad = env.cluster_id.as_bytes();
        let opened = self.read().keys().iter().any(|key| {
            // The tag is checked before anything is written to `plain`.
            InOutBuf::new(ciphertext, &mut plain).is_ok_and(|buf| {
                key.cipher()
                    .decrypt_inout_detached(&nonce, aad, buf, &tag)
                    .is_ok()
            })
        });
        if !opened {
            return Err(Rejection::Decrypt("no installed key opens the envelope"));
        }
        let mut inner = Envelope::decode(plain.as_slice())
            .map_err(|e| Rejection::Malformed(format!("sealed envelope: {e}")))?;
        if !inner.sealed.is_empty() {
            return Err(Rejection::Malformed(
                "a sealed envelope inside a sealed envelope".into(),
            ));
        }
        inner.cluster_id = env.cluster_id;
        Ok(inner)
    }
}

#[cfg(test)]
mod tests {
    use gossip_proto::v1 as pb;

    use super::*;
    use crate::keyring::{KEY_LEN, Key};

    fn key(b: u8) -> Key {
        Key::from_bytes(&[b; KEY_LEN]).unwrap()
    }

    fn env() -> Envelope {
        Envelope {
            cluster_id: "c1".into(),
            from: Some(pb::NodeId {
                addr: "127.0.0.1:1".into(),
                generation: 7,
            }),
            incarnation: 3,
            body: Some(pb::envelope::Body::Ping(pb::Ping {
                seq: 42,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn sealed_envelopes_open_with_the_key_and_hide_everything_but_the_cluster() {
        let s = Sealer::new(Keyring::new(key(1)));
        let plain = env();
        let sealed = s.seal(plain.clone());
        assert_eq!(sealed.cluster_id, "c1");
        assert!(sealed.from.is_none() && sealed.body.is_none() && sealed.incarnation == 0);
        let wire = sealed.encoded_len();
        assert!(wire <= plain.encoded_len() + SEAL_OVERHEAD, "{wire}");
        assert!(
            !sealed.sealed.windows(11).any(|w| w == b"127.0.0.1:1"),
            "the sender's address is not in the clear"
        );
        assert_eq!(s.open(sealed).unwrap(), plain);
    }

    #[test]
    fn nonces_differ_for_every_envelope() {
        let s = Sealer::new(Keyring::new(key(1)));
        let a = s.seal(env());
        let b = s.seal(env());
        assert_ne!(a.sealed[..NONCE_LEN], b.sealed[..NONCE_LEN]);
        assert_ne!(a.sealed, b.sealed);
    }

    #[test]
    fn wrong_key_tampering_and_another_cluster_are_refused() {
        let s = Sealer::new(Keyring::new(key(1)));
        let other = Sealer::new(Keyring::new(key(2)));
        let decrypt = |r: Result<Envelope, Rejection>| matches!(r, Err(Rejection::Decrypt(_)));
        assert!(decrypt(other.open(s.seal(env()))));
        assert!(decrypt(s.open(env())), "unsealed");
        let mut moved = s.seal(env());
        moved.cluster_id = "c2".into();
        assert!(
            decrypt(s.open(moved)),
            "the clear cluster id is authenticated"
        );
        let sealed = s.seal(env());
        for i in [0, NONCE_LEN, sealed.sealed.len() - 1] {
            let mut bytes = sealed.sealed.to_vec();
            bytes[i] ^= 1;
            let mut t = sealed.clone();
            t.sealed = bytes.into();
            assert!(decrypt(s.open(t)), "byte {i} flipped");
        }
        let mut short = sealed.clone();
        short.sealed = sealed.sealed.slice(..NONCE_LEN + TAG_LEN - 1);
        assert!(decrypt(s.open(short)));
    }

    #[test]
    fn every_installed_key_opens_and_the_primary_seals() {
        let old = Sealer::new(Keyring::new(key(1)));
        let both = Sealer::new(Keyring::from_keys([key(1), key(2)]).unwrap());
        let new = Sealer::new(Keyring::new(key(2)));
        assert!(both.open(old.seal(env())).is_ok());
        assert!(both.open(new.seal(env())).is_ok());
        assert!(
            old.open(both.seal(env())).is_ok(),
            "sealed with the primary"
        );
        let mut changes = both.subscribe();
        both.apply(&KeyringOp::Use(key(2))).unwrap();
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert!(new.open(both.seal(env())).is_ok());
        assert!(old.open(both.seal(env())).is_err());
        both.apply(&KeyringOp::List).unwrap();
        assert!(!changes.has_changed().unwrap(), "a no-op is not a change");
        assert!(both.apply(&KeyringOp::Remove(key(2))).is_err());
        assert_eq!(both.ids(), vec![key(2).id(), key(1).id()]);
    }

    #[test]
    fn a_sealed_envelope_inside_is_malformed() {
        let s = Sealer::new(Keyring::new(key(1)));
        let mut inner = s.seal(env());
        inner.cluster_id.clear();
        let outer = s.seal(inner);
        assert!(matches!(s.open(outer), Err(Rejection::Malformed(_))));
    }
}
