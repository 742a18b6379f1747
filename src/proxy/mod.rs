//! The request path between the HTTP handler and the provider drivers: config compilation
//! (once per generation), template resolution, and Kong's request rules.

pub mod balancer;
pub mod compile;
pub mod native;
pub mod request;
pub mod template;
