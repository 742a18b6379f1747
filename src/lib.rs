//! ai-gateway: Kong decK `ai-proxy` configuration in, one OpenAI-compatible API out.
//!
//! The module tree is public so integration tests can drive the real app in-process.

pub mod actors;
pub mod app;
pub mod cli;
pub mod codec;
pub mod config;
pub mod error;
pub mod formats;
pub mod handler;
pub mod key_auth;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mock;
pub(crate) mod panic_guard;
pub mod providers;
pub mod proxy;
pub mod router;
pub mod signals;
pub mod status;
pub mod telemetry;
pub mod worker;
