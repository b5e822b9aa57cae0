//! Authentication: bearer keys (scopes, expiry, IP allow-list) and HMAC-signed requests
//! (timestamp, single-use nonce, body digest).

use std::net::IpAddr;

use axum::http::{HeaderMap, Method};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::context::{header, Caller, RequestId, SIGNATURE_WINDOW_SECONDS};
use crate::records::{kind, ApiKeyRecord};
use crate::state::AppState;
use crate::util;

/// Whether `ip` is in `entry` (an address or `address/prefix`).
pub(crate) fn ip_allowed(ip: IpAddr, entry: &str) -> bool {
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address, prefix.parse::<u32>().ok()),
        None => (entry, None),
    };
    let Ok(network) = address.parse::<IpAddr>() else {
        return false;
    };
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let bits = prefix.unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let bits = prefix.unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}

/// The string an HMAC-signing client signs: timestamp, nonce, method, path with query,
/// and the hex SHA-256 of the body, one per line.
pub fn signing_string(
    timestamp: &str,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    format!(
        "{timestamp}\n{nonce}\n{method}\n{path}\n{}",
        hex::encode(Sha256::digest(body))
    )
}

/// Checks the bearer key and, for `hmac` keys, the request signature.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path_and_query: &str,
    body: &[u8],
    ip: IpAddr,
    request_id: &RequestId,
) -> Result<Caller, ApiError> {
    let token = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let (key_id, secret) = token.split_once('.').ok_or(ApiError::Unauthorized)?;
    if !key_id.starts_with("key_") || key_id.len() > 64 || secret.is_empty() {
        return Err(ApiError::Unauthorized);
    }
    if let Err(retry_after) = state.limits.check_key(key_id) {
        return Err(ApiError::RateLimited { retry_after });
    }
    let (tenant, record) = match state.api_keys.get(key_id) {
        Some(found) => found,
        None => {
            let tenant = state
                .store
                .credential_tenant(key_id)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            let (_, record) = state
                .get::<ApiKeyRecord>(&tenant, kind::API_KEY, key_id)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            state.api_keys.put(key_id, tenant.clone(), record.clone());
            (tenant, record)
        }
    };
    let presented = util::sha256_hex(secret.as_bytes());
    if !util::constant_time_eq(presented.as_bytes(), record.secret_sha256.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    if record.revoked || record.expires_at.is_some_and(|at| at <= util::now()) {
        return Err(ApiError::Unauthorized);
    }
    if let Some(allowed) = &record.allowed_ips {
        if !allowed.iter().any(|entry| ip_allowed(ip, entry)) {
            return Err(ApiError::Unauthorized);
        }
    }
    if let Some(envelope) = &record.hmac_secret {
        let hmac_secret = state.open(&tenant, key_id, "hmac_secret", envelope)?;
        let timestamp = header(headers, "x-ledger-timestamp").ok_or(ApiError::Unauthorized)?;
        let nonce = header(headers, "x-ledger-nonce").ok_or(ApiError::Unauthorized)?;
        let signature = header(headers, "x-ledger-signature")
            .and_then(|v| v.strip_prefix("v1="))
            .and_then(|v| hex::decode(v).ok())
            .ok_or(ApiError::Unauthorized)?;
        let seconds: i64 = timestamp.parse().map_err(|_| ApiError::Unauthorized)?;
        if !within_signature_window(util::now().unix_seconds(), seconds)
            || nonce.is_empty()
            || nonce.len() > 64
        {
            return Err(ApiError::Unauthorized);
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&hmac_secret)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        mac.update(
            signing_string(timestamp, nonce, method.as_str(), path_and_query, body).as_bytes(),
        );
        mac.verify_slice(&signature)
            .map_err(|_| ApiError::Unauthorized)?;
        let nonce_id = format!("{key_id}:{nonce}");
        if !state
            .insert(&tenant, kind::NONCE, &nonce_id, &seconds)
            .await?
        {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(Caller {
        tenant,
        principal: record.principal,
        key_id: key_id.to_owned(),
        scopes: record.scopes,
        request_id: request_id.clone(),
    })
}

/// Whether a signed request's timestamp is within the window of now, either side;
/// any `i64` the client sends is answered, none overflows.
pub(crate) fn within_signature_window(now: i64, timestamp: i64) -> bool {
    now.abs_diff(timestamp) <= SIGNATURE_WINDOW_SECONDS.unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_window_edges_and_extremes() {
        let now = 1_800_000_000;
        assert!(within_signature_window(now, now));
        assert!(within_signature_window(now, now - 300));
        assert!(within_signature_window(now, now + 300));
        assert!(!within_signature_window(now, now - 301));
        assert!(!within_signature_window(now, now + 301));
        assert!(!within_signature_window(now, i64::MIN));
        assert!(!within_signature_window(now, i64::MAX));
        assert!(!within_signature_window(-now, i64::MAX));
    }

    #[test]
    fn ip_allow_list_entries() {
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        assert!(ip_allowed(ip, "10.1.2.3"));
        assert!(ip_allowed(ip, "10.1.0.0/16"));
        assert!(ip_allowed(ip, "0.0.0.0/0"));
        assert!(!ip_allowed(ip, "10.1.2.4"));
        assert!(!ip_allowed(ip, "10.2.0.0/16"));
        assert!(!ip_allowed(ip, "::1"));
        assert!(!ip_allowed(ip, "not an ip"));
        let v6: IpAddr = "::1".parse().expect("ip");
        assert!(ip_allowed(v6, "::1/128"));
    }
}
