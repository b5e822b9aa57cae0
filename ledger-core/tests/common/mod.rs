//! Helpers shared by ledger-core's integration tests.
#![allow(dead_code, unused_imports)] // Each test binary uses part of this.

pub use test_support::{read_vector, vectors_dir};
