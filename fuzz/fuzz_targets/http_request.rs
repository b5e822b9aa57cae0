#![no_main]
//! See `ledger_fuzz::http_request` (fuzz/src/http_request.rs) and fuzz/README.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ledger_fuzz::http_request::http_request(data);
});
