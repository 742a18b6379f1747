//! A GCP service account's key signs a JWT (RFC 7523) that Google's token endpoint exchanges
//! for an access token: https://developers.google.com/identity/protocols/oauth2/service-account

use std::sync::Mutex;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::error::GatewayError;
use crate::providers::{url_escape, TokenSource, UpstreamRequest};

pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google caps an assertion's lifetime at one hour.
const ASSERTION_LIFETIME: u64 = 3600;
/// A cached token is not used in its last minute.
const EXPIRY_MARGIN: u64 = 60;

/// The fields of the service-account JSON that signing needs.
#[derive(Deserialize)]
struct ServiceAccountJson {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct Cached {
    token: String,
    /// Unix seconds after which the token is no longer handed out.
    until: u64,
}

pub struct ServiceAccountTokens {
    client_email: String,
    token_uri: String,
    key_id: Option<String>,
    key: EncodingKey,
    cache: Mutex<Option<Cached>>,
}

impl ServiceAccountTokens {
    /// Reads the service-account JSON; the error is a config problem (never names the key).
    pub fn from_json(json: &str) -> Result<Self, String> {
        let sa: ServiceAccountJson = serde_json::from_str(json)
            .map_err(|e| format!("GCP service account JSON is invalid: {}", e.classify_name()))?;
        let key = EncodingKey::from_rsa_pem(sa.private_key.as_bytes()).map_err(|_| {
            "GCP service account JSON: private_key is not an RSA private key in PEM form"
                .to_string()
        })?;
        Ok(ServiceAccountTokens {
            client_email: sa.client_email,
            token_uri: sa
                .token_uri
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string()),
            key_id: sa.private_key_id.filter(|k| !k.is_empty()),
            key,
            cache: Mutex::new(None),
        })
    }

    /// The signed JWT assertion, valid from `now` for an hour.
    pub fn assertion(&self, now: u64) -> Result<String, GatewayError> {
        let mut head = Header::new(Algorithm::RS256);
        head.kid = self.key_id.clone();
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat: now,
            exp: now + ASSERTION_LIFETIME,
        };
        jsonwebtoken::encode(&head, &claims, &self.key)
            .map_err(|e| GatewayError::Identity(format!("signing the GCP assertion: {e}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        // A panic elsewhere while holding the lock leaves a usable cache.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// The category only: serde's message could quote part of the secret.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "missing client_email or private_key",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

impl TokenSource for ServiceAccountTokens {
    fn cached(&self, now: u64) -> Option<String> {
        self.lock()
            .as_ref()
            .filter(|c| now < c.until)
            .map(|c| c.token.clone())
    }

    fn exchange_request(&self, now: u64) -> Result<UpstreamRequest, GatewayError> {
        let assertion = self.assertion(now)?;
        let body = format!(
            "grant_type={}&assertion={}",
            url_escape(GRANT_TYPE),
            url_escape(&assertion)
        );
        Ok(UpstreamRequest {
            method: Method::POST,
            url: self.token_uri.clone(),
            headers: vec![
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                ),
                (header::ACCEPT, HeaderValue::from_static("application/json")),
            ],
            body: Bytes::from(body),
        })
    }

    fn store(&self, body: &[u8], now: u64) -> Result<String, GatewayError> {
        let r: TokenResponse = serde_json::from_slice(body).map_err(|_| {
            GatewayError::Identity("GCP token endpoint answered without access_token".into())
        })?;
        let lifetime = r.expires_in.unwrap_or(ASSERTION_LIFETIME);
        *self.lock() = Some(Cached {
            token: r.access_token.clone(),
            until: now.saturating_add(lifetime).saturating_sub(EXPIRY_MARGIN),
        });
        Ok(r.access_token)
    }
}
