//! The shell's clock and randomness, which the core never touches.

use ledger_core::time::Timestamp;
use sha2::{Digest, Sha256};

/// Now, in microseconds since the epoch.
pub fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_unix_micros(micros)
}

/// Creates `path` (and its parents) if missing and makes it private to its owner (0700),
/// for the directories that hold keys.
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// `N` bytes from the operating system's CSPRNG. There is no fallback: without it the
/// service cannot issue secrets, so it stops.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(e) = getrandom::getrandom(&mut bytes) {
        panic!("the operating system's random number generator failed: {e}");
    }
    bytes
}

/// A random id body of lowercase letters and digits (about 5 bits each).
pub fn random_id(prefix: &str, chars: usize) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let bytes = random_bytes::<32>();
    let mut out = String::with_capacity(prefix.len() + chars);
    out.push_str(prefix);
    for byte in bytes.iter().take(chars.min(32)) {
        out.push(char::from(ALPHABET[usize::from(byte & 31)]));
    }
    out
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Equal-time comparison of two byte strings (for secrets and MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = random_id("usr_", 12);
        let b = random_id("usr_", 12);
        assert!(a.starts_with("usr_") && a.len() == 16);
        assert_ne!(a, b);
        assert!(a[4..]
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
