//! The service's Ed25519 signing keys: one for checkpoints, one for 2FA proofs, each
//! rotatable. Seeds live in files (0600) in the keys directory, outside the database;
//! `keys.json` lists every public key ever used (rotation adds, nothing is removed), and
//! is what `GET /v1/ledger/keys` serves.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ledger_core::crypto::{public_key_of, Algorithm, KeyPurpose, KeyRecord, KeySet};
use ledger_core::ids::KeyId;
use ledger_core::time::Timestamp;
use zeroize_free::Seed;

/// Why the keys cannot be used. Names files, never shows key material.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No key of a purpose: run `ledger-api keys generate`.
    #[error("no {0} signing key in the keys directory; run `ledger-api keys generate`")]
    Missing(&'static str),
}

mod zeroize_free {
    /// A 32-byte seed that is wiped when dropped and never printed.
    pub struct Seed(pub [u8; 32]);
    impl Drop for Seed {
        fn drop(&mut self) {
            for byte in &mut self.0 {
                *byte = 0;
            }
            std::hint::black_box(&self.0);
        }
    }
}

/// The keys in force.
pub struct Keys {
    /// Every published key.
    pub records: Vec<KeyRecord>,
    /// The same, for verification.
    pub set: KeySet,
    /// The checkpoint key that signs now.
    pub checkpoint: (KeyId, SigningKey),
    /// The 2FA key that signs now.
    pub two_factor: (KeyId, SigningKey),
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("checkpoint", &self.checkpoint.0)
            .field("two_factor", &self.two_factor.0)
            .finish_non_exhaustive()
    }
}

fn purpose_name(purpose: KeyPurpose) -> &'static str {
    match purpose {
        KeyPurpose::Checkpoint => "ckpt",
        KeyPurpose::TwoFactor => "2fa",
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeysError + '_ {
    move |source| KeysError::Io {
        path: path.to_owned(),
        source,
    }
}

fn list_path(dir: &Path) -> PathBuf {
    dir.join("keys.json")
}

fn seed_path(dir: &Path, key_id: &KeyId) -> PathBuf {
    dir.join(format!("{key_id}.seed"))
}

/// Writes `bytes` to a new file readable by the owner only, atomically (temp + rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeysError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

fn read_list(dir: &Path) -> Result<Vec<KeyRecord>, KeysError> {
    let path = list_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            #[derive(serde::Deserialize)]
            struct List {
                keys: Vec<KeyRecord>,
            }
            let list: List = serde_json::from_str(&text).map_err(|e| KeysError::Malformed {
                path: path.clone(),
                message: e.to_string(),
            })?;
            Ok(list.keys)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(&path)(e)),
    }
}

fn write_list(dir: &Path, records: &[KeyRecord]) -> Result<(), KeysError> {
    let text = serde_json::json!({ "keys": records }).to_string();
    write_private(&list_path(dir), text.as_bytes())
}

fn read_seed(dir: &Path, key_id: &KeyId) -> Result<SigningKey, KeysError> {
    let path = seed_path(dir, key_id);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let mut seed = Seed([0u8; 32]);
    hex::decode_to_slice(text.trim(), &mut seed.0).map_err(|_| KeysError::Malformed {
        path: path.clone(),
        message: "expected 64 hex characters".into(),
    })?;
    Ok(SigningKey::from_bytes(&seed.0))
}

/// Adds a fresh key of `purpose` (retiring the current one of that purpose at `now`),
/// and returns its id.
pub fn add_key(dir: &Path, purpose: KeyPurpose, now: Timestamp) -> Result<KeyId, KeysError> {
    crate::util::create_private_dir(dir).map_err(io(dir))?;
    let mut records = read_list(dir)?;
    let n = records.iter().filter(|r| r.purpose == purpose).count() + 1;
    let key_id: KeyId = format!("{}-{n}", purpose_name(purpose))
        .parse()
        .map_err(|e| KeysError::Malformed {
            path: list_path(dir),
            message: format!("key id: {e}"),
        })?;
    for record in records.iter_mut() {
        if record.purpose == purpose && record.not_after.is_none() {
            record.not_after = Some(now);
        }
    }
    let seed = Seed(crate::util::random_bytes::<32>());
    let key = SigningKey::from_bytes(&seed.0);
    write_private(&seed_path(dir, &key_id), hex::encode(seed.0).as_bytes())?;
    records.push(KeyRecord {
        key_id: key_id.clone(),
        purpose,
        algorithm: Algorithm::Ed25519,
        public_key: public_key_of(&key),
        not_before: now,
        not_after: None,
    });
    write_list(dir, &records)?;
    Ok(key_id)
}

/// Creates both keys if the directory has none of a purpose.
pub fn ensure_keys(dir: &Path, now: Timestamp) -> Result<(), KeysError> {
    let records = read_list(dir)?;
    for purpose in [KeyPurpose::Checkpoint, KeyPurpose::TwoFactor] {
        if !records.iter().any(|r| r.purpose == purpose) {
            add_key(dir, purpose, now)?;
        }
    }
    Ok(())
}

/// Loads the keys in force.
pub fn load(dir: &Path) -> Result<Keys, KeysError> {
    let records = read_list(dir)?;
    let mut set = KeySet::new();
    for record in &records {
        set.insert(record.clone())
            .map_err(|e| KeysError::Malformed {
                path: list_path(dir),
                message: e.to_string(),
            })?;
    }
    let current = |purpose: KeyPurpose, name: &'static str| {
        let record = records
            .iter()
            .rev()
            .find(|r| r.purpose == purpose && r.not_after.is_none())
            .ok_or(KeysError::Missing(name))?;
        let key = read_seed(dir, &record.key_id)?;
        if public_key_of(&key) != record.public_key {
            return Err(KeysError::Malformed {
                path: seed_path(dir, &record.key_id),
                message: "the seed does not match the published public key".into(),
            });
        }
        Ok((record.key_id.clone(), key))
    };
    let checkpoint = current(KeyPurpose::Checkpoint, "checkpoint")?;
    let two_factor = current(KeyPurpose::TwoFactor, "2fa")?;
    Ok(Keys {
        records,
        set,
        checkpoint,
        two_factor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_rotate_keeps_old_keys_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = Timestamp::from_unix_micros(1_000_000);
        ensure_keys(dir.path(), t0).expect("generate");
        let first = load(dir.path()).expect("load");
        assert_eq!(first.records.len(), 2);
        assert_eq!(first.checkpoint.0.to_string(), "ckpt-1");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("2fa-1.seed"))
                .expect("seed")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "seed readable by others: {mode:o}");
        }
        let t1 = Timestamp::from_unix_micros(2_000_000);
        add_key(dir.path(), KeyPurpose::TwoFactor, t1).expect("rotate");
        let second = load(dir.path()).expect("load");
        assert_eq!(second.records.len(), 3);
        assert_eq!(second.two_factor.0.to_string(), "2fa-2");
        let old = second
            .records
            .iter()
            .find(|r| r.key_id.to_string() == "2fa-1")
            .expect("old key still listed");
        assert_eq!(old.not_after, Some(t1));
        std::fs::write(dir.path().join("2fa-2.seed"), "zz").expect("corrupt");
        let error = load(dir.path()).expect_err("corrupt seed");
        assert!(error.to_string().contains("2fa-2.seed"), "{error}");
    }
}
