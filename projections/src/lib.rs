//! Pure read models folded from ledger-core events (balances, payouts, the audit view).
//! Filled by the projections issue; it depends on ledger-core only.
