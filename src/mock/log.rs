//! The mock's request log and counters, for tests to check what reached the "provider".
//!
//! * `GET /__mock/requests` — recorded requests, oldest first (`?last=N`: the newest N).
//! * `DELETE /__mock/requests` — clears the log.
//! * `GET /__mock/stats` — `{"requests": n, "open_streams": n, "cancelled_streams": n}`.
//! * `PUT /__mock/faults` — fault directives (see [`super::fault`]) applied to every request
//!   from now on; an empty body clears them. `GET` reads them back.
//!
//! The log keeps the last [`LOG_CAPACITY`] requests. Load tests switch it off with
//! `AIGW_MOCK_NO_LOG=1` (read once when the state is built); the counters stay on, they are
//! atomics.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Mutex,
    },
};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

/// How many requests the log keeps.
pub(crate) const LOG_CAPACITY: usize = 1000;

/// Environment variable that disables request recording.
const NO_LOG_ENV: &str = "AIGW_MOCK_NO_LOG";

/// Shared by all workers of one mock server.
#[derive(Debug, Default)]
pub(crate) struct MockState {
    /// `None` when recording is off.
    log: Option<Mutex<VecDeque<Value>>>,
    requests: AtomicU64,
    open_streams: AtomicI64,
    cancelled_streams: AtomicU64,
    tokens_issued: AtomicU64,
    /// Mock-wide fault directives, under each request's own.
    faults: Mutex<String>,
}

impl MockState {
    /// A state that records requests.
    pub(crate) fn new() -> MockState {
        MockState {
            log: Some(Mutex::new(VecDeque::with_capacity(LOG_CAPACITY))),
            ..MockState::default()
        }
    }

    /// A state that records unless `AIGW_MOCK_NO_LOG` is set to something other than `0`.
    pub(crate) fn from_env() -> MockState {
        match std::env::var(NO_LOG_ENV) {
            Ok(v) if !v.is_empty() && v != "0" => MockState::default(),
            _ => MockState::new(),
        }
    }

    /// Counts a request and, when recording, logs it. `body` is the already-parsed JSON body.
    pub(crate) fn record(&self, req: &HttpRequest, raw: &[u8], body: Option<&Value>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let Some(log) = &self.log else { return };
        let entry = entry(req, raw, body);
        let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// The newest `last` entries (all when `None`), oldest first.
    fn entries(&self, last: Option<usize>) -> Vec<Value> {
        let Some(log) = &self.log else {
            return Vec::new();
        };
        let log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let skip = last.map_or(0, |n| log.len().saturating_sub(n));
        log.iter().skip(skip).cloned().collect()
    }

    fn clear(&self) {
        if let Some(log) = &self.log {
            log.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clear();
        }
    }

    pub(crate) fn stats(&self) -> Value {
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "open_streams": self.open_streams.load(Ordering::Relaxed),
            "cancelled_streams": self.cancelled_streams.load(Ordering::Relaxed),
        })
    }

    /// A stream body was created.
    pub(crate) fn stream_opened(&self) {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream body was dropped; `cancelled` when it had not reached its end.
    pub(crate) fn stream_closed(&self, cancelled: bool) {
        self.open_streams.fetch_sub(1, Ordering::Relaxed);
        if cancelled {
            self.cancelled_streams.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The mock-wide fault directives.
    pub(crate) fn default_faults(&self) -> String {
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The next OAuth access token number, starting at 1.
    pub(crate) fn next_token(&self) -> u64 {
        self.tokens_issued.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// One log entry: method, path, query, all headers (lower-case names), the body (JSON when it
/// parses, else a string) and its size in bytes.
fn entry(req: &HttpRequest, raw: &[u8], body: Option<&Value>) -> Value {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        match headers.get_mut(name.as_str()) {
            // Repeated headers are joined the way HTTP allows them to be combined.
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }
    let body = match body {
        Some(json) => json.clone(),
        None => Value::String(String::from_utf8_lossy(raw).into_owned()),
    };
    json!({
        "method": req.method().as_str(),
        "path": req.path(),
        "query": req.query_string(),
        "headers": headers,
        "body": body,
        // The body's exact size, so tests can tell bytes passed through from re-serialised.
        "body_bytes": raw.len(),
    })
}

/// The `/__mock/*` control routes.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/__mock/requests")
            .route(web::get().to(list))
            .route(web::delete().to(clear)),
    )
    .route("/__mock/stats", web::get().to(stats))
    .service(
        web::resource("/__mock/faults")
            .route(web::get().to(get_faults))
            .route(web::put().to(set_faults)),
    );
}

async fn get_faults(state: web::Data<MockState>) -> HttpResponse {
    HttpResponse::Ok().body(state.default_faults())
}

async fn set_faults(state: web::Data<MockState>, body: web::Bytes) -> HttpResponse {
    let directives = String::from_utf8_lossy(&body).trim().to_string();
    *state
        .faults
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = directives;
    HttpResponse::NoContent().finish()
}

async fn list(req: HttpRequest, state: web::Data<MockState>) -> HttpResponse {
    let last = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(key, _)| key == "last")
        .and_then(|(_, value)| value.parse().ok());
    HttpResponse::Ok().json(state.entries(last))
}

async fn clear(state: web::Data<MockState>) -> HttpResponse {
    state.clear();
    HttpResponse::NoContent().finish()
}

async fn stats(state: web::Data<MockState>) -> HttpResponse {
    HttpResponse::Ok().json(state.stats())
}
