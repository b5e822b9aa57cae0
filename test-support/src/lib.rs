//! What the tests need around them, so that `cargo test --workspace` passes in a fresh
//! clone with nothing running:
//!
//! - [`vectors_dir`]: the repository's own copy of the outside test vectors
//!   (`tests/vectors/`, byte for byte `shared/vectors`; [`outside_vectors_dir`] finds the
//!   original beside the checkout, where there is one, so a test can hold the two equal).
//! - [`database_url`]: `DATABASE_URL` when it is set; otherwise a throwaway PostgreSQL
//!   cluster, made once per test binary (`initdb` into a temporary directory, a free
//!   port, `pg_ctl start`) from the binaries on `PATH` or in `/usr/lib/postgresql/*/bin`.
//! - [`nats_url`]: `NATS_URL` when it is set; otherwise `nats-server -js` on a free port
//!   with a temporary store, once per test binary.
//! - [`ca::TestCa`]: a private CA made at test time and the server certificates it signs.
//!
//! A server started here is stopped, and its directory removed, by a small watchdog
//! process that waits for the test binary to exit, however it exits (a failed test, a
//! panic, a kill): Rust runs no destructors of statics at exit, and a test binary that
//! was killed runs none at all. A missing binary fails the test with one line naming it
//! and the Debian package that has it; nothing is skipped.

pub mod ca;

use std::ffi::OsStr;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The checkout's root (this crate sits one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The repository's copy of the outside vectors: `tests/vectors/` at the root.
pub fn vectors_dir() -> PathBuf {
    let dir = workspace_root().join("tests").join("vectors");
    assert!(
        dir.is_dir(),
        "{} missing: the repository's copy of the outside vectors",
        dir.display()
    );
    dir
}

/// A vector file of the repository's copy, as text.
pub fn read_vector(relative: &str) -> String {
    let path = vectors_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `shared/vectors` beside the checkout, the original of the copy, where it exists.
pub fn outside_vectors_dir() -> Option<PathBuf> {
    let root = workspace_root();
    let dir = root.parent()?.join("shared").join("vectors");
    dir.is_dir().then_some(dir)
}

/// The PostgreSQL server the tests use: `DATABASE_URL`, or one started for this test
/// binary (superuser `postgres`, trust authentication, database `postgres`).
pub fn database_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    static STARTED: OnceLock<String> = OnceLock::new();
    STARTED.get_or_init(start_postgres).clone()
}

/// The NATS server (JetStream on) the tests use: `NATS_URL`, or one started for this
/// test binary.
pub fn nats_url() -> String {
    if let Ok(url) = std::env::var("NATS_URL") {
        return url;
    }
    static STARTED: OnceLock<String> = OnceLock::new();
    STARTED.get_or_init(start_nats).clone()
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on 127.0.0.1")
}

/// `name` on `PATH`, else the first of `also` that is a file.
fn find_binary(name: &str, also: &[PathBuf]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(also.iter().cloned())
        .find(|candidate| candidate.is_file())
}

/// The directory holding `initdb` and `pg_ctl`: the one on `PATH`, else the newest
/// `/usr/lib/postgresql/*/bin`.
fn postgres_bin_dir() -> PathBuf {
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((version, entry.path().join("bin").join("initdb")))
                })
                .collect()
        })
        .unwrap_or_default();
    installed.sort();
    let also: Vec<PathBuf> = installed.into_iter().rev().map(|(_, path)| path).collect();
    find_binary("initdb", &also)
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
        .filter(|dir| dir.join("pg_ctl").is_file())
        .unwrap_or_else(|| {
            panic!(
                "initdb and pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin: \
                 install the Debian package postgresql (or set DATABASE_URL)"
            )
        })
}

/// A temporary directory that outlives this process until the watchdog removes it.
fn kept_temp_dir(prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temporary directory")
        .keep()
}

fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Runs `cleanup` (a shell command) once this process has exited.
fn after_exit(cleanup: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; {cleanup}",
        pid = std::process::id()
    );
    // Never waited for: it outlives this process on purpose.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh (the watchdog that stops the test servers)");
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > START_TIMEOUT {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not accept connections on 127.0.0.1:{port}: {log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server started for a test: its port on 127.0.0.1 and its directory (removed, with
/// the server stopped, when the test binary exits).
#[derive(Debug, Clone)]
pub struct StartedServer {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// The server's directory.
    pub dir: PathBuf,
}

fn start_postgres() -> String {
    let cluster = start_postgres_with(|_| Vec::new());
    format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port)
}

/// Starts a throwaway PostgreSQL cluster (superuser `postgres`, trust authentication on
/// 127.0.0.1). `prepare` may write files into the cluster's directory (they are handed to
/// the server's user with it) and returns extra settings, each `name=value`.
pub fn start_postgres_with(prepare: impl FnOnce(&Path) -> Vec<String>) -> StartedServer {
    let bin = postgres_bin_dir();
    let dir = kept_temp_dir("ledger-test-pg-");
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    let settings = prepare(&dir);
    // PostgreSQL refuses to run as root: then the cluster belongs to `postgres`.
    let as_root = std::fs::metadata(&dir)
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if as_root {
        let chown = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown postgres: {}", dir.display());
    }
    let run = |program: &str, args: &[&OsStr]| {
        let mut command = if as_root {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(bin.join(program));
            command
        } else {
            Command::new(bin.join(program))
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    run(
        "initdb",
        &[
            OsStr::new("--pgdata"),
            data.as_os_str(),
            OsStr::new("--auth=trust"),
            OsStr::new("--username=postgres"),
            OsStr::new("--encoding=UTF8"),
            OsStr::new("--no-sync"),
        ],
    );
    let port = free_port();
    // fsync off: a test cluster dies with its machine anyway; commits stay synchronous.
    let mut options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
        quoted(&dir)
    );
    for setting in settings {
        options.push_str(&format!(" -c {setting}"));
    }
    let pg_ctl = bin.join("pg_ctl");
    let as_postgres = if as_root {
        "runuser -u postgres -- "
    } else {
        ""
    };
    after_exit(&format!(
        "{as_postgres}{} stop -D {} -m immediate; rm -rf {}",
        quoted(&pg_ctl),
        quoted(&data),
        quoted(&dir)
    ));
    // The server's log goes to the file, so that no pipe of ours stays open.
    run(
        "pg_ctl",
        &[
            OsStr::new("start"),
            OsStr::new("--pgdata"),
            data.as_os_str(),
            OsStr::new("--wait"),
            OsStr::new("--timeout=60"),
            OsStr::new("--log"),
            log.as_os_str(),
            OsStr::new("-o"),
            OsStr::new(&options),
        ],
    );
    wait_for_port(port, "PostgreSQL", &log);
    StartedServer { port, dir }
}

fn start_nats() -> String {
    format!("nats://127.0.0.1:{}", start_nats_with(|_| Vec::new()).port)
}

/// Starts `nats-server -js` on a free port with a temporary store. `prepare` may write
/// files into its directory and returns extra arguments.
pub fn start_nats_with(prepare: impl FnOnce(&Path) -> Vec<String>) -> StartedServer {
    let bin = find_binary(
        "nats-server",
        &[
            PathBuf::from("/usr/sbin/nats-server"),
            PathBuf::from("/usr/bin/nats-server"),
        ],
    )
    .unwrap_or_else(|| {
        panic!(
            "nats-server not found on PATH or in /usr/sbin: install the Debian package \
             nats-server (or set NATS_URL)"
        )
    });
    let dir = kept_temp_dir("ledger-test-nats-");
    let log = dir.join("nats.log");
    let extra = prepare(&dir);
    let port = free_port();
    // Never waited for: it lives as long as this process, then the watchdog stops it.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("store"))
        .arg("-l")
        .arg(&log)
        .args(&extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    after_exit(&format!(
        "kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.1; done; rm -rf {dir}",
        pid = child.id(),
        dir = quoted(&dir)
    ));
    wait_for_port(port, "nats-server", &log);
    StartedServer { port, dir }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The started servers answer (each at most once per binary), on the path that a
    /// fresh clone takes when neither variable is set.
    #[test]
    fn started_servers_accept_connections() {
        for url in [start_postgres(), start_nats()] {
            let address = url
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .and_then(|host| host.rsplit_once('@').map_or(Some(host), |(_, h)| Some(h)))
                .expect("host:port")
                .to_owned();
            TcpStream::connect(&address).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn the_vectors_copy_is_in_the_repository() {
        assert!(vectors_dir().join("README.md").is_file());
        assert!(vectors_dir().join("exports").join("sample.jsonl").is_file());
    }
}
