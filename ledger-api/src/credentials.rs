//! A short-lived, bounded cache of API-key records, so that authenticating a request
//! does not cost two database round trips (the credential index, then the key record).
//!
//! What is cached is the stored record (the secret only as its SHA-256): every request
//! still presents its secret and has it compared, in constant time, with the hash, and
//! expiry and the IP allow-list are checked against the request every time. A
//! revocation made through this process evicts the key at once; one made through
//! another process sharing the database takes effect here within [`API_KEY_CACHE_TTL`]
//! (docs/SECURITY.md). Unknown keys are never cached, so a key issued elsewhere works at
//! once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ledger_core::ids::TenantId;

use crate::records::ApiKeyRecord;

/// How long a key record is trusted before it is read again.
pub const API_KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// Most keys held; beyond it the cache is emptied and refilled by use.
pub const API_KEY_CACHE_ENTRIES_MAX: usize = 100_000;

struct Entry {
    tenant: TenantId,
    record: ApiKeyRecord,
    fetched: Instant,
}

/// Key records by key id.
#[derive(Default)]
pub struct ApiKeyCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for ApiKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyCache").finish_non_exhaustive()
    }
}

impl ApiKeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        match self.entries.lock() {
            Ok(entries) => entries,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The record of `key_id` and its tenant, if read less than the TTL ago.
    pub fn get(&self, key_id: &str) -> Option<(TenantId, ApiKeyRecord)> {
        let mut entries = self.lock();
        let entry = entries.get(key_id)?;
        if entry.fetched.elapsed() >= API_KEY_CACHE_TTL {
            entries.remove(key_id);
            return None;
        }
        Some((entry.tenant.clone(), entry.record.clone()))
    }

    /// Remembers a record just read from the store.
    pub fn put(&self, key_id: &str, tenant: TenantId, record: ApiKeyRecord) {
        let mut entries = self.lock();
        if entries.len() >= API_KEY_CACHE_ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(
            key_id.to_owned(),
            Entry {
                tenant,
                record,
                fetched: Instant::now(),
            },
        );
    }

    /// Forgets a key (revoked or changed through this process).
    pub fn evict(&self, key_id: &str) {
        self.lock().remove(key_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ApiKeyRecord {
        ApiKeyRecord {
            principal: "usr_ann".parse().expect("principal"),
            secret_sha256: "00".repeat(32),
            scopes: None,
            expires_at: None,
            allowed_ips: None,
            hmac_secret: None,
            revoked: false,
        }
    }

    #[test]
    fn remembers_until_evicted() {
        let cache = ApiKeyCache::default();
        assert!(cache.get("key_a").is_none());
        cache.put("key_a", "acme".parse().expect("tenant"), record());
        let (tenant, found) = cache.get("key_a").expect("cached");
        assert_eq!(tenant.as_str(), "acme");
        assert_eq!(found.principal.as_str(), "usr_ann");
        assert!(cache.get("key_b").is_none());
        cache.evict("key_a");
        assert!(cache.get("key_a").is_none());
    }

    #[test]
    fn stays_bounded() {
        let cache = ApiKeyCache::default();
        for index in 0..=API_KEY_CACHE_ENTRIES_MAX {
            cache.put(
                &format!("key_{index}"),
                "acme".parse().expect("tenant"),
                record(),
            );
        }
        assert!(cache.lock().len() <= API_KEY_CACHE_ENTRIES_MAX);
        assert!(cache
            .get(&format!("key_{API_KEY_CACHE_ENTRIES_MAX}"))
            .is_some());
    }
}
