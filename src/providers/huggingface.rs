//! Hugging Face serverless Inference API (and any TGI server behind `upstream_url`).
//!
//! * chat: TGI's OpenAI-compatible Messages API at `{base}/v1/chat/completions`. The OpenAI
//!   body goes as is (model set, `stream` explicit, `top_k` dropped): that endpoint reads
//!   OpenAI fields, so Kong's `parameters`/`options` rewrite would only lose the sampling
//!   knobs. `use_cache`/`wait_for_model` travel as the `x-use-cache`/`x-wait-for-model`
//!   headers instead. The answer is OpenAI-shaped; we normalise TGI's finish reasons
//!   (`eos_token`, `stop_sequence`) and fill missing ids (Kong 3.13: tool calls passed through,
//!   finish reason preserved).
//! * completions: TGI `generate` at `{base}`: `{inputs, parameters, options, stream}` ->
//!   `[{"generated_text"}]`, streamed as TGI token events.
//! * embeddings: the feature-extraction pipeline, `[[f64]]` (or one bare vector).
//!
//! `upstream_url` is a *base* here (Kong): chat appends `/v1/chat/completions`, embeddings
//! `/pipeline/feature-extraction`, completions use it as is.

use actix_web::http::header::{HeaderName, HeaderValue};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::oai::{
    arguments_string, ChatChoice, ChatCompletion, ChatRequest, ChunkBuilder, EmbeddingList,
    FinishReason, TextCompletion, ToolCall, Usage,
};
use super::stream::{DecodedStream, EventTranslate};
use super::{
    openai, path_segment, tgi, RequestCtx, StreamError, StreamTranslate, Translate, Translated,
};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::ai_proxy::{AiProxyConfig, ModelOptions, RouteType};
use crate::error::GatewayError;

/// Kong's default base; `/{model}` follows.
pub const DEFAULT_BASE: &str = "https://api-inference.huggingface.co/models";
/// Feature extraction moved to the router host (Kong HEAD lists
/// `/hf-inference/models/{model}/pipeline/feature-extraction`); the old host is retired.
pub const EMBEDDINGS_BASE: &str = "https://router.huggingface.co/hf-inference/models";
const CHAT_SUFFIX: &str = "/v1/chat/completions";
const EMBEDDINGS_SUFFIX: &str = "/pipeline/feature-extraction";

/// Kong's reasons for a 200 body it cannot use.
const UNDECODABLE: &str = "Failed to decode response";
const INVALID_FORMAT: &str = "Invalid response format from Hugging Face API";

pub struct HuggingFace {
    /// `x-use-cache` / `x-wait-for-model` from `options.huggingface`, when configured.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Translate for HuggingFace {
    fn api_base(&self, _options: &ModelOptions) -> Option<String> {
        Some("https://api-inference.huggingface.co:443".to_string())
    }

    fn from_config(config: &AiProxyConfig) -> Result<Self, super::DriverError> {
        let hf = config
            .model
            .options
            .as_ref()
            .and_then(|o| o.huggingface.as_ref());
        let flag = |b: bool| HeaderValue::from_static(if b { "true" } else { "false" });
        let mut headers = Vec::new();
        if let Some(b) = hf.and_then(|h| h.use_cache) {
            headers.push((HeaderName::from_static("x-use-cache"), flag(b)));
        }
        if let Some(b) = hf.and_then(|h| h.wait_for_model) {
            headers.push((HeaderName::from_static("x-wait-for-model"), flag(b)));
        }
        Ok(HuggingFace { headers })
    }

    fn url(&self, ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
        let configured = ctx.options.upstream_url.as_deref();
        let model = model_path(ctx.model);
        Ok(match (ctx.route_type, configured) {
            (RouteType::Completions, Some(base)) => base.to_string(),
            (RouteType::Completions, None) => format!("{DEFAULT_BASE}/{model}"),
            (RouteType::Embeddings, Some(base)) => {
                format!("{}{EMBEDDINGS_SUFFIX}", base.trim_end_matches('/'))
            }
            (RouteType::Embeddings, None) => {
                format!("{EMBEDDINGS_BASE}/{model}{EMBEDDINGS_SUFFIX}")
            }
            (_, Some(base)) => format!("{}{CHAT_SUFFIX}", base.trim_end_matches('/')),
            (_, None) => format!("{DEFAULT_BASE}/{model}{CHAT_SUFFIX}"),
        })
    }

    fn headers(&self, _ctx: &RequestCtx<'_>, out: &mut Vec<(HeaderName, HeaderValue)>) {
        out.extend(self.headers.iter().cloned());
    }

    fn request(
        &self,
        ctx: &RequestCtx<'_>,
        body: Map<String, Value>,
    ) -> Result<Value, GatewayError> {
        match ctx.route_type {
            RouteType::Completions => generate_request(ctx, body),
            RouteType::Embeddings => embeddings_request(&body),
            _ => Ok(openai::request(ctx, body)),
        }
    }

    fn openai_body(&self, route_type: RouteType) -> bool {
        !matches!(route_type, RouteType::Completions | RouteType::Embeddings)
    }

    fn response(&self, ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
        let v: Value = serde_json::from_slice(&body).map_err(|_| UNDECODABLE)?;
        if let Some(message) = v.get("error").or_else(|| v.get("message")) {
            let message = message
                .as_str()
                .map_or_else(|| message.to_string(), str::to_string);
            return Err(format!("API error: {message}"));
        }
        let (body, usage) = match ctx.route_type {
            RouteType::Completions => generate_response(ctx, v)?,
            RouteType::Embeddings => embeddings_response(ctx, v)?,
            _ => chat_response(ctx, v)?,
        };
        Ok(Translated {
            body: Bytes::from(body),
            usage,
        })
    }

    fn stream(&self, ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate> {
        Box::new(HfStream::new(ctx))
    }
}

/// A Hub model id in a URL path: each `/`-separated part escaped, the `/` between org and
/// name kept (`mistralai/Mistral-7B-Instruct-v0.2`).
fn model_path(model: &str) -> String {
    model
        .split('/')
        .map(path_segment)
        .collect::<Vec<_>>()
        .join("/")
}

// ---------------------------------------------------------------------------------------------
// Response wire types (requests are built as JSON values: they are small and open-ended)
// ---------------------------------------------------------------------------------------------

/// TGI's OpenAI-compatible chat answer, read tolerantly (TGI leaves `id` empty, sends tool
/// arguments as objects and its own finish reasons).
#[derive(Debug, Deserialize)]
struct HfChatResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    model: Option<String>,
    choices: Vec<HfChoice>,
    #[serde(default)]
    usage: Option<HfUsage>,
}

#[derive(Debug, Deserialize)]
struct HfChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    message: Option<HfMessage>,
    #[serde(default)]
    finish_reason: Option<tgi::Finish>,
}

#[derive(Debug, Deserialize)]
struct HfMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<HfToolCall>>,
}

#[derive(Debug, Deserialize)]
struct HfToolCall {
    #[serde(default)]
    id: Option<String>,
    function: HfFunction,
}

#[derive(Debug, Deserialize)]
struct HfFunction {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct HfUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// One TGI `generate` answer (an element of the array, or TGI's `/generate` object).
#[derive(Debug, Deserialize)]
struct HfGenerated {
    generated_text: String,
    #[serde(default)]
    details: Option<tgi::Details>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HfVectors {
    One(Vec<f64>),
    Many(Vec<Vec<f64>>),
}

// ---------------------------------------------------------------------------------------------
// Stream wire types
// ---------------------------------------------------------------------------------------------

/// One SSE payload: an OpenAI chat chunk (chat), a TGI token event (completions), or a TGI
/// error event. The fields of all three are optional, so one type reads them all.
#[derive(Debug, Deserialize)]
struct HfStreamEvent {
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<HfChunkChoice>,
    #[serde(default)]
    usage: Option<HfUsage>,
    #[serde(default)]
    token: Option<tgi::Token>,
    #[serde(default)]
    details: Option<tgi::Details>,
}

#[derive(Debug, Deserialize)]
struct HfChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<HfDelta>,
    #[serde(default)]
    finish_reason: Option<tgi::Finish>,
}

#[derive(Debug, Deserialize)]
struct HfDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<HfToolCallDeltas>,
}

/// TGI 2.x sends a single object where OpenAI sends an array.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HfToolCallDeltas {
    Many(Vec<HfToolCallDelta>),
    One(HfToolCallDelta),
}

#[derive(Debug, Deserialize)]
struct HfToolCallDelta {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<HfFunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct HfFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Value,
}

// ---------------------------------------------------------------------------------------------
// Translation
// ---------------------------------------------------------------------------------------------

/// OpenAI completions request -> TGI `generate` body. Sampling knobs go into `parameters`
/// (merged into the client's own `parameters`, as Kong does); `return_full_text: false` keeps
/// the prompt out of the answer (the serverless text-generation default echoes it).
fn generate_request(ctx: &RequestCtx<'_>, body: Map<String, Value>) -> Result<Value, GatewayError> {
    let mut parameters = match body.get("parameters") {
        Some(Value::Object(p)) => p.clone(),
        _ => Map::new(),
    };
    let req = ChatRequest::from_body(body).map_err(GatewayError::BadRequest)?;
    for (key, value) in req.sampling("max_new_tokens") {
        parameters.entry(key).or_insert(value);
    }
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            parameters.entry(key).or_insert(v);
        }
    };
    set("stop", req.stop.as_ref().map(|s| json!(s.to_vec())));
    set(
        "seed",
        req.extra.get("seed").filter(|s| s.is_u64()).cloned(),
    );
    set("return_full_text", Some(Value::Bool(false)));
    let hf = ctx.options.huggingface.as_ref();
    Ok(json!({
        "model": ctx.model,
        "inputs": req.prompt_text().unwrap_or_default(),
        "parameters": parameters,
        "options": {
            "use_cache": hf.and_then(|h| h.use_cache).unwrap_or(false),
            "wait_for_model": hf.and_then(|h| h.wait_for_model).unwrap_or(false),
        },
        "stream": ctx.stream,
    }))
}

/// OpenAI embeddings request -> feature-extraction `{"inputs": string | [string]}`.
fn embeddings_request(body: &Map<String, Value>) -> Result<Value, GatewayError> {
    let texts = match body.get("input") {
        Some(Value::String(_)) => true,
        Some(Value::Array(items)) => items.iter().all(Value::is_string),
        _ => false,
    };
    match body.get("input") {
        Some(input) if texts => Ok(json!({ "inputs": input })),
        _ => Err(GatewayError::BadRequest(
            "huggingface embeddings take a string or an array of strings".into(),
        )),
    }
}

fn chat_response(ctx: &RequestCtx<'_>, v: Value) -> Result<(Vec<u8>, Usage), String> {
    if !v.get("choices").is_some_and(Value::is_array) {
        return Err(INVALID_FORMAT.into());
    }
    let r: HfChatResponse = serde_json::from_value(v).map_err(|_| INVALID_FORMAT)?;
    let meta = ctx.meta();
    let usage = r.usage.map_or_else(Usage::default, |u| {
        Usage::new(u.prompt_tokens, u.completion_tokens)
    });
    let choices = r
        .choices
        .into_iter()
        .enumerate()
        .map(|(i, choice)| {
            let message = choice.message.unwrap_or(HfMessage {
                content: None,
                tool_calls: None,
            });
            let tool_calls: Vec<ToolCall> = message
                .tool_calls
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(n, c)| {
                    let id =
                        c.id.filter(|id| !id.is_empty() && id != "0")
                            .unwrap_or_else(|| format!("call_{}_{i}_{n}", ctx.request_id));
                    // TGI may send `""` for a call without arguments; clients parse the string.
                    let arguments = match arguments_string(&c.function.arguments) {
                        a if a.is_empty() => "{}".into(),
                        a => a,
                    };
                    ToolCall::function(id, c.function.name, arguments)
                })
                .collect();
            let content = match message.content {
                None if tool_calls.is_empty() => Some(String::new()),
                content => content,
            };
            let finish = choice
                .finish_reason
                .unwrap_or(tgi::Finish::Stop)
                .openai(!tool_calls.is_empty());
            let index = choice.index.unwrap_or(i as u32);
            ChatChoice::new(index, content, tool_calls, Some(finish))
        })
        .collect();
    let completion = ChatCompletion {
        id: r.id.filter(|id| !id.is_empty()).unwrap_or(meta.id),
        object: "chat.completion",
        created: r.created.filter(|c| *c > 0).unwrap_or(meta.created),
        model: r.model.filter(|m| !m.is_empty()).unwrap_or(meta.model),
        choices,
        usage,
    };
    let body = serde_json::to_vec(&completion).map_err(|e| e.to_string())?;
    Ok((body, usage))
}

/// `[{"generated_text"}]` -> `text_completion`. POLICY: OpenAI's completions shape
/// (`object: "text_completion"`, `choices[0].text`, `finish_reason: "stop"`), not Kong 3.9's
/// `object: "llm/v1/completions"` with the text in `message.content`.
fn generate_response(ctx: &RequestCtx<'_>, v: Value) -> Result<(Vec<u8>, Usage), String> {
    let first = match v {
        Value::Array(items) => items.into_iter().next(),
        object @ Value::Object(_) => Some(object),
        _ => None,
    };
    let generated: HfGenerated = first
        .and_then(|g| serde_json::from_value(g).ok())
        .ok_or(INVALID_FORMAT)?;
    let (finish, usage) = match &generated.details {
        Some(d) => (
            d.finish_reason.unwrap_or(tgi::Finish::Stop).openai(false),
            Usage::new(0, d.generated_tokens),
        ),
        None => (FinishReason::Stop, Usage::default()),
    };
    let completion =
        TextCompletion::single(&ctx.meta(), generated.generated_text, Some(finish), usage);
    let body = serde_json::to_vec(&completion).map_err(|e| e.to_string())?;
    Ok((body, usage))
}

/// Feature extraction answers one vector per input (a bare vector for a string input).
/// Models without pooling answer one vector per token (`[[[f64]]]`): not an embedding.
fn embeddings_response(ctx: &RequestCtx<'_>, v: Value) -> Result<(Vec<u8>, Usage), String> {
    let vectors = match serde_json::from_value::<HfVectors>(v).map_err(|_| INVALID_FORMAT)? {
        HfVectors::One(vector) => vec![vector],
        HfVectors::Many(vectors) => vectors,
    };
    // The API reports no token counts.
    let list = EmbeddingList::new(ctx.model, vectors, 0);
    let body = serde_json::to_vec(&list).map_err(|e| e.to_string())?;
    Ok((body, Usage::default()))
}

/// SSE -> OpenAI chunks, re-serialised through [`ChunkBuilder`] so TGI's chunks get OpenAI's
/// finish reasons, ids, the role on the first chunk, usage on request and a final `[DONE]`.
/// Chat payloads are OpenAI chunks; completions payloads are TGI token events.
pub type HfStream = DecodedStream<SseDecoder, HfEvents>;

impl HfStream {
    pub fn new(ctx: &RequestCtx<'_>) -> Self {
        let events = HfEvents {
            request_id: ctx.request_id.to_string(),
            tool_calls: Vec::new(),
        };
        DecodedStream::from_parts(SseDecoder::new(), events, ctx.chunk_builder())
    }
}

pub struct HfEvents {
    request_id: String,
    /// Indexes of the tool calls whose opening delta was sent.
    tool_calls: Vec<u32>,
}

impl EventTranslate<SseEvent> for HfEvents {
    fn event(
        &mut self,
        event: SseEvent,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        let data = event.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let e: HfStreamEvent = serde_json::from_str(data)
            .map_err(|err| StreamError(format!("undecodable huggingface stream event: {err}")))?;
        if let Some(error) = &e.error {
            let message = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_string);
            return Err(StreamError(format!("API error: {message}")));
        }
        if let Some(model) = e.model.as_deref().filter(|m| !m.is_empty()) {
            chunks.set_model(model);
        }
        if let Some(u) = e.usage {
            chunks.usage = Usage::new(u.prompt_tokens, u.completion_tokens);
        }
        // One choice is all TGI generates; others (none in practice) are dropped.
        for choice in e.choices.into_iter().filter(|c| c.index == 0) {
            self.choice(choice, chunks, out);
        }
        let tokens = tgi::TokenEvent {
            token: e.token,
            details: e.details,
        };
        tokens.translate(chunks, out);
        Ok(())
    }
}

impl HfEvents {
    fn choice(&mut self, choice: HfChunkChoice, chunks: &mut ChunkBuilder, out: &mut BytesMut) {
        if let Some(delta) = choice.delta {
            chunks.text(out, delta.content.as_deref().unwrap_or_default());
            let calls = match delta.tool_calls {
                Some(HfToolCallDeltas::Many(calls)) => calls,
                Some(HfToolCallDeltas::One(call)) => vec![call],
                None => Vec::new(),
            };
            for call in calls {
                let (name, arguments) = match call.function {
                    // A delta without arguments adds none (not the `{}` of a whole call).
                    Some(f) if f.arguments.is_null() => (f.name, String::new()),
                    Some(f) => (f.name, arguments_string(&f.arguments)),
                    None => (None, String::new()),
                };
                if !self.tool_calls.contains(&call.index) {
                    self.tool_calls.push(call.index);
                    let id = call
                        .id
                        .filter(|id| !id.is_empty() && id != "0")
                        .unwrap_or_else(|| format!("call_{}_{}", self.request_id, call.index));
                    let name = name.unwrap_or_default();
                    chunks.tool_call_start(out, call.index, &id, &name);
                }
                chunks.tool_call_arguments(out, call.index, &arguments);
            }
        }
        if let Some(finish) = choice.finish_reason {
            let reason = finish.openai(!self.tool_calls.is_empty());
            chunks.finish(out, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ai_proxy::ModelOptions;
    use crate::providers::testkit::{
        assert_add_tool_call, assert_hi_bob_completion, at_every_split, ctx, feed_at_cuts, fixture,
        fixture_config, fixture_json, run_pieces, sse_payloads,
    };
    use proptest::prelude::*;

    const MODEL: &str = "mistralai/Mistral-7B-Instruct-v0.2";

    fn config() -> AiProxyConfig {
        fixture_config("huggingface/chat/config.json")
    }

    fn driver() -> HuggingFace {
        HuggingFace::from_config(&config()).unwrap()
    }

    /// The pipeline merges config options into the body before translation (config wins).
    fn merged(path: &str, options: &ModelOptions) -> Map<String, Value> {
        let mut body = fixture_json(path).as_object().unwrap().clone();
        if let Some(v) = options.max_tokens {
            body.insert("max_tokens".into(), json!(v));
        }
        body
    }

    fn respond(route: RouteType, body: &str) -> Result<Value, String> {
        let options = ModelOptions::default();
        let c = ctx(route, MODEL, false, &options);
        driver()
            .response(&c, Bytes::from(body.to_string()))
            .map(|t| serde_json::from_slice(&t.body).unwrap())
    }

    #[test]
    fn urls_per_route_with_and_without_upstream_url() {
        let mut options = ModelOptions::default();
        let d = driver();
        let url =
            |route, options: &ModelOptions| d.url(&ctx(route, MODEL, false, options)).unwrap();
        let base = "https://api-inference.huggingface.co/models/mistralai/Mistral-7B-Instruct-v0.2";
        assert_eq!(
            url(RouteType::Chat, &options),
            format!("{base}/v1/chat/completions")
        );
        assert_eq!(url(RouteType::Completions, &options), base);
        assert_eq!(
            url(RouteType::Embeddings, &options),
            "https://router.huggingface.co/hf-inference/models/mistralai/Mistral-7B-Instruct-v0.2/pipeline/feature-extraction"
        );
        // `upstream_url` is a base (Kong's huggingface exception).
        options.upstream_url = Some("http://tgi.local:8080/".into());
        assert_eq!(
            url(RouteType::Chat, &options),
            "http://tgi.local:8080/v1/chat/completions"
        );
        assert_eq!(
            url(RouteType::Completions, &options),
            "http://tgi.local:8080/"
        );
        assert_eq!(
            url(RouteType::Embeddings, &options),
            "http://tgi.local:8080/pipeline/feature-extraction"
        );
    }

    #[test]
    fn model_names_cannot_change_the_path() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Completions, "../../x?y#z/..", false, &options);
        assert_eq!(
            driver().url(&c).unwrap(),
            "https://api-inference.huggingface.co/models/%2E%2E/%2E%2E/x%3Fy%23z/%2E%2E"
        );
    }

    #[test]
    fn chat_request_is_the_openai_body() {
        let config = config();
        let options = config.model.options.clone().unwrap();
        let c = ctx(RouteType::Chat, MODEL, false, &options);
        let mut body = merged("huggingface/chat/client-request.json", &options);
        body.insert("top_k".into(), json!(5));
        let out = driver().request(&c, body).unwrap();
        // Deviation from Kong 3.9's fixture (`parameters`/`options` in the body): the
        // /v1/chat/completions endpoint reads OpenAI fields, so they stay where they are;
        // the HF options travel as headers.
        let mut expected = fixture_json("huggingface/chat/upstream-request.json");
        let expected = expected.as_object_mut().unwrap();
        expected.remove("parameters");
        expected.remove("options");
        expected.insert("temperature".into(), json!(0.5));
        expected.insert("max_tokens".into(), json!(64));
        expected.insert("stream".into(), json!(false));
        assert_eq!(out, Value::Object(expected.clone()));

        let mut headers = Vec::new();
        driver().headers(&c, &mut headers);
        assert_eq!(
            headers,
            vec![(
                HeaderName::from_static("x-wait-for-model"),
                HeaderValue::from_static("true")
            )]
        );
    }

    #[test]
    fn completions_request_matches_fixture() {
        let options: ModelOptions = serde_json::from_value(json!({"max_tokens": 64})).unwrap();
        let c = ctx(RouteType::Completions, MODEL, false, &options);
        let body = merged("huggingface/completions/client-request.json", &options);
        let out = driver().request(&c, body).unwrap();
        let mut expected = fixture_json("huggingface/completions/upstream-request.json");
        // Additions to Kong 3.9: `return_full_text: false` (no prompt echo) and an explicit
        // `stream`.
        expected["parameters"]["return_full_text"] = json!(false);
        expected["stream"] = json!(false);
        assert_eq!(out, expected);
    }

    #[test]
    fn completions_request_moves_every_knob_into_parameters() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Completions, MODEL, true, &options);
        let body = json!({"prompt": ["a", "b"], "max_tokens": 5, "temperature": 0.1,
                          "top_p": 0.9, "top_k": 3, "stop": ["\n"], "seed": 4,
                          "parameters": {"max_new_tokens": 99, "repetition_penalty": 1.2}});
        let out = driver()
            .request(&c, body.as_object().unwrap().clone())
            .unwrap();
        assert_eq!(
            out,
            json!({"model": MODEL, "inputs": "a\nb", "stream": true,
                   "parameters": {"max_new_tokens": 99, "repetition_penalty": 1.2,
                                  "temperature": 0.1, "top_p": 0.9, "top_k": 3, "stop": ["\n"],
                                  "seed": 4, "return_full_text": false},
                   "options": {"use_cache": false, "wait_for_model": false}})
        );
    }

    #[test]
    fn embeddings_request_takes_text_only() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Embeddings, MODEL, false, &options);
        let req = |v: Value| driver().request(&c, v.as_object().unwrap().clone());
        assert_eq!(req(json!({"input": "a"})).unwrap(), json!({"inputs": "a"}));
        assert_eq!(
            req(fixture_json("huggingface/embeddings/client-request.json")).unwrap(),
            fixture_json("huggingface/embeddings/upstream-request.json")
        );
        assert!(matches!(
            req(json!({"input": [[1, 2]]})),
            Err(GatewayError::BadRequest(_))
        ));
    }

    #[test]
    fn chat_response_is_openai_correct() {
        let raw = fixture("huggingface/chat/upstream-response.json");
        let v = respond(RouteType::Chat, &raw).unwrap();
        let expected = fixture_json("huggingface/chat/expected-response.json");
        assert_eq!(v["model"], expected["model"]);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["usage"], expected["usage"]);
        let choice = &v["choices"][0];
        assert_eq!(
            choice["message"]["content"],
            expected["choices"][0]["message"]["content"]
        );
        // POLICY (and Kong 3.13): role kept, TGI's `eos_token` normalised to `stop` (Kong 3.9
        // answers "complete"), the empty id replaced and upstream `created` kept.
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(v["id"], "chatcmpl-test");
        assert_eq!(v["created"], 1_730_000_000);
    }

    #[test]
    fn chat_tool_calls_pass_through_with_ids_and_string_arguments() {
        let body = r#"{"choices":[{"index":0,"finish_reason":"eos_token","message":{"role":"assistant",
            "content":null,"tool_calls":[{"id":"0","type":"function",
            "function":{"name":"add","description":null,"arguments":{"a":2,"b":12}}}]}}]}"#;
        let v = respond(RouteType::Chat, body).unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_test_0_0");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "add");
        assert_eq!(call["function"]["arguments"], r#"{"a":2,"b":12}"#);
        // No usage from upstream: zeros, and model/created from the request.
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        );
        assert_eq!(v["model"], MODEL);
        assert_eq!(v["created"], 1_700_000_000);
    }

    #[test]
    fn finish_reasons_are_normalised() {
        for (hf, openai) in [
            ("eos_token", "stop"),
            ("stop_sequence", "stop"),
            ("stop", "stop"),
            ("length", "length"),
            ("content_filter", "content_filter"),
            ("whatever", "stop"),
        ] {
            let body = json!({"choices": [{"message": {"content": "x"}, "finish_reason": hf}]});
            let v = respond(RouteType::Chat, &body.to_string()).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], openai, "{hf}");
        }
    }

    #[test]
    fn completions_response_is_a_text_completion() {
        let raw = fixture("huggingface/completions/upstream-response.json");
        let v = respond(RouteType::Completions, &raw).unwrap();
        let expected = fixture_json("huggingface/completions/expected-response.json");
        // POLICY: OpenAI's `text_completion` with `choices[0].text`, where Kong 3.9 answers
        // `object: "llm/v1/completions"` with `message.content` and `finish_reason: "complete"`.
        assert_eq!(v["object"], "text_completion");
        assert_eq!(
            v["choices"][0]["text"],
            expected["choices"][0]["message"]["content"]
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["model"], expected["model"]);
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        );
        assert_eq!(v["id"], "cmpl-test");

        let tgi =
            r#"{"generated_text":"x","details":{"finish_reason":"length","generated_tokens":7}}"#;
        let v = respond(RouteType::Completions, tgi).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 7);
    }

    #[test]
    fn embeddings_response_takes_both_shapes() {
        let raw = fixture("huggingface/embeddings/upstream-response.json");
        let v = respond(RouteType::Embeddings, &raw).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1]["embedding"], json!([2.0, 3.0]));
        assert_eq!(v["usage"], json!({"prompt_tokens": 0, "total_tokens": 0}));
        let v = respond(RouteType::Embeddings, "[0.5,1.0]").unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, 1.0]));
        let err = respond(RouteType::Embeddings, "[[[0.5]]]").unwrap_err();
        assert_eq!(err, INVALID_FORMAT);
    }

    #[test]
    fn errors_in_200_bodies_and_bad_shapes_use_kongs_reasons() {
        let raw = fixture("huggingface/errors/upstream-503.json");
        let err = respond(RouteType::Completions, &raw).unwrap_err();
        assert_eq!(
            err,
            "API error: Model mistralai/Mistral-7B-Instruct-v0.2 is currently loading"
        );
        let err = respond(RouteType::Chat, r#"{"error":["a"]}"#).unwrap_err();
        assert_eq!(err, r#"API error: ["a"]"#);
        assert_eq!(respond(RouteType::Chat, "{}").unwrap_err(), INVALID_FORMAT);
        assert_eq!(
            respond(RouteType::Completions, "[{}]").unwrap_err(),
            INVALID_FORMAT
        );
        assert_eq!(respond(RouteType::Chat, "<html>").unwrap_err(), UNDECODABLE);
        // Non-200 bodies pass through.
        let raw = Bytes::from(fixture("huggingface/errors/upstream-401.json"));
        let status = actix_web::http::StatusCode::UNAUTHORIZED;
        assert_eq!(driver().error(status, raw.clone()), raw);
    }

    #[test]
    fn chat_stream_at_every_split_is_openai_correct() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let input = fixture("huggingface/chat-stream/upstream-stream.txt");
        at_every_split(
            &input,
            || HfStream::new(&c),
            |got, split, s| {
                assert_eq!(got.len(), 4, "split {split}");
                assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");
                assert_eq!(got[0]["choices"][0]["delta"]["content"], " 1");
                assert!(got[1]["choices"][0]["delta"].get("role").is_none());
                assert_eq!(got[1]["choices"][0]["delta"]["content"], " + 1");
                assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
                for chunk in &got[..3] {
                    assert_eq!(chunk["id"], "chatcmpl-test");
                    assert_eq!(chunk["model"], "tgi");
                    assert_eq!(chunk["object"], "chat.completion.chunk");
                }
                assert_eq!(got[3], "[DONE]");
                assert_eq!(s.usage(), Usage::new(10, 3));
            },
        );
    }

    #[test]
    fn chat_stream_without_done_and_with_usage_chunk_byte_by_byte() {
        let options = ModelOptions::default();
        let mut c = ctx(RouteType::Chat, MODEL, true, &options);
        c.include_usage = true;
        let input = fixture("huggingface/chat-stream/upstream-stream.txt");
        let input = input.trim_end().trim_end_matches("data: [DONE]");
        let mut s = HfStream::new(&c);
        let got = sse_payloads(&run_pieces(&mut s, input.as_bytes(), 1));
        assert_eq!(got.len(), 5);
        assert_eq!(got[3]["usage"]["total_tokens"], 13);
        assert_eq!(got[4], "[DONE]");
    }

    #[test]
    fn chat_stream_tool_call_deltas_are_streamed() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let input = fixture("huggingface/chat-stream-tools/upstream-stream.txt");
        at_every_split(
            &input,
            || HfStream::new(&c),
            |got, split, _| {
                assert_add_tool_call(got, split);
            },
        );
    }

    #[test]
    fn completions_stream_turns_tgi_tokens_into_text_chunks() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Completions, MODEL, true, &options);
        let input = fixture("huggingface/completions-stream/upstream-stream.txt");
        at_every_split(
            &input,
            || HfStream::new(&c),
            |got, split, s| {
                assert_hi_bob_completion(got, split);
                assert_eq!(s.usage(), Usage::new(0, 3));
            },
        );
    }

    #[test]
    fn stream_error_events_and_bad_payloads_are_stream_errors() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let mut out = BytesMut::new();
        let mut s = HfStream::new(&c);
        let err = s
            .feed(
                b"data:{\"error\":\"Input validation error\",\"error_type\":\"validation\"}\n\n",
                &mut out,
            )
            .unwrap_err();
        assert_eq!(err.0, "API error: Input validation error");
        let mut s = HfStream::new(&c);
        assert!(s.feed(b"data:{oops\n\n", &mut out).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512),
                                    cuts in proptest::collection::vec(0usize..512, 0..8)) {
            let options = ModelOptions::default();
            for route in [RouteType::Chat, RouteType::Completions] {
                let c = ctx(route, MODEL, true, &options);
                feed_at_cuts(&mut HfStream::new(&c), &data, &cuts);
            }
        }

        #[test]
        fn random_payloads_and_bodies_never_panic(body in ".{0,64}") {
            let options = ModelOptions::default();
            for route in [RouteType::Chat, RouteType::Completions, RouteType::Embeddings] {
                let c = ctx(route, MODEL, true, &options);
                let mut s = HfStream::new(&c);
                let mut out = BytesMut::new();
                let _ = s.feed(format!("data:{{\"choices\":[{{\"delta\":{{{body}}}}}]}}\n\n").as_bytes(), &mut out);
                let _ = s.feed(format!("data:{{{body}}}\n\n").as_bytes(), &mut out);
                let _ = s.finish(&mut out);
                let _ = respond(route, &body);
                let _ = respond(route, &format!("[{{{body}}}]"));
            }
        }
    }
}
