//! Hashes, Ed25519 signatures and the public-key records of DESIGN section 4.
//! Signing is deterministic (Ed25519); key generation needs randomness and lives in the shell.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::ids::KeyId;
use crate::time::Timestamp;

/// Domain-separation prefix of event hashes.
pub const EVENT_HASH_PREFIX: &[u8] = b"payout-ledger/event/v1\n";
/// Domain-separation prefix of checkpoint signatures.
pub const CHECKPOINT_SIG_PREFIX: &[u8] = b"payout-ledger/checkpoint/v1\n";
/// Domain-separation prefix of 2FA proof signatures.
pub const TWO_FACTOR_SIG_PREFIX: &[u8] = b"payout-ledger/2fa/v1\n";

/// Why a hex field is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} lowercase hex characters")]
pub struct HexError {
    /// How many characters were expected.
    pub expected: usize,
}

/// Each byte's value as a lowercase hex digit, or 0xFF.
const LOWER_HEX: [u8; 256] = {
    let mut table = [0xFF_u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Decodes exactly `2 * N` lowercase hex digits (a hash or signature per event line:
/// table lookups, one check at the end).
fn decode_lower_hex<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let error = HexError { expected: N * 2 };
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return Err(error);
    }
    let mut out = [0u8; N];
    let mut invalid = 0u8;
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let high = LOWER_HEX[usize::from(pair[0])];
        let low = LOWER_HEX[usize::from(pair[1])];
        invalid |= high | low;
        *byte = (high << 4) | (low & 0x0F);
    }
    if invalid & 0xF0 != 0 {
        return Err(error);
    }
    Ok(out)
}

macro_rules! hex_bytes {
    ($(#[$meta:meta])* $name:ident, $len:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Wraps raw bytes.
            pub fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
            /// Parses lowercase hex of exactly the right length.
            pub fn parse(s: &str) -> Result<Self, HexError> {
                decode_lower_hex::<$len>(s).map(Self)
            }
            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_bytes!(
    /// A SHA-256 digest, 64 lowercase hex characters in JSON.
    Hash,
    32
);
hex_bytes!(
    /// An Ed25519 signature, 128 lowercase hex characters in JSON.
    Sig,
    64
);
hex_bytes!(
    /// An Ed25519 public key, 64 lowercase hex characters in JSON.
    PublicKeyBytes,
    32
);

impl Hash {
    /// The `prev` of seq 1: 64 zeros.
    pub const ZERO: Hash = Hash([0; 32]);

    /// SHA-256 of `prefix || body`.
    pub fn of(prefix: &[u8], body: &[u8]) -> Hash {
        let mut hasher = Sha256::new();
        hasher.update(prefix);
        hasher.update(body);
        Hash(hasher.finalize().into())
    }

    /// SHA-256 of `prefix` followed by each of `parts`, without joining them first.
    pub fn of_parts(prefix: &[u8], parts: &[&[u8]]) -> Hash {
        let mut hasher = Sha256::new();
        hasher.update(prefix);
        for part in parts {
            hasher.update(part);
        }
        Hash(hasher.finalize().into())
    }
}

/// Signs `prefix || body` with `key` (deterministic).
pub fn sign(key: &SigningKey, prefix: &[u8], body: &[u8]) -> Sig {
    let mut message = Vec::with_capacity(prefix.len() + body.len());
    message.extend_from_slice(prefix);
    message.extend_from_slice(body);
    Sig(key.sign(&message).to_bytes())
}

/// Why a signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not a valid Ed25519 point, or is of small order.
    #[error("public key is not a usable Ed25519 key")]
    BadKey,
    /// The signature does not verify under the key.
    #[error("signature does not verify")]
    Invalid,
}

/// Verifies an Ed25519 signature strictly (RFC 8032 with canonical encodings, no
/// small-order keys or R), the rule the writer and the auditor both apply.
pub fn verify_strict(
    key: &PublicKeyBytes,
    message: &[u8],
    sig: &Sig,
) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_bytes(key.as_bytes()).map_err(|_| SignatureError::BadKey)?;
    if key.is_weak() {
        return Err(SignatureError::BadKey);
    }
    let sig = ed25519_dalek::Signature::from_bytes(sig.as_bytes());
    key.verify_strict(message, &sig)
        .map_err(|_| SignatureError::Invalid)
}

/// A source of no randomness: the batch coefficients come from the transcript alone, as in
/// `ed25519_dalek::verify_batch` (deterministic: the core draws no randomness).
struct ZeroRng;

impl rand_core::RngCore for ZeroRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, _dest: &mut [u8]) {}

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for ZeroRng {}

/// One signature made ready for a batch ([`verify_prepared_batch`]): the per-signature
/// work of `ed25519_dalek::verify_batch` done ahead (SHA-512 of `R || A || M`, its
/// reduction, the canonical check of `s`, the decompression of `R`), so that it can run
/// on the parallel parse workers and the batch itself is only the transcript and the
/// multiscalar multiplication.
#[derive(Debug, Clone)]
pub struct PreparedSignature {
    hram: [u8; 64],
    hram_scalar: curve25519_dalek::scalar::Scalar,
    s_bytes: [u8; 32],
    s: Option<curve25519_dalek::scalar::Scalar>,
    r: Option<curve25519_dalek::edwards::EdwardsPoint>,
    key: VerifyingKey,
}

impl PreparedSignature {
    /// Prepares `signature` over `message` under `key`.
    pub fn new(message: &[u8], signature: &ed25519_dalek::Signature, key: &VerifyingKey) -> Self {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        use curve25519_dalek::scalar::Scalar;

        let mut h = sha2::Sha512::default();
        h.update(signature.r_bytes());
        h.update(key.as_bytes());
        h.update(message);
        let hram: [u8; 64] = h.finalize().into();
        Self {
            hram,
            hram_scalar: Scalar::from_bytes_mod_order_wide(&hram),
            s_bytes: *signature.s_bytes(),
            s: Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes())),
            r: CompressedEdwardsY(*signature.r_bytes()).decompress(),
            key: *key,
        }
    }
}

/// `ed25519_dalek::verify_batch`, with the public keys' terms gathered: where it sums
/// `(z_i * h_i) * A_i` over every signature, this sums `(sum of z_i * h_i) * A` once per
/// distinct key. The transcript, the coefficients `z_i` and so the point computed are the
/// very same (the sum is only regrouped), so the verdict is too (by test); the
/// multiscalar multiplication has `n + k + 1` points instead of `2n + 1`, which with one
/// 2FA key nearly halves it. `true` when every signature verifies (with the batch
/// equation's cofactorless check); `false` is no verdict on any one signature.
pub fn verify_batch_by_key(
    messages: &[&[u8]],
    signatures: &[ed25519_dalek::Signature],
    keys: &[VerifyingKey],
) -> bool {
    if signatures.len() != messages.len() || keys.len() != messages.len() {
        return false;
    }
    let prepared: Vec<PreparedSignature> = (0..signatures.len())
        .map(|i| PreparedSignature::new(messages[i], &signatures[i], &keys[i]))
        .collect();
    verify_prepared_batch(&prepared)
}

/// [`verify_batch_by_key`] of signatures prepared ahead (in any order of preparation: the
/// batch is the slice, in its order). Deterministic: the coefficients come from the
/// transcript of the batch alone.
pub fn verify_prepared_batch<P: std::borrow::Borrow<PreparedSignature>>(batch: &[P]) -> bool {
    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};

    let mut transcript = merlin::Transcript::new(b"ed25519 batch verification");
    let batch: Vec<&PreparedSignature> = batch.iter().map(|entry| entry.borrow()).collect();
    for entry in &batch {
        transcript.append_message(b"hram", &entry.hram);
    }
    for entry in &batch {
        transcript.append_message(b"sig.s", &entry.s_bytes);
    }
    let mut rng = transcript.build_rng().finalize(&mut ZeroRng);
    let mut s_values = Vec::with_capacity(batch.len());
    for entry in &batch {
        match entry.s {
            Some(s) => s_values.push(s),
            None => return false,
        }
    }
    let zs: Vec<Scalar> = batch
        .iter()
        .map(|_| {
            let mut bytes = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rng, &mut bytes);
            Scalar::from(u128::from_le_bytes(bytes))
        })
        .collect();
    let b_coefficient: Scalar = s_values.iter().zip(&zs).map(|(s, z)| z * s).sum();
    let mut key_terms: Vec<(&VerifyingKey, Scalar)> = Vec::new();
    for (entry, z) in batch.iter().zip(&zs) {
        let term = entry.hram_scalar * z;
        match key_terms
            .iter_mut()
            .find(|(k, _)| k.as_bytes() == entry.key.as_bytes())
        {
            Some((_, sum)) => *sum += term,
            None => key_terms.push((&entry.key, term)),
        }
    }
    let scalars = std::iter::once(-b_coefficient)
        .chain(zs.iter().copied())
        .chain(key_terms.iter().map(|(_, sum)| *sum));
    let points = std::iter::once(Some(curve25519_dalek::constants::ED25519_BASEPOINT_POINT))
        .chain(batch.iter().map(|entry| entry.r))
        .chain(key_terms.iter().map(|(key, _)| Some(key.to_edwards())));
    EdwardsPoint::optional_multiscalar_mul(scalars, points).is_some_and(|id| id.is_identity())
}

/// The public half of a signing key, as the shell hands it to the core.
pub fn public_key_of(key: &SigningKey) -> PublicKeyBytes {
    PublicKeyBytes(key.verifying_key().to_bytes())
}

/// What a signing key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    /// Signs checkpoints.
    Checkpoint,
    /// Signs 2FA proofs.
    #[serde(rename = "2fa")]
    TwoFactor,
}

/// The signature algorithm; only Ed25519 exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Ed25519 (RFC 8032).
    Ed25519,
}

/// A published public key: `GET /v1/ledger/keys` and the export's `key` lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// The key's id, named by checkpoints and proofs.
    pub key_id: KeyId,
    /// What it signs.
    pub purpose: KeyPurpose,
    /// Always ed25519.
    pub algorithm: Algorithm,
    /// The public key.
    pub public_key: PublicKeyBytes,
    /// Valid from.
    pub not_before: Timestamp,
    /// Valid until, if retired.
    pub not_after: Option<Timestamp>,
}

impl KeyRecord {
    /// Whether the key was valid at `at`.
    pub fn valid_at(&self, at: Timestamp) -> bool {
        at >= self.not_before && self.not_after.is_none_or(|end| at <= end)
    }
}

/// Why a key cannot be added to a [`KeySet`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// Two records share one key id but differ.
    #[error("key id {0} is listed twice with different contents")]
    Conflict(KeyId),
}

/// The public keys a verifier trusts, by id, with each usable key decompressed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<KeyId, KeyRecord>,
    verifying: BTreeMap<KeyId, VerifyingKey>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record; the same record twice is fine, a conflicting one is refused.
    pub fn insert(&mut self, record: KeyRecord) -> Result<(), KeySetError> {
        match self.keys.get(&record.key_id) {
            Some(existing) if existing == &record => Ok(()),
            Some(_) => Err(KeySetError::Conflict(record.key_id)),
            None => {
                if let Ok(key) = VerifyingKey::from_bytes(record.public_key.as_bytes()) {
                    if !key.is_weak() {
                        self.verifying.insert(record.key_id.clone(), key);
                    }
                }
                self.keys.insert(record.key_id.clone(), record);
                Ok(())
            }
        }
    }

    /// The record of `key_id`.
    pub fn get(&self, key_id: &KeyId) -> Option<&KeyRecord> {
        self.keys.get(key_id)
    }

    /// Every record, by id.
    pub fn iter(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys.values()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The decompressed key of `key_id`, if it is a usable Ed25519 key (not of small
    /// order).
    pub fn verifying_key(&self, key_id: &KeyId) -> Option<&VerifyingKey> {
        self.verifying.get(key_id)
    }

    /// Verifies `sig` over `message` strictly under the key `key_id` (already looked up).
    pub fn verify_strict(
        &self,
        key_id: &KeyId,
        message: &[u8],
        sig: &Sig,
    ) -> Result<(), SignatureError> {
        let key = self.verifying.get(key_id).ok_or(SignatureError::BadKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(sig.as_bytes());
        key.verify_strict(message, &sig)
            .map_err(|_| SignatureError::Invalid)
    }

    /// Finds the key that must have signed something of `purpose` at `at`.
    pub fn lookup(
        &self,
        key_id: &KeyId,
        purpose: KeyPurpose,
        at: Timestamp,
    ) -> Result<&KeyRecord, KeyLookupError> {
        let record = self.keys.get(key_id).ok_or(KeyLookupError::Unknown)?;
        if record.purpose != purpose {
            return Err(KeyLookupError::WrongPurpose);
        }
        if !record.valid_at(at) {
            return Err(KeyLookupError::NotValidAt);
        }
        Ok(record)
    }
}

/// Why a key id does not lead to a usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    /// No key with that id.
    #[error("unknown key")]
    Unknown,
    /// The key exists but signs something else.
    #[error("key has another purpose")]
    WrongPurpose,
    /// The key was not valid at the time.
    #[error("key not valid at that time")]
    NotValidAt,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_exact() {
        assert!(Hash::parse(&"0".repeat(64)).is_ok());
        assert!(Hash::parse(&"A".repeat(64)).is_err());
        assert!(Hash::parse(&"0".repeat(63)).is_err());
        assert!(Sig::parse(&"ab".repeat(64)).is_ok());
        assert!(Sig::parse("zz").is_err());
    }

    /// The table decoder against the `hex` crate plus a lowercase check, for every byte
    /// in every position of a pair.
    #[test]
    fn hex_decoder_agrees_with_the_reference_on_every_byte() {
        fn reference(s: &[u8]) -> Option<[u8; 2]> {
            if s.iter().any(u8::is_ascii_uppercase) {
                return None;
            }
            let mut out = [0u8; 2];
            hex::decode_to_slice(s, &mut out).ok().map(|()| out)
        }
        for byte in 0..=255u8 {
            for position in 0..4 {
                let mut input = *b"a5f0";
                input[position] = byte;
                let Ok(text) = std::str::from_utf8(&input) else {
                    continue;
                };
                assert_eq!(
                    decode_lower_hex::<2>(text).ok(),
                    reference(&input),
                    "{input:?}"
                );
            }
        }
        let all: String = (0..=255u8).map(|b| format!("{b:02x}")).collect();
        let decoded = decode_lower_hex::<256>(&all).expect("every byte");
        assert!(decoded
            .iter()
            .enumerate()
            .all(|(i, b)| usize::from(*b) == i));
    }

    #[test]
    fn domain_separated_signatures_verify_only_under_their_prefix() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = public_key_of(&key);
        let sig = sign(&key, CHECKPOINT_SIG_PREFIX, b"{}");
        let mut message = CHECKPOINT_SIG_PREFIX.to_vec();
        message.extend_from_slice(b"{}");
        assert_eq!(verify_strict(&public, &message, &sig), Ok(()));
        let mut other = TWO_FACTOR_SIG_PREFIX.to_vec();
        other.extend_from_slice(b"{}");
        assert_eq!(
            verify_strict(&public, &other, &sig),
            Err(SignatureError::Invalid)
        );
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    /// The grouped batch against ed25519-dalek's, on valid batches over one to three keys
    /// and on every kind of bad entry: same verdict each time.
    #[test]
    fn the_grouped_batch_agrees_with_ed25519_dalek() {
        let signers: Vec<SigningKey> = (1..=3u8)
            .map(|b| SigningKey::from_bytes(&[b; 32]))
            .collect();
        for keys_used in 1..=3 {
            for size in [1, 2, 5, 17] {
                let mut messages: Vec<Vec<u8>> = Vec::new();
                let mut signatures = Vec::new();
                let mut verifying = Vec::new();
                for i in 0..size {
                    let signer = &signers[i % keys_used];
                    let message = format!("proof {i} of {size}").into_bytes();
                    signatures.push(signer.sign(&message));
                    verifying.push(signer.verifying_key());
                    messages.push(message);
                }
                let check = |messages: &[Vec<u8>],
                             signatures: &[ed25519_dalek::Signature],
                             keys: &[VerifyingKey]| {
                    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
                    let ours = verify_batch_by_key(&refs, signatures, keys);
                    let theirs = ed25519_dalek::verify_batch(&refs, signatures, keys).is_ok();
                    assert_eq!(ours, theirs, "{keys_used} keys, {size} signatures");
                    ours
                };
                assert!(check(&messages, &signatures, &verifying));
                let last = size - 1;
                // Another message.
                let mut other = messages.clone();
                other[last].push(b'!');
                assert!(!check(&other, &signatures, &verifying));
                // Another key.
                let mut swapped = verifying.clone();
                swapped[last] = signers[(last + 1) % 3].verifying_key();
                assert!(!check(&messages, &signatures, &swapped));
                // s not reduced, s flipped, R not a point, R of another signature.
                let mut bad = signatures.clone();
                let mut bytes = bad[last].to_bytes();
                bytes[63] |= 0xf0;
                bad[last] = ed25519_dalek::Signature::from_bytes(&bytes);
                assert!(!check(&messages, &bad, &verifying));
                let mut bytes = signatures[last].to_bytes();
                bytes[40] ^= 1;
                bad[last] = ed25519_dalek::Signature::from_bytes(&bytes);
                assert!(!check(&messages, &bad, &verifying));
                let mut bytes = signatures[last].to_bytes();
                bytes[..32].copy_from_slice(&[0xff; 32]);
                bytes[0] = 0xee;
                bad[last] = ed25519_dalek::Signature::from_bytes(&bytes);
                check(&messages, &bad, &verifying);
                let mut bytes = signatures[last].to_bytes();
                bytes[..32].copy_from_slice(&signatures[0].to_bytes()[..32]);
                bad[last] = ed25519_dalek::Signature::from_bytes(&bytes);
                check(&messages, &bad, &verifying);
            }
        }
        assert!(
            !verify_batch_by_key(&[], &[], &[])
                || ed25519_dalek::verify_batch(&[], &[], &[]).is_ok()
        );
    }
}
