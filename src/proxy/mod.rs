//! The request path between the HTTP handler and the provider drivers: config compilation
//! (once per generation), template resolution, Kong's request rules and the response rules.

pub mod api;
pub mod balancer;
pub mod compile;
pub mod native;
pub mod realtime;
pub mod request;
pub mod response;
pub mod template;
pub mod upload;
