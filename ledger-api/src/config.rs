//! Start-up configuration, validated before anything runs: a bad or missing setting
//! stops the process with a message that names the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ledger_store::crypto::{KeyRing, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV};
use ledger_store::Store;

use crate::keys;
use crate::util;

/// Where the data lives (every subcommand takes these, before or after its name).
#[derive(Debug, Clone, clap::Args)]
pub struct Storage {
    /// The embedded default: holds `ledger.db` (SQLite), and on first run the signing
    /// keys and master key, all 0600.
    #[arg(
        long,
        global = true,
        env = "LEDGER_DATA_DIR",
        default_value = "./ledger-data"
    )]
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the embedded SQLite (`postgres://...`).
    #[arg(long, global = true, env = "LEDGER_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where the signing keys live (default: `<data-dir>/keys`).
    #[arg(long, global = true, env = "LEDGER_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
}

/// Why the service cannot start. Each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a bad value.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.to_string(),
    }
}

impl Storage {
    /// Whether this is the embedded default.
    pub fn embedded(&self) -> bool {
        self.database_url.is_none()
    }

    /// The keys directory.
    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// Checks the settings that need no IO.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "--database-url / LEDGER_DATABASE_URL",
                    "must be a postgres:// URL",
                ));
            }
        }
        Ok(())
    }

    /// Opens the store (creating the data dir and migrating the embedded default).
    pub async fn open(&self) -> Result<Store, ConfigError> {
        self.validate()?;
        match &self.database_url {
            Some(url) => Store::connect(url)
                .await
                .map_err(|e| invalid("--database-url / LEDGER_DATABASE_URL", e)),
            None => {
                util::create_private_dir(&self.data_dir)
                    .map_err(|e| invalid("--data-dir / LEDGER_DATA_DIR", e))?;
                let path = self.data_dir.join("ledger.db");
                let store = Store::Sqlite(
                    ledger_store::SqliteStore::open(&path)
                        .await
                        .map_err(|e| invalid("--data-dir / LEDGER_DATA_DIR", e))?,
                );
                store
                    .migrate()
                    .await
                    .map_err(|e| invalid("--data-dir / LEDGER_DATA_DIR", e))?;
                Ok(store)
            }
        }
    }

    /// The master key ring: `LEDGER_MASTER_KEY` or `LEDGER_MASTER_KEY_FILE`; on the
    /// embedded default with neither set, `<data-dir>/master.key`, created on first run.
    pub fn key_ring(&self) -> Result<KeyRing, ConfigError> {
        let value = std::env::var(MASTER_KEY_ENV).ok();
        let file = std::env::var_os(MASTER_KEY_FILE_ENV).map(PathBuf::from);
        if value.is_none() && file.is_none() && self.embedded() {
            let path = self.data_dir.join("master.key");
            if !path.exists() {
                util::create_private_dir(&self.data_dir)
                    .map_err(|e| invalid("--data-dir / LEDGER_DATA_DIR", e))?;
                let key = hex::encode(util::random_bytes::<32>());
                write_private(&path, format!("k1:{key}\n").as_bytes())
                    .map_err(|e| invalid("--data-dir / LEDGER_DATA_DIR", e))?;
            }
            return KeyRing::from_settings(None, Some(&path))
                .map_err(|e| invalid(MASTER_KEY_FILE_ENV, e));
        }
        KeyRing::from_settings(value.as_deref(), file.as_deref()).map_err(|e| {
            invalid(
                if file.is_some() {
                    MASTER_KEY_FILE_ENV
                } else {
                    MASTER_KEY_ENV
                },
                e,
            )
        })
    }

    /// The signing keys: generated on the embedded store's first run, then loaded.
    pub fn keys(&self) -> Result<keys::Keys, ConfigError> {
        let keys_dir = self.keys_dir();
        if self.embedded() {
            keys::ensure_keys(&keys_dir, util::now())
                .map_err(|e| invalid("--keys-dir / LEDGER_KEYS_DIR", e))?;
        }
        keys::load(&keys_dir).map_err(|e| invalid("--keys-dir / LEDGER_KEYS_DIR", e))
    }
}

/// How long a read waits by default for the read model to reflect the seq it needs.
pub const READ_WAIT_DEFAULT: Duration = Duration::from_secs(5);
/// The longest wait `--read-wait-ms` may set.
pub const READ_WAIT_MAX: Duration = Duration::from_secs(60);

/// Checks `--read-wait-ms`.
pub fn read_wait(milliseconds: u64) -> Result<Duration, ConfigError> {
    let wait = Duration::from_millis(milliseconds);
    if wait > READ_WAIT_MAX {
        return Err(invalid(
            "--read-wait-ms / LEDGER_READ_WAIT_MS",
            format!("at most {} ms", READ_WAIT_MAX.as_millis()),
        ));
    }
    Ok(wait)
}

/// Checks `--wal-reset-frames`: at least one frame, and below the autocheckpoint so that
/// the background checkpoint, not a commit, copies the log back.
pub fn wal_reset_frames(frames: i64) -> Result<i64, ConfigError> {
    let max = i64::from(ledger_store::sqlite::WAL_AUTOCHECKPOINT_PAGES);
    if !(1..max).contains(&frames) {
        return Err(invalid(
            "--wal-reset-frames / LEDGER_WAL_RESET_FRAMES",
            format!("from 1 to {}", max - 1),
        ));
    }
    Ok(frames)
}

/// Parses `--listen`.
pub fn listen_address(text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|e| invalid("--listen / LEDGER_LISTEN", format!("{text:?}: {e}")))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
