//! AWS Signature Version 4 for Bedrock requests, over the final body:
//! https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html

use std::fmt;
use std::time::SystemTime;

use actix_web::http::header::{HeaderName, HeaderValue};
use aws_sigv4::http_request::{self, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use super::UpstreamRequest;

const SERVICE: &str = "bedrock";
/// Headers the signature sets; any copy already on the request (a client's own
/// `Authorization`) is dropped first.
const REPLACED: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Static or environment credentials. Debug never shows the secret or the session token.
pub(super) struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl Credentials {
    pub(super) fn new(
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    ) -> Self {
        Credentials {
            access_key_id,
            secret_access_key,
            session_token,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Only headers no hop rewrites are signed: `host` (from the URL), `content-type` and the
/// `x-amz-*` family. Forwarded client headers stay unsigned, so nothing between us and AWS
/// can invalidate the signature by touching them.
fn signed(name: &HeaderName) -> bool {
    let name = name.as_str();
    name == "content-type" || name.starts_with("x-amz")
}

/// Signs method, URL, the chosen headers and the final body; adds `authorization`,
/// `x-amz-date` and, with session credentials, `x-amz-security-token`.
pub(super) fn sign(
    credentials: &Credentials,
    region: &str,
    req: &mut UpstreamRequest,
    time: SystemTime,
) -> Result<(), String> {
    req.headers
        .retain(|(name, _)| !REPLACED.contains(&name.as_str()));
    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.as_str(),
        credentials.secret_access_key.as_str(),
        credentials.session_token.clone(),
        None,
        "ai-gateway",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("SigV4 parameters: {e}"))?
        .into();
    let instructions = {
        let headers = req
            .headers
            .iter()
            .filter(|(name, _)| signed(name))
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let signable = SignableRequest::new(
            req.method.as_str(),
            req.url.as_str(),
            headers,
            SignableBody::Bytes(&req.body),
        )
        .map_err(|e| format!("SigV4 cannot sign this request: {e}"))?;
        http_request::sign(signable, &params)
            .map_err(|e| format!("SigV4 signing failed: {e}"))?
            .into_parts()
            .0
    };
    let (headers, _query) = instructions.into_parts();
    for header in headers {
        let name = HeaderName::from_bytes(header.name().as_bytes())
            .map_err(|e| format!("SigV4 header name: {e}"))?;
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|_| format!("SigV4 produced an invalid '{name}' value"))?;
        value.set_sensitive(header.sensitive() || name == "authorization");
        req.headers.push((name, value));
    }
    Ok(())
}
