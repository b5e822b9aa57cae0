//! Counters served at `/metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Request counters by status class and problem code.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(u16, &'static str), u64>>,
    latency_micros_total: AtomicU64,
    wal_checkpoints_finished: AtomicU64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn observe(&self, status: u16, code: &'static str, micros: u64) {
        let mut requests = match self.requests.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        *requests.entry((status, code)).or_insert(0) += 1;
        self.latency_micros_total
            .fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts one WAL checkpoint that copied the whole log back (embedded store).
    pub fn wal_checkpoint_finished(&self) {
        self.wal_checkpoints_finished
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text.
    pub fn render(&self, commits: u64, transactions: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP ledger_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE ledger_http_requests_total counter\n");
        let requests = match self.requests.lock() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for ((status, code), n) in requests {
            out.push_str(&format!(
                "ledger_http_requests_total{{status=\"{status}\",code=\"{code}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP ledger_http_request_seconds_total Time spent answering.\n");
        out.push_str("# TYPE ledger_http_request_seconds_total counter\n");
        let micros = self.latency_micros_total.load(Ordering::Relaxed);
        out.push_str(&format!(
            "ledger_http_request_seconds_total {}.{:06}\n",
            micros / 1_000_000,
            micros % 1_000_000
        ));
        out.push_str("# HELP ledger_commits_total Group commits of one tenant's events.\n");
        out.push_str("# TYPE ledger_commits_total counter\n");
        out.push_str(&format!("ledger_commits_total {commits}\n"));
        out.push_str(
            "# HELP ledger_append_transactions_total Store transactions that committed events.\n",
        );
        out.push_str("# TYPE ledger_append_transactions_total counter\n");
        out.push_str(&format!(
            "ledger_append_transactions_total {transactions}\n"
        ));
        out.push_str(
            "# HELP ledger_wal_checkpoints_total WAL checkpoints that copied the whole log back (embedded store).\n",
        );
        out.push_str("# TYPE ledger_wal_checkpoints_total counter\n");
        out.push_str(&format!(
            "ledger_wal_checkpoints_total {}\n",
            self.wal_checkpoints_finished.load(Ordering::Relaxed)
        ));
        out
    }
}
