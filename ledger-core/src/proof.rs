//! 2FA proofs (DESIGN sections 3 and 4): issued by the API after a TOTP check, signed with
//! the 2FA key, carried inside the event, and checked by the core and the auditor alike.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::crypto::{self, Hash, KeyPurpose, KeySet, Sig, TWO_FACTOR_SIG_PREFIX};
use crate::ids::{KeyId, PrincipalId, TenantId};
use crate::time::Timestamp;

/// How old a proof may be when the command is decided.
pub const PROOF_AGE_MAX_MICROS: i64 = 300 * 1_000_000;
/// Most subjects one batch proof may cover.
pub const BATCH_SUBJECTS_MAX: usize = 1000;

/// A 2FA proof: `data.two_factor` of a gated event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoFactorProof {
    /// Format version, 1.
    pub v: u32,
    /// The tenant the code was verified in.
    pub tenant: TenantId,
    /// The principal who typed the code.
    pub actor: PrincipalId,
    /// The action it allows, e.g. `payout.authorize`.
    pub action: String,
    /// The subject (`po_…`, `usr_x:role`, ...) or `batch:<hex sha256>`.
    pub subject: String,
    /// The TOTP time step the code belonged to.
    pub step: u64,
    /// When the API verified the code.
    pub verified_at: Timestamp,
    /// The 2FA key that signed the proof.
    pub key_id: KeyId,
    /// Ed25519 over `"payout-ledger/2fa/v1\n" || JCS(proof without sig)`.
    pub sig: Sig,
}

/// The fields a proof signs, in one place so that signing and checking cannot drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnsignedProof {
    /// Format version, 1.
    pub v: u32,
    /// Tenant.
    pub tenant: TenantId,
    /// Actor.
    pub actor: PrincipalId,
    /// Action.
    pub action: String,
    /// Subject.
    pub subject: String,
    /// TOTP step.
    pub step: u64,
    /// Verification time.
    pub verified_at: Timestamp,
    /// Signing key id.
    pub key_id: KeyId,
}

/// The signed fields of a proof, borrowed.
struct SignedFields<'a> {
    v: u32,
    tenant: &'a TenantId,
    actor: &'a PrincipalId,
    action: &'a str,
    subject: &'a str,
    step: u64,
    verified_at: Timestamp,
    key_id: &'a KeyId,
}

impl SignedFields<'_> {
    /// `"payout-ledger/2fa/v1\n"` || JCS of the fields, written directly in JCS key order
    /// (equal to encoding the serialised [`UnsignedProof`], by test).
    fn message(&self) -> Vec<u8> {
        if self.step > canonical::INTEGER_MAGNITUDE_MAX {
            unreachable!("a proof is always in the canonical domain: step out of range");
        }
        let mut message = Vec::with_capacity(TWO_FACTOR_SIG_PREFIX.len() + 256);
        message.extend_from_slice(TWO_FACTOR_SIG_PREFIX);
        message.extend_from_slice(b"{\"action\":");
        canonical::write_string(self.action, &mut message);
        message.extend_from_slice(b",\"actor\":");
        canonical::write_string(self.actor.as_str(), &mut message);
        message.extend_from_slice(b",\"key_id\":");
        canonical::write_string(self.key_id.as_str(), &mut message);
        message.extend_from_slice(b",\"step\":");
        message.extend_from_slice(self.step.to_string().as_bytes());
        message.extend_from_slice(b",\"subject\":");
        canonical::write_string(self.subject, &mut message);
        message.extend_from_slice(b",\"tenant\":");
        canonical::write_string(self.tenant.as_str(), &mut message);
        message.extend_from_slice(b",\"v\":");
        message.extend_from_slice(self.v.to_string().as_bytes());
        message.extend_from_slice(b",\"verified_at\":");
        canonical::write_string(&self.verified_at.to_string(), &mut message);
        message.push(b'}');
        message
    }
}

impl UnsignedProof {
    /// The exact bytes that are signed (prefix included).
    pub fn signed_message(&self) -> Vec<u8> {
        SignedFields {
            v: self.v,
            tenant: &self.tenant,
            actor: &self.actor,
            action: &self.action,
            subject: &self.subject,
            step: self.step,
            verified_at: self.verified_at,
            key_id: &self.key_id,
        }
        .message()
    }

    /// Signs with the 2FA key (the shell holds it).
    pub fn sign(self, key: &SigningKey) -> TwoFactorProof {
        let message = self.signed_message();
        let sig = crypto::sign(key, &[], &message);
        TwoFactorProof {
            v: self.v,
            tenant: self.tenant,
            actor: self.actor,
            action: self.action,
            subject: self.subject,
            step: self.step,
            verified_at: self.verified_at,
            key_id: self.key_id,
            sig,
        }
    }
}

impl TwoFactorProof {
    /// The exact bytes its signature covers (prefix included): `unsigned().signed_message()`
    /// without copying the fields.
    pub fn signed_message(&self) -> Vec<u8> {
        SignedFields {
            v: self.v,
            tenant: &self.tenant,
            actor: &self.actor,
            action: &self.action,
            subject: &self.subject,
            step: self.step,
            verified_at: self.verified_at,
            key_id: &self.key_id,
        }
        .message()
    }

    /// The signed fields.
    pub fn unsigned(&self) -> UnsignedProof {
        UnsignedProof {
            v: self.v,
            tenant: self.tenant.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            subject: self.subject.clone(),
            step: self.step,
            verified_at: self.verified_at,
            key_id: self.key_id.clone(),
        }
    }
}

/// `batch:` + hex(SHA-256(JCS(sorted subjects))).
pub fn batch_subject<S: AsRef<str>>(subjects: &[S]) -> String {
    let mut sorted: Vec<&str> = subjects.iter().map(AsRef::as_ref).collect();
    sorted.sort_unstable();
    let mut json = Vec::with_capacity(sorted.len() * 16 + 2);
    json.push(b'[');
    for (i, s) in sorted.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        canonical::write_string(s, &mut json);
    }
    json.push(b']');
    format!("batch:{}", Hash::of(&[], &json).to_hex())
}

/// Why a 2FA proof is refused. Each maps to `two_factor_required` (missing),
/// `two_factor_locked` (locked) or `two_factor_invalid` (the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TwoFactorFailure {
    /// No proof where one is needed.
    #[error("a 2FA proof is required")]
    Missing,
    /// Proof format version other than 1.
    #[error("unsupported proof version")]
    Version,
    /// The key id names no 2FA key valid at `verified_at`.
    #[error("proof signed with an unknown or invalid 2FA key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("proof signature does not verify")]
    BadSignature,
    /// The proof is for another tenant.
    #[error("proof is for another tenant")]
    OtherTenant,
    /// The proof is for another principal.
    #[error("proof is for another actor")]
    OtherActor,
    /// The proof is for another action.
    #[error("proof is for another action")]
    OtherAction,
    /// The proof is for another subject.
    #[error("proof is for another subject")]
    OtherSubject,
    /// A batch proof used for a subject outside its batch, or a batch list that does not
    /// hash to the proof's subject.
    #[error("subject is not in the proof's batch")]
    NotInBatch,
    /// `verified_at` more than 300 s before the command, or after it.
    #[error("proof is not fresh (older than 300 s or from the future)")]
    Stale,
    /// The step is not greater than a step the actor already used.
    #[error("proof step already used (replay)")]
    Replayed,
    /// The one-time code was wrong or already used, so no proof was issued (the shell
    /// records the denied command as evidence; no event ever carries such a proof).
    #[error("the one-time code was wrong or already used")]
    WrongCode,
    /// Too many wrong codes: the actor's money movement is locked for a while.
    #[error("too many wrong one-time codes: locked")]
    Locked,
}

/// What a proof must be bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The command's tenant.
    pub tenant: &'a TenantId,
    /// The command's actor.
    pub actor: &'a PrincipalId,
    /// The command's action.
    pub action: &'a str,
    /// The command's own subject.
    pub subject: &'a str,
    /// The batch list, when the command is part of a batch.
    pub batch: Option<&'a [String]>,
    /// When the command is decided.
    pub at: Timestamp,
}

/// Checks proof signatures. The writer verifies directly; the auditor may answer from
/// results it computed in parallel or in batches.
pub trait SignatureCheck {
    /// Whether `proof` is signed by a 2FA key of `keys` valid at its `verified_at`.
    fn check_signature(&self, proof: &TwoFactorProof) -> Result<(), TwoFactorFailure>;
}

/// Verifies each signature strictly against a key set.
#[derive(Debug, Clone, Copy)]
pub struct DirectCheck<'a>(pub &'a KeySet);

impl SignatureCheck for DirectCheck<'_> {
    fn check_signature(&self, proof: &TwoFactorProof) -> Result<(), TwoFactorFailure> {
        verify_proof_signature(self.0, proof)
    }
}

/// Strict single verification of one proof's signature.
pub fn verify_proof_signature(
    keys: &KeySet,
    proof: &TwoFactorProof,
) -> Result<(), TwoFactorFailure> {
    let record = keys
        .lookup(&proof.key_id, KeyPurpose::TwoFactor, proof.verified_at)
        .map_err(|_| TwoFactorFailure::UnknownKey)?;
    let message = proof.signed_message();
    keys.verify_strict(&record.key_id, &message, &proof.sig)
        .map_err(|e| match e {
            crypto::SignatureError::BadKey => TwoFactorFailure::UnknownKey,
            crypto::SignatureError::Invalid => TwoFactorFailure::BadSignature,
        })
}

/// Checks a proof against its binding, freshness, the actor's last proof and its signature.
pub fn check_proof(
    proof: Option<&TwoFactorProof>,
    binding: Binding<'_>,
    last_proof: Option<&TwoFactorProof>,
    signatures: &dyn SignatureCheck,
) -> Result<(), TwoFactorFailure> {
    let proof = proof.ok_or(TwoFactorFailure::Missing)?;
    if proof.v != 1 {
        return Err(TwoFactorFailure::Version);
    }
    signatures.check_signature(proof)?;
    if &proof.tenant != binding.tenant {
        return Err(TwoFactorFailure::OtherTenant);
    }
    if &proof.actor != binding.actor {
        return Err(TwoFactorFailure::OtherActor);
    }
    if proof.action != binding.action {
        return Err(TwoFactorFailure::OtherAction);
    }
    match binding.batch {
        None => {
            if proof.subject != binding.subject {
                return Err(TwoFactorFailure::OtherSubject);
            }
        }
        Some(batch) => {
            let unique: std::collections::BTreeSet<&String> = batch.iter().collect();
            let well_formed = !batch.is_empty()
                && batch.len() <= BATCH_SUBJECTS_MAX
                && unique.len() == batch.len()
                && batch.iter().any(|s| s == binding.subject);
            if !well_formed || proof.subject != batch_subject(batch) {
                return Err(TwoFactorFailure::NotInBatch);
            }
        }
    }
    let age = binding.at.micros_since(proof.verified_at);
    if !(0..=PROOF_AGE_MAX_MICROS).contains(&age) {
        return Err(TwoFactorFailure::Stale);
    }
    if let Some(last) = last_proof {
        let same_batch_proof = last == proof && binding.batch.is_some();
        if !same_batch_proof && proof.step <= last.step {
            return Err(TwoFactorFailure::Replayed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct writer against the general encoder, on proofs with every kind of text
    /// the fields can hold (escapes, control characters, non-ASCII).
    #[test]
    fn signed_message_is_the_canonical_encoding_of_the_unsigned_proof() {
        let subjects = [
            "po_1",
            "batch:00ff",
            "quote \" backslash \\ tab \t nl \n nul \u{0} del \u{7f} é 💶",
            "",
        ];
        for (n, subject) in subjects.iter().enumerate() {
            for step in [0, 1, 59_000_001, canonical::INTEGER_MAGNITUDE_MAX] {
                let unsigned = UnsignedProof {
                    v: 1 + n as u32,
                    tenant: "acme".parse().expect("tenant"),
                    actor: "usr_bob".parse().expect("actor"),
                    action: format!("payout.{subject}"),
                    subject: (*subject).to_owned(),
                    step,
                    verified_at: Timestamp::from_unix_micros(1_795_000_000_123_456),
                    key_id: "2fa-2026.11_a".parse().expect("key id"),
                };
                let value = serde_json::to_value(&unsigned).expect("serialises");
                let mut expected = TWO_FACTOR_SIG_PREFIX.to_vec();
                canonical::write_canonical(&value, &mut expected).expect("canonical");
                assert_eq!(unsigned.signed_message(), expected, "{unsigned:?}");
                let signed = unsigned.clone().sign(&SigningKey::from_bytes(&[9; 32]));
                assert_eq!(signed.signed_message(), expected);
            }
        }
    }
}
