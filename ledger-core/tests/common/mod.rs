//! Helpers shared by ledger-core's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `shared/vectors`, beside the checkout (or `LEDGER_VECTORS_DIR`). Panics when absent:
/// a vector test that cannot find its vectors fails, it is never skipped.
pub fn vectors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LEDGER_VECTORS_DIR") {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for ancestor in manifest.ancestors() {
        let candidate = ancestor.join("shared").join("vectors");
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!("shared/vectors not found beside the checkout; set LEDGER_VECTORS_DIR");
}

pub fn read_vector(relative: &str) -> String {
    let path = vectors_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
