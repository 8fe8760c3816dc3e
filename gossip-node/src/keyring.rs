//! A node's keyring (issue #12): where its keys come from, and the keyring
//! file that keeps rotations across restarts.
//!
//! - `encrypt_key` alone: the member encrypts with that key; keyring changes
//!   made while it runs (`gossip-node keys ...`) last until it stops.
//! - `keyring_file`: the keys are kept in that file, a JSON array of base64
//!   keys, the primary first (`["8ZJ...=", "Qx3...="]`), written again
//!   after every change, readable by its owner only. At the first start the
//!   file does not exist yet and is created from `encrypt_key`; once it
//!   exists it wins, and an `encrypt_key` that differs from its primary is
//!   ignored with a warning (the cluster has rotated since the key was put
//!   in the configuration).
//!
//! Keys never reach a log line: errors name files and key ids, never keys.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use gossip_core::{Key, Keyring, KeyringError, Sealer};
use thiserror::Error;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A secret text (a key) from the command line or the config file: `Debug`
/// hides it, so a configuration can be printed.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Where a node's keys come from: the `encrypt_key` and `keyring_file`
/// settings. `Debug` hides the key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyringSettings {
    /// The shared key, standard base64 of 32 bytes (`gossip-node keygen`).
    pub encrypt_key: Option<String>,
    /// The file that keeps the keyring.
    pub keyring_file: Option<PathBuf>,
}

impl std::fmt::Debug for KeyringSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringSettings")
            .field(
                "encrypt_key",
                &self.encrypt_key.as_ref().map(|_| "<hidden>"),
            )
            .field("keyring_file", &self.keyring_file)
            .finish()
    }
}

/// A keyring that cannot be read, written or used.
#[derive(Debug, Error)]
pub enum KeyringFileError {
    /// `encrypt_key` is not a key.
    #[error("invalid `encrypt_key`: {0}")]
    BadKey(#[source] KeyringError),
    /// `keyring_file` is given, does not exist, and there is no
    /// `encrypt_key` to create it from.
    #[error("keyring file {} does not exist: set `encrypt_key` to create it", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The keyring file cannot be read or written.
    #[error("keyring file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The keyring file is not a JSON array of base64 keys, or holds no key
    /// or too many.
    #[error("keyring file {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never a key).
        reason: String,
    },
}

impl KeyringSettings {
    /// Checks `encrypt_key` without touching any file.
    ///
    /// # Errors
    /// [`KeyringFileError::BadKey`].
    pub fn validate(&self) -> Result<(), KeyringFileError> {
        if let Some(text) = &self.encrypt_key {
            Key::from_base64(text).map_err(KeyringFileError::BadKey)?;
        }
        Ok(())
    }

    /// The keyring to start with: `None` if the node does not encrypt. Reads
    /// the keyring file, or creates it from `encrypt_key`.
    ///
    /// # Errors
    /// [`KeyringFileError`]: a bad key, an unreadable or invalid file, a
    /// file that cannot be created, or a missing file and no key.
    pub fn load(&self) -> Result<Option<Keyring>, KeyringFileError> {
        let key = match &self.encrypt_key {
            Some(text) => Some(Key::from_base64(text).map_err(KeyringFileError::BadKey)?),
            None => None,
        };
        let Some(path) = &self.keyring_file else {
            return Ok(key.map(Keyring::new));
        };
        if path.exists() {
            let ring = read_file(path)?;
            if let Some(key) = key
                && ring.primary() != &key
            {
                warn!(file = %path.display(), encrypt_key = %key.id(), primary = %ring.primary().id(),
                    "encrypt_key ignored: the keyring file, rotated since, holds the keys");
            }
            info!(file = %path.display(), keys = ?ring, "keyring loaded");
            return Ok(Some(ring));
        }
        let key = key.ok_or_else(|| KeyringFileError::NoKey { path: path.clone() })?;
        let ring = Keyring::new(key);
        write_file(path, &ring)?;
        info!(file = %path.display(), keys = ?ring, "keyring file created from encrypt_key");
        Ok(Some(ring))
    }
}

/// Reads a keyring file: a JSON array of base64 keys, the primary first.
///
/// # Errors
/// [`KeyringFileError::Io`] or [`KeyringFileError::Invalid`].
pub fn read_file(path: &Path) -> Result<Keyring, KeyringFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyringFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |reason: String| KeyringFileError::Invalid {
        path: path.to_owned(),
        reason,
    };
    // serde_json's messages name positions, not the text of a string.
    let keys: Vec<String> = serde_json::from_str(&text).map_err(|e| {
        invalid(format!(
            "expected a JSON array of base64 keys, the primary first (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let keys = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Key::from_base64(k).map_err(|e| invalid(format!("key {}: {e}", i + 1))))
        .collect::<Result<Vec<Key>, _>>()?;
    Keyring::from_keys(keys).map_err(|e| invalid(e.to_string()))
}

/// Writes `ring` to `path` whole: into a new file beside it, readable by
/// its owner only, then renamed over it, so a crash leaves the old file or
/// the new one.
///
/// # Errors
/// [`KeyringFileError::Io`].
pub fn write_file(path: &Path, ring: &Keyring) -> Result<(), KeyringFileError> {
    let io = |source| KeyringFileError::Io {
        path: path.to_owned(),
        source,
    };
    let keys: Vec<String> = ring.keys().iter().map(Key::to_base64).collect();
    let text = serde_json::to_string_pretty(&keys).map_err(|e| io(std::io::Error::other(e)))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    // A new temporary file is created with mode 0600 on Unix.
    file.write_all(text.as_bytes()).map_err(io)?;
    file.write_all(b"\n").map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Writes the keyring file again after every change of `sealer`'s keyring,
/// until the task is aborted (when the node stops). A failed write is
/// logged (the file name and the error, never a key) and retried at the
/// next change.
pub fn spawn_persister(sealer: Sealer, path: PathBuf) -> JoinHandle<()> {
    let mut changes = sealer.subscribe();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let ring = sealer.keyring();
            match write_file(&path, &ring) {
                Ok(()) => info!(file = %path.display(), keys = ?ring, "keyring file written"),
                Err(e) => warn!(error = %e, "keyring file not written"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use gossip_core::KeyringOp;

    use super::*;

    fn settings(key: Option<&Key>, file: Option<&Path>) -> KeyringSettings {
        KeyringSettings {
            encrypt_key: key.map(Key::to_base64),
            keyring_file: file.map(Path::to_owned),
        }
    }

    #[test]
    fn no_settings_no_keyring_and_a_key_alone_is_the_keyring() {
        assert_eq!(KeyringSettings::default().load().unwrap(), None);
        let k = Key::generate().unwrap();
        assert_eq!(
            settings(Some(&k), None).load().unwrap(),
            Some(Keyring::new(k.clone()))
        );
        let shown = format!("{:?}", settings(Some(&k), None));
        assert!(!shown.contains(&k.to_base64()), "{shown}");
    }

    #[test]
    fn the_file_is_created_from_the_key_then_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (k1, k2) = (Key::generate().unwrap(), Key::generate().unwrap());
        assert!(matches!(
            settings(None, Some(&path)).load(),
            Err(KeyringFileError::NoKey { .. })
        ));
        let ring = settings(Some(&k1), Some(&path)).load().unwrap().unwrap();
        assert_eq!(ring, Keyring::new(k1.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
        }
        // A rotation, then a restart with the old key still configured.
        let rotated = Keyring::from_keys([k2.clone(), k1.clone()]).unwrap();
        write_file(&path, &rotated).unwrap();
        assert_eq!(
            settings(Some(&k1), Some(&path)).load().unwrap(),
            Some(rotated.clone())
        );
        assert_eq!(settings(None, Some(&path)).load().unwrap(), Some(rotated));
    }

    #[test]
    fn bad_keys_and_files_are_clear_errors_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let bad = KeyringSettings {
            encrypt_key: Some("c2VjcmV0".into()),
            keyring_file: None,
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("encrypt_key") && !err.contains("c2VjcmV0"),
            "{err}"
        );
        for (text, want) in [
            ("not json", "JSON array"),
            ("[]", "at least one key"),
            ("[\"c2VjcmV0\"]", "key 1"),
        ] {
            let path = dir.path().join("k.json");
            std::fs::write(&path, text).unwrap();
            let err = settings(None, Some(&path)).load().unwrap_err().to_string();
            assert!(
                err.contains(want) && err.contains("k.json"),
                "{text}: {err}"
            );
            assert!(!err.contains("c2VjcmV0"), "{err}");
        }
    }

    #[tokio::test]
    async fn every_change_is_written_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (k1, k2) = (Key::generate().unwrap(), Key::generate().unwrap());
        let sealer = Sealer::new(Keyring::new(k1.clone()));
        let task = spawn_persister(sealer.clone(), path.clone());
        sealer.apply(&KeyringOp::Install(k2.clone())).unwrap();
        let want = Keyring::from_keys([k1, k2]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while read_file(&path).ok().as_ref() != Some(&want) {
            assert!(std::time::Instant::now() < deadline, "file not written");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        task.abort();
    }
}
