//! Fault directives: how a test or load generator asks the mock to fail or be slow.
//!
//! Directives come from the `x-mock-fault` header (the gateway forwards client headers), from
//! a model name starting with `mock-fault-` (for clients that cannot set headers), or from the
//! mock-wide defaults set with `PUT /__mock/faults` (a test making one of several providers
//! fail on demand), as a comma-separated list; the header wins over the model, which wins over
//! the defaults. In model names `-`
//! may stand for `=` (`mock-fault-status-503,delay-100`).
//!
//! | directive | effect |
//! |---|---|
//! | `status=<code>` | answer `<code>` with the provider's native error body |
//! | `html` | the error body is an HTML page (`text/html`); status 502 unless `status` is set |
//! | `delay=<ms>` | wait before the response head |
//! | `chunk_delay=<ms>` | wait between stream frames |
//! | `hang` | never answer; the request ends when the client goes away |
//! | `close_mid_stream` | send the first half of the stream frames, then drop the connection |
//! | `stream_error` | an AWS event stream (Bedrock) sends its first half, then a `throttlingException` frame, as Bedrock reports errors mid-stream |
//! | `bad_json` | 200 with a truncated JSON body (non-stream answers) |
//! | `no_choices` | 200 with valid JSON lacking the content field (non-stream answers) |
//! | `chunks=<n>` | the reply is `w1 w2 ... wn`, so a stream has exactly n content chunks |
//! | `bytes=<n>` | the reply text is n bytes long |

use std::time::Duration;

use actix_web::{http::StatusCode, HttpResponse};
use serde_json::Value;

use super::{reason, Wire};

/// The request header carrying fault directives.
pub(crate) const HEADER: &str = "x-mock-fault";

/// Model names starting with this carry fault directives.
const MODEL_PREFIX: &str = "mock-fault-";

/// Status used by `html` when no `status` directive is given: what a proxy in front of a
/// provider answers.
const DEFAULT_HTML_STATUS: u16 = 502;

/// The faults requested for one request; the default is "behave".
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Faults {
    pub status: Option<u16>,
    pub html: bool,
    pub delay: Option<Duration>,
    pub chunk_delay: Option<Duration>,
    pub hang: bool,
    pub close_mid_stream: bool,
    pub stream_error: bool,
    pub bad_json: bool,
    pub no_choices: bool,
    pub chunks: Option<usize>,
    pub bytes: Option<usize>,
}

impl Faults {
    /// Faults from the header value and the model name.
    #[cfg(test)]
    pub(crate) fn parse(header: Option<&str>, model: &str) -> Faults {
        Faults::parse_over("", header, model)
    }

    /// Faults from the mock-wide `defaults`, then the model name, then the header.
    pub(crate) fn parse_over(defaults: &str, header: Option<&str>, model: &str) -> Faults {
        let mut faults = Faults::default();
        faults.apply_list(defaults);
        if let Some(list) = model.strip_prefix(MODEL_PREFIX) {
            faults.apply_list(list);
        }
        if let Some(list) = header {
            faults.apply_list(list);
        }
        faults
    }

    fn apply_list(&mut self, list: &str) {
        for directive in list.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            if !self.apply(directive) {
                tracing::warn!(directive, "mock: ignoring unknown fault directive");
            }
        }
    }

    /// Applies one `name[=value]` directive; false when it is not understood.
    fn apply(&mut self, directive: &str) -> bool {
        let (name, value) = match directive.find(['=', '-']) {
            Some(at) => (&directive[..at], Some(&directive[at + 1..])),
            None => (directive, None),
        };
        let number = value.and_then(|v| v.trim().parse::<u64>().ok());
        let ms = number.map(Duration::from_millis);
        let count = number.and_then(|n| usize::try_from(n).ok());
        match (name, value) {
            ("status", Some(_)) => self.status = number.and_then(|n| u16::try_from(n).ok()),
            ("html", None) => self.html = true,
            ("delay", Some(_)) => self.delay = ms,
            ("chunk_delay", Some(_)) => self.chunk_delay = ms,
            ("hang", None) => self.hang = true,
            ("close_mid_stream", None) => self.close_mid_stream = true,
            ("stream_error", None) => self.stream_error = true,
            ("bad_json", None) => self.bad_json = true,
            ("no_choices", None) => self.no_choices = true,
            ("chunks", Some(_)) => self.chunks = count,
            ("bytes", Some(_)) => self.bytes = count,
            _ => return false,
        }
        true
    }
}

/// The response for the `status` and `html` faults.
pub(crate) fn error_response(wire: &Wire, faults: &Faults) -> HttpResponse {
    let status = faults.status.unwrap_or(if faults.html {
        DEFAULT_HTML_STATUS
    } else {
        500
    });
    if faults.html {
        return html_error(status);
    }
    native_error(
        wire,
        status,
        &format!("mock fault: status {status} ({})", reason(status)),
    )
}

/// The provider's native error body with `status`.
pub(crate) fn native_error(wire: &Wire, status: u16, message: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status_code(status));
    if let Some((name, value_for)) = wire.error_header {
        response.insert_header((name, value_for(status)));
    }
    // Real providers tell a throttled client when to come back.
    if status == 429 {
        response.insert_header(("retry-after", "1"));
        response.insert_header(("x-ratelimit-remaining-requests", "0"));
    }
    response.json((wire.error_body)(status, message))
}

/// An HTML error page like the ones load balancers put in front of APIs.
fn html_error(status: u16) -> HttpResponse {
    let title = format!("{status} {}", reason(status));
    HttpResponse::build(status_code(status))
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>\
             <hr><center>mock</center></body></html>"
        ))
}

/// Statuses outside 100..=999 cannot be sent; they become 500.
fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `no_choices`: removes the content field from the body (from each element of an array body,
/// as Hugging Face answers `[{"generated_text": ...}]`).
pub(crate) fn strip_content(body: &mut Value, key: &str) {
    match body {
        Value::Object(map) => {
            map.remove(key);
        }
        Value::Array(items) => items.iter_mut().for_each(|item| strip_content(item, key)),
        _ => {}
    }
}

/// `bad_json`: cuts the serialised body in half, leaving unterminated JSON.
pub(crate) fn truncate_json(bytes: &mut Vec<u8>) {
    bytes.truncate(bytes.len() / 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_directives() {
        let f = Faults::parse(
            Some("status=503, html,delay=20,chunk_delay=5,chunks=3,bytes=100"),
            "gpt-4o",
        );
        assert_eq!(f.status, Some(503));
        assert!(f.html);
        assert_eq!(f.delay, Some(Duration::from_millis(20)));
        assert_eq!(f.chunk_delay, Some(Duration::from_millis(5)));
        assert_eq!((f.chunks, f.bytes), (Some(3), Some(100)));
        assert!(!f.hang && !f.bad_json && !f.no_choices && !f.close_mid_stream);
    }

    #[test]
    fn parses_model_directives_with_dashes() {
        let f = Faults::parse(None, "mock-fault-status-429,close_mid_stream,hang");
        assert_eq!(f.status, Some(429));
        assert!(f.close_mid_stream && f.hang);
    }

    #[test]
    fn header_overrides_model_and_plain_models_have_no_faults() {
        let f = Faults::parse(Some("status=500"), "mock-fault-status-503");
        assert_eq!(f.status, Some(500));
        assert_eq!(Faults::parse(None, "gpt-4o"), Faults::default());
    }

    #[test]
    fn defaults_apply_under_the_model_and_header() {
        let f = Faults::parse_over("status=500,delay=5", Some("status=429"), "gpt-4o");
        assert_eq!(f.status, Some(429));
        assert_eq!(f.delay, Some(Duration::from_millis(5)));
    }

    #[test]
    fn ignores_unknown_and_malformed_directives() {
        let f = Faults::parse(Some("explode,status=abc,bad_json"), "");
        assert_eq!(f.status, None);
        assert!(f.bad_json);
    }

    #[test]
    fn strips_content_from_objects_and_arrays() {
        let mut body = serde_json::json!([{"generated_text": "x", "other": 1}]);
        strip_content(&mut body, "generated_text");
        assert_eq!(body, serde_json::json!([{"other": 1}]));
    }
}
