//! Checkpoints: signed statements of a tenant's head (DESIGN section 4).

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::crypto::{self, Hash, KeyPurpose, KeySet, Sig, CHECKPOINT_SIG_PREFIX};
use crate::ids::{KeyId, TenantId};
use crate::time::Timestamp;

/// A signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version, 1.
    pub v: u32,
    /// Tenant.
    pub tenant: TenantId,
    /// The seq of the head it signs.
    pub seq: u64,
    /// The hash of the event at `seq`.
    pub head: Hash,
    /// When it was signed.
    pub at: Timestamp,
    /// The checkpoint key.
    pub key_id: KeyId,
    /// Ed25519 over `"payout-ledger/checkpoint/v1\n" || JCS(checkpoint without sig)`.
    pub sig: Sig,
}

#[derive(Serialize)]
struct Unsigned<'a> {
    v: u32,
    tenant: &'a TenantId,
    seq: u64,
    head: &'a Hash,
    at: &'a Timestamp,
    key_id: &'a KeyId,
}

/// Why a checkpoint does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Version other than 1.
    #[error("unsupported checkpoint version")]
    Version,
    /// The key id names no checkpoint key valid at `at`.
    #[error("checkpoint key {0} unknown or not valid at the checkpoint's time")]
    UnknownKey(KeyId),
    /// The signature does not verify.
    #[error("checkpoint signature does not verify")]
    BadSignature,
}

fn signed_message(
    tenant: &TenantId,
    seq: u64,
    head: &Hash,
    at: &Timestamp,
    key_id: &KeyId,
) -> Vec<u8> {
    let unsigned = Unsigned {
        v: 1,
        tenant,
        seq,
        head,
        at,
        key_id,
    };
    let value = match serde_json::to_value(&unsigned) {
        Ok(value) => value,
        Err(e) => unreachable!("a checkpoint always serialises: {e}"),
    };
    let mut message = CHECKPOINT_SIG_PREFIX.to_vec();
    if let Err(e) = canonical::write_canonical(&value, &mut message) {
        unreachable!("a checkpoint is always in the canonical domain: {e}");
    }
    message
}

impl Checkpoint {
    /// Signs the head `(seq, head)` of `tenant` with the checkpoint key.
    pub fn sign(
        tenant: TenantId,
        seq: u64,
        head: Hash,
        at: Timestamp,
        key_id: KeyId,
        key: &SigningKey,
    ) -> Checkpoint {
        let message = signed_message(&tenant, seq, &head, &at, &key_id);
        let sig = crypto::sign(key, &[], &message);
        Checkpoint {
            v: 1,
            tenant,
            seq,
            head,
            at,
            key_id,
            sig,
        }
    }

    /// Verifies the signature under the checkpoint key of `keys` valid at `at`.
    pub fn verify_signature(&self, keys: &KeySet) -> Result<(), CheckpointError> {
        if self.v != 1 {
            return Err(CheckpointError::Version);
        }
        let record = keys
            .lookup(&self.key_id, KeyPurpose::Checkpoint, self.at)
            .map_err(|_| CheckpointError::UnknownKey(self.key_id.clone()))?;
        let message = signed_message(&self.tenant, self.seq, &self.head, &self.at, &self.key_id);
        keys.verify_strict(&record.key_id, &message, &self.sig)
            .map_err(|_| CheckpointError::BadSignature)
    }
}
