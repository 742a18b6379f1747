//! The hand-written access line against tracing-subscriber's own formatters (the way the line
//! was written before): the same text, but for the timestamp and for the escaping of control
//! characters in client-supplied values.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// A writer tracing-subscriber can make, collecting into one shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn info(model: &str, consumer: Option<&str>, tried: Option<&str>, dropped: &str) -> AccessInfo {
    AccessInfo {
        request_id: "0123456789ab2a".into(),
        route: Arc::from("fast"),
        provider: "openai",
        model: model.into(),
        started: Instant::now(),
        tried: tried.map(Arc::from),
        consumer: consumer.map(Arc::from),
        dropped: dropped.into(),
        target: None,
        trace_id: None,
    }
}

/// The line as tracing-subscriber formats the event the gateway used to emit.
fn reference(json: bool, info: &AccessInfo, stream: Option<&str>, usage: Usage) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let builder = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_target(true);
    let emit = || match stream {
        None => tracing::info!(
            target: "access",
            request_id = %info.request_id,
            route = %info.route,
            provider = info.provider,
            model = %info.model,
            consumer = info.consumer.as_deref(),
            status = 200u16,
            stream = false,
            latency_ms = 12.5,
            upstream_ms = Some(3.0),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            cost = None::<f64>,
            ms_per_output_token = None::<f64>,
            tried = info.tried.as_deref(),
            dropped_fields = %info.dropped,
            "request"
        ),
        Some(outcome) => tracing::info!(
            target: "access",
            request_id = %info.request_id,
            route = %info.route,
            provider = info.provider,
            model = %info.model,
            consumer = info.consumer.as_deref(),
            status = 200u16,
            stream = true,
            outcome,
            latency_ms = 12.5,
            first_chunk_ms = None::<f64>,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            cost = None::<f64>,
            ms_per_output_token = None::<f64>,
            tried = info.tried.as_deref(),
            dropped_fields = %info.dropped,
            "request"
        ),
    };
    if json {
        tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), emit);
    } else {
        tracing::subscriber::with_default(builder.finish(), emit);
    }
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    text
}

fn ours(json: bool, info: &AccessInfo, stream: Option<&str>, usage: Usage) -> String {
    let mut text = String::new();
    let elapsed = Duration::from_micros(12_500);
    line::write(
        json,
        "access",
        "request",
        |line| match stream {
            None => buffered_fields(
                line,
                info,
                200,
                usage,
                elapsed,
                Some(Duration::from_millis(3)),
            ),
            Some(outcome) => stream_fields(line, info, outcome, usage, elapsed, None),
        },
        |bytes| text = String::from_utf8(bytes.to_vec()).unwrap(),
    );
    text
}

/// The human line without its timestamp (`2026-12-02T01:41:21.123456Z`).
fn untimed(line: &str) -> &str {
    let (stamp, rest) = line.split_at(27);
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{line}"
    );
    rest
}

/// A JSON object's entries in the order written.
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// The JSON line's entries in order, without its timestamp.
fn json_fields(line: &str) -> Vec<(String, serde_json::Value)> {
    assert!(line.ends_with('\n'));
    let Ordered(entries) = serde_json::from_str(line).unwrap();
    assert_eq!(entries[0].0, "timestamp");
    entries.into_iter().skip(1).collect()
}

const USAGE: Usage = Usage {
    prompt_tokens: 12,
    completion_tokens: 34,
    total_tokens: 46,
    prompt_tokens_details: None,
    completion_tokens_details: None,
};

#[test]
fn the_line_is_the_one_tracing_wrote() {
    let cases = [
        info("gpt-mock", None, None, ""),
        info(
            "gpt-4o",
            Some("alice"),
            Some("0 openai/gpt-4o 500, 1 anthropic/claude 200"),
            "logit_bias, n",
        ),
        info("名前", Some("bob \"the\" \\ builder"), None, ""),
    ];
    for info in &cases {
        for stream in [None, Some("completed"), Some("client closed")] {
            let want = reference(false, info, stream, USAGE);
            let got = ours(false, info, stream, USAGE);
            assert_eq!(untimed(&got), untimed(&want));
            let want = reference(true, info, stream, USAGE);
            let got = ours(true, info, stream, USAGE);
            assert_eq!(json_fields(&got), json_fields(&want), "{got}\n{want}");
        }
    }
}

#[test]
fn a_traced_request_names_its_trace_and_an_untraced_one_nothing() {
    let mut traced = info("gpt-4o", None, None, "");
    let untraced = ours(false, &traced, None, USAGE);
    assert!(!untraced.contains("trace_id"), "{untraced}");
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    traced.trace_id = Some(crate::telemetry::TraceId::from_hex(id).unwrap());
    for stream in [None, Some("completed")] {
        let line = ours(false, &traced, stream, USAGE);
        let want = format!(" request_id=0123456789ab2a trace_id={id} route=fast ");
        assert!(line.contains(&want), "{line}");
        let json: serde_json::Value =
            serde_json::from_str(&ours(true, &traced, stream, USAGE)).unwrap();
        assert_eq!(json["trace_id"], id);
    }
}

#[test]
fn control_characters_from_the_client_are_escaped() {
    let info = info(
        "evil\n2026-01-01T00:00:00.000000Z  INFO access: forged\x1b[31m",
        None,
        None,
        "a\rb",
    );
    let line = ours(false, &info, None, USAGE);
    assert_eq!(line.matches('\n').count(), 1, "{line}");
    assert!(!line.contains('\x1b') && !line.contains('\r'), "{line}");
    assert!(line.contains(r#"model="evil\n2026"#), "{line}");
    assert!(line.contains(r#"dropped_fields="a\rb""#), "{line}");
    let json = ours(true, &info, None, USAGE);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["model"], info.model.as_str());
}

proptest! {
    #[test]
    fn millis_are_written_as_debug_writes_the_float(micros in 0u64..100_000_000_000) {
        let mut buf = Vec::new();
        let mut line = line::Line::for_test(&mut buf);
        line.millis("x", micros);
        let text = String::from_utf8(buf).unwrap();
        prop_assert_eq!(text, format!(" x={:?}", micros as f64 / 1000.0));
    }
}
