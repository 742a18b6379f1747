//! Bedrock: placeholder until its translator lands; every config naming it is rejected.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{RequestCtx, StreamTranslate, Translate, Translated};
use crate::config::ai_proxy::{AiProxyConfig, RouteType};
use crate::error::GatewayError;

pub struct Bedrock;

impl Translate for Bedrock {
    fn from_config(_config: &AiProxyConfig) -> Result<Self, String> {
        Err("provider 'bedrock' is not available in this build".into())
    }
    fn supports(&self, _route_type: RouteType) -> bool {
        false
    }
    fn url(&self, _ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
        Err(GatewayError::Internal("unavailable provider".into()))
    }
    fn request(&self, _ctx: &RequestCtx<'_>, _body: Map<String, Value>) -> Result<Value, GatewayError> {
        Err(GatewayError::Internal("unavailable provider".into()))
    }
    fn response(&self, _ctx: &RequestCtx<'_>, _body: Bytes) -> Result<Translated, String> {
        Err("unavailable provider".into())
    }
    fn stream(&self, _ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate> {
        unreachable!("unavailable provider has no streams")
    }
}
