//! The pure domain of the payout ledger (DESIGN sections 3 and 4).
//!
//! No tokio, no sqlx, no axum, no clock, no randomness, no file or network IO: time, ids
//! and keys arrive as arguments. `decide(&State, &Command, &Context)` returns events or a
//! rejection; `apply` folds events into state; [`verify`] checks a whole export with the
//! very same `decide`.

pub mod autopay;
pub mod canonical;
pub mod checkpoint;
pub mod command;
pub mod crypto;
pub mod decide;
pub mod event;
pub mod ids;
pub mod money;
pub mod policy;
pub mod proof;
pub mod snapshot;
pub mod state;
pub mod time;
pub mod verify;

pub use checkpoint::Checkpoint;
pub use command::{Command, Context, Enforcement, Rejection};
pub use decide::{decide, decide_batch, rejection_event};
pub use event::{ChainHead, Event, EventBody};
pub use money::{Currency, Money};
pub use state::{apply, TenantState};
#[cfg(feature = "testkit")]
pub mod testkit;
