//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of drift either way), with each
//! step usable once per user, and the lockout after five wrong codes.

use totp_rs::{Algorithm, TOTP};

/// Seconds per step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Wrong codes before the lockout.
pub const FAILURES_MAX: u32 = 5;
/// How long the lockout lasts.
pub const LOCKOUT_SECONDS: i64 = 15 * 60;
/// Secret length (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;

/// Why a TOTP cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the TOTP: {0}")]
pub struct TotpError(String);

fn totp(
    secret: &[u8],
    account: &str,
    digits: usize,
    algorithm: Algorithm,
) -> Result<TOTP, TotpError> {
    TOTP::new(
        algorithm,
        digits,
        1,
        STEP_SECONDS,
        secret.to_vec(),
        Some("payout-ledger".to_owned()),
        account.to_owned(),
    )
    .map_err(|e| TotpError(e.to_string()))
}

/// The code of `step` for `secret`.
pub fn code_at_step(secret: &[u8], step: u64) -> Result<String, TotpError> {
    Ok(totp(secret, "x", DIGITS, Algorithm::SHA1)?.generate(step * STEP_SECONDS))
}

/// The base32 secret and the `otpauth://` URI an authenticator app (or `oathtool
/// --totp -b`) takes.
pub fn enrolment(secret: &[u8], tenant: &str, user: &str) -> Result<(String, String), TotpError> {
    let account = format!("{user}@{tenant}");
    let totp = totp(secret, &account, DIGITS, Algorithm::SHA1)?;
    Ok((totp.get_secret_base32(), totp.get_url()))
}

/// The step (greater than `last_step`) within one step of `now_seconds` whose code is
/// `code`, if any.
pub fn matching_step(
    secret: &[u8],
    code: &str,
    now_seconds: u64,
    last_step: u64,
) -> Result<Option<u64>, TotpError> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let current = now_seconds / STEP_SECONDS;
    let totp = totp(secret, "x", DIGITS, Algorithm::SHA1)?;
    let mut found = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        if step <= last_step {
            continue;
        }
        let expected = totp.generate(step * STEP_SECONDS);
        // Compare every candidate, so the time taken does not tell which one matched.
        if crate::util::constant_time_eq(expected.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> String {
        test_support::read_vector("crypto/rfc6238_totp.txt")
    }

    /// RFC 6238 Appendix B, as shipped in shared/vectors (8 digits there; the service
    /// uses the same algorithm with 6).
    #[test]
    fn rfc6238_vectors() {
        let seed = |mode: &str| -> Vec<u8> {
            let ascii = b"1234567890".repeat(7);
            let len = match mode {
                "SHA1" => 20,
                "SHA256" => 32,
                _ => 64,
            };
            ascii[..len].to_vec()
        };
        let mut checked = 0;
        for line in vectors()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let fields: Vec<&str> = line.split('|').collect();
            let [time, _, code, mode] = fields[..] else {
                panic!("row {line}");
            };
            let algorithm = match mode {
                "SHA1" => Algorithm::SHA1,
                "SHA256" => Algorithm::SHA256,
                _ => Algorithm::SHA512,
            };
            let t: u64 = time.parse().expect("time");
            let generated = totp(&seed(mode), "x", 8, algorithm)
                .expect("totp")
                .generate(t);
            assert_eq!(generated, code, "{line}");
            if mode == "SHA1" {
                // The six-digit code is the last six digits of the eight-digit one.
                assert_eq!(code_at_step(&seed(mode), t / 30).expect("code"), &code[2..]);
            }
            checked += 1;
        }
        assert!(checked >= 18, "{checked} rows");
    }

    #[test]
    fn a_step_matches_once_and_only_within_one_step() {
        let secret = [7u8; SECRET_BYTES];
        let now = 1_800_000_000;
        let step = now / STEP_SECONDS;
        for drift in [step - 1, step, step + 1] {
            let code = code_at_step(&secret, drift).expect("code");
            assert_eq!(
                matching_step(&secret, &code, now, 0).expect("ok"),
                Some(drift)
            );
            assert_eq!(
                matching_step(&secret, &code, now, drift).expect("ok"),
                None,
                "reuse"
            );
        }
        let far = code_at_step(&secret, step + 2).expect("code");
        assert_eq!(matching_step(&secret, &far, now, 0).expect("ok"), None);
        assert_eq!(matching_step(&secret, "12345", now, 0).expect("ok"), None);
        assert_eq!(matching_step(&secret, "abcdef", now, 0).expect("ok"), None);
    }

    #[test]
    fn the_uri_is_an_otpauth_uri_with_the_secret() {
        let (base32, uri) = enrolment(&[1u8; SECRET_BYTES], "acme", "usr_ann").expect("uri");
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&format!("secret={base32}")), "{uri}");
        assert!(uri.contains("issuer=payout-ledger"), "{uri}");
    }
}
