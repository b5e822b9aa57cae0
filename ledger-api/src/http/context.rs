//! What the middleware hands to the handlers (`Caller`, `Idempotency`, `RequestId`)
//! and the request's limits and headers.

use std::borrow::Cow;

use axum::http::{HeaderMap, Method};
use ledger_core::ids::{PrincipalId, TenantId};
use ledger_core::policy::Permission;

use crate::util;

/// Largest request body accepted.
pub const BODY_MAX: usize = 64 * 1024;
/// Largest body read (and dropped) to answer 413 cleanly; beyond it the answer is sent
/// at once.
pub(crate) const DRAIN_MAX: usize = 1024 * 1024;
/// Request signatures older or newer than this are refused.
pub const SIGNATURE_WINDOW_SECONDS: i64 = 300;
/// A pending idempotent request older than this is taken over by a retry (its process
/// died, or its client gave up).
pub(crate) const IDEMPOTENCY_TAKEOVER_SECONDS: i64 = 10;
/// How long after its answer an invite redemption is replayed for its `Idempotency-Key`:
/// the answer holds the new API key and TOTP secret, so past this a spent invite is worth
/// nothing again (401, as any spent invite).
pub const REDEEM_REPLAY_SECONDS: i64 = 3600;
/// The public route that redeems an invite.
pub(crate) const REDEEM_PATH: &str = "/v1/invites/redeem";

/// The authenticated caller: the tenant comes from the key, never from the request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's tenant.
    pub tenant: TenantId,
    /// The key's principal.
    pub principal: PrincipalId,
    /// The key id.
    pub key_id: String,
    /// The key's scopes.
    pub scopes: Option<Vec<Permission>>,
    /// This request's id (written into the events it causes).
    pub request_id: RequestId,
}

/// The idempotency of a POST: event ids derive from `seed`; `recheck` when a retry took
/// over a request that may have committed.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency {
    /// Seed for the events' ids.
    pub seed: [u8; 32],
    /// Whether the writer must first look for the events in the chain.
    pub recheck: bool,
}

/// Marks an answer that carries a secret shown once (a webhook's signing secret): the
/// copy kept for an idempotent replay is stored encrypted, as every stored secret is.
#[derive(Debug, Clone, Copy)]
pub struct SecretAnswer;

/// The field (for the encryption's AAD) of an encrypted idempotent answer.
pub(crate) const SEALED_ANSWER_FIELD: &str = "answer";

/// The id of a request: the client's `X-Request-Id` when it is acceptable, else a fresh
/// UUID. It is logged, echoed in the response, and written into the data of every event
/// the request causes (so the audit view, rebuilt from the chain alone, shows it): hence
/// short and of a safe charset, `[A-Za-z0-9_-]{1,64}`, so that it can neither forge a log
/// line or a header nor bloat the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The longest accepted id.
    pub const LENGTH_MAX: usize = 64;

    /// An acceptable id, or `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let acceptable = !text.is_empty()
            && text.len() <= Self::LENGTH_MAX
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        acceptable.then(|| Self(text.to_owned()))
    }

    /// The client's id if acceptable, else a fresh random UUID.
    pub fn from_header_or_new(header: Option<&str>) -> Self {
        header
            .and_then(Self::parse)
            .unwrap_or_else(|| Self(uuid::Uuid::from_bytes(util::random_bytes::<16>()).to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

tokio::task_local! {
    /// The seq of the last event the current request committed (set by the handler's
    /// submissions, read by [`prepare`] for the `Ledger-Seq` header).
    pub(crate) static COMMITTED_SEQ: std::cell::Cell<Option<u64>>;
}

/// Records that the current request committed events up to `seq` (answered in the
/// `Ledger-Seq` header, for a client to pass as `min_seq` to a read elsewhere).
pub fn note_committed(seq: u64) {
    let _ = COMMITTED_SEQ.try_with(|cell| cell.set(Some(cell.get().map_or(seq, |s| s.max(seq)))));
}

/// The header naming the seq a request's writes committed up to.
pub const SEQ_HEADER: &str = "ledger-seq";

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/v1/invites/redeem"
    )
}

pub(crate) fn is_sensitive(path: &str) -> bool {
    matches!(path, "/v1/invites/redeem" | "/v1/me/totp/confirm")
}

/// A path segment with its percent-escapes decoded, as the router's `Path` extractor
/// decodes it (so that `%61uthorize` counts as `authorize`).
pub(crate) fn decoded_segment(segment: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

/// Whether a request is one of those that carry a TOTP code (DESIGN 7: money movement
/// and administration under 2FA, and the enrolment's confirmation): these are limited
/// per API key too, tighter, when a person sends them. By method and path, whatever the
/// body holds (a request without its code is denied, and recorded, all the same).
pub(crate) fn carries_a_code(method: &Method, path: &str) -> bool {
    let segments: Vec<Cow<'_, str>> = path.split('/').skip(1).map(decoded_segment).collect();
    let segments: Vec<&str> = segments.iter().map(AsRef::as_ref).collect();
    let gated = |action: &str| matches!(action, "authorize" | "execute" | "release");
    match segments.as_slice() {
        ["v1", "payouts", _, action] | ["v1", "payouts", action] => {
            method == Method::POST && gated(action)
        }
        ["v1", "users", _, "roles"]
        | ["v1", "roles"]
        | ["v1", "me", "api-keys"]
        | ["v1", "me", "totp", "confirm"] => method == Method::POST,
        ["v1", "policy", "approvals"] => method == Method::PUT,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_that_carry_a_code() {
        let check = |method: Method, path: &str, expected: bool| {
            assert_eq!(carries_a_code(&method, path), expected, "{method} {path}");
        };
        for action in ["authorize", "execute", "release"] {
            check(Method::POST, &format!("/v1/payouts/po_1/{action}"), true);
            check(Method::POST, &format!("/v1/payouts/{action}"), true);
        }
        check(Method::POST, "/v1/payouts/po_1/%61uthorize", true);
        check(Method::POST, "/v1/payouts/%65xecute", true);
        check(Method::POST, "/v1/users/usr_1/roles", true);
        check(Method::POST, "/v1/roles", true);
        check(Method::POST, "/v1/me/api-keys", true);
        check(Method::POST, "/v1/me/totp/confirm", true);
        check(Method::PUT, "/v1/policy/approvals", true);
        for (method, path) in [
            (Method::POST, "/v1/payouts/po_1/approve"),
            (Method::POST, "/v1/payouts/approve"),
            (Method::POST, "/v1/payouts/po_1/cancel"),
            (Method::POST, "/v1/payouts"),
            (Method::GET, "/v1/payouts/po_1"),
            (Method::GET, "/v1/payouts/authorize"),
            (Method::DELETE, "/v1/users/usr_1/roles/approver"),
            (Method::DELETE, "/v1/me/api-keys/key_1"),
            (Method::GET, "/v1/policy/approvals"),
            (Method::POST, "/v1/users"),
            (Method::POST, "/v1/invites/redeem"),
            (Method::POST, "/v1/payouts/po_1/authorize/x"),
            (Method::POST, "/v1/payouts/po_1/%zzuthorize"),
        ] {
            check(method, path, false);
        }
    }

    #[test]
    fn percent_escapes_are_decoded_in_segments() {
        for (segment, expected) in [
            ("plain", "plain"),
            ("%61b", "ab"),
            ("%41%42", "AB"),
            ("100%", "100%"),
            ("%4", "%4"),
            ("%zz", "%zz"),
            ("a%2Fb", "a/b"),
        ] {
            assert_eq!(decoded_segment(segment), expected, "{segment}");
        }
    }

    #[test]
    fn request_ids_are_validated_or_replaced() {
        for good in ["a", "req-1_X", &"x".repeat(64)] {
            assert_eq!(RequestId::from_header_or_new(Some(good)).as_str(), good);
        }
        for bad in [
            "",
            "has space",
            "new\nline",
            "quote\"",
            "é",
            "a/b",
            "{\"json\":1}",
            &"x".repeat(65),
        ] {
            assert_eq!(RequestId::parse(bad), None, "{bad:?}");
            let replaced = RequestId::from_header_or_new(Some(bad));
            assert_ne!(replaced.as_str(), bad);
            assert!(
                RequestId::parse(replaced.as_str()).is_some(),
                "a fresh id is acceptable"
            );
        }
        assert_ne!(
            RequestId::from_header_or_new(None),
            RequestId::from_header_or_new(None)
        );
    }
}
