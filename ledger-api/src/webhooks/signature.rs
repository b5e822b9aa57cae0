//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the signed content
//! is `<webhook-id>.<webhook-timestamp>.<body>`, the signature HMAC-SHA256 under the
//! secret's bytes, sent as `webhook-signature: v1,<base64>`; the secret is shown to the
//! subscriber as `whsec_<base64 of its bytes>`.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix of a secret as shown.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a freshly generated secret (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// A subscription's signing key. Its `Debug` shows nothing of it; zeroed on drop.
#[derive(Clone)]
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Wraps key bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random secret.
    pub fn generate() -> Self {
        Self::from_bytes(crate::util::random_bytes::<SECRET_BYTES>().to_vec())
    }

    /// Reads `whsec_<base64>` (the prefix is optional, as in the reference libraries).
    pub fn parse(text: &str) -> Option<Self> {
        let body = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let bytes = STANDARD.decode(body).ok()?;
        (!bytes.is_empty()).then(|| Self::from_bytes(bytes))
    }

    /// The key bytes (to encrypt them for storage).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as shown to the subscriber, once: `whsec_<base64>`.
    pub fn reveal(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(&*self.0)))
    }

    /// The `webhook-signature` value for a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC-SHA256 takes a key of any length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    //! Against the Standard Webhooks reference vector (which must be present: a
    //! missing vectors directory fails the test rather than skipping it).

    use super::*;

    #[test]
    fn the_standard_webhooks_vector() {
        let path = test_support::vectors_dir()
            .join("crypto")
            .join("standard_webhooks_sign.txt");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} missing from the vector"))
                .to_owned()
        };
        let secret = WebhookSecret::parse(&field("secret")).expect("secret");
        assert_eq!(
            hex::encode(secret.bytes()),
            field("secret_key_bytes_hex"),
            "the key is the base64-decoded secret"
        );
        assert_eq!(*secret.reveal(), field("secret"));
        let timestamp: i64 = field("webhook-timestamp").parse().expect("timestamp");
        let id = field("webhook-id");
        let body = field("body");
        assert_eq!(field("signed_content"), format!("{id}.{timestamp}.{body}"));
        let signature = secret.sign(&id, timestamp, body.as_bytes());
        assert_eq!(signature, field("webhook-signature"));
        // Any change to what is signed changes the signature.
        assert_ne!(secret.sign(&id, timestamp + 1, body.as_bytes()), signature);
        assert_ne!(
            secret.sign("msg_other", timestamp, body.as_bytes()),
            signature
        );
        assert_ne!(
            secret.sign(&id, timestamp, b"{\"test\": 2432232315}"),
            signature
        );
    }

    #[test]
    fn secrets_are_fresh_and_redacted() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert_eq!(a.bytes().len(), SECRET_BYTES);
        assert_ne!(a.bytes(), b.bytes());
        assert!(a.reveal().starts_with(SECRET_PREFIX));
        let parsed = WebhookSecret::parse(&a.reveal()).expect("round trip");
        assert_eq!(parsed.bytes(), a.bytes());
        assert_eq!(format!("{a:?}"), "WebhookSecret(<redacted>)");
        assert!(WebhookSecret::parse("whsec_not base64!").is_none());
        assert!(WebhookSecret::parse("whsec_").is_none());
    }
}
