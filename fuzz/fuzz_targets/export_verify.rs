#![no_main]
//! See `ledger_fuzz::export_verify` (fuzz/src/lib.rs) and fuzz/README.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ledger_fuzz::export_verify(data);
});
