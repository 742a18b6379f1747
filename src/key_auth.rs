//! Consumers and the `key-auth` plugin at request time: find the key where the plugin allows
//! it, match it against every consumer's keys, strip it if asked, and tell the provider who
//! called (Kong's `X-Consumer-*` headers).
//!
//! A presented key is looked up by a keyed hash (SipHash under a random per-generation key):
//! the stored keys with the same hash (in practice the matching one or none) are then compared
//! with it in constant time. Which keys get compared depends only on a hash an attacker cannot
//! compute, so neither a near miss nor the matching consumer's position shows in the response
//! time, and a request costs one short hash rather than a digest and a pass over every key.
//! Keys never reach logs (the stored ones have a redacting `Debug`) or errors.

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::config::key_auth::KeyAuthConfig;
use crate::config::load::ConsumerSpec;
use crate::error::GatewayError;
use crate::proxy::request::ClientRequest;

/// Headers that say who the consumer is: set by key-auth, never taken from the client.
const CONSUMER_HEADERS: [&str; 5] = [
    "x-consumer-id",
    "x-consumer-custom-id",
    "x-consumer-username",
    "x-credential-identifier",
    "x-anonymous-consumer",
];

/// Built once (`from_static` at run time parses the name on every call).
const X_CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
const X_ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");

pub const NO_KEY: &str = "No API key found in request";
pub const UNAUTHORIZED: &str = "Unauthorized";

/// A consumer as requests see it.
#[derive(Debug)]
pub struct Consumer {
    /// Kong's consumer id: the decK `id`, else a stable UUID derived from username/custom_id.
    pub id: String,
    /// Username, else custom_id: for the access log and per-consumer limits.
    pub name: Arc<str>,
    /// `X-Consumer-ID`, `X-Consumer-Username`, `X-Consumer-Custom-ID`, built once.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Consumer {
    fn new(spec: &ConsumerSpec) -> Consumer {
        let name = spec
            .username
            .clone()
            .or_else(|| spec.custom_id.clone())
            .unwrap_or_default();
        let id = spec.id.clone().unwrap_or_else(|| {
            let seed = format!(
                "{}\u{0}{}",
                spec.username.as_deref().unwrap_or_default(),
                spec.custom_id.as_deref().unwrap_or_default()
            );
            let digest = Sha256::digest(seed.as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string()
        });
        let mut headers = Vec::new();
        for (name, value) in [
            ("x-consumer-id", Some(&id)),
            ("x-consumer-username", spec.username.as_ref()),
            ("x-consumer-custom-id", spec.custom_id.as_ref()),
        ] {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.push((HeaderName::from_static(name), value));
            }
        }
        Consumer {
            id,
            name: Arc::from(name),
            headers,
        }
    }
}

/// A consumer's key, as `Consumers` finds it.
struct StoredKey {
    /// The key's hash under `Consumers::hasher`; the stored keys are sorted by it.
    hash: u64,
    key: Box<[u8]>,
    consumer: u32,
    credential: u32,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key of consumer {} (credential {})",
            self.consumer, self.credential
        )
    }
}

/// Every consumer of a config generation and their keys.
#[derive(Debug, Default)]
pub struct Consumers {
    list: Vec<Arc<Consumer>>,
    /// Every credential's key, sorted by hash.
    keys: Vec<StoredKey>,
    /// Random per generation: the hashes tell an attacker nothing.
    hasher: RandomState,
    /// Per consumer, per credential: its identifier (`<consumer id>:<n>`) and that as the
    /// `x-credential-identifier` value, made once rather than for every request.
    credentials: Vec<Vec<(Arc<str>, Option<HeaderValue>)>>,
}

impl Consumers {
    pub fn new(specs: &[ConsumerSpec]) -> Consumers {
        let list: Vec<Arc<Consumer>> = specs.iter().map(|s| Arc::new(Consumer::new(s))).collect();
        let credentials = list
            .iter()
            .zip(specs)
            .map(|(consumer, spec)| {
                (0..spec.keys.len())
                    .map(|k| {
                        let id: Arc<str> = Arc::from(format!("{}:{k}", consumer.id));
                        let value = HeaderValue::from_str(&id).ok();
                        (id, value)
                    })
                    .collect()
            })
            .collect();
        let hasher = RandomState::new();
        let hash = |key: &str| hasher.hash_one(key.as_bytes());
        let mut keys: Vec<StoredKey> = specs
            .iter()
            .enumerate()
            .flat_map(|(c, spec)| {
                spec.keys.iter().enumerate().map(move |(k, key)| StoredKey {
                    hash: hash(key),
                    key: key.as_bytes().into(),
                    consumer: c as u32,
                    credential: k as u32,
                })
            })
            .collect();
        // Stable: of two consumers given one key, the later wins (as before, and in `find`).
        keys.sort_by_key(|k| k.hash);
        Consumers {
            list,
            keys,
            hasher,
            credentials,
        }
    }

    pub fn get(&self, index: usize) -> &Arc<Consumer> {
        &self.list[index]
    }

    /// A consumer by username, custom id or id (key-auth's `anonymous`).
    pub fn named(&self, reference: &str) -> Option<&Arc<Consumer>> {
        self.list
            .iter()
            .find(|c| c.id == reference || &*c.name == reference)
    }

    /// The consumer owning `key` and the credential's number, comparing `key` in constant
    /// time against the stored keys of its hash.
    fn find(&self, key: &[u8]) -> Option<(usize, u32)> {
        let hash = self.hasher.hash_one(key);
        let first = self.keys.partition_point(|k| k.hash < hash);
        let mut found = 0u32.ct_eq(&1); // false
        let mut consumer = 0u32;
        let mut credential = 0u32;
        for stored in self.keys[first..].iter().take_while(|k| k.hash == hash) {
            let hit = same_key(&stored.key, key);
            consumer.conditional_assign(&stored.consumer, hit);
            credential.conditional_assign(&stored.credential, hit);
            found |= hit;
        }
        bool::from(found).then_some((consumer as usize, credential))
    }
}

/// Whether two keys are equal, in time that depends on their lengths only: subtle's
/// constant-time comparison, a word at a time rather than (as its slice `ct_eq`) a byte at a
/// time.
fn same_key(a: &[u8], b: &[u8]) -> Choice {
    if a.len() != b.len() {
        return Choice::from(0);
    }
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().unwrap_or_default());
    let (mut a_words, mut b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut same = Choice::from(1);
    for (x, y) in (&mut a_words).zip(&mut b_words) {
        same &= word(x).ct_eq(&word(y));
    }
    same & a_words.remainder().ct_eq(b_words.remainder())
}

/// Who a request runs as, once key-auth has looked at it.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub consumer: Option<Arc<Consumer>>,
    /// The matched credential (`<consumer id>:<n>`), for `identifier: credential` limits.
    pub credential: Option<Arc<str>>,
    pub consumer_index: Option<usize>,
}

/// One route's compiled key-auth plugin.
#[derive(Debug)]
pub struct KeyAuth {
    config: Arc<KeyAuthConfig>,
    headers: Vec<HeaderName>,
    consumers: Arc<Consumers>,
    /// The `anonymous` consumer's index, resolved at load time.
    anonymous: Option<usize>,
    realm: HeaderValue,
}

/// A presented key (borrowed from a header, else copied) and where it was found.
type FoundKey<'a> = (Cow<'a, [u8]>, Found);

/// Where the key was found, so `hide_credentials` can remove it.
enum Found {
    /// The header of the key name with this index.
    Header(usize),
    Query(String),
    Body(String),
}

impl KeyAuth {
    pub fn new(config: Arc<KeyAuthConfig>, consumers: Arc<Consumers>) -> Result<KeyAuth, String> {
        let headers = config
            .key_names
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let anonymous = match &config.anonymous {
            None => None,
            Some(a) => {
                let consumer = consumers
                    .named(a)
                    .ok_or_else(|| format!("anonymous: unknown consumer '{a}'"))?;
                consumers.list.iter().position(|c| Arc::ptr_eq(c, consumer))
            }
        };
        let realm = HeaderValue::from_str(&format!(
            "Key realm=\"{}\"",
            config.realm.as_deref().unwrap_or("kong")
        ))
        .map_err(|_| "realm is not a valid header value".to_string())?;
        Ok(KeyAuth {
            config,
            headers,
            consumers,
            anonymous,
            realm,
        })
    }

    /// Authenticates `client`, stripping the key when `hide_credentials` asks for it and
    /// setting the consumer headers the provider sees.
    pub fn authenticate(
        &self,
        client: &mut ClientRequest,
        body: &mut Bytes,
    ) -> Result<Identity, GatewayError> {
        // A client may not pose as a consumer. Few send any of these, and a glance at the
        // request's own headers (most of which do not start with `x-`) costs less than looking
        // each of the five up.
        let posing = client.headers.keys().any(|name| {
            let name = name.as_str();
            name.starts_with("x-") && CONSUMER_HEADERS.contains(&name)
        });
        if posing {
            for name in CONSUMER_HEADERS {
                client.headers.remove(name);
            }
        }
        let Some((key, found)) = self.find_key(client, body)? else {
            return self.anonymous_or(client, NO_KEY);
        };
        let Some((consumer_index, credential)) = self.consumers.find(&key) else {
            return self.anonymous_or(client, UNAUTHORIZED);
        };
        if self.config.hide_credentials {
            hide(found, &self.headers, client, body);
        }
        let consumer = self.consumers.get(consumer_index).clone();
        let (credential, value) = &self.consumers.credentials[consumer_index][credential as usize];
        set_consumer_headers(&mut client.headers, &consumer);
        if let Some(value) = value {
            client
                .headers
                .insert(X_CREDENTIAL_IDENTIFIER, value.clone());
        }
        let credential = credential.clone();
        Ok(Identity {
            consumer: Some(consumer),
            credential: Some(credential),
            consumer_index: Some(consumer_index),
        })
    }

    fn anonymous_or(
        &self,
        client: &mut ClientRequest,
        message: &'static str,
    ) -> Result<Identity, GatewayError> {
        let Some(index) = self.anonymous else {
            return Err(GatewayError::Unauthorized {
                message,
                realm: self.realm.clone(),
            });
        };
        let consumer = self.consumers.get(index).clone();
        set_consumer_headers(&mut client.headers, &consumer);
        client
            .headers
            .insert(X_ANONYMOUS_CONSUMER, HeaderValue::from_static("true"));
        Ok(Identity {
            consumer: Some(consumer),
            credential: None,
            consumer_index: Some(index),
        })
    }

    /// Kong's order: for each key name, the header, then the query, then the body. A header's
    /// key is borrowed: most requests carry theirs there.
    fn find_key<'a>(
        &self,
        client: &'a ClientRequest,
        body: &Bytes,
    ) -> Result<Option<FoundKey<'a>>, GatewayError> {
        let json = if self.config.key_in_body {
            serde_json::from_slice::<Value>(body).ok()
        } else {
            None
        };
        for (i, (name, header)) in self.config.key_names.iter().zip(&self.headers).enumerate() {
            if self.config.key_in_header {
                let mut values = client.headers.get_all(header);
                if let Some(value) = values.next() {
                    if values.next().is_some() {
                        return Err(GatewayError::Unauthorized {
                            message: "Duplicate API key found",
                            realm: self.realm.clone(),
                        });
                    }
                    // Header text (`to_str`): request header values hold no control bytes, so
                    // it is ASCII, which a word-at-a-time check finds faster. Other bytes count
                    // as an empty key, which no consumer has.
                    let key = value.as_bytes();
                    let key: &[u8] = if key.is_ascii() { key } else { b"" };
                    return Ok(Some((Cow::Borrowed(key), Found::Header(i))));
                }
            }
            if self.config.key_in_query {
                let key = url::form_urlencoded::parse(client.query.as_bytes())
                    .find(|(k, _)| k == name.as_str())
                    .map(|(_, v)| v.into_owned());
                if let Some(key) = key {
                    return Ok(Some((Cow::Owned(key.into()), Found::Query(name.clone()))));
                }
            }
            if let Some(key) = json
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
            {
                return Ok(Some((
                    Cow::Owned(key.as_bytes().to_vec()),
                    Found::Body(name.clone()),
                )));
            }
        }
        Ok(None)
    }
}

fn set_consumer_headers(headers: &mut HeaderMap, consumer: &Consumer) {
    for (name, value) in &consumer.headers {
        headers.insert(name.clone(), value.clone());
    }
}

/// Removes the key `found` points at (`headers`: the key names' headers).
fn hide(found: Found, headers: &[HeaderName], client: &mut ClientRequest, body: &mut Bytes) {
    match found {
        Found::Header(i) => {
            client.headers.remove(&headers[i]);
        }
        Found::Query(name) => {
            let kept: Vec<(String, String)> = url::form_urlencoded::parse(client.query.as_bytes())
                .filter(|(k, _)| *k != name.as_str())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            client.query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(kept)
                .finish();
        }
        Found::Body(name) => {
            if let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) {
                map.remove(&name);
                if let Ok(bytes) = serde_json::to_vec(&map) {
                    *body = Bytes::from(bytes);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumers() -> Arc<Consumers> {
        Arc::new(Consumers::new(&[
            ConsumerSpec {
                username: Some("alice".into()),
                custom_id: Some("a-1".into()),
                id: None,
                keys: vec!["k-alice".into(), "k-alice-2".into()],
            },
            ConsumerSpec {
                username: Some("guest".into()),
                custom_id: None,
                id: Some("g-id".into()),
                keys: vec![],
            },
        ]))
    }

    fn key_auth(yaml: &str) -> KeyAuth {
        let config: KeyAuthConfig = serde_norway::from_str(yaml).unwrap();
        KeyAuth::new(Arc::new(config), consumers()).unwrap()
    }

    fn client(headers: &[(&str, &str)], query: &str) -> ClientRequest {
        ClientRequest::post("/chat", headers, query)
    }

    fn refusal(result: Result<Identity, GatewayError>) -> &'static str {
        match result {
            Err(GatewayError::Unauthorized { message, .. }) => message,
            other => panic!("expected a 401, got {other:?}"),
        }
    }

    #[test]
    fn keys_compare_whole() {
        let key = b"loadtest-consumer-key-0001";
        assert!(bool::from(same_key(key, key)));
        for i in 0..key.len() {
            let mut near = *key;
            near[i] ^= 1;
            assert!(!bool::from(same_key(key, &near)), "byte {i}");
        }
        assert!(!bool::from(same_key(key, &key[..25])));
        assert!(bool::from(same_key(b"", b"")));
        assert!(!bool::from(same_key(b"12345678", b"12345679")));
    }

    #[test]
    fn header_key_finds_its_consumer_and_sets_kongs_headers() {
        let auth = key_auth("{}");
        let mut c = client(
            &[("apikey", "k-alice-2"), ("x-consumer-username", "mallory")],
            "",
        );
        let mut body = Bytes::new();
        let id = auth.authenticate(&mut c, &mut body).unwrap();
        assert_eq!(&*id.consumer.unwrap().name, "alice");
        assert_eq!(c.headers.get("x-consumer-username").unwrap(), "alice");
        assert_eq!(c.headers.get("x-consumer-custom-id").unwrap(), "a-1");
        assert_eq!(c.headers.get("x-consumer-id").unwrap().len(), 36, "a UUID");
        assert!(id.credential.unwrap().ends_with(":1"));
        assert_eq!(
            c.headers.get("apikey").unwrap(),
            "k-alice-2",
            "kept without hide_credentials"
        );
    }

    #[test]
    fn missing_and_wrong_keys_get_kongs_messages() {
        let auth = key_auth("{}");
        let mut body = Bytes::new();
        assert_eq!(
            refusal(auth.authenticate(&mut client(&[], ""), &mut body)),
            NO_KEY
        );
        let wrong = auth.authenticate(&mut client(&[("apikey", "k-alic")], ""), &mut body);
        assert_eq!(refusal(wrong), UNAUTHORIZED);
        let twice = auth.authenticate(
            &mut client(&[("apikey", "k-alice"), ("apikey", "k-alice")], ""),
            &mut body,
        );
        assert_eq!(refusal(twice), "Duplicate API key found");
    }

    #[test]
    fn hide_credentials_strips_header_query_and_body_keys() {
        let auth =
            key_auth("{key_names: [x-key, apikey], hide_credentials: true, key_in_body: true}");
        let mut body = Bytes::new();
        let mut c = client(&[("x-key", "k-alice")], "");
        auth.authenticate(&mut c, &mut body).unwrap();
        assert!(c.headers.get("x-key").is_none());

        let mut c = client(&[], "a=1&apikey=k-alice&b=2");
        auth.authenticate(&mut c, &mut body).unwrap();
        assert_eq!(c.query, "a=1&b=2");

        let mut body = Bytes::from_static(br#"{"model":"m","apikey":"k-alice"}"#);
        let mut c = client(&[], "");
        auth.authenticate(&mut c, &mut body).unwrap();
        assert_eq!(&body[..], br#"{"model":"m"}"#);
    }

    #[test]
    fn disabled_places_are_not_searched() {
        let auth = key_auth("{key_in_query: false}");
        let mut body = Bytes::from_static(br#"{"apikey":"k-alice"}"#);
        let result = auth.authenticate(&mut client(&[], "apikey=k-alice"), &mut body);
        assert_eq!(refusal(result), NO_KEY);
    }

    fn spec(username: String, keys: Vec<String>) -> ConsumerSpec {
        ConsumerSpec {
            username: Some(username),
            custom_id: None,
            id: None,
            keys,
        }
    }

    #[test]
    fn every_key_finds_its_own_consumer_among_many_and_near_misses_none() {
        // Keys that are prefixes and extensions of each other, two per consumer.
        let specs: Vec<ConsumerSpec> = (0..300)
            .map(|i| {
                spec(
                    format!("c{i}"),
                    vec![format!("key-{i}"), format!("key-{i}-b")],
                )
            })
            .collect();
        let consumers = Consumers::new(&specs);
        for i in 0..300 {
            let key = format!("key-{i}");
            assert_eq!(consumers.find(key.as_bytes()), Some((i, 0)), "{key}");
            let second = format!("key-{i}-b");
            assert_eq!(consumers.find(second.as_bytes()), Some((i, 1)));
        }
        for miss in [
            "", "key-", "key-300", "key-1-", "key-1-bb", "Key-1", "key-01",
        ] {
            assert_eq!(consumers.find(miss.as_bytes()), None, "{miss:?}");
        }
        // Another generation hashes with another key, and finds the same consumers.
        let again = Consumers::new(&specs);
        assert_eq!(again.find(b"key-299-b"), Some((299, 1)));
        assert_eq!(Consumers::new(&[]).find(b"key-1"), None);
    }

    #[test]
    fn stored_keys_stay_out_of_debug_output() {
        let consumers = consumers();
        let printed = format!("{consumers:?}");
        assert!(!printed.contains("k-alice"), "{printed}");
        assert!(printed.contains("key of consumer 0 (credential 1)"));
    }

    #[test]
    fn a_key_that_is_no_valid_header_text_is_refused() {
        let auth = key_auth("{}");
        let mut c = client(&[], "");
        let bytes = HeaderValue::from_bytes(b"k-alice\xff").unwrap();
        c.headers.insert(HeaderName::from_static("apikey"), bytes);
        let result = auth.authenticate(&mut c, &mut Bytes::new());
        assert_eq!(refusal(result), UNAUTHORIZED);
    }

    #[test]
    fn anonymous_consumer_serves_requests_without_a_valid_key() {
        let auth = key_auth("{anonymous: guest}");
        let mut c = client(&[("apikey", "nope")], "");
        let id = auth.authenticate(&mut c, &mut Bytes::new()).unwrap();
        assert_eq!(&*id.consumer.unwrap().name, "guest");
        assert_eq!(c.headers.get("x-anonymous-consumer").unwrap(), "true");
        assert_eq!(c.headers.get("x-consumer-id").unwrap(), "g-id");
        assert!(id.credential.is_none());
    }
}
