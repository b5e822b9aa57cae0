#![no_main]
//! See `ledger_fuzz::webhook_target` (fuzz/src/webhook_target.rs) and fuzz/README.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ledger_fuzz::webhook_target::webhook_target(data);
});
