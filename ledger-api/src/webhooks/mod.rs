//! Webhooks (DESIGN section 8) per the Standard Webhooks spec: subscriptions (records
//! beside the chain, `subscription`), managed over HTTP by `crate::routes::webhooks`,
//! and the delivery worker `serve` runs ([`delivery::run`]) with its settings
//! (`settings`), signatures (`signature`) and target rules (`target`).

pub mod delivery;
pub mod settings;
pub mod signature;
pub mod subscription;
pub mod target;
