//! Encryption at rest through the public interface: round trips, scope binding,
//! rotation, configuration errors that name their setting, and no key in any output.

use std::path::Path;
use std::sync::OnceLock;

use ledger_core::ids::TenantId;
use ledger_store::crypto::{
    FieldCryptoError, FieldScope, KeyConfigError, KeyRing, MasterKey, MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
};

/// A master key (64 hex characters) generated for this test process.
fn generated_key(cell: &'static OnceLock<String>) -> &'static str {
    cell.get_or_init(|| {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).expect("the OS's randomness");
        hex::encode(bytes)
    })
}

fn key_a() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    generated_key(&KEY)
}

fn key_b() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    generated_key(&KEY)
}

fn tenant(slug: &str) -> TenantId {
    slug.parse().expect("tenant")
}

fn scope<'a>(tenant: &'a TenantId, record: &'a str, field: &'a str) -> FieldScope<'a> {
    FieldScope {
        tenant,
        record,
        field,
    }
}

fn ring(text: &str) -> KeyRing {
    KeyRing::parse(text, MASTER_KEY_ENV).expect("key ring")
}

#[test]
fn values_round_trip_with_a_fresh_nonce_each_time() {
    let keys = ring(key_a());
    let acme = tenant("acme");
    let iban = b"DE89370400440532013000";
    let first = keys
        .encrypt(scope(&acme, "pay_lark", "iban"), iban)
        .expect("encrypt");
    let second = keys
        .encrypt(scope(&acme, "pay_lark", "iban"), iban)
        .expect("encrypt");
    assert!(first.starts_with("v1:k1:"), "{first}");
    assert_ne!(first, second, "a fresh nonce per value");
    assert_ne!(first[6..30], second[6..30], "the nonces differ");
    for envelope in [&first, &second] {
        let plain = keys
            .decrypt(scope(&acme, "pay_lark", "iban"), envelope)
            .expect("decrypt");
        assert_eq!(plain.as_slice(), iban);
        assert!(!envelope.contains("DE89"), "no plaintext in the envelope");
    }
    // Empty values too.
    let empty = keys
        .encrypt(scope(&acme, "pay_lark", "note"), b"")
        .expect("encrypt");
    assert!(keys
        .decrypt(scope(&acme, "pay_lark", "note"), &empty)
        .expect("decrypt")
        .is_empty());
}

#[test]
fn a_ciphertext_moved_to_another_record_field_or_tenant_does_not_decrypt() {
    let keys = ring(key_a());
    let (acme, beta) = (tenant("acme"), tenant("beta"));
    let envelope = keys
        .encrypt(scope(&acme, "usr_bob", "totp_secret"), b"JBSWY3DPEHPK3PXP")
        .expect("encrypt");
    for moved in [
        scope(&acme, "usr_ann", "totp_secret"),
        scope(&acme, "usr_bob", "webhook_secret"),
        scope(&beta, "usr_bob", "totp_secret"),
        // Boundaries between parts are part of the binding.
        scope(&acme, "usr_bobt", "otp_secret"),
    ] {
        assert_eq!(
            keys.decrypt(moved, &envelope),
            Err(FieldCryptoError::Authentication),
            "{moved:?}"
        );
    }
    assert!(keys
        .decrypt(scope(&acme, "usr_bob", "totp_secret"), &envelope)
        .is_ok());
}

#[test]
fn a_changed_or_malformed_envelope_is_refused() {
    let keys = ring(key_a());
    let acme = tenant("acme");
    let here = scope(&acme, "pay_lark", "iban");
    let envelope = keys
        .encrypt(here, b"GB33BUKB20201555555555")
        .expect("encrypt");
    // Flip one hex digit in every position of the body: nonce, ciphertext and tag.
    let prefix = "v1:k1:".len();
    for position in prefix..envelope.len() {
        let mut bytes = envelope.clone().into_bytes();
        bytes[position] = if bytes[position] == b'0' { b'1' } else { b'0' };
        let changed = String::from_utf8(bytes).expect("ascii");
        assert_eq!(
            keys.decrypt(here, &changed),
            Err(FieldCryptoError::Authentication),
            "changed at {position}"
        );
    }
    for malformed in [
        "",
        "v1:k1",
        "v2:k1:00",
        &envelope.replacen("v1", "V1", 1),
        &envelope.to_uppercase(),
        &envelope[..envelope.len() - 1],
        &envelope[..prefix + 10],
    ] {
        assert!(
            matches!(
                keys.decrypt(here, malformed),
                Err(FieldCryptoError::Malformed)
            ),
            "{malformed:?}"
        );
    }
    assert_eq!(
        keys.decrypt(here, &envelope.replacen("k1", "k9", 1)),
        Err(FieldCryptoError::UnknownKey("k9".into()))
    );
}

#[test]
fn rotation_encrypts_with_the_newest_key_and_still_reads_old_values() {
    let key_a = key_a();
    let key_b = key_b();
    let acme = tenant("acme");
    let here = scope(&acme, "pay_lark", "iban");
    let old_ring = ring(&format!("k2025:{key_a}"));
    let old_value = old_ring.encrypt(here, b"old secret").expect("encrypt");
    assert!(old_value.starts_with("v1:k2025:"));

    let rotated = ring(&format!("# oldest first\nk2025:{key_a}\nk2026:{key_b}\n"));
    assert_eq!(rotated.current_key_id(), "k2026");
    let new_value = rotated.encrypt(here, b"new secret").expect("encrypt");
    assert!(new_value.starts_with("v1:k2026:"), "{new_value}");
    assert_eq!(
        rotated
            .decrypt(here, &old_value)
            .expect("old value")
            .as_slice(),
        b"old secret"
    );
    assert_eq!(
        rotated
            .decrypt(here, &new_value)
            .expect("new value")
            .as_slice(),
        b"new secret"
    );
    // The old ring cannot read what the new key wrote.
    assert_eq!(
        old_ring.decrypt(here, &new_value),
        Err(FieldCryptoError::UnknownKey("k2026".into()))
    );
    // A different key under a reused id does not open the value.
    let impostor = ring(&format!("k2025:{key_b}"));
    assert_eq!(
        impostor.decrypt(here, &old_value),
        Err(FieldCryptoError::Authentication)
    );
}

#[test]
fn missing_or_malformed_keys_are_refused_with_the_setting_named() {
    let key_a = key_a();
    let key_b = key_b();
    let check = |result: Result<KeyRing, KeyConfigError>, names: &str| {
        let error = result.expect_err("refused");
        let message = error.to_string();
        assert!(message.contains(names), "{message:?} does not name {names}");
        for key in [key_a, key_b, &key_a[..20]] {
            assert!(!message.contains(key), "{message:?} shows key material");
            assert!(
                !format!("{error:?}").contains(key),
                "{error:?} shows key material"
            );
        }
    };
    check(KeyRing::from_settings(None, None), MASTER_KEY_ENV);
    check(KeyRing::from_settings(None, None), MASTER_KEY_FILE_ENV);
    check(
        KeyRing::from_settings(Some(key_a), Some(Path::new("/nonexistent"))),
        MASTER_KEY_FILE_ENV,
    );
    check(KeyRing::from_settings(Some(""), None), MASTER_KEY_ENV);
    check(
        KeyRing::from_settings(Some(&key_a[..62]), None),
        MASTER_KEY_ENV,
    );
    check(
        KeyRing::from_settings(Some(&format!("{key_a}00")), None),
        MASTER_KEY_ENV,
    );
    check(
        KeyRing::from_settings(Some(&format!("g{}", &key_a[1..])), None),
        MASTER_KEY_ENV,
    );
    check(
        KeyRing::from_settings(Some(&format!("{key_a},{key_b}")), None),
        MASTER_KEY_ENV,
    );
    check(
        KeyRing::from_settings(Some(&format!("k1:{key_a},k1:{key_b}")), None),
        MASTER_KEY_ENV,
    );
    check(
        KeyRing::from_settings(Some(&format!("Bad Id:{key_a}")), None),
        MASTER_KEY_ENV,
    );
    check(
        KeyRing::from_settings(None, Some(Path::new("/nonexistent/master.key"))),
        MASTER_KEY_FILE_ENV,
    );
}

#[cfg(unix)]
#[test]
fn the_key_file_is_read_and_must_be_private() {
    let key_a = key_a();
    let key_b = key_b();
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("master.key");
    std::fs::write(&path, format!("k1:{key_a}\nk2:{key_b}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let keys = KeyRing::from_settings(None, Some(&path)).expect("key file");
    assert_eq!(keys.current_key_id(), "k2");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let error = KeyRing::from_settings(None, Some(&path)).expect_err("world-readable");
    assert!(
        matches!(error, KeyConfigError::Permissions { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(MASTER_KEY_FILE_ENV));

    std::fs::write(&path, "not a key\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let error = KeyRing::from_settings(None, Some(&path)).expect_err("malformed");
    assert!(error.to_string().contains(MASTER_KEY_FILE_ENV), "{error}");
}

#[test]
fn keys_never_show_in_debug_output() {
    let key_a = key_a();
    let key_b = key_b();
    let keys = ring(&format!("k1:{key_a}\nk2:{key_b}"));
    let shown = format!("{keys:?} {keys:#?}");
    assert!(shown.contains("k1") && shown.contains("k2"), "{shown}");
    for key in [key_a, key_b, &key_a[..10], &key_b[..8]] {
        assert!(!shown.contains(key), "{shown}");
    }
    let master = MasterKey::from_bytes([0xab; 32]);
    assert_eq!(format!("{master:?}"), "MasterKey(<redacted>)");
    // Byte-array formatting of the key would show 171 (0xab).
    assert!(!format!("{master:?}").contains("171"));
}
