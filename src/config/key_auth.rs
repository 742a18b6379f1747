//! The `key-auth` plugin's `config` block and the decK `consumers` section, with Kong's field
//! names and defaults (`kong/plugins/key-auth/schema.lua`, decK's consumer type).

use serde::Deserialize;
use serde_json::Value;

use crate::config::default_true;
use crate::config::problem::{field, item, Problems};

fn default_key_names() -> Vec<String> {
    vec!["apikey".to_string()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    /// Header, query and body field names the key may arrive under, in order of preference.
    #[serde(default = "default_key_names")]
    pub key_names: Vec<String>,
    /// Strip the key before the request reaches the provider.
    #[serde(default)]
    pub hide_credentials: bool,
    /// A consumer (username or id) that unauthenticated requests run as instead of a 401.
    pub anonymous: Option<String>,
    #[serde(default = "default_true")]
    pub key_in_header: bool,
    #[serde(default = "default_true")]
    pub key_in_query: bool,
    #[serde(default)]
    pub key_in_body: bool,
    /// Accepted for compatibility: this gateway answers no CORS preflight itself.
    #[serde(default = "default_true")]
    pub run_on_preflight: bool,
    /// The realm of the `WWW-Authenticate` header on 401s (Kong's default is `kong`).
    pub realm: Option<String>,
    /// Konnect-only identity realms: accepted, only the local consumers are consulted.
    pub identity_realms: Option<Value>,
}

/// A decK consumer: `username` and/or `custom_id`, with its key-auth credentials and the
/// plugins scoped to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeckConsumer {
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub keyauth_credentials: Vec<KeyauthCredential>,
    #[serde(default)]
    pub plugins: Vec<Value>,
    /// Other credential kinds and groups decK nests here: accepted and ignored, since only
    /// key-auth authenticates in this gateway.
    pub acls: Option<Value>,
    pub basicauth_credentials: Option<Value>,
    pub hmacauth_credentials: Option<Value>,
    pub jwt_secrets: Option<Value>,
    pub oauth2_credentials: Option<Value>,
    pub mtls_auth_credentials: Option<Value>,
    pub groups: Option<Value>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyauthCredential {
    pub key: String,
    pub id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: Option<i64>,
}

/// Kong's key-auth rules: at least one key name, each a valid header name.
pub(crate) fn check(config: &KeyAuthConfig, path: &str, problems: &mut Problems) {
    let names = field(path, "key_names");
    if config.key_names.is_empty() {
        problems.push(&names, "length must be at least 1");
    }
    for (i, name) in config.key_names.iter().enumerate() {
        if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(item(&names, i), "bad header name: expected a token");
        }
    }
    if !(config.key_in_header || config.key_in_query || config.key_in_body) {
        problems.push(
            path,
            "at least one of 'key_in_header', 'key_in_query', 'key_in_body' must be true",
        );
    }
}

/// Kong's consumer rules: a username or a custom_id; keys are non-empty.
pub(crate) fn check_consumer(consumer: &DeckConsumer, path: &str, problems: &mut Problems) {
    let named = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    if !named(&consumer.username) && !named(&consumer.custom_id) {
        problems.push(
            path,
            "at least one of these fields must be non-empty: 'custom_id', 'username'",
        );
    }
    for (i, credential) in consumer.keyauth_credentials.iter().enumerate() {
        if credential.key.is_empty() {
            let at = item(&field(path, "keyauth_credentials"), i);
            problems.push(field(&at, "key"), "length must be at least 1");
        }
    }
}
