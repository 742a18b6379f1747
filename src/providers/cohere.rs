//! Cohere, API v1 (`/v1/chat`, `/v1/generate`) plus `/v2/embed` for embeddings, as Kong uses it.
//!
//! Chat: the last message becomes `message`, earlier turns `chat_history`
//! (`USER`/`CHATBOT`/`SYSTEM`/`TOOL`), leading system messages the `preamble`; trailing tool
//! messages become `tool_results`. OpenAI tools are rewritten as v1 `parameter_definitions`.
//! Answers may come in the v1 chat shape (`text`), the generate shape (`generations`) or the
//! v2 shape (`message.content`); the output shape follows the route type either way.
//! Streams are NDJSON (`application/stream+json`): `stream-start`, `text-generation`,
//! `tool-calls-generation`, `stream-end` (https://docs.cohere.com/v1/reference/chat).
//!
//! Deliberate differences from Kong 3.9: system messages go to `preamble`/`SYSTEM` (Kong sends
//! them as `USER` turns), tools are translated (Kong forwards an OpenAI body Cohere v1 can't
//! read), finish reasons are mapped to OpenAI values, and streams end with a finish chunk.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::oai::{
    arguments_string, ChatCompletion, ChatMessage, ChatRequest, ChunkBuilder, EmbeddingList,
    FinishReason, TextCompletion, Tool, ToolCall, ToolChoice, Usage,
};
use super::stream::{DecodedStream, EventTranslate};
use super::{endpoint_url, RequestCtx, StreamError, StreamTranslate, Translate, Translated};
use crate::codec::ndjson::NdjsonDecoder;
use crate::config::ai_proxy::{AiProxyConfig, CohereEmbeddingInputType, ModelOptions, RouteType};
use crate::error::GatewayError;

pub const DEFAULT_BASE: &str = "https://api.cohere.com:443";
const CHAT_PATH: &str = "/v1/chat";
const GENERATE_PATH: &str = "/v1/generate";
const EMBED_PATH: &str = "/v2/embed";

/// Kong's reason when a 200 body carries no answer.
const MISSING_ANSWER: &str = "'text' or 'generations' missing from cohere response body";
const UNDECODABLE: &str = "failed to decode cohere response";

pub struct Cohere;

impl Translate for Cohere {
    fn api_base(&self, _options: &ModelOptions) -> Option<String> {
        Some(DEFAULT_BASE.to_string())
    }

    fn from_config(_config: &AiProxyConfig) -> Result<Self, super::DriverError> {
        Ok(Cohere)
    }

    fn url(&self, ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
        let path = match ctx.route_type {
            RouteType::Completions => GENERATE_PATH,
            RouteType::Embeddings => EMBED_PATH,
            _ => CHAT_PATH,
        };
        Ok(endpoint_url(ctx, DEFAULT_BASE, path))
    }

    fn request(
        &self,
        ctx: &RequestCtx<'_>,
        body: Map<String, Value>,
    ) -> Result<Value, GatewayError> {
        let req = ChatRequest::from_body(body).map_err(GatewayError::BadRequest)?;
        let out = match ctx.route_type {
            RouteType::Embeddings => serde_json::to_value(embed_request(ctx, &req)?),
            RouteType::Completions => serde_json::to_value(CohereGenerateRequest {
                model: ctx.model,
                prompt: req.prompt_text().unwrap_or_default(),
                sampling: CohereSampling::of(&req),
                stream: ctx.stream,
            }),
            _ => serde_json::to_value(chat_request(ctx, &req)),
        };
        out.map_err(|e| GatewayError::Internal(e.to_string()))
    }

    fn response(&self, ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
        if ctx.route_type == RouteType::Embeddings {
            return embed_response(ctx, &body);
        }
        let r: CohereResponse = serde_json::from_slice(&body).map_err(|_| UNDECODABLE)?;
        let answer = r.answer(ctx.request_id)?;
        let usage = r.usage();
        let mut meta = ctx.meta();
        let finish = answer.finish_reason();
        if let Some(id) = answer.id.filter(|id| !id.is_empty()) {
            meta.id = id;
        }
        if ctx.route_type == RouteType::Completions {
            let text = answer.text.unwrap_or_default();
            Translated::json(
                &TextCompletion::single(&meta, text, Some(finish), usage),
                usage,
            )
        } else {
            let content = match answer.text {
                Some(text) if text.is_empty() && !answer.tool_calls.is_empty() => None,
                Some(text) => Some(text),
                None if answer.tool_calls.is_empty() => Some(String::new()),
                None => None,
            };
            let completion =
                ChatCompletion::single(&meta, content, answer.tool_calls, Some(finish), usage);
            Translated::json(&completion, usage)
        }
    }

    fn stream(&self, ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate> {
        Box::new(CohereStream::new(ctx))
    }
}

// ---------------------------------------------------------------------------------------------
// Request wire types
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct CohereChatRequest<'a> {
    model: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    chat_history: Vec<CohereTurn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preamble: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<CohereTool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_results: Vec<CohereToolResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(flatten)]
    sampling: CohereSampling,
    stream: bool,
}

#[derive(Debug, Serialize)]
struct CohereGenerateRequest<'a> {
    model: &'a str,
    prompt: String,
    #[serde(flatten)]
    sampling: CohereSampling,
    stream: bool,
}

/// Sampling knobs both `/v1/chat` and `/v1/generate` take, under Cohere's names.
#[derive(Debug, Default, Serialize)]
struct CohereSampling {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
}

impl CohereSampling {
    fn of(req: &ChatRequest) -> Self {
        let extra_f64 = |key: &str| req.extra.get(key).and_then(Value::as_f64);
        CohereSampling {
            max_tokens: req.max_tokens(),
            temperature: req.temperature,
            p: req.top_p,
            k: req.top_k,
            stop_sequences: req.stop.as_ref().map(|s| s.to_vec()),
            seed: req.extra.get("seed").and_then(Value::as_u64),
            frequency_penalty: extra_f64("frequency_penalty"),
            presence_penalty: extra_f64("presence_penalty"),
        }
    }
}

/// One `chat_history` entry: a text turn, a `CHATBOT` turn with tool calls, or a `TOOL` turn.
#[derive(Debug, Serialize)]
struct CohereTurn {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<CohereCall>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_results: Vec<CohereToolResult>,
}

/// A v1 tool call, in requests (history) and responses alike.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CohereCall {
    #[serde(default)]
    name: String,
    #[serde(default)]
    parameters: Value,
}

#[derive(Debug, Serialize)]
struct CohereToolResult {
    call: CohereCall,
    outputs: Vec<Value>,
}

#[derive(Debug, Serialize)]
struct CohereTool {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    parameter_definitions: Map<String, Value>,
}

#[derive(Debug, Serialize)]
struct CohereEmbedRequest<'a> {
    model: &'a str,
    texts: Vec<String>,
    input_type: CohereEmbeddingInputType,
    embedding_types: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimension: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Response wire types
// ---------------------------------------------------------------------------------------------

/// Every answer shape Cohere (and Kong's translator) knows: v1 chat, generate and v2 chat.
#[derive(Debug, Default, Deserialize)]
struct CohereResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    generation_id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    generations: Option<Vec<CohereGeneration>>,
    #[serde(default)]
    finish_reason: Option<CohereFinish>,
    #[serde(default)]
    tool_calls: Option<Vec<CohereCall>>,
    /// v2 only; kept loose so a v1 body with an odd `message` still decodes.
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    meta: Option<CohereMeta>,
    /// v2's name for `meta`.
    #[serde(default)]
    usage: Option<CohereMeta>,
    #[serde(default)]
    token_count: Option<CohereTokenCount>,
}

#[derive(Debug, Deserialize)]
struct CohereGeneration {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<CohereFinish>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum CohereFinish {
    Complete,
    StopSequence,
    MaxTokens,
    ErrorToxic,
    ErrorLimit,
    Error,
    UserCancel,
    ToolCall,
    Timeout,
    #[serde(other)]
    Unknown,
}

impl CohereFinish {
    fn openai(self) -> FinishReason {
        match self {
            CohereFinish::MaxTokens | CohereFinish::ErrorLimit => FinishReason::Length,
            CohereFinish::ErrorToxic => FinishReason::ContentFilter,
            CohereFinish::ToolCall => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct CohereMeta {
    #[serde(default)]
    billed_units: Option<CohereUnits>,
    #[serde(default)]
    tokens: Option<CohereUnits>,
}

/// Cohere documents these as numbers, not integers.
#[derive(Debug, Default, Deserialize)]
struct CohereUnits {
    #[serde(default)]
    input_tokens: Option<f64>,
    #[serde(default)]
    output_tokens: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct CohereTokenCount {
    #[serde(default)]
    prompt_tokens: Option<f64>,
    #[serde(default)]
    response_tokens: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct CohereV2Message {
    #[serde(default)]
    content: Vec<CohereV2Content>,
    #[serde(default)]
    tool_plan: Option<String>,
    #[serde(default)]
    tool_calls: Vec<CohereV2ToolCall>,
}

#[derive(Debug, Deserialize)]
struct CohereV2Content {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CohereV2ToolCall {
    #[serde(default)]
    id: Option<String>,
    function: CohereV2Function,
}

#[derive(Debug, Deserialize)]
struct CohereV2Function {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Debug, Deserialize)]
struct CohereEmbedResponse {
    #[serde(default)]
    embeddings: Option<CohereEmbeddings>,
    #[serde(default)]
    meta: Option<CohereMeta>,
}

/// `/v2/embed` keys vectors by type; `/v1/embed` (an `upstream_url` may point there) does not.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CohereEmbeddings {
    Floats(Vec<Vec<f64>>),
    ByType {
        #[serde(default)]
        float: Option<Vec<Vec<f64>>>,
    },
}

// ---------------------------------------------------------------------------------------------
// Stream wire types
// ---------------------------------------------------------------------------------------------

/// One NDJSON line. Chat streams name their events; the legacy generate stream only sends
/// `text` lines and a last `is_finished: true` line.
#[derive(Debug, Deserialize)]
struct CohereStreamEvent {
    #[serde(default)]
    event_type: Option<CohereEventType>,
    #[serde(default)]
    generation_id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    is_finished: bool,
    #[serde(default)]
    finish_reason: Option<CohereFinish>,
    #[serde(default)]
    tool_calls: Option<Vec<CohereCall>>,
    #[serde(default)]
    response: Option<CohereResponse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum CohereEventType {
    StreamStart,
    TextGeneration,
    ToolCallsGeneration,
    StreamEnd,
    /// `tool-calls-chunk` (the same calls as `tool-calls-generation`, in pieces),
    /// `citation-generation`, `search-results`, ...: nothing to send.
    #[serde(other)]
    Unknown,
}

// ---------------------------------------------------------------------------------------------
// Translation
// ---------------------------------------------------------------------------------------------

fn is_system(m: &ChatMessage) -> bool {
    matches!(m.role.as_str(), "system" | "developer")
}

/// OpenAI chat request -> `/v1/chat` body.
fn chat_request<'a>(ctx: &RequestCtx<'a>, req: &ChatRequest) -> CohereChatRequest<'a> {
    let all = req.messages.as_slice();
    // Trailing tool messages answer the last assistant turn: they are this turn's
    // `tool_results`, and `message` stays empty (Cohere's convention).
    let tail_start = all
        .iter()
        .rposition(|m| m.role != "tool")
        .map_or(0, |i| i + 1);
    let (head, tail) = all.split_at(tail_start);
    let (head, message) = match (tail.is_empty(), head.split_last()) {
        (true, Some((last, rest))) => (rest, last.text()),
        _ => (head, String::new()),
    };
    let leading = head.iter().take_while(|m| is_system(m)).count();
    let (system, history) = head.split_at(leading);
    let preamble = (!system.is_empty()).then(|| {
        system
            .iter()
            .map(ChatMessage::text)
            .collect::<Vec<_>>()
            .join("\n")
    });
    let tools = match &req.tool_choice {
        Some(ToolChoice::Mode(mode)) if mode == "none" => Vec::new(),
        _ => req.tools.iter().flatten().map(tool).collect(),
    };
    CohereChatRequest {
        model: ctx.model,
        message,
        chat_history: chat_history(history, all),
        preamble,
        tools,
        tool_results: tail.iter().map(|m| tool_result(m, all)).collect(),
        response_format: req.extra.get("response_format").and_then(response_format),
        sampling: CohereSampling::of(req),
        stream: ctx.stream,
    }
}

/// Earlier turns; consecutive tool messages share one `TOOL` turn.
fn chat_history(messages: &[ChatMessage], all: &[ChatMessage]) -> Vec<CohereTurn> {
    let mut turns: Vec<CohereTurn> = Vec::with_capacity(messages.len());
    for m in messages {
        if m.role == "tool" {
            let result = tool_result(m, all);
            match turns.last_mut() {
                Some(turn) if turn.role == "TOOL" => turn.tool_results.push(result),
                _ => turns.push(CohereTurn {
                    role: "TOOL",
                    message: None,
                    tool_calls: Vec::new(),
                    tool_results: vec![result],
                }),
            }
            continue;
        }
        let role = match m.role.as_str() {
            "assistant" => "CHATBOT",
            _ if is_system(m) => "SYSTEM",
            _ => "USER",
        };
        let tool_calls = m
            .tool_calls
            .iter()
            .flatten()
            .map(|c| CohereCall {
                name: c.function.name.clone(),
                parameters: parameters_of(&c.function.arguments),
            })
            .collect();
        turns.push(CohereTurn {
            role,
            message: Some(m.text()),
            tool_calls,
            tool_results: Vec::new(),
        });
    }
    turns
}

/// OpenAI arguments (a JSON string) -> Cohere `parameters` (an object).
fn parameters_of(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// A tool message, paired with the call it answers (found by `tool_call_id`).
fn tool_result(m: &ChatMessage, all: &[ChatMessage]) -> CohereToolResult {
    let call = all
        .iter()
        .flat_map(|a| a.tool_calls.iter().flatten())
        .find(|c| Some(&c.id) == m.tool_call_id.as_ref())
        .map(|c| CohereCall {
            name: c.function.name.clone(),
            parameters: parameters_of(&c.function.arguments),
        })
        .unwrap_or_else(|| CohereCall {
            name: m.name.clone().unwrap_or_default(),
            parameters: json!({}),
        });
    // Cohere wants a list of objects; JSON results are kept, anything else is wrapped.
    let text = m.text();
    let outputs = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => vec![Value::Object(o)],
        Ok(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_object) => items,
        _ => vec![json!({ "output": text })],
    };
    CohereToolResult { call, outputs }
}

/// An OpenAI function tool as a v1 tool: JSON-schema properties become
/// `parameter_definitions` with Python type names (Cohere's "Parameter types in tool use").
fn tool(t: &Tool) -> CohereTool {
    let schema = t.function.parameters.as_ref();
    let required: Vec<&str> = schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let properties = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    let parameter_definitions = properties
        .into_iter()
        .flatten()
        .map(|(name, prop)| {
            let mut def = Map::new();
            if let Some(description) = property_description(prop) {
                def.insert("description".into(), json!(description));
            }
            def.insert("type".into(), json!(python_type(prop)));
            def.insert("required".into(), json!(required.contains(&name.as_str())));
            (name.clone(), Value::Object(def))
        })
        .collect();
    CohereTool {
        name: t.function.name.clone(),
        description: t.function.description.clone(),
        parameter_definitions,
    }
}

/// The property's description, with its `enum` values listed as Cohere recommends.
fn property_description(prop: &Value) -> Option<String> {
    let description = prop.get("description").and_then(Value::as_str);
    let values: Vec<String> = prop
        .get("enum")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match (description, values.is_empty()) {
        (d, true) => d.map(str::to_string),
        (Some(d), false) => Some(format!("{d} Possible enum values: {}.", values.join(", "))),
        (None, false) => Some(format!("Possible enum values: {}.", values.join(", "))),
    }
}

/// JSON-schema type -> Python type name (`["string","null"]` counts as `string`).
fn python_type(prop: &Value) -> String {
    let kind = match prop.get("type") {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null"),
        _ => None,
    };
    match kind {
        Some("integer") => "int".into(),
        Some("number") => "float".into(),
        Some("boolean") => "bool".into(),
        Some("object") => "Dict".into(),
        Some("array") => match prop.get("items") {
            Some(items) if items.get("type").is_some() => format!("List[{}]", python_type(items)),
            _ => "List".into(),
        },
        _ => "str".into(),
    }
}

/// OpenAI `response_format` -> v1 `response_format` (`json_object`, optionally with a schema).
fn response_format(format: &Value) -> Option<Value> {
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!({ "type": "json_object" })),
        "json_schema" => {
            let schema = format.get("json_schema").and_then(|s| s.get("schema"));
            Some(match schema {
                Some(schema) => json!({ "type": "json_object", "schema": schema }),
                None => json!({ "type": "json_object" }),
            })
        }
        _ => None,
    }
}

fn embed_request<'a>(
    ctx: &RequestCtx<'a>,
    req: &ChatRequest,
) -> Result<CohereEmbedRequest<'a>, GatewayError> {
    let texts = match &req.input {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(not_text)?,
        _ => return Err(not_text()),
    };
    Ok(CohereEmbedRequest {
        model: ctx.model,
        texts,
        input_type: ctx
            .options
            .cohere
            .as_ref()
            .map(|c| c.embedding_input_type)
            .unwrap_or_default(),
        embedding_types: ["float"],
        output_dimension: ctx.options.embeddings_dimensions,
    })
}

fn not_text() -> GatewayError {
    GatewayError::BadRequest("cohere embeddings take a string or an array of strings".into())
}

fn embed_response(ctx: &RequestCtx<'_>, body: &[u8]) -> Result<Translated, String> {
    let r: CohereEmbedResponse = serde_json::from_slice(body).map_err(|_| UNDECODABLE)?;
    let vectors = match r.embeddings {
        Some(CohereEmbeddings::Floats(v)) | Some(CohereEmbeddings::ByType { float: Some(v) }) => v,
        _ => return Err("'embeddings' missing from cohere response body".into()),
    };
    let prompt_tokens = r
        .meta
        .as_ref()
        .and_then(CohereMeta::units)
        .and_then(|u| u.input_tokens)
        .map_or(0, tokens);
    let list = EmbeddingList::new(ctx.model, vectors, prompt_tokens);
    Translated::json(&list, Usage::new(prompt_tokens, 0))
}

fn tokens(n: f64) -> u64 {
    if n.is_finite() && n > 0.0 {
        n as u64
    } else {
        0
    }
}

impl CohereMeta {
    fn units(&self) -> Option<&CohereUnits> {
        self.billed_units.as_ref().or(self.tokens.as_ref())
    }
}

/// What a Cohere answer says, whatever its shape.
struct Answer {
    id: Option<String>,
    text: Option<String>,
    tool_calls: Vec<ToolCall>,
    finish: Option<CohereFinish>,
}

impl Answer {
    fn finish_reason(&self) -> FinishReason {
        if !self.tool_calls.is_empty() {
            return FinishReason::ToolCalls;
        }
        self.finish.map_or(FinishReason::Stop, CohereFinish::openai)
    }
}

/// Our id for the `index`th tool call of a response (Cohere v1 calls have none).
fn call_id(request_id: &str, index: usize) -> String {
    format!("call_{request_id}_{index}")
}

impl CohereResponse {
    fn answer(&self, request_id: &str) -> Result<Answer, String> {
        let v1_calls = || {
            self.tool_calls
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, c)| {
                    ToolCall::function(
                        call_id(request_id, i),
                        c.name.clone(),
                        c.parameters.to_string(),
                    )
                })
                .collect()
        };
        if let Some(text) = &self.text {
            return Ok(Answer {
                id: self.generation_id.clone().or_else(|| self.id.clone()),
                text: Some(text.clone()),
                tool_calls: v1_calls(),
                finish: self.finish_reason,
            });
        }
        if let Some(generations) = &self.generations {
            let first = generations.first();
            return Ok(Answer {
                id: self.id.clone(),
                text: Some(first.and_then(|g| g.text.clone()).unwrap_or_default()),
                tool_calls: Vec::new(),
                finish: first.and_then(|g| g.finish_reason).or(self.finish_reason),
            });
        }
        let message = self
            .message
            .clone()
            .and_then(|m| serde_json::from_value::<CohereV2Message>(m).ok())
            .ok_or(MISSING_ANSWER)?;
        let text: String = message
            .content
            .iter()
            .filter_map(|c| c.text.as_deref())
            .collect();
        let text = if text.is_empty() {
            message.tool_plan.unwrap_or_default()
        } else {
            text
        };
        let tool_calls = message
            .tool_calls
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let arguments = arguments_string(&c.function.arguments);
                let id =
                    c.id.filter(|id| !id.is_empty())
                        .unwrap_or_else(|| call_id(request_id, i));
                ToolCall::function(id, c.function.name, arguments)
            })
            .collect();
        Ok(Answer {
            id: self.id.clone(),
            text: Some(text),
            tool_calls,
            finish: self.finish_reason,
        })
    }

    /// `meta.billed_units` (v1) or `usage.billed_units` (v2), else `token_count`, else zeros.
    fn usage(&self) -> Usage {
        let units = self
            .meta
            .as_ref()
            .and_then(CohereMeta::units)
            .or_else(|| self.usage.as_ref().and_then(CohereMeta::units));
        if let Some(u) = units {
            return Usage::new(
                u.input_tokens.map_or(0, tokens),
                u.output_tokens.map_or(0, tokens),
            );
        }
        self.token_count.as_ref().map_or_else(Usage::default, |t| {
            Usage::new(
                t.prompt_tokens.map_or(0, tokens),
                t.response_tokens.map_or(0, tokens),
            )
        })
    }
}

/// NDJSON events -> OpenAI chunks.
pub type CohereStream = DecodedStream<NdjsonDecoder, CohereEvents>;

impl CohereStream {
    pub fn new(ctx: &RequestCtx<'_>) -> Self {
        let events = CohereEvents {
            request_id: ctx.request_id.to_string(),
            started: false,
            tool_calls: 0,
        };
        DecodedStream::from_parts(NdjsonDecoder::new(), events, ctx.chunk_builder())
    }
}

pub struct CohereEvents {
    request_id: String,
    /// Something was sent already, so `stream-start` may no longer change the id.
    started: bool,
    tool_calls: usize,
}

impl EventTranslate<Bytes> for CohereEvents {
    fn event(
        &mut self,
        line: Bytes,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        let e: CohereStreamEvent = serde_json::from_slice(&line)
            .map_err(|err| StreamError(format!("undecodable cohere stream line: {err}")))?;
        match e.event_type {
            Some(CohereEventType::StreamStart) => self.start(e.generation_id, chunks, out),
            Some(CohereEventType::TextGeneration) => {
                self.started = true;
                chunks.text(out, e.text.as_deref().unwrap_or_default());
            }
            Some(CohereEventType::ToolCallsGeneration) => {
                self.started = true;
                for call in e.tool_calls.iter().flatten() {
                    let id = call_id(&self.request_id, self.tool_calls);
                    let index = self.tool_calls as u32;
                    self.tool_calls += 1;
                    chunks.tool_call_start(out, index, &id, &call.name);
                    chunks.tool_call_arguments(out, index, &call.parameters.to_string());
                }
            }
            Some(CohereEventType::StreamEnd) => self.end(&e, chunks, out)?,
            Some(CohereEventType::Unknown) => {}
            // The legacy generate stream: text lines, then one `is_finished` line.
            None if e.is_finished => self.end(&e, chunks, out)?,
            None => {
                self.started = true;
                chunks.text(out, e.text.as_deref().unwrap_or_default());
            }
        }
        Ok(())
    }
}

impl CohereEvents {
    /// `stream-start` names the generation; like Kong, it becomes the chunks' id.
    fn start(
        &mut self,
        generation_id: Option<String>,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) {
        if !self.started {
            if let Some(id) = generation_id.filter(|id| !id.is_empty()) {
                chunks.set_id(&id);
            }
            self.started = true;
        }
        chunks.start(out);
    }

    fn end(
        &mut self,
        e: &CohereStreamEvent,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        self.started = true;
        if let Some(response) = &e.response {
            chunks.usage = response.usage();
        }
        let finish = e
            .finish_reason
            .or_else(|| e.response.as_ref().and_then(|r| r.finish_reason));
        if finish == Some(CohereFinish::Error) {
            return Err(StreamError("cohere ended the stream with an error".into()));
        }
        let reason = if self.tool_calls > 0 {
            FinishReason::ToolCalls
        } else {
            finish.map_or(FinishReason::Stop, CohereFinish::openai)
        };
        chunks.finish(out, reason);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ai_proxy::ModelOptions;
    use crate::providers::testkit::{
        assert_add_tool_call, assert_hi_bob_completion, at_every_split, ctx, feed_at_cuts, fixture,
        fixture_config, fixture_json, run_pieces, run_truncated, sse_payloads,
    };
    use proptest::prelude::*;

    fn config() -> AiProxyConfig {
        fixture_config("cohere/chat/config.json")
    }

    fn options() -> ModelOptions {
        config().model.options.unwrap()
    }

    /// The pipeline merges config options into the body before translation (config wins).
    fn merged(path: &str, options: &ModelOptions) -> Map<String, Value> {
        let mut body = fixture_json(path).as_object().unwrap().clone();
        if let Some(v) = options.max_tokens {
            body.insert("max_tokens".into(), json!(v));
        }
        if let Some(v) = options.top_p {
            body.insert("top_p".into(), json!(v));
        }
        body
    }

    fn translate(route: RouteType, model: &str, body: Value) -> Value {
        let options = ModelOptions::default();
        let c = ctx(route, model, false, &options);
        Cohere
            .request(&c, body.as_object().unwrap().clone())
            .unwrap()
    }

    fn respond(route: RouteType, model: &str, body: &str) -> Result<Value, String> {
        let options = ModelOptions::default();
        let c = ctx(route, model, false, &options);
        Cohere
            .response(&c, Bytes::from(body.to_string()))
            .map(|t| serde_json::from_slice(&t.body).unwrap())
    }

    #[test]
    fn urls_per_route_and_upstream_url_as_is() {
        let mut options = ModelOptions::default();
        let cases = [
            (RouteType::Chat, "https://api.cohere.com:443/v1/chat"),
            (
                RouteType::Completions,
                "https://api.cohere.com:443/v1/generate",
            ),
            (RouteType::Embeddings, "https://api.cohere.com:443/v2/embed"),
        ];
        for (route, url) in cases {
            assert_eq!(
                Cohere
                    .url(&ctx(route, "command-r", false, &options))
                    .unwrap(),
                url
            );
        }
        options.upstream_url = Some("http://cohere.local/custom".into());
        let c = ctx(RouteType::Chat, "command-r", false, &options);
        assert_eq!(Cohere.url(&c).unwrap(), "http://cohere.local/custom");
        assert!(Cohere.supports(RouteType::Embeddings));
        assert!(!Cohere.supports(RouteType::Preserve));
    }

    #[test]
    fn chat_request_matches_fixture_with_preamble() {
        let options = options();
        let c = ctx(RouteType::Chat, "command-r", false, &options);
        let out = Cohere
            .request(&c, merged("cohere/chat/client-request.json", &options))
            .unwrap();
        // Deviation from Kong 3.9 (which sends the system prompt as a USER turn): the leading
        // system message is Cohere's `preamble`.
        let mut expected = fixture_json("cohere/chat/upstream-request.json");
        let history = expected["chat_history"].as_array_mut().unwrap();
        let system = history.remove(0);
        expected["preamble"] = system["message"].clone();
        assert_eq!(out, expected);
    }

    #[test]
    fn completions_request_matches_fixture() {
        let out = translate(
            RouteType::Completions,
            "command",
            fixture_json("cohere/completions/client-request.json"),
        );
        assert_eq!(
            out,
            fixture_json("cohere/completions/upstream-request.json")
        );
    }

    #[test]
    fn later_system_messages_are_system_turns_and_stop_becomes_stop_sequences() {
        let out = translate(
            RouteType::Chat,
            "command-r",
            json!({"messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"},
                                              {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
                {"role": "system", "content": "b"},
                {"role": "user", "content": "c"}],
              "stop": "END", "seed": 7, "top_k": 3, "presence_penalty": 0.5}),
        );
        assert_eq!(
            out,
            json!({"model": "command-r", "message": "c", "stream": false,
                   "chat_history": [{"role": "USER", "message": "a"},
                                    {"role": "SYSTEM", "message": "b"}],
                   "stop_sequences": ["END"], "seed": 7, "k": 3, "presence_penalty": 0.5})
        );
    }

    #[test]
    fn tools_become_parameter_definitions() {
        let out = translate(
            RouteType::Chat,
            "command-r",
            json!({"messages": [{"role": "user", "content": "weather?"}],
                   "tool_choice": "auto",
                   "tools": [{"type": "function", "function": {
                       "name": "weather", "description": "Look up weather",
                       "parameters": {"type": "object", "required": ["city"], "properties": {
                           "city": {"type": "string", "description": "City name"},
                           "days": {"type": "integer"},
                           "units": {"type": "string", "enum": ["c", "f"]},
                           "tags": {"type": "array", "items": {"type": "string"}},
                           "opts": {"type": ["object", "null"]}}}}}]}),
        );
        assert_eq!(
            out["tools"],
            json!([{"name": "weather", "description": "Look up weather", "parameter_definitions": {
                "city": {"description": "City name", "type": "str", "required": true},
                "days": {"type": "int", "required": false},
                "units": {"description": "Possible enum values: c, f.", "type": "str", "required": false},
                "tags": {"type": "List[str]", "required": false},
                "opts": {"type": "Dict", "required": false}}}])
        );
        let none = translate(
            RouteType::Chat,
            "command-r",
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none",
                   "tools": [{"type": "function", "function": {"name": "f"}}]}),
        );
        assert!(none.get("tools").is_none());
    }

    #[test]
    fn tool_turns_become_tool_calls_and_tool_results() {
        let call = json!({"id": "call_1", "type": "function",
                          "function": {"name": "add", "arguments": "{\"a\":2,\"b\":12}"}});
        let out = translate(
            RouteType::Chat,
            "command-r",
            json!({"messages": [
                {"role": "user", "content": "add 2 and 12"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "14"}]}),
        );
        assert_eq!(out["message"], "");
        assert_eq!(
            out["chat_history"],
            json!([{"role": "USER", "message": "add 2 and 12"},
                   {"role": "CHATBOT", "message": "",
                    "tool_calls": [{"name": "add", "parameters": {"a": 2, "b": 12}}]}])
        );
        assert_eq!(
            out["tool_results"],
            json!([{"call": {"name": "add", "parameters": {"a": 2, "b": 12}},
                    "outputs": [{"output": "14"}]}])
        );

        // Tool results earlier in the conversation are a TOOL turn of the history.
        let out = translate(
            RouteType::Chat,
            "command-r",
            json!({"messages": [
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"sum\":14}"},
                {"role": "tool", "tool_call_id": "other", "name": "sub", "content": "[{\"x\":1}]"},
                {"role": "user", "content": "thanks"}]}),
        );
        assert_eq!(
            out["chat_history"][1],
            json!({"role": "TOOL", "tool_results": [
                {"call": {"name": "add", "parameters": {"a": 2, "b": 12}}, "outputs": [{"sum": 14}]},
                {"call": {"name": "sub", "parameters": {}}, "outputs": [{"x": 1}]}]})
        );
        assert_eq!(out["message"], "thanks");
        assert!(out.get("tool_results").is_none());
    }

    #[test]
    fn response_format_maps_to_json_object() {
        let out = translate(
            RouteType::Chat,
            "command-r",
            json!({"messages": [{"role": "user", "content": "x"}],
                   "response_format": {"type": "json_schema",
                                       "json_schema": {"name": "n", "schema": {"type": "object"}}}}),
        );
        assert_eq!(
            out["response_format"],
            json!({"type": "json_object", "schema": {"type": "object"}})
        );
    }

    #[test]
    fn embeddings_request_uses_the_configured_input_type() {
        let mut options = fixture_config("cohere/embeddings/config.json")
            .model
            .options
            .unwrap();
        let c = ctx(RouteType::Embeddings, "embed-english-v3.0", false, &options);
        let body = fixture_json("cohere/embeddings/client-request.json");
        let out = Cohere
            .request(&c, body.as_object().unwrap().clone())
            .unwrap();
        assert_eq!(out, fixture_json("cohere/embeddings/upstream-request.json"));
        assert_eq!(
            Cohere.url(&c).unwrap(),
            "https://api.cohere.com:443/v2/embed"
        );
        options.embeddings_dimensions = Some(256);
        let c = ctx(RouteType::Embeddings, "embed-english-v3.0", false, &options);
        let out = Cohere
            .request(&c, body.as_object().unwrap().clone())
            .unwrap();
        assert_eq!(out["output_dimension"], 256);
        options = ModelOptions::default();
        let c = ctx(RouteType::Embeddings, "embed-english-v3.0", false, &options);
        let body = json!({"input": "a"}).as_object().unwrap().clone();
        let out = Cohere.request(&c, body).unwrap();
        assert_eq!(out["input_type"], "classification");
        assert_eq!(out["texts"], json!(["a"]));
        let tokens = json!({"input": [1, 2]}).as_object().unwrap().clone();
        assert!(matches!(
            Cohere.request(&c, tokens),
            Err(GatewayError::BadRequest(_))
        ));
    }

    #[test]
    fn chat_response_matches_fixture() {
        let raw = fixture("cohere/chat/upstream-response.json");
        let v = respond(RouteType::Chat, "command-r", &raw).unwrap();
        let expected = fixture_json("cohere/chat/expected-response.json");
        for field in ["object", "model", "id", "usage"] {
            assert_eq!(v[field], expected[field], "{field}");
        }
        assert_eq!(
            v["choices"][0]["message"],
            expected["choices"][0]["message"]
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["created"], 1_700_000_000);
    }

    #[test]
    fn completions_response_matches_fixture() {
        let raw = fixture("cohere/completions/upstream-response.json");
        let v = respond(RouteType::Completions, "command", &raw).unwrap();
        let expected = fixture_json("cohere/completions/expected-response.json");
        for field in ["object", "model", "id", "usage"] {
            assert_eq!(v[field], expected[field], "{field}");
        }
        assert_eq!(v["choices"][0]["text"], "Hi Bob!");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn finish_reasons_are_openai_values() {
        for (cohere, openai) in [
            ("COMPLETE", "stop"),
            ("STOP_SEQUENCE", "stop"),
            ("MAX_TOKENS", "length"),
            ("ERROR_LIMIT", "length"),
            ("ERROR_TOXIC", "content_filter"),
            ("SOMETHING_NEW", "stop"),
        ] {
            let body = json!({"text": "x", "finish_reason": cohere}).to_string();
            let v = respond(RouteType::Chat, "command-r", &body).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], openai, "{cohere}");
        }
        let body = r#"{"id":"g","generations":[{"text":"x","finish_reason":"MAX_TOKENS"}]}"#;
        let v = respond(RouteType::Completions, "command", body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn v1_tool_calls_get_ids_and_string_arguments() {
        let body = r#"{"text":"I will add.","generation_id":"g1","finish_reason":"COMPLETE",
            "tool_calls":[{"name":"add","parameters":{"a":2,"b":12}}]}"#;
        let v = respond(RouteType::Chat, "command-r", body).unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "I will add.");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_test_0");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "add");
        assert_eq!(call["function"]["arguments"], r#"{"a":2,"b":12}"#);
        // No usage anywhere: a zero usage object, never a missing one.
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        );
    }

    #[test]
    fn v2_shaped_answers_are_read_too() {
        let body = r#"{"id":"r1","finish_reason":"TOOL_CALL",
            "message":{"role":"assistant","tool_plan":"I will call add.","tool_calls":[
                {"id":"call_mock_1","type":"function","function":{"name":"add","arguments":"{\"a\":2}"}}]},
            "usage":{"billed_units":{"input_tokens":3,"output_tokens":4}}}"#;
        let v = respond(RouteType::Chat, "command-r", body).unwrap();
        assert_eq!(v["id"], "r1");
        assert_eq!(v["choices"][0]["message"]["content"], "I will call add.");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["id"],
            "call_mock_1"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 7);

        let body = r#"{"id":"r2","finish_reason":"COMPLETE",
            "message":{"content":[{"type":"text","text":"Hi"}]}}"#;
        let v = respond(RouteType::Chat, "command-r", body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
    }

    #[test]
    fn text_shape_on_completions_uses_token_count() {
        let body = r#"{"text":"x","token_count":{"prompt_tokens":2,"response_tokens":3,"total_tokens":5}}"#;
        let v = respond(RouteType::Completions, "command", body).unwrap();
        // OpenAI-correct: the completions route always answers `text_completion` (Kong 3.9
        // answers a chat.completion for this shape).
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "x");
        assert_eq!(v["usage"]["total_tokens"], 5);
    }

    #[test]
    fn missing_answer_uses_kongs_reason() {
        let err = respond(RouteType::Chat, "command-r", r#"{"generation_id":"g"}"#).unwrap_err();
        assert_eq!(err, MISSING_ANSWER);
        let err = respond(RouteType::Chat, "command-r", "{not json").unwrap_err();
        assert_eq!(err, UNDECODABLE);
    }

    #[test]
    fn embeddings_response_in_v2_and_v1_shapes() {
        let v2 = fixture("cohere/embeddings/upstream-response.json");
        for body in [
            v2.as_str(),
            r#"{"id":"e","embeddings":[[0.5,1.0],[2.0,3.0]],"meta":{"billed_units":{"input_tokens":3}}}"#,
        ] {
            let v = respond(RouteType::Embeddings, "embed-english-v3.0", body).unwrap();
            assert_eq!(v["object"], "list");
            assert_eq!(v["model"], "embed-english-v3.0");
            assert_eq!(v["data"][1]["embedding"], json!([2.0, 3.0]));
            assert_eq!(v["data"][1]["index"], 1);
            assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        }
        let err = respond(
            RouteType::Embeddings,
            "e",
            r#"{"embeddings":{"int8":[[1]]}}"#,
        );
        assert_eq!(
            err.unwrap_err(),
            "'embeddings' missing from cohere response body"
        );
    }

    #[test]
    fn errors_pass_through() {
        let raw = Bytes::from(fixture("cohere/errors/upstream-401.json"));
        let status = actix_web::http::StatusCode::UNAUTHORIZED;
        assert_eq!(Cohere.error(status, raw.clone()), raw);
    }

    #[test]
    fn chat_stream_at_every_split_matches_fixture() {
        let options = options();
        let c = ctx(RouteType::Chat, "command-r", true, &options);
        let input = fixture("cohere/chat-stream/upstream-stream.ndjson");
        let expected = sse_payloads(&fixture("cohere/chat-stream/expected-client-stream.txt"));
        at_every_split(
            &input,
            || CohereStream::new(&c),
            |got, split, s| {
                // Kong's three chunks, then the OpenAI-correct finish chunk Kong lacks, then [DONE].
                assert_eq!(got.len(), 5, "split {split}");
                for (g, e) in got.iter().zip(&expected).take(3) {
                    for field in ["id", "model", "object"] {
                        assert_eq!(g[field], e[field], "{field}");
                    }
                    assert_eq!(g["created"], 1_700_000_000);
                    let content = &g["choices"][0]["delta"]["content"];
                    assert_eq!(content, &e["choices"][0]["delta"]["content"]);
                }
                assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");
                assert!(got[1]["choices"][0]["delta"].get("role").is_none());
                assert_eq!(got[3]["choices"][0]["finish_reason"], "stop");
                assert_eq!(got[3]["id"], "gen-s1");
                assert_eq!(got[4], expected[3]);
                assert_eq!(s.usage(), Usage::new(20, 2));
            },
        );
    }

    #[test]
    fn chat_stream_byte_by_byte_with_usage_chunk() {
        let options = options();
        let mut c = ctx(RouteType::Chat, "command-r", true, &options);
        c.include_usage = true;
        let input = fixture("cohere/chat-stream/upstream-stream.ndjson");
        let mut s = CohereStream::new(&c);
        let got = sse_payloads(&run_pieces(&mut s, input.as_bytes(), 1));
        assert_eq!(got.len(), 6);
        assert_eq!(got[4]["choices"], json!([]));
        assert_eq!(
            got[4]["usage"],
            json!({"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22})
        );
        assert_eq!(got[5], "[DONE]");
    }

    #[test]
    fn stream_tool_calls_are_streamed_with_ids() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Chat, "command-r", true, &options);
        let input = fixture("cohere/chat-stream-tools/upstream-stream.ndjson");
        at_every_split(
            &input,
            || CohereStream::new(&c),
            |got, split, _| {
                assert_eq!(got.len(), 5, "split {split}");
                assert_add_tool_call(&got[1..], split);
            },
        );
    }

    #[test]
    fn generate_streams_in_both_dialects() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Completions, "command", true, &options);
        let legacy = fixture("cohere/completions-stream/upstream-stream.ndjson");
        let events = concat!(
            r#"{"event_type":"stream-start","generation_id":"x","is_finished":false}"#,
            "\n",
            r#"{"event_type":"text-generation","text":"Hi","is_finished":false}"#,
            "\n",
            r#"{"event_type":"text-generation","text":" Bob","is_finished":false}"#,
            "\n",
            r#"{"event_type":"stream-end","is_finished":true,"finish_reason":"MAX_TOKENS","response":{"id":"x","generations":[{"text":"Hi Bob"}],"meta":{"billed_units":{"input_tokens":5,"output_tokens":2}}}}"#,
            "\n",
        );
        for input in [legacy.as_str(), events] {
            at_every_split(
                input,
                || CohereStream::new(&c),
                |got, split, s| {
                    assert_hi_bob_completion(got, split);
                    assert_eq!(s.usage(), Usage::new(5, 2));
                },
            );
        }
    }

    #[test]
    fn stream_error_end_and_bad_lines_are_stream_errors() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Chat, "command-r", true, &options);
        let mut s = CohereStream::new(&c);
        let mut out = BytesMut::new();
        let end = b"{\"event_type\":\"stream-end\",\"finish_reason\":\"ERROR\"}\n";
        assert!(s.feed(end, &mut out).is_err());
        let mut s = CohereStream::new(&c);
        assert!(s.feed(b"not json\n", &mut out).is_err());
        // A stream cut short (no stream-end) relays what came, then fails as truncated.
        let mut s = CohereStream::new(&c);
        let (text, err) = run_truncated(
            &mut s,
            b"{\"event_type\":\"text-generation\",\"text\":\"a\"}",
            5,
        );
        let got = sse_payloads(&text);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["choices"][0]["delta"]["content"], "a");
        assert_eq!(err, crate::providers::stream::TRUNCATED);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512),
                                    cuts in proptest::collection::vec(0usize..512, 0..8)) {
            let options = ModelOptions::default();
            for route in [RouteType::Chat, RouteType::Completions] {
                let c = ctx(route, "command-r", true, &options);
                feed_at_cuts(&mut CohereStream::new(&c), &data, &cuts);
            }
        }

        #[test]
        fn random_lines_and_bodies_never_panic(
            kind in prop::sample::select(vec!["stream-start", "text-generation",
                "tool-calls-generation", "stream-end", "other"]),
            body in ".{0,64}") {
            let options = ModelOptions::default();
            let c = ctx(RouteType::Chat, "command-r", true, &options);
            let mut s = CohereStream::new(&c);
            let mut out = BytesMut::new();
            let line = format!("{{\"event_type\":\"{kind}\",{body}}}\n");
            let _ = s.feed(line.as_bytes(), &mut out);
            let _ = s.finish(&mut out);
            for route in [RouteType::Chat, RouteType::Completions, RouteType::Embeddings] {
                let _ = respond(route, "m", &body);
                let _ = respond(route, "m", &format!("{{{body}}}"));
            }
        }
    }
}
