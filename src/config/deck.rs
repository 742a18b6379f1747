//! The entities of a Kong decK file as written: services, routes and plugins.
//!
//! Each entity is read on its own and keeps its children (`routes`, `plugins`, a plugin's
//! `config`) as raw JSON values, so `load.rs` can read every child separately and a mistake in
//! one route does not hide the problems of its siblings. Field lists follow Kong's schemas
//! (`kong/db/schema/entities/{services,routes}.lua`) and decK's file types, and every entity
//! denies unknown fields: a typo is an error, never silently ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `_format_version` values Kong and decK accept.
pub const FORMAT_VERSIONS: [&str; 3] = ["3.0", "2.1", "1.1"];

/// The plugins this gateway runs.
pub const AI_PROXY: &str = "ai-proxy";
pub const AI_PROXY_ADVANCED: &str = "ai-proxy-advanced";
pub const PROMETHEUS: &str = "prometheus";
pub const KEY_AUTH: &str = "key-auth";
pub const AI_RATE_LIMITING: &str = "ai-rate-limiting-advanced";

/// Top-level sections decK (or Kong's declarative format) knows and that an AI gateway has no
/// use for. They are accepted, so a file shared with Kong loads unchanged, and ignored.
pub const IGNORED_TOP_LEVEL_KEYS: &[&str] = &[
    "acls",
    "basicauth_credentials",
    "ca_certificates",
    "certificates",
    "cloned_plugins",
    "consumer_groups",
    "custom_entities",
    "custom_plugins",
    "filter_chains",
    "hmacauth_credentials",
    "jwt_secrets",
    "key_sets",
    "keyauth_credentials",
    "keys",
    "licenses",
    "mtls_auth_credentials",
    "oauth2_credentials",
    "partials",
    "rbac_roles",
    "service_packages",
    "snis",
    "targets",
    "upstreams",
    "vaults",
];

/// An ignored section whose entries may carry nested plugins: those plugins would be scoped to
/// a consumer group, which this gateway cannot honour, so they are reported rather than ignored.
pub const CONSUMER_GROUPS: &str = "consumer_groups";

fn enabled_by_default() -> bool {
    true
}

/// A Kong service. `url` is shorthand for `protocol`/`host`/`port`/`path`; as in decK, the
/// explicit fields win over the parts of `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeckService {
    pub name: Option<String>,
    pub id: Option<String>,
    pub url: Option<String>,
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub connect_timeout: Option<u64>,
    pub read_timeout: Option<u64>,
    pub write_timeout: Option<u64>,
    pub retries: Option<u64>,
    /// A disabled service behaves as if its routes did not exist (Kong answers 404).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    /// TLS settings towards the service: accepted for compatibility with Kong; the ai-proxy
    /// plugin chooses its own upstream, so they have no effect here.
    pub tls_verify: Option<bool>,
    pub tls_verify_depth: Option<u8>,
    pub tls_sans: Option<Value>,
    pub client_certificate: Option<EntityRef>,
    pub ca_certificates: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub routes: Vec<Value>,
    #[serde(default)]
    pub plugins: Vec<Value>,
}

/// How Kong joins the service path, route path and request path (only `v0` works with Kong's
/// default router; accepted for compatibility).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathHandling {
    V0,
    V1,
}

/// A Kong route (traditional_compatible router fields).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeckRoute {
    pub name: Option<String>,
    pub id: Option<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub snis: Vec<String>,
    /// Kong's default is `[http, https]`.
    pub protocols: Option<Vec<String>>,
    #[serde(default = "enabled_by_default")]
    pub strip_path: bool,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub regex_priority: i64,
    pub path_handling: Option<PathHandling>,
    pub https_redirect_status_code: Option<u16>,
    pub request_buffering: Option<bool>,
    pub response_buffering: Option<bool>,
    /// Stream-routing fields: Kong refuses them on http routes, and so do we.
    #[serde(default)]
    pub sources: Vec<Value>,
    #[serde(default)]
    pub destinations: Vec<Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only on top-level routes: the service the route belongs to.
    pub service: Option<EntityRef>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub plugins: Vec<Value>,
}

/// A plugin instance. `service`/`route` references only make sense at top level; `consumer`
/// at top level or nested in a route or service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeckPlugin {
    pub name: String,
    pub id: Option<String>,
    pub instance_name: Option<String>,
    /// Read separately, against the schema of the plugin `name` designates.
    pub config: Option<Value>,
    /// A disabled plugin is validated (as Kong does) but never applied.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    pub protocols: Option<Vec<String>>,
    /// Dynamic plugin ordering (Enterprise); accepted, meaningless with a single plugin.
    pub ordering: Option<Value>,
    pub service: Option<EntityRef>,
    pub route: Option<EntityRef>,
    pub consumer: Option<EntityRef>,
    pub consumer_group: Option<EntityRef>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// A reference to another entity by name or id, written `service: openai-svc` or as an object
/// `service: {name: openai-svc}` / `service: {id: 5f0c...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRef(pub String);

impl EntityRef {
    pub fn key(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EntityRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Key(String),
            Object(RefObject),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RefObject {
            id: Option<String>,
            name: Option<String>,
        }
        // serde's own message for a failed untagged enum names a private type; say what is expected.
        let expected =
            || serde::de::Error::custom("expected a name or id, or a mapping with `name` or `id`");
        match Form::deserialize(deserializer).map_err(|_| expected())? {
            Form::Key(key) => Ok(EntityRef(key)),
            Form::Object(RefObject { id, name }) => id.or(name).map(EntityRef).ok_or_else(expected),
        }
    }
}
