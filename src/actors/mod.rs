//! The actor pipeline. Per worker thread: one [`route::RouteActor`] per AI route (owning that
//! route's compiled plugin) and one [`provider::ProviderActor`] owning the upstream connection
//! pools, which the route actors of its worker call directly; per streamed answer one
//! [`stream::StreamActor`]. Process-wide: the
//! [`config::ConfigActor`] that parses, validates and swaps configs on reload.

pub mod config;
pub mod limiter;
pub mod messages;
pub mod provider;
pub mod realtime;
pub mod route;
pub mod stream;
mod write_timeout;
