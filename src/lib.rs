//! Tessera: self-hosted, Okta-style custom authorization servers on Kubernetes.

pub mod api;
pub mod config;
pub mod expression;
#[doc(hidden)]
pub mod fuzz;
pub mod issuer;
pub mod keys;
pub mod listener;
pub mod operator;
pub mod outbound;
pub mod plugin;
pub mod policy;
pub mod shutdown;
pub mod standalone;
pub mod store;
pub mod telemetry;
