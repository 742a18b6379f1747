//! ai-gateway: Kong decK `ai-proxy` configuration in, one OpenAI-compatible API out.
//!
//! The module tree is public so integration tests can drive the real app in-process.

pub(crate) mod actors;
pub(crate) mod app;
pub mod cli;
pub(crate) mod codec;
pub mod config;
pub(crate) mod error;
pub(crate) mod formats;
pub(crate) mod handler;
pub(crate) mod key_auth;
pub mod limits;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod mock;
pub(crate) mod panic_guard;
pub mod providers;
pub mod proxy;
pub(crate) mod router;
pub(crate) mod signals;
pub(crate) mod status;
pub(crate) mod telemetry;
pub(crate) mod worker;
