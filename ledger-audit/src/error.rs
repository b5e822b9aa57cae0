//! Why the CLI could not run to a verdict: every variant is exit code 2 (ripgrep's
//! "could not run"), as opposed to a broken export, which is a verdict (exit 1).

use std::path::PathBuf;

use ledger_core::verify::UsageError;

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file cannot be opened or read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A file cannot be created or written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file (`-` for standard output).
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A line is longer than [`ledger_core::verify::LINE_LENGTH_MAX`]; it is not read
    /// into memory.
    #[error("line {line}: longer than {length_max} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The limit.
        length_max: usize,
    },
    /// A line is not UTF-8.
    #[error("line {line}: not UTF-8 (byte {offset} of the line)")]
    NotUtf8 {
        /// 1-based line number.
        line: usize,
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// The input is not a usable export: a malformed line, no header, an empty file.
    #[error(transparent)]
    Export(#[from] UsageError),
    /// The `--keys` file is not a usable key list.
    #[error("keys file {}: {message}", path.display())]
    Keys {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The database cannot be read.
    #[error("database: {0}")]
    Database(String),
    /// `generate` was asked for something it cannot write.
    #[error("generate: {0}")]
    Generate(String),
}
