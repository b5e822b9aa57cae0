//! Encryption at rest of sensitive fields (DESIGN section 5): payee IBANs and account
//! numbers, TOTP secrets, webhook and HMAC secrets.
//!
//! - AES-256-GCM with a fresh random 96-bit nonce per value.
//! - Per-tenant keys: HKDF-SHA256 from a master key held outside the database
//!   (`LEDGER_MASTER_KEY` or the file named by `LEDGER_MASTER_KEY_FILE`), with the tenant
//!   in the HKDF info, so one tenant's key opens nothing of another's.
//! - AAD binds the envelope version, the master key id, the tenant, the record and the
//!   field, length-prefixed: a ciphertext copied to another record, field or tenant
//!   does not decrypt.
//! - Envelope `v1:<key_id>:<hex(nonce || ciphertext || tag)>`; `key_id` names the
//!   master key. Rotation: the key ring holds every master key ever used; the newest
//!   encrypts, any of them decrypts.
//!
//! Keys never appear in `Debug` output, errors or logs: [`MasterKey`] and [`KeyRing`]
//! print only key ids, and the key bytes are zeroed when dropped.

use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use ledger_core::ids::TenantId;

/// The environment variable holding the master key(s) in hex.
pub const MASTER_KEY_ENV: &str = "LEDGER_MASTER_KEY";
/// The environment variable naming a file that holds the master key(s).
pub const MASTER_KEY_FILE_ENV: &str = "LEDGER_MASTER_KEY_FILE";

const ENVELOPE_VERSION: &str = "v1";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// The longest plaintext accepted (a secret or an IBAN, never a document).
pub const PLAINTEXT_BYTES_MAX: usize = 4096;
/// The longest key id.
const KEY_ID_CHARS_MAX: usize = 64;
/// Most master keys in a ring.
const KEYS_MAX: usize = 64;
const HKDF_SALT: &[u8] = b"payout-ledger/tenant-key/v1";
const AAD_PREFIX: &[u8] = b"payout-ledger/field/v1\n";

/// A 256-bit master key. Its `Debug` shows nothing of it; it is zeroed on drop.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Why the master key configuration was refused. Names the setting, never shows a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    /// Neither setting is present.
    #[error("no master key: set {MASTER_KEY_ENV} (hex) or {MASTER_KEY_FILE_ENV} (a key file)")]
    Missing,
    /// Both settings are present; which one wins would be a guess.
    #[error("both {MASTER_KEY_ENV} and {MASTER_KEY_FILE_ENV} are set; set exactly one")]
    Ambiguous,
    /// The value is not a list of keys.
    #[error("{setting} is malformed: {reason}")]
    Malformed {
        /// The setting (`LEDGER_MASTER_KEY` or `LEDGER_MASTER_KEY_FILE`).
        setting: &'static str,
        /// What is wrong (never the value).
        reason: String,
    },
    /// The key file cannot be read.
    #[error("{MASTER_KEY_FILE_ENV}: cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The key file can be read by other users.
    #[error("{MASTER_KEY_FILE_ENV}: {path} is readable by group or others; chmod 600 it")]
    Permissions {
        /// The file.
        path: PathBuf,
    },
}

/// Why a value does not decrypt (or encrypt). Never carries plaintext or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldCryptoError {
    /// Not a `v1:<key_id>:<hex>` envelope.
    #[error("not an encryption envelope")]
    Malformed,
    /// The envelope names a master key the ring does not hold.
    #[error("unknown master key id {0:?}")]
    UnknownKey(String),
    /// Authentication failed: wrong tenant, record, field or key, or a changed ciphertext.
    #[error("the value does not decrypt under this tenant, record and field")]
    Authentication,
    /// The plaintext is longer than [`PLAINTEXT_BYTES_MAX`].
    #[error("value too long to encrypt")]
    TooLong,
}

/// Where an encrypted value lives: the AAD binds all three.
#[derive(Debug, Clone, Copy)]
pub struct FieldScope<'a> {
    /// The tenant owning the value.
    pub tenant: &'a TenantId,
    /// The record holding it, e.g. `pay_lark` or `usr_bob`.
    pub record: &'a str,
    /// The field, e.g. `iban` or `totp_secret`.
    pub field: &'a str,
}

/// The master keys, oldest first; the last one encrypts.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(String, MasterKey)>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("KeyRing")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= KEY_ID_CHARS_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl KeyRing {
    /// A ring from `(key_id, key)` pairs, oldest first. Key ids are
    /// `[a-z0-9_-]{1,64}` and distinct.
    pub fn new(keys: Vec<(String, MasterKey)>) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("no key".into());
        }
        if keys.len() > KEYS_MAX {
            return Err(format!("more than {KEYS_MAX} keys"));
        }
        for (index, (id, _)) in keys.iter().enumerate() {
            if !valid_key_id(id) {
                return Err(format!(
                    "key {}: the id must match [a-z0-9_-]{{1,64}}",
                    index + 1
                ));
            }
            if keys[..index].iter().any(|(other, _)| other == id) {
                return Err(format!("key {}: duplicate id {id:?}", index + 1));
            }
        }
        Ok(Self { keys })
    }

    /// Parses the key list of `setting`: entries separated by newlines or commas, each
    /// `<key_id>:<64 hex>`, oldest first (append a line to rotate). A single bare
    /// `<64 hex>` is accepted as key id `k1`. Blank lines and `#` comments are skipped.
    pub fn parse(text: &str, setting: &'static str) -> Result<Self, KeyConfigError> {
        let malformed = |reason: String| KeyConfigError::Malformed { setting, reason };
        let entries: Vec<&str> = text
            .split(['\n', ','])
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        let mut keys = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let (id, hex_key) = match entry.split_once(':') {
                Some((id, hex_key)) => (id.trim(), hex_key.trim()),
                None if entries.len() == 1 => ("k1", *entry),
                None => {
                    return Err(malformed(format!(
                        "key {}: expected <key_id>:<64 hex characters>",
                        index + 1
                    )))
                }
            };
            let mut bytes = Zeroizing::new([0u8; 32]);
            if hex_key.len() != 64 || hex::decode_to_slice(hex_key, bytes.as_mut()).is_err() {
                return Err(malformed(format!(
                    "key {}: expected 64 hex characters (32 bytes)",
                    index + 1
                )));
            }
            keys.push((id.to_owned(), MasterKey::from_bytes(*bytes)));
        }
        Self::new(keys).map_err(malformed)
    }

    /// Reads the ring from the environment: `LEDGER_MASTER_KEY`, or the file named by
    /// `LEDGER_MASTER_KEY_FILE`; exactly one of them.
    pub fn from_env() -> Result<Self, KeyConfigError> {
        let value = std::env::var(MASTER_KEY_ENV).ok();
        let file = std::env::var_os(MASTER_KEY_FILE_ENV).map(PathBuf::from);
        Self::from_settings(value.as_deref(), file.as_deref())
    }

    /// As [`KeyRing::from_env`], with the settings given.
    pub fn from_settings(value: Option<&str>, file: Option<&Path>) -> Result<Self, KeyConfigError> {
        match (value, file) {
            (Some(_), Some(_)) => Err(KeyConfigError::Ambiguous),
            (None, None) => Err(KeyConfigError::Missing),
            (Some(value), None) => Self::parse(value, MASTER_KEY_ENV),
            (None, Some(path)) => {
                check_permissions(path)?;
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                    KeyConfigError::Unreadable {
                        path: path.to_owned(),
                        source,
                    }
                })?);
                Self::parse(&text, MASTER_KEY_FILE_ENV)
            }
        }
    }

    /// The id of the key new values are encrypted under.
    pub fn current_key_id(&self) -> &str {
        match self.keys.last() {
            Some((id, _)) => id,
            None => unreachable!("a key ring is never empty"),
        }
    }

    fn key(&self, key_id: &str) -> Option<&MasterKey> {
        self.keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, key)| key)
    }

    /// Encrypts `plaintext` for `scope` under the newest key, with a fresh nonce.
    pub fn encrypt(
        &self,
        scope: FieldScope<'_>,
        plaintext: &[u8],
    ) -> Result<String, FieldCryptoError> {
        if plaintext.len() > PLAINTEXT_BYTES_MAX {
            return Err(FieldCryptoError::TooLong);
        }
        let (key_id, master) = match self.keys.last() {
            Some((id, key)) => (id.as_str(), key),
            None => unreachable!("a key ring is never empty"),
        };
        let tenant_key = tenant_key(master, scope.tenant);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = aad(key_id, scope);
        let sealed = seal(&tenant_key, nonce.as_ref(), &aad, plaintext)?;
        let mut out = String::with_capacity(4 + key_id.len() + 2 * (NONCE_BYTES + sealed.len()));
        out.push_str(ENVELOPE_VERSION);
        out.push(':');
        out.push_str(key_id);
        out.push(':');
        out.push_str(&hex::encode(nonce));
        out.push_str(&hex::encode(&sealed));
        Ok(out)
    }

    /// Decrypts an envelope written by [`KeyRing::encrypt`] for the same `scope`.
    pub fn decrypt(
        &self,
        scope: FieldScope<'_>,
        envelope: &str,
    ) -> Result<Zeroizing<Vec<u8>>, FieldCryptoError> {
        let mut parts = envelope.splitn(3, ':');
        let (Some(ENVELOPE_VERSION), Some(key_id), Some(body)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(FieldCryptoError::Malformed);
        };
        if !valid_key_id(key_id)
            || body.len() > 2 * (NONCE_BYTES + PLAINTEXT_BYTES_MAX + TAG_BYTES)
            || body.len() < 2 * (NONCE_BYTES + TAG_BYTES)
            || body.bytes().any(|b| b.is_ascii_uppercase())
        {
            return Err(FieldCryptoError::Malformed);
        }
        let bytes = hex::decode(body).map_err(|_| FieldCryptoError::Malformed)?;
        let master = self
            .key(key_id)
            .ok_or_else(|| FieldCryptoError::UnknownKey(key_id.to_owned()))?;
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let tenant_key = tenant_key(master, scope.tenant);
        open(&tenant_key, nonce, &aad(key_id, scope), sealed)
    }
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), KeyConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|source| KeyConfigError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(KeyConfigError::Permissions {
            path: path.to_owned(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<(), KeyConfigError> {
    Ok(())
}

/// HKDF-SHA256(salt, master) expanded with the tenant as info: one key per tenant.
fn tenant_key(master: &MasterKey, tenant: &TenantId) -> Zeroizing<[u8; 32]> {
    let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), &master.0);
    let mut key = Zeroizing::new([0u8; 32]);
    if hkdf
        .expand(tenant.as_str().as_bytes(), key.as_mut())
        .is_err()
    {
        unreachable!("32 bytes is a valid HKDF-SHA256 output length");
    }
    key
}

/// The AAD: prefix, then key id, tenant, record and field, each length-prefixed (u32
/// big-endian) so no two scopes share an encoding.
fn aad(key_id: &str, scope: FieldScope<'_>) -> Vec<u8> {
    let parts = [
        key_id.as_bytes(),
        scope.tenant.as_str().as_bytes(),
        scope.record.as_bytes(),
        scope.field.as_bytes(),
    ];
    let mut out =
        Vec::with_capacity(AAD_PREFIX.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>());
    out.extend_from_slice(AAD_PREFIX);
    for part in parts {
        let length = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// AES-256-GCM encryption with an explicit 96-bit nonce: ciphertext || 128-bit tag.
fn seal(
    key: &[u8; 32],
    nonce: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, FieldCryptoError> {
    if nonce.len() != NONCE_BYTES {
        return Err(FieldCryptoError::Malformed);
    }
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| FieldCryptoError::TooLong)
}

/// AES-256-GCM decryption of ciphertext || tag with an explicit 96-bit nonce.
fn open(
    key: &[u8; 32],
    nonce: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, FieldCryptoError> {
    if nonce.len() != NONCE_BYTES || sealed.len() < TAG_BYTES {
        return Err(FieldCryptoError::Malformed);
    }
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| FieldCryptoError::Authentication)
}

#[cfg(test)]
mod tests {
    //! The primitive against published vectors, which must be present: a missing
    //! vectors directory fails the test rather than skipping it.

    use super::*;

    fn read_vectors(name: &str) -> String {
        let path = test_support::vectors_dir().join("crypto").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn unhex(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap_or_else(|e| panic!("hex {text:?}: {e}"))
    }

    fn key32(text: &str) -> [u8; 32] {
        unhex(text).try_into().expect("a 256-bit key")
    }

    #[test]
    fn gcm_spec_aes256_test_cases_13_to_18() {
        use aes_gcm::aead::consts::{U60, U8};
        use aes_gcm::aes::Aes256;
        use aes_gcm::AesGcm;

        let text = read_vectors("gcm_spec_aes256_tc13-18.txt");
        let mut cases = 0;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let fields: Vec<&str> = line.split('|').collect();
            assert_eq!(fields.len(), 7, "{line}");
            let (case, key, iv, pt, aad, ct, tag) = (
                fields[0],
                key32(fields[1]),
                unhex(fields[2]),
                unhex(fields[3]),
                unhex(fields[4]),
                unhex(fields[5]),
                unhex(fields[6]),
            );
            let mut expected = ct.clone();
            expected.extend_from_slice(&tag);
            let payload = Payload {
                msg: &pt,
                aad: &aad,
            };
            match iv.len() {
                // The nonce size the store uses: through its own functions.
                NONCE_BYTES => {
                    let sealed = seal(&key, &iv, &aad, &pt).expect("seal");
                    assert_eq!(sealed, expected, "case {case}");
                    let opened = open(&key, &iv, &aad, &sealed).expect("open");
                    assert_eq!(*opened, pt, "case {case}");
                    let mut forged = sealed.clone();
                    forged[0] ^= 1;
                    assert_eq!(
                        open(&key, &iv, &aad, &forged),
                        Err(FieldCryptoError::Authentication),
                        "case {case}"
                    );
                }
                // TC17 (64-bit IV) and TC18 (480-bit IV): the same cipher with GHASH-derived
                // counters; the store never uses these sizes, but the file passes whole.
                8 => {
                    let cipher = AesGcm::<Aes256, U8>::new(Key::<Aes256Gcm>::from_slice(&key));
                    let sealed = cipher
                        .encrypt(aes_gcm::Nonce::<U8>::from_slice(&iv), payload)
                        .expect("seal");
                    assert_eq!(sealed, expected, "case {case}");
                }
                60 => {
                    let cipher = AesGcm::<Aes256, U60>::new(Key::<Aes256Gcm>::from_slice(&key));
                    let sealed = cipher
                        .encrypt(aes_gcm::Nonce::<U60>::from_slice(&iv), payload)
                        .expect("seal");
                    assert_eq!(sealed, expected, "case {case}");
                }
                other => panic!("case {case}: unexpected IV length {other}"),
            }
            cases += 1;
        }
        assert_eq!(cases, 6, "test cases 13 to 18");
    }

    #[test]
    fn wycheproof_aes_256_gcm_96_bit_iv_128_bit_tag() {
        let text = read_vectors("wycheproof_aes_gcm_test.tsv");
        let (mut valid, mut invalid) = (0, 0);
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split('\t').collect();
            assert!(fields.len() >= 11, "{line}");
            if (fields[1], fields[2], fields[3]) != ("256", "96", "128") {
                continue;
            }
            let id = fields[0];
            let key = key32(fields[5]);
            let (iv, aad, msg, ct, tag) = (
                unhex(fields[6]),
                unhex(fields[7]),
                unhex(fields[8]),
                unhex(fields[9]),
                unhex(fields[10]),
            );
            let mut sealed = ct.clone();
            sealed.extend_from_slice(&tag);
            match fields[4] {
                "valid" => {
                    assert_eq!(
                        seal(&key, &iv, &aad, &msg).expect("seal"),
                        sealed,
                        "tcId {id}"
                    );
                    let opened =
                        open(&key, &iv, &aad, &sealed).unwrap_or_else(|e| panic!("tcId {id}: {e}"));
                    assert_eq!(*opened, msg, "tcId {id}");
                    valid += 1;
                }
                "invalid" => {
                    assert!(
                        open(&key, &iv, &aad, &sealed).is_err(),
                        "tcId {id} must not decrypt"
                    );
                    invalid += 1;
                }
                other => panic!("tcId {id}: unexpected result {other:?}"),
            }
        }
        assert_eq!(
            (valid, invalid),
            (39, 27),
            "the AES-256 / 96-bit IV / 128-bit tag cases"
        );
    }

    #[test]
    fn aad_encodings_are_unambiguous() {
        let tenant: TenantId = "acme".parse().expect("tenant");
        let a = aad(
            "k1",
            FieldScope {
                tenant: &tenant,
                record: "ab",
                field: "c",
            },
        );
        let b = aad(
            "k1",
            FieldScope {
                tenant: &tenant,
                record: "a",
                field: "bc",
            },
        );
        assert_ne!(a, b);
    }
}
