//! Cost of the pure translation functions, per provider, on the fixtures in `tests/fixtures/`:
//!
//! * `request`: the client's OpenAI body (as the parsed map the pipeline hands over) to the
//!   provider's body;
//! * `response`: the provider's 200 body to the OpenAI body;
//! * `stream`: a whole provider stream fed in one read, then `finish` (per stream; the number
//!   of OpenAI events it produced is printed once, to turn it into a per-chunk cost).
//!
//! `cargo bench --bench translate` runs in a few seconds (small samples); pass a filter to run
//! one provider, e.g. `cargo bench --bench translate -- anthropic`. A provider whose driver
//! cannot be built in this build (a placeholder) or that has no fixture is skipped.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use ai_gateway::config::ai_proxy::{AiProxyConfig, ModelOptions};
use ai_gateway::providers::{Driver, RequestCtx};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{Map, Value};

/// One provider's fixtures: the case directory (config, client request, upstream response) and
/// the provider stream, relative to `tests/fixtures/`.
struct Case {
    name: &'static str,
    dir: &'static str,
    stream: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        name: "openai",
        dir: "openai/chat",
        stream: Some("openai/chat-stream/upstream-stream.txt"),
    },
    Case {
        name: "azure",
        dir: "azure/chat",
        stream: Some("openai/chat-stream/upstream-stream.txt"),
    },
    Case {
        name: "mistral",
        dir: "mistral/openai-chat",
        stream: Some("openai/chat-stream/upstream-stream.txt"),
    },
    Case {
        name: "anthropic",
        dir: "anthropic/chat",
        stream: Some("anthropic/chat-stream/upstream-stream.txt"),
    },
    Case {
        name: "gemini",
        dir: "gemini/chat",
        stream: Some("gemini/chat-stream/upstream-stream.json"),
    },
    Case {
        name: "bedrock",
        dir: "bedrock/chat",
        stream: Some("bedrock/chat-stream/upstream-stream.bin"),
    },
    Case {
        name: "cohere",
        dir: "cohere/chat",
        stream: Some("cohere/chat-stream/upstream-stream.ndjson"),
    },
    Case {
        name: "llama2-ollama",
        dir: "llama2/ollama-chat",
        stream: Some("llama2/ollama-chat-stream/upstream-stream.ndjson"),
    },
    Case {
        name: "huggingface",
        dir: "huggingface/chat",
        stream: None,
    },
];

fn fixture(path: &str) -> Option<Vec<u8>> {
    let full: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", path]
        .iter()
        .collect();
    std::fs::read(full).ok()
}

fn json_fixture(path: &str) -> Option<Value> {
    serde_json::from_slice(&fixture(path)?).ok()
}

/// What a case needs to run: the driver, its options, the model and the bodies.
struct Prepared {
    driver: Driver,
    config: AiProxyConfig,
    options: ModelOptions,
    model: String,
    request: Option<Map<String, Value>>,
    response: Option<Bytes>,
    stream: Option<Vec<u8>>,
}

fn prepare(case: &Case) -> Option<Prepared> {
    let config: AiProxyConfig =
        serde_json::from_slice(&fixture(&format!("{}/config.json", case.dir))?).ok()?;
    let driver = match Driver::from_config(&config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("translate bench: skipping {}: {e}", case.name);
            return None;
        }
    };
    let request = json_fixture(&format!("{}/client-request.json", case.dir))
        .and_then(|v| v.as_object().cloned());
    let model = config
        .model
        .name
        .clone()
        .or_else(|| {
            request
                .as_ref()
                .and_then(|r| r.get("model"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "bench-model".to_string());
    let options = config.model.options.clone().unwrap_or_default();
    Some(Prepared {
        request,
        response: fixture(&format!("{}/upstream-response.json", case.dir)).map(Bytes::from),
        stream: case.stream.and_then(fixture),
        driver,
        config,
        options,
        model,
    })
}

fn ctx<'a>(p: &'a Prepared, stream: bool) -> RequestCtx<'a> {
    RequestCtx {
        route_type: p.config.route_type,
        model: &p.model,
        stream,
        include_usage: false,
        options: &p.options,
        client_query: "",
        request_id: "bench",
        created: 1_700_000_000,
    }
}

/// One whole stream through a fresh translator; returns the OpenAI bytes.
fn run_stream(p: &Prepared, input: &[u8]) -> BytesMut {
    let mut translator = p.driver.stream(&ctx(p, true));
    let mut out = BytesMut::with_capacity(4096);
    let _ = translator.feed(input, &mut out);
    let _ = translator.finish(&mut out);
    out
}

fn translate(c: &mut Criterion) {
    for case in CASES {
        let Some(p) = prepare(case) else { continue };
        let mut group = c.benchmark_group(case.name);
        if let Some(map) = &p.request {
            let ctx = ctx(&p, false);
            group.throughput(Throughput::Elements(1));
            group.bench_function("request", |b| {
                b.iter_batched(
                    || map.clone(),
                    |m| black_box(p.driver.request(&ctx, m)),
                    BatchSize::SmallInput,
                )
            });
        }
        if let Some(body) = &p.response {
            let ctx = ctx(&p, false);
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_function("response", |b| {
                b.iter(|| black_box(p.driver.response(&ctx, body.clone())))
            });
        }
        if let Some(input) = &p.stream {
            let events = run_stream(&p, input)
                .windows(2)
                .filter(|w| w == b"\n\n")
                .count();
            eprintln!(
                "translate bench: {} stream fixture: {} bytes in, {events} OpenAI events out",
                case.name,
                input.len()
            );
            group.throughput(Throughput::Elements(events.max(1) as u64));
            group.bench_function("stream", |b| b.iter(|| black_box(run_stream(&p, input))));
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Small samples keep the whole bench to a few seconds; raise them for fine comparisons.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(250));
    targets = translate
}
criterion_main!(benches);
