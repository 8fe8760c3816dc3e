//! The shared-key keyring (issue #12): the 32-byte keys a member seals its
//! envelopes with (the primary) and opens received ones with (every key
//! installed), and the operations an operator rotates them with.
//!
//! Rotation without downtime, as memberlist and Serf do it: install the new
//! key on every member (each still seals with the old one and opens with
//! both), make it the primary everywhere (members that have switched and
//! members that have not still understand each other), then remove the old
//! one. [`Sealer`](crate::Sealer) holds a member's keyring while it runs;
//! [`Member::change_keyring`](crate::Member::change_keyring) applies one
//! operation to every live member.
//!
//! A key never reaches a log line, `/stats` or the dashboard: [`Key`]'s
//! `Debug` shows its [`KeyId`] only, and there is no `Display`; the base64
//! form is written only on request ([`Key::to_base64`]), for `keygen` and
//! the keyring file.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use gossip_proto::v1 as pb;
use rand::TryRngCore;
use serde::Serialize;
use thiserror::Error;
use zeroize::Zeroize;

/// Length of a key in bytes (XChaCha20-Poly1305's key size).
pub const KEY_LEN: usize = 32;
/// Most keys a keyring holds: a receiver tries each one on an envelope that
/// does not open with the first, so the bound caps that work.
pub const MAX_KEYS: usize = 16;
/// Length of a [`KeyId`] in bytes.
pub const KEY_ID_LEN: usize = 8;
/// Associated data of the key-id computation (see [`KeyId`]).
const KEY_ID_AAD: &[u8] = b"gossip.v1 key id";

/// A 32-byte shared key. Its memory is wiped when it is dropped. `Debug`
/// shows only its [`KeyId`], so that a key cannot reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// A new random key from the operating system's random number
    /// generator (`gossip-node keygen`).
    ///
    /// # Errors
    /// [`KeyringError::Random`] if the operating system cannot provide
    /// random bytes.
    pub fn generate() -> Result<Self, KeyringError> {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| KeyringError::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// A key from its 32 bytes.
    ///
    /// # Errors
    /// [`KeyringError::InvalidKey`] if `bytes` is not 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyringError> {
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            KeyringError::InvalidKey(format!(
                "a key is {KEY_LEN} bytes, this one is {}",
                bytes.len()
            ))
        })?;
        Ok(Self(bytes))
    }

    /// A key from its standard base64 form (44 characters, as
    /// [`Key::to_base64`] writes it); surrounding whitespace is ignored.
    ///
    /// # Errors
    /// [`KeyringError::InvalidKey`] if the text is not base64 or does not
    /// decode to 32 bytes. The message never repeats the text.
    pub fn from_base64(text: &str) -> Result<Self, KeyringError> {
        let mut bytes = STANDARD.decode(text.trim()).map_err(|_| {
            KeyringError::InvalidKey(format!(
                "not base64 (a key is {KEY_LEN} bytes in standard base64, e.g. from `gossip-node keygen`)"
            ))
        })?;
        let key = Self::from_bytes(&bytes);
        bytes.zeroize();
        key
    }

    /// The key in standard base64. Written only where a key must be: the
    /// output of `keygen` and the keyring file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The name of this key that can be shown (see [`KeyId`]).
    pub fn id(&self) -> KeyId {
        let cipher = self.cipher();
        let nonce = XNonce::default();
        let mut empty = [0u8; 0];
        let mut id = [0u8; KEY_ID_LEN];
        // Sealing an empty message cannot fail: only lengths over the
        // cipher's limits do.
        if let Ok(tag) = cipher.encrypt_inout_detached(&nonce, KEY_ID_AAD, (&mut empty[..]).into())
        {
            id.copy_from_slice(&tag[..KEY_ID_LEN]);
        }
        KeyId(id)
    }

    /// The AEAD keyed by this key.
    pub(crate) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

/// The name of a key that may be shown, logged and sent: the first 8 bytes
/// of the Poly1305 tag that XChaCha20-Poly1305 computes under the key for
/// an empty message, an all-zero nonce and the associated data
/// `"gossip.v1 key id"` (a key check value: it tells keys apart, and
/// reveals nothing of the key). Shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// A key id from its 8 bytes (as in `KeyringAnswer.key_ids`); `None`
    /// for another length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The id's 8 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What went wrong with a key or a keyring operation. None of them changes
/// the keyring.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum KeyringError {
    /// Text or bytes that are not a key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// `use` or `remove` of a key that is not installed.
    #[error("key {0} is not installed")]
    NotInstalled(KeyId),
    /// `remove` of the primary key: make another key the primary first.
    #[error("key {0} is the primary key: `use` another key before removing it")]
    RemovePrimary(KeyId),
    /// `install` into a keyring that holds [`MAX_KEYS`] keys.
    #[error("the keyring holds {max} keys already; remove one first", max = MAX_KEYS)]
    Full,
    /// A keyring without keys (e.g. an empty keyring file).
    #[error("a keyring needs at least one key")]
    Empty,
    /// The member does not encrypt (no `encrypt_key`), so it has no keyring
    /// to change.
    #[error("this member does not encrypt: it has no keyring (set encrypt_key)")]
    NotEnabled,
    /// A keyring request this member cannot act on (an unknown operation,
    /// a missing key).
    #[error("bad keyring request: {0}")]
    BadRequest(String),
    /// The operating system's random number generator failed.
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
}

/// One operation on a keyring (`gossip-node keys list|install|use|remove`).
#[derive(Clone, PartialEq, Eq)]
pub enum KeyringOp {
    /// Change nothing; report the keys.
    List,
    /// Install a key; a no-op if it is installed.
    Install(Key),
    /// Make an installed key the primary.
    Use(Key),
    /// Remove a key; a no-op if it is absent. Removing the primary fails.
    Remove(Key),
}

impl fmt::Debug for KeyringOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringOp::List => f.write_str("List"),
            KeyringOp::Install(k) => write!(f, "Install({})", k.id()),
            KeyringOp::Use(k) => write!(f, "Use({})", k.id()),
            KeyringOp::Remove(k) => write!(f, "Remove({})", k.id()),
        }
    }
}

impl KeyringOp {
    /// The wire form, with request id `id`.
    pub(crate) fn to_pb(&self, id: u64) -> pb::KeyringRequest {
        let (op, key) = match self {
            KeyringOp::List => (pb::KeyringOp::List, None),
            KeyringOp::Install(k) => (pb::KeyringOp::Install, Some(k)),
            KeyringOp::Use(k) => (pb::KeyringOp::Use, Some(k)),
            KeyringOp::Remove(k) => (pb::KeyringOp::Remove, Some(k)),
        };
        pb::KeyringRequest {
            id,
            op: op as i32,
            key: key.map_or_else(Default::default, |k| {
                bytes::Bytes::copy_from_slice(k.as_bytes())
            }),
        }
    }

    /// The operation a request asks for.
    ///
    /// # Errors
    /// [`KeyringError::BadRequest`] for an unknown operation or a missing
    /// or invalid key.
    pub(crate) fn from_pb(req: &pb::KeyringRequest) -> Result<Self, KeyringError> {
        let key = || Key::from_bytes(&req.key).map_err(|e| KeyringError::BadRequest(e.to_string()));
        match pb::KeyringOp::try_from(req.op) {
            Ok(pb::KeyringOp::List) => Ok(KeyringOp::List),
            Ok(pb::KeyringOp::Install) => Ok(KeyringOp::Install(key()?)),
            Ok(pb::KeyringOp::Use) => Ok(KeyringOp::Use(key()?)),
            Ok(pb::KeyringOp::Remove) => Ok(KeyringOp::Remove(key()?)),
            _ => Err(KeyringError::BadRequest(format!(
                "unknown operation {}",
                req.op
            ))),
        }
    }
}

/// A member's keys: the primary (seals what the member sends) first, then
/// the other installed keys (they open what it receives), at most
/// [`MAX_KEYS`], no key twice.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ids()).finish()
    }
}

impl Keyring {
    /// A keyring holding one key, the primary.
    pub fn new(primary: Key) -> Self {
        Self {
            keys: vec![primary],
        }
    }

    /// A keyring of `keys`, the first one the primary (the order of the
    /// keyring file); a key given twice is kept once.
    ///
    /// # Errors
    /// [`KeyringError::Empty`] without keys, [`KeyringError::Full`] with
    /// more than [`MAX_KEYS`].
    pub fn from_keys(keys: impl IntoIterator<Item = Key>) -> Result<Self, KeyringError> {
        let mut iter = keys.into_iter();
        let mut ring = Self::new(iter.next().ok_or(KeyringError::Empty)?);
        for key in iter {
            ring.install(key)?;
        }
        Ok(ring)
    }

    /// The key that seals what this member sends.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// Every installed key, the primary first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The ids of the installed keys, the primary first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(Key::id).collect()
    }

    /// Installs `key`; `Ok(false)` if it was installed already.
    ///
    /// # Errors
    /// [`KeyringError::Full`] if the keyring holds [`MAX_KEYS`] keys.
    pub fn install(&mut self, key: Key) -> Result<bool, KeyringError> {
        if self.keys.contains(&key) {
            return Ok(false);
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        self.keys.push(key);
        Ok(true)
    }

    /// Makes the installed `key` the primary.
    ///
    /// # Errors
    /// [`KeyringError::NotInstalled`] if it is not installed.
    pub fn use_key(&mut self, key: &Key) -> Result<(), KeyringError> {
        let i = self
            .keys
            .iter()
            .position(|k| k == key)
            .ok_or_else(|| KeyringError::NotInstalled(key.id()))?;
        // The former primary stays installed, second.
        self.keys[..=i].rotate_right(1);
        Ok(())
    }

    /// Removes `key`; `Ok(false)` if it was not installed.
    ///
    /// # Errors
    /// [`KeyringError::RemovePrimary`] if it is the primary key.
    pub fn remove(&mut self, key: &Key) -> Result<bool, KeyringError> {
        if self.primary() == key {
            return Err(KeyringError::RemovePrimary(key.id()));
        }
        let before = self.keys.len();
        self.keys.retain(|k| k != key);
        Ok(self.keys.len() < before)
    }

    /// Applies one operation.
    ///
    /// # Errors
    /// Those of [`Keyring::install`], [`Keyring::use_key`] and
    /// [`Keyring::remove`]; the keyring is then unchanged.
    pub fn apply(&mut self, op: &KeyringOp) -> Result<(), KeyringError> {
        match op {
            KeyringOp::List => Ok(()),
            KeyringOp::Install(k) => self.install(k.clone()).map(drop),
            KeyringOp::Use(k) => self.use_key(k),
            KeyringOp::Remove(k) => self.remove(k).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::from_bytes(&[b; KEY_LEN]).unwrap()
    }

    #[test]
    fn base64_round_trip_and_bad_text() {
        let k = Key::generate().unwrap();
        let text = k.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(Key::from_base64(&format!(" {text}\n")).unwrap(), k);
        for bad in ["", "not base64!", "AAAA", &STANDARD.encode([1u8; 31])] {
            let err = Key::from_base64(bad).unwrap_err();
            assert!(matches!(err, KeyringError::InvalidKey(_)), "{bad:?}: {err}");
            assert!(bad.is_empty() || !err.to_string().contains(bad), "{err}");
        }
        assert_ne!(Key::generate().unwrap(), k, "keys are random");
    }

    #[test]
    fn debug_shows_the_id_not_the_key() {
        let k = key(7);
        let shown = format!(
            "{k:?} {:?} {:?}",
            Keyring::new(k.clone()),
            KeyringOp::Use(k.clone())
        );
        assert!(shown.contains(&k.id().to_string()), "{shown}");
        assert!(!shown.contains(&k.to_base64()), "{shown}");
        assert!(!shown.contains("7, 7"), "{shown}");
        let req = KeyringOp::Install(k.clone()).to_pb(1);
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("\\x07") && !shown.contains("7, 7"),
            "{shown}"
        );
    }

    #[test]
    fn key_ids_tell_keys_apart_and_are_stable() {
        assert_eq!(key(1).id(), key(1).id());
        assert_ne!(key(1).id(), key(2).id());
        assert_eq!(key(1).id().to_string().len(), 2 * KEY_ID_LEN);
        assert_eq!(KeyId::from_bytes(key(1).id().as_bytes()), Some(key(1).id()));
        assert_eq!(KeyId::from_bytes(&[1, 2]), None);
    }

    #[track_caller]
    fn check(ring: &mut Keyring, op: KeyringOp, want: Result<(), KeyringError>, keys: &[u8]) {
        let before = ring.clone();
        assert_eq!(ring.apply(&op), want, "{op:?}");
        if want.is_err() {
            assert_eq!(*ring, before, "a failed {op:?} changed the keyring");
        }
        let ids: Vec<KeyId> = keys.iter().map(|b| key(*b).id()).collect();
        assert_eq!(ring.ids(), ids, "after {op:?}");
    }

    #[test]
    fn rotation_install_use_remove() {
        let mut r = Keyring::new(key(1));
        check(&mut r, KeyringOp::List, Ok(()), &[1]);
        check(&mut r, KeyringOp::Install(key(2)), Ok(()), &[1, 2]);
        check(&mut r, KeyringOp::Install(key(2)), Ok(()), &[1, 2]);
        let not = Err(KeyringError::NotInstalled(key(3).id()));
        check(&mut r, KeyringOp::Use(key(3)), not, &[1, 2]);
        check(&mut r, KeyringOp::Use(key(2)), Ok(()), &[2, 1]);
        check(&mut r, KeyringOp::Use(key(2)), Ok(()), &[2, 1]);
        let primary = Err(KeyringError::RemovePrimary(key(2).id()));
        check(&mut r, KeyringOp::Remove(key(2)), primary, &[2, 1]);
        check(&mut r, KeyringOp::Remove(key(1)), Ok(()), &[2]);
        check(&mut r, KeyringOp::Remove(key(1)), Ok(()), &[2]);
        assert_eq!(r.primary(), &key(2));
    }

    #[test]
    fn use_keeps_the_order_of_the_others() {
        let mut r = Keyring::from_keys([key(1), key(2), key(3)]).unwrap();
        check(&mut r, KeyringOp::Use(key(3)), Ok(()), &[3, 1, 2]);
    }

    #[test]
    fn bounded_and_never_empty() {
        assert_eq!(Keyring::from_keys([]), Err(KeyringError::Empty));
        let r = Keyring::from_keys([key(1), key(1), key(2)]).unwrap();
        assert_eq!(r.keys().len(), 2);
        let mut r = Keyring::from_keys((0..MAX_KEYS as u8).map(key)).unwrap();
        check(
            &mut r,
            KeyringOp::Install(key(200)),
            Err(KeyringError::Full),
            &(0..MAX_KEYS as u8).collect::<Vec<_>>(),
        );
    }

    #[test]
    fn wire_form_round_trips_and_bad_requests_are_refused() {
        for op in [
            KeyringOp::List,
            KeyringOp::Install(key(1)),
            KeyringOp::Use(key(2)),
            KeyringOp::Remove(key(3)),
        ] {
            assert_eq!(KeyringOp::from_pb(&op.to_pb(9)).unwrap(), op);
        }
        let mut req = KeyringOp::Install(key(1)).to_pb(1);
        req.key = bytes::Bytes::from_static(&[1, 2, 3]);
        assert!(matches!(
            KeyringOp::from_pb(&req),
            Err(KeyringError::BadRequest(_))
        ));
        req.op = 99;
        assert!(matches!(
            KeyringOp::from_pb(&req),
            Err(KeyringError::BadRequest(_))
        ));
    }
}
