//! The request path between the HTTP handler and the provider drivers: config compilation
//! (once per generation), template resolution, Kong's request rules and the response rules.

pub(crate) mod api;
pub(crate) mod balancer;
pub mod compile;
pub(crate) mod native;
pub(crate) mod realtime;
pub mod request;
pub(crate) mod response;
pub(crate) mod template;
pub(crate) mod upload;
