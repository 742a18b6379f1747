//! Configuration: the decK file (services, routes, consumers and their plugins) and the server
//! settings.
//!
//! Loading is two-phase: raw serde types, then validation that collects every problem with its
//! field path, giving an immutable [`load::GatewayConfig`].

pub mod ai_proxy;
pub(crate) mod ai_proxy_advanced;
pub mod deck;
pub(crate) mod env_subst;
pub mod key_auth;
pub mod load;
pub(crate) mod problem;
pub(crate) mod prometheus;
pub(crate) mod rate_limit;
pub mod settings;
pub(crate) mod validate;

/// serde's `default` for the boolean settings that are on unless the file turns them off.
pub(crate) fn default_true() -> bool {
    true
}
