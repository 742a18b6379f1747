//! The Ollama wire format (`/api/chat`, `/api/generate`), shared by `llama2` and `mistral`
//! with `*_format: ollama`. Not a provider of its own: those two delegate here.
//!
//! Ollama streams NDJSON: one JSON object per line, `done: true` on the last with the token
//! counts (https://github.com/ollama/ollama/blob/main/docs/api.md).

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::oai::{
    arguments_string, ChatCompletion, ChatMessage, ChatRequest, ChunkBuilder, ContentPart,
    FinishReason, MessageContent, TextCompletion, ToolCall, Usage,
};
use super::stream::{DecodedStream, EventTranslate};
use super::{RequestCtx, StreamError, Translated};
use crate::codec::ndjson::NdjsonDecoder;
use crate::config::ai_proxy::RouteType;
use crate::error::GatewayError;

/// OpenAI request -> Ollama request. Sampling knobs move under `options`.
pub fn request(ctx: &RequestCtx<'_>, body: Map<String, Value>) -> Result<Value, GatewayError> {
    let req = ChatRequest::from_body(body).map_err(GatewayError::BadRequest)?;
    let mut out = Map::new();
    out.insert("model".into(), json!(ctx.model));
    match ctx.route_type {
        RouteType::Completions => {
            out.insert(
                "prompt".into(),
                json!(req.prompt_text().unwrap_or_default()),
            );
        }
        RouteType::Embeddings => {
            out.insert("input".into(), req.input.clone().unwrap_or(Value::Null));
            return Ok(Value::Object(out));
        }
        _ => {
            let messages: Vec<Value> = req.messages.iter().map(message).collect();
            out.insert("messages".into(), Value::Array(messages));
        }
    }
    out.insert("stream".into(), json!(ctx.stream));
    if let Some(tools) = &req.tools {
        out.insert("tools".into(), json!(tools));
    }
    if let Some(choice) = &req.tool_choice {
        out.insert("tool_choice".into(), json!(choice));
    }
    // Ollama's structured output: `format` is "json" or a JSON schema.
    if let Some(schema) = req.response_format_schema() {
        let format = if schema == json!({"type": "object"}) {
            json!("json")
        } else {
            schema
        };
        out.insert("format".into(), format);
    }
    let mut options = req.sampling("num_predict");
    if let Some(stop) = &req.stop {
        options.insert("stop".into(), json!(stop.to_vec()));
    }
    if !options.is_empty() {
        out.insert("options".into(), Value::Object(options));
    }
    Ok(Value::Object(out))
}

/// Ollama wants text content plus base64 `images`, and tool-call arguments as objects.
fn message(m: &ChatMessage) -> Value {
    let mut out = Map::new();
    out.insert("role".into(), json!(m.role));
    out.insert("content".into(), json!(m.text()));
    if let Some(MessageContent::Parts(parts)) = &m.content {
        let images: Vec<&str> = parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::ImageUrl { image_url, .. } => image_url.as_data_url().map(|(_, d)| d),
                _ => None,
            })
            .collect();
        if !images.is_empty() {
            out.insert("images".into(), json!(images));
        }
    }
    if let Some(calls) = &m.tool_calls {
        let calls: Vec<Value> = calls
            .iter()
            .map(|c| {
                let args: Value = serde_json::from_str(&c.function.arguments)
                    .unwrap_or_else(|_| json!(c.function.arguments));
                json!({"function": {"name": c.function.name, "arguments": args}})
            })
            .collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(out)
}

#[derive(Debug, Deserialize)]
struct OllamaResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<OllamaMessage>,
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: u64,
    #[serde(default)]
    eval_count: u64,
    #[serde(default)]
    embeddings: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OllamaMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    tool_calls: Vec<OllamaToolCall>,
}

#[derive(Debug, Deserialize)]
struct OllamaToolCall {
    function: OllamaFunction,
}

#[derive(Debug, Deserialize)]
struct OllamaFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

impl OllamaResponse {
    /// `done_reason` when Ollama gives one; older servers only tell by hitting `num_predict`.
    fn finish_reason(&self, max_tokens: Option<u64>, has_tools: bool) -> FinishReason {
        if has_tools {
            return FinishReason::ToolCalls;
        }
        match self.done_reason.as_deref() {
            Some("length") => FinishReason::Length,
            Some(_) => FinishReason::Stop,
            None if max_tokens == Some(self.eval_count) => FinishReason::Length,
            None => FinishReason::Stop,
        }
    }

    fn usage(&self) -> Usage {
        Usage::new(self.prompt_eval_count, self.eval_count)
    }

    fn tool_calls(&self, request_id: &str) -> Vec<ToolCall> {
        self.message
            .iter()
            .flat_map(|m| m.tool_calls.iter())
            .enumerate()
            .map(|(i, c)| {
                ToolCall::function(
                    format!("call_{request_id}_{i}"),
                    c.function.name.clone(),
                    arguments_string(&c.function.arguments),
                )
            })
            .collect()
    }
}

/// Ollama 200 body -> OpenAI body.
pub fn response(ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
    let r: OllamaResponse = serde_json::from_slice(&body)
        .map_err(|_| format!("failed to decode {} response", ctx.route_type.as_str()))?;
    if let Some(error) = r.error {
        return Err(format!("ollama error: {error}"));
    }
    let mut meta = ctx.meta();
    if let Some(model) = &r.model {
        meta.model = model.clone();
    }
    let usage = r.usage();
    match ctx.route_type {
        RouteType::Embeddings => {
            let vectors = r.embeddings.ok_or("'embeddings' not in ollama response")?;
            let list = super::oai::EmbeddingList::new(&meta.model, vectors, usage.prompt_tokens);
            Translated::json(&list, usage)
        }
        RouteType::Completions => {
            let text = r
                .response
                .clone()
                .ok_or("'response' not in ollama response")?;
            let finish = r.finish_reason(ctx.options.max_tokens, false);
            Translated::json(
                &TextCompletion::single(&meta, text, Some(finish), usage),
                usage,
            )
        }
        _ => {
            let message = r
                .message
                .as_ref()
                .ok_or("'message' not in ollama response")?;
            let tool_calls = r.tool_calls(ctx.request_id);
            let finish = r.finish_reason(ctx.options.max_tokens, !tool_calls.is_empty());
            let content = Some(message.content.clone());
            let completion =
                ChatCompletion::single(&meta, content, tool_calls, Some(finish), usage);
            Translated::json(&completion, usage)
        }
    }
}

/// Ollama's NDJSON lines -> OpenAI chunks.
pub type OllamaStream = DecodedStream<NdjsonDecoder, OllamaEvents>;

impl OllamaStream {
    pub fn new(ctx: &RequestCtx<'_>) -> Self {
        let events = OllamaEvents {
            max_tokens: ctx.options.max_tokens,
            request_id: ctx.request_id.to_string(),
            tool_calls: 0,
        };
        DecodedStream::from_parts(NdjsonDecoder::new(), events, ctx.chunk_builder())
    }
}

pub struct OllamaEvents {
    max_tokens: Option<u64>,
    request_id: String,
    tool_calls: u32,
}

impl EventTranslate<Bytes> for OllamaEvents {
    fn event(
        &mut self,
        line: Bytes,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        let r: OllamaResponse = serde_json::from_slice(&line)
            .map_err(|e| StreamError(format!("undecodable ollama stream line: {e}")))?;
        if let Some(error) = &r.error {
            return Err(StreamError(format!("ollama error: {error}")));
        }
        if let Some(model) = &r.model {
            chunks.set_model(model);
        }
        if let Some(text) = &r.response {
            chunks.text(out, text);
        }
        if let Some(m) = &r.message {
            chunks.text(out, &m.content);
            for call in r.tool_calls(&self.request_id) {
                let index = self.tool_calls;
                self.tool_calls += 1;
                chunks.tool_call_start(out, index, &call.id, &call.function.name);
                chunks.tool_call_arguments(out, index, &call.function.arguments);
            }
        }
        if r.done {
            chunks.usage = r.usage();
            let finish = r.finish_reason(self.max_tokens, self.tool_calls > 0);
            chunks.finish(out, finish);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ai_proxy::ModelOptions;
    use crate::providers::testkit::{
        ctx, fixture, fixture_config, fixture_json, run_stream, sse_payloads,
    };
    use crate::providers::StreamTranslate;

    fn options() -> ModelOptions {
        fixture_config("llama2/ollama-chat/config.json")
            .model
            .options
            .unwrap()
    }

    /// The pipeline merges config options into the body before translation.
    fn merged(path: &str, options: &ModelOptions) -> Map<String, Value> {
        let mut body = fixture_json(path).as_object().unwrap().clone();
        body.insert("max_tokens".into(), json!(options.max_tokens.unwrap()));
        body.insert("temperature".into(), json!(options.temperature.unwrap()));
        body
    }

    #[test]
    fn chat_request_matches_fixture() {
        let options = options();
        let ctx = ctx(RouteType::Chat, "llama3", false, &options);
        let out = request(
            &ctx,
            merged("llama2/ollama-chat/client-request.json", &options),
        )
        .unwrap();
        assert_eq!(
            out,
            fixture_json("llama2/ollama-chat/upstream-request.json")
        );
    }

    #[test]
    fn completions_request_matches_fixture() {
        let options = options();
        let ctx = ctx(RouteType::Completions, "llama3", false, &options);
        let mut body = Map::new();
        body.insert("prompt".into(), json!("Explain zero."));
        body.insert("max_tokens".into(), json!(100));
        body.insert("temperature".into(), json!(0.5));
        let out = request(&ctx, body).unwrap();
        assert_eq!(
            out,
            fixture_json("llama2/ollama-completions/upstream-request.json")
        );
    }

    #[test]
    fn chat_response_is_openai_shaped() {
        let options = options();
        let ctx = ctx(RouteType::Chat, "llama3", false, &options);
        let raw = fixture("llama2/ollama-chat/upstream-response.json");
        let t = response(&ctx, Bytes::from(raw)).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        let expected = fixture_json("llama2/ollama-chat/expected-response.json");
        assert_eq!(
            v["choices"],
            expected["choices"]
                .as_array()
                .map(|c| {
                    let mut c = c[0].clone();
                    c["logprobs"] = Value::Null;
                    json!([c])
                })
                .unwrap()
        );
        assert_eq!(v["usage"], expected["usage"]);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "llama3");
        // OpenAI-correct deviation from Kong's quirk: `created` is unix seconds, and an id exists.
        assert_eq!(v["created"], 1_700_000_000);
        assert_eq!(v["id"], "chatcmpl-test");
    }

    #[test]
    fn completions_response_is_text_completion() {
        let options = options();
        let ctx = ctx(RouteType::Completions, "llama3", false, &options);
        let raw = fixture("llama2/ollama-completions/upstream-response.json");
        let t = response(&ctx, Bytes::from(raw)).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "Zero is nothing.");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(t.usage, Usage::new(4, 5));
    }

    #[test]
    fn tool_calls_become_openai_tool_calls() {
        let options = ModelOptions::default();
        let ctx = ctx(RouteType::Chat, "llama3", false, &options);
        let raw = r#"{"model":"llama3","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"add","arguments":{"a":2,"b":12}}}]},"done":true}"#;
        let t = response(&ctx, Bytes::from(raw)).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "add");
        assert_eq!(call["function"]["arguments"], r#"{"a":2,"b":12}"#);
        assert_eq!(call["type"], "function");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn stream_at_every_split_gives_openai_chunks() {
        let options = options();
        let ctx = ctx(RouteType::Chat, "llama3", true, &options);
        let input = fixture("llama2/ollama-chat-stream/upstream-stream.ndjson");
        let expected = sse_payloads(&fixture(
            "llama2/ollama-chat-stream/expected-client-stream.txt",
        ));
        for split in 0..input.len() {
            let mut s = OllamaStream::new(&ctx);
            let got = sse_payloads(&run_stream(&mut s, input.as_bytes(), split));
            // Kong's two content chunks, then the OpenAI-correct finish chunk, then [DONE].
            assert_eq!(got.len(), 4, "split {split}");
            assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(
                got[0]["choices"][0]["delta"]["content"],
                expected[0]["choices"][0]["delta"]["content"]
            );
            assert_eq!(
                got[1]["choices"][0]["delta"]["content"],
                expected[1]["choices"][0]["delta"]["content"]
            );
            assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
            assert_eq!(got[3], "[DONE]");
            assert_eq!(s.usage(), Usage::new(26, 3));
        }
    }

    #[test]
    fn a_line_that_never_ends_is_refused() {
        let options = options();
        let c = ctx(RouteType::Chat, "llama3", true, &options);
        let mut s = OllamaStream::new(&c);
        let mut out = BytesMut::new();
        let chunk = vec![b'x'; 1024 * 1024];
        let err = (0..32)
            .find_map(|_| s.feed(&chunk, &mut out).err())
            .expect("refused after 16 MiB");
        assert!(err.0.contains("larger than"), "{err}");
    }

    #[test]
    fn stream_usage_chunk_when_asked() {
        let options = options();
        let mut c = ctx(RouteType::Chat, "llama3", true, &options);
        c.include_usage = true;
        let input = fixture("llama2/ollama-chat-stream/upstream-stream.ndjson");
        let mut s = OllamaStream::new(&c);
        let got = sse_payloads(&run_stream(&mut s, input.as_bytes(), 10));
        assert_eq!(got[3]["usage"]["total_tokens"], 29);
        assert_eq!(got[4], "[DONE]");
    }
}
