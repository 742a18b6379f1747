//! The one error type of the request path, and its single mapping to HTTP.
//!
//! Errors are classified by source: the client's request, the upstream provider, or the gateway
//! itself. Messages never carry credentials; raw upstream bodies go to debug logs only.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matched; Kong's own body shape (`{"message": ...}`), not the OpenAI error shape.
    #[error("no Route matched with those values")]
    NoRoute,
    /// A route without an `ai-proxy` plugin: this gateway only proxies AI routes.
    #[error("route '{0}' has no ai-proxy plugin")]
    NotAnAiRoute(String),
    /// key-auth refused the request; Kong's body shape and texts.
    #[error("{message}")]
    Unauthorized {
        message: &'static str,
        realm: header::HeaderValue,
    },
    /// ai-rate-limiting-advanced refused the request: Kong's body, status and headers.
    #[error("{}", .0.message)]
    RateLimited(Box<crate::limits::Refusal>),
    /// The shared rate-limit store cannot be reached and the policy fails closed.
    #[error("rate limiting is unavailable: {0}")]
    LimiterUnavailable(String),
    /// A client mistake, with Kong's texts where Kong has one.
    #[error("{0}")]
    BadRequest(String),
    #[error("request body too large: the limit for this route is {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The client did not send its body within the client request timeout (slow-loris).
    #[error("timed out reading the request body")]
    ClientTimeout,
    /// A 200 from the provider that could not be turned into the OpenAI format.
    #[error("transformation failed from type {provider}://{route_type}: {reason}")]
    Transformation {
        provider: &'static str,
        route_type: &'static str,
        reason: String,
    },
    /// The request may have reached the provider (a retry would repeat it).
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    /// No connection was made, so the request never reached the provider.
    #[error("upstream unreachable: {0}")]
    UpstreamConnect(String),
    #[error("upstream timed out after {0} ms")]
    UpstreamTimeout(u64),
    #[error("upstream timed out after {0} ms")]
    UpstreamConnectTimeout(u64),
    /// Every target of an ai-proxy-advanced route is excluded by the circuit breaker.
    #[error("all targets of route '{route}' are unavailable: the circuit breaker excluded them after repeated failures; retry later")]
    NoAvailableTarget { route: String },
    /// The provider answered a WebSocket upgrade with this status instead of switching.
    #[error("the provider refused the WebSocket upgrade with status {0}")]
    UpstreamRefused(u16),
    #[error("upstream answered with a malformed response: {0}")]
    UpstreamProtocol(String),
    /// Cloud identity (AWS / GCP) could not be established; the reason goes to the log only.
    #[error("LLM request failed before proxying")]
    Identity(String),
    /// The client went away before the answer; nobody reads this one.
    #[error("client closed the request")]
    ClientGone,
    #[error("internal error")]
    Internal(String),
}

impl GatewayError {
    /// The JSON body a client receives, in the OpenAI error shape (Kong's for `NoRoute`).
    pub fn body(&self) -> String {
        let message = self.to_string();
        match self {
            GatewayError::NoRoute
            | GatewayError::Unauthorized { .. }
            | GatewayError::RateLimited(_) => serde_json::json!({ "message": message }).to_string(),
            _ => serde_json::json!({ "error": { "message": message, "type": self.kind() } })
                .to_string(),
        }
    }

    fn kind(&self) -> &'static str {
        match self.status_code().as_u16() {
            400..=499 => "invalid_request_error",
            _ => "gateway_error",
        }
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute | GatewayError::NotAnAiRoute(_) => StatusCode::NOT_FOUND,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::RateLimited(refusal) => refusal.status,
            GatewayError::LimiterUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Transformation { .. }
            | GatewayError::Identity(_)
            | GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::UpstreamUnreachable(_)
            | GatewayError::UpstreamConnect(_)
            | GatewayError::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout(_) | GatewayError::UpstreamConnectTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::NoAvailableTarget { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamRefused(status) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            // nginx's "client closed request"; only ever seen in logs.
            GatewayError::ClientGone => {
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"));
        match self {
            GatewayError::Unauthorized { realm, .. } => {
                response.insert_header((header::WWW_AUTHENTICATE, realm.clone()));
            }
            GatewayError::RateLimited(refusal) => {
                for (name, value) in &refusal.headers {
                    response.insert_header((name.clone(), value.clone()));
                }
            }
            _ => {}
        }
        response.body(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_route_uses_kongs_body() {
        assert_eq!(
            GatewayError::NoRoute.body(),
            r#"{"message":"no Route matched with those values"}"#
        );
        assert_eq!(GatewayError::NoRoute.status_code(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn client_errors_use_the_openai_shape() {
        let e = GatewayError::BadRequest("request body doesn't contain valid prompts".into());
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(
            v["error"]["message"],
            "request body doesn't contain valid prompts"
        );
        assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn upstream_failures_map_to_gateway_statuses() {
        assert_eq!(
            GatewayError::UpstreamUnreachable("connection refused".into()).status_code(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            GatewayError::UpstreamTimeout(100).status_code(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            GatewayError::BodyTooLarge { limit: 10 }.status_code(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
