//! The auditors' tool: verifies a payout-ledger export (DESIGN section 4) offline, in two
//! streaming passes over the file, on every core, with the very rules the writer applies
//! (`ledger_core::verify`). The binary (`main.rs`) is a thin shell over this library.

pub mod database;
pub mod error;
pub mod generate;
pub mod pipeline;
pub mod reader;
pub mod report;

pub use error::Error;
pub use pipeline::{verify_file, Options};
