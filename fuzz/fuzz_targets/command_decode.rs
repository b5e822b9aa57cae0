#![no_main]
//! See `ledger_fuzz::command_decode` (fuzz/src/lib.rs) and fuzz/README.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ledger_fuzz::command_decode(data);
});
