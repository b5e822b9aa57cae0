//! sqlx adapters for the event log on SQLite and PostgreSQL. Filled by the store issue;
//! the only crate that knows SQL.
