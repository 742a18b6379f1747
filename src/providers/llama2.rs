//! Llama2, self-hosted (so `upstream_url` is mandatory) in one of three formats:
//! `raw` (a Llama 2 prompt template sent as TGI `inputs`), `openai`, or `ollama`.
//!
//! The raw prompt is built as Kong builds it: the first two messages by position
//! (`<<SYS>>` block, then the first `[/INST]`), later user turns as new `[INST]` blocks, later
//! system messages closing with `</s>`, and later assistant turns skipped.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::oai::{ChatCompletion, ChatRequest, ChunkBuilder, FinishReason, TextCompletion, Usage};
use super::ollama::{self, OllamaStream};
use super::openai::{self, PassthroughStream};
use super::stream::{DecodedStream, EventTranslate};
use super::tgi::TokenEvent;
use super::{
    default_routes, self_hosted_url, DriverError, RequestCtx, Required, StreamError,
    StreamTranslate, Translate, Translated,
};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::ai_proxy::{AiProxyConfig, Llama2Format, RouteType};
use crate::error::GatewayError;

const COMPLETIONS_SYSTEM: &str = "You are a helpful assistant.";

pub struct Llama2 {
    format: Llama2Format,
}

impl Translate for Llama2 {
    fn from_config(config: &AiProxyConfig) -> Result<Self, DriverError> {
        let mut required = Required::new(config);
        let format = required.option("llama2_format", |o| o.llama2_format);
        required.upstream_url();
        Ok(Llama2 {
            format: required.finish(format)?,
        })
    }

    fn supports(&self, route_type: RouteType) -> bool {
        match self.format {
            // TGI's `generate` embeds nothing.
            Llama2Format::Raw => matches!(route_type, RouteType::Chat | RouteType::Completions),
            _ => default_routes(route_type),
        }
    }

    fn url(&self, ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
        self_hosted_url(ctx)
    }

    fn request(
        &self,
        ctx: &RequestCtx<'_>,
        body: Map<String, Value>,
    ) -> Result<Value, GatewayError> {
        match self.format {
            Llama2Format::Openai => Ok(openai::request(ctx, body)),
            Llama2Format::Ollama => ollama::request(ctx, body),
            Llama2Format::Raw => raw_request(ctx, body),
        }
    }

    fn openai_body(&self, _route_type: RouteType) -> bool {
        self.format == Llama2Format::Openai
    }

    fn response(&self, ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
        match self.format {
            Llama2Format::Openai => openai::response(ctx.route_type, body),
            Llama2Format::Ollama => ollama::response(ctx, body),
            Llama2Format::Raw => raw_response(ctx, body),
        }
    }

    fn stream(&self, ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate> {
        match self.format {
            Llama2Format::Openai => Box::new(PassthroughStream::default()),
            Llama2Format::Ollama => Box::new(OllamaStream::new(ctx)),
            Llama2Format::Raw => Box::new(DecodedStream::from_parts(
                SseDecoder::new(),
                RawEvents,
                ctx.chunk_builder(),
            )),
        }
    }
}

/// The Llama 2 chat template over OpenAI messages, as Kong writes it when the conversation
/// opens with a system message; a conversation that opens with a user turn starts with a plain
/// `[INST]` block instead of an empty `<<SYS>>` one.
fn chat_prompt(req: &ChatRequest) -> String {
    let mut prompt = String::new();
    let opens_with_system = req.messages.first().is_some_and(|m| m.role == "system");
    for (i, m) in req.messages.iter().enumerate() {
        let text = m.text();
        match (i, m.role.as_str()) {
            (0, "system") => prompt.push_str(&format!("<s>[INST] <<SYS>> {text} <</SYS>>")),
            (0, _) => prompt.push_str(&format!("<s>[INST] {text} [/INST]")),
            (1, _) if opens_with_system => prompt.push_str(&format!(" {text} [/INST]")),
            (_, "user") => prompt.push_str(&format!(" <s>[INST] {text} [/INST]")),
            (_, "system") => prompt.push_str(&format!(" {text} </s>")),
            _ => {}
        }
    }
    prompt
}

fn raw_request(ctx: &RequestCtx<'_>, body: Map<String, Value>) -> Result<Value, GatewayError> {
    let req = ChatRequest::from_body(body).map_err(GatewayError::BadRequest)?;
    let inputs = match ctx.route_type {
        RouteType::Completions => format!(
            "<s> [INST] <<SYS>> {COMPLETIONS_SYSTEM} <<SYS>> {} [/INST]",
            req.prompt_text().unwrap_or_default()
        ),
        _ => chat_prompt(&req),
    };
    let mut parameters = req.sampling("max_new_tokens");
    parameters.insert("stream".into(), json!(ctx.stream));
    Ok(json!({ "inputs": inputs, "parameters": parameters }))
}

#[derive(Deserialize)]
struct RawResponse {
    data: Option<Vec<RawGenerated>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct RawGenerated {
    generated_text: String,
}

/// The model echoes the prompt; the answer is what follows the last `[/INST]`.
fn answer_of(generated: &str) -> &str {
    generated
        .rsplit_once("[/INST]")
        .map_or(generated, |(_, answer)| answer)
        .trim()
}

fn raw_response(ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
    let r: RawResponse = serde_json::from_slice(&body)
        .map_err(|_| "cannot parse response from llama2 endpoint".to_string())?;
    let data = r.data.ok_or("cannot parse response from llama2 endpoint")?;
    let generated = match data.as_slice() {
        [] => return Err("response data is empty from llama2 endpoint".into()),
        [one] => &one.generated_text,
        _ => return Err("cannot parse response from llama2 endpoint".into()),
    };
    let answer = answer_of(generated).to_string();
    let usage = r.usage.unwrap_or_default();
    let meta = ctx.meta();
    let finish = Some(FinishReason::Stop);
    if ctx.route_type == RouteType::Completions {
        Translated::json(&TextCompletion::single(&meta, answer, finish, usage), usage)
    } else {
        let completion = ChatCompletion::single(&meta, Some(answer), Vec::new(), finish, usage);
        Translated::json(&completion, usage)
    }
}

/// TGI's `generate_stream` SSE -> OpenAI chunks.
struct RawEvents;

impl EventTranslate<SseEvent> for RawEvents {
    fn event(
        &mut self,
        event: SseEvent,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        if event.data.is_empty() || event.data == "[DONE]" {
            return Ok(());
        }
        let e: TokenEvent = serde_json::from_str(&event.data)
            .map_err(|err| StreamError(format!("undecodable llama2 stream event: {err}")))?;
        e.translate(chunks, out);
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

    fn driver_and_options() -> (Llama2, ModelOptions) {
        let config = fixture_config("llama2/raw-chat/config.json");
        let options = config.model.options.clone().unwrap();
        (Llama2::from_config(&config).unwrap(), options)
    }

    fn merged(path: &str, options: &ModelOptions) -> Map<String, Value> {
        let mut body = fixture_json(path).as_object().unwrap().clone();
        body.insert("max_tokens".into(), json!(options.max_tokens.unwrap()));
        body.insert("top_k".into(), json!(options.top_k.unwrap()));
        body
    }

    #[test]
    fn raw_chat_request_matches_fixture() {
        let (d, options) = driver_and_options();
        let c = ctx(RouteType::Chat, "llama2", false, &options);
        let out = d
            .request(&c, merged("llama2/raw-chat/client-request.json", &options))
            .unwrap();
        assert_eq!(out, fixture_json("llama2/raw-chat/upstream-request.json"));
        assert_eq!(d.url(&c).unwrap(), "http://llama.local:8080/generate");
    }

    #[test]
    fn raw_chat_without_system_message_opens_a_plain_inst_block() {
        let req: ChatRequest = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Again"}]
        }))
        .unwrap();
        assert_eq!(
            chat_prompt(&req),
            "<s>[INST] Hi [/INST] <s>[INST] Again [/INST]"
        );
    }

    #[test]
    fn raw_completions_request_matches_fixture() {
        let (d, options) = driver_and_options();
        let c = ctx(RouteType::Completions, "llama2", false, &options);
        let out = d
            .request(
                &c,
                merged("llama2/raw-completions/client-request.json", &options),
            )
            .unwrap();
        assert_eq!(
            out,
            fixture_json("llama2/raw-completions/upstream-request.json")
        );
    }

    #[test]
    fn raw_responses_take_the_text_after_the_last_inst() {
        let (d, options) = driver_and_options();
        for (route, case, field) in [
            (RouteType::Chat, "raw-chat", "/choices/0/message/content"),
            (RouteType::Completions, "raw-completions", "/choices/0/text"),
        ] {
            let c = ctx(route, "llama2", false, &options);
            let raw = fixture(&format!("llama2/{case}/upstream-response.json"));
            let t = d.response(&c, Bytes::from(raw)).unwrap();
            let v: Value = serde_json::from_slice(&t.body).unwrap();
            let expected = fixture_json(&format!("llama2/{case}/expected-response.json"));
            assert_eq!(v.pointer(field), expected.pointer(field), "{case}");
            assert_eq!(v["object"], expected["object"]);
            assert_eq!(v["choices"][0]["finish_reason"], "stop");
        }
    }

    #[test]
    fn raw_response_errors_use_kongs_texts() {
        let (d, options) = driver_and_options();
        let c = ctx(RouteType::Chat, "llama2", false, &options);
        let empty = d.response(&c, Bytes::from_static(b"{\"data\":[]}"));
        assert_eq!(
            empty.unwrap_err(),
            "response data is empty from llama2 endpoint"
        );
        let none = d.response(&c, Bytes::from_static(b"{}"));
        assert_eq!(
            none.unwrap_err(),
            "cannot parse response from llama2 endpoint"
        );
    }

    #[test]
    fn raw_stream_turns_tgi_tokens_into_chunks() {
        let (d, options) = driver_and_options();
        let c = ctx(RouteType::Chat, "llama2", true, &options);
        let input = "data:{\"token\":{\"text\":\"Hi\",\"special\":false}}\n\n\
                     data:{\"token\":{\"text\":\" there\",\"special\":false}}\n\n\
                     data:{\"token\":{\"text\":\"</s>\",\"special\":true},\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":3}}\n\n";
        for split in 0..input.len() {
            let mut s = d.stream(&c);
            let got = sse_payloads(&run_stream(s.as_mut(), input.as_bytes(), split));
            assert_eq!(got.len(), 4);
            assert_eq!(got[0]["choices"][0]["delta"]["content"], "Hi");
            assert_eq!(got[1]["choices"][0]["delta"]["content"], " there");
            assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
            assert_eq!(got[3], "[DONE]");
        }
    }
}
