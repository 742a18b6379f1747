//! OpenAI wire format: chat completions, legacy completions and embeddings.
//!
//! Also serves Azure OpenAI deployment paths, Mistral and llama2 in OpenAI format, Hugging Face
//! TGI chat (see `huggingface.rs`), and any path ending in an OpenAI suffix (`upstream_url`s with
//! arbitrary prefixes). Streams are SSE `data:` chunks ending with `data: [DONE]`; the stream is
//! chosen by `"stream": true` and `stream_options.include_usage` adds the usage chunk.

use actix_web::web::{self, Bytes};
use serde_json::{json, Value};

use super::{
    post,
    reply::{
        embedding, embedding_json, input_texts, text_of, word_count, Completion, Prompt,
        TOOL_ARGUMENTS, TOOL_ARGUMENT_PIECES,
    },
    stream::{sse_data, SSE_DONE},
    Answer, Handler, MockRequest, Wire,
};

/// Fixed so answers are byte-for-byte reproducible.
const CREATED: u64 = 1_730_000_000;
const CHAT_ID: &str = "chatcmpl-mock";
const COMPLETION_ID: &str = "cmpl-mock";
const TOOL_CALL_ID: &str = "call_mock_1";
const FINGERPRINT: &str = "fp_mock";

pub(crate) static OPENAI: Wire = Wire::new("openai", error_body);
static MISTRAL: Wire = Wire::new("mistral", error_body);
static LLAMA2: Wire = Wire::new("llama2", error_body);
pub(crate) static AZURE: Wire = Wire::new("azure", azure_error_body);

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/v1/chat/completions", &OPENAI, chat))
        .service(post("/v1/completions", &OPENAI, completions))
        .service(post("/v1/embeddings", &OPENAI, embeddings))
        .service(post(
            "/openai/deployments/{deployment}/chat/completions",
            &AZURE,
            chat,
        ))
        .service(post(
            "/openai/deployments/{deployment}/completions",
            &AZURE,
            completions,
        ))
        .service(post(
            "/openai/deployments/{deployment}/embeddings",
            &AZURE,
            embeddings,
        ));
}

/// The OpenAI endpoint for an unrouted path with an OpenAI suffix. The first path segment picks
/// the label (`/mistral/v1/chat/completions` → "mistral"), defaulting to "openai".
pub(crate) fn by_suffix(path: &str) -> Option<(&'static Wire, Handler)> {
    let handler: Handler = if path.ends_with("/chat/completions") {
        chat
    } else if path.ends_with("/completions") {
        completions
    } else if path.ends_with("/embeddings") {
        embeddings
    } else {
        return None;
    };
    let wire = match path.trim_start_matches('/').split('/').next() {
        Some("mistral") => &MISTRAL,
        Some("llama2") => &LLAMA2,
        Some("azure") => &AZURE,
        _ => &OPENAI,
    };
    Some((wire, handler))
}

/// `{"error":{"message","type","param","code"}}` as OpenAI sends it.
fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", json!("invalid_api_key")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        500.. => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// Azure's `{"error":{"code":"<status>","message"}}`.
fn azure_error_body(status: u16, message: &str) -> Value {
    json!({"error": {"code": status.to_string(), "message": message}})
}

/// The prompt of an OpenAI-shaped chat body (`messages`, `tools`); Ollama shares it.
pub(crate) fn chat_prompt(body: &Value) -> Prompt {
    let mut prompt = Prompt::default();
    for message in body["messages"].as_array().into_iter().flatten() {
        let text = text_of(&message["content"]);
        match message["role"].as_str().unwrap_or("user") {
            "system" | "developer" => prompt.context(&text),
            role => prompt.turn(role, &text, false),
        }
    }
    prompt.offer_tools(body.get("tools"));
    prompt
}

/// The assistant message of a completion: text, or a tool call with JSON-string arguments.
fn chat_message(completion: &Completion) -> Value {
    match completion.tool() {
        Some(name) => json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": TOOL_CALL_ID, "type": "function",
            "function": {"name": name, "arguments": TOOL_ARGUMENTS}
        }]}),
        None => json!({"role": "assistant", "content": completion.text()}),
    }
}

fn usage(completion: &Completion) -> Value {
    json!({
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.total_tokens(),
    })
}

/// `POST .../chat/completions`.
pub(crate) fn chat(req: &MockRequest) -> Answer {
    let completion = req.complete(chat_prompt(&req.body));
    let finish_reason = completion.stop_reason("stop", "tool_calls");
    if req.stream_flag(false) {
        let chunks = StreamChunks::new(req, CHAT_ID, "chat.completion.chunk");
        return chunks.answer(&completion, chat_deltas(&completion), finish_reason);
    }
    Answer::json(
        json!({
            "id": CHAT_ID, "object": "chat.completion", "created": CREATED,
            "model": req.model(), "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": chat_message(&completion),
                         "logprobs": null, "finish_reason": finish_reason}],
            "usage": usage(&completion),
        }),
        "choices",
    )
}

/// The content choices of a chat stream: the role, then one delta per word or tool-call piece.
fn chat_deltas(completion: &Completion) -> Vec<Value> {
    let mut deltas = vec![json!({"role": "assistant", "content": ""})];
    match completion.tool() {
        Some(name) => {
            deltas.push(
                json!({"tool_calls": [{"index": 0, "id": TOOL_CALL_ID, "type": "function",
                                              "function": {"name": name, "arguments": ""}}]}),
            );
            deltas.extend(TOOL_ARGUMENT_PIECES.iter().map(
                |piece| json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            ));
        }
        None => deltas.extend(
            completion
                .chunks()
                .into_iter()
                .map(|w| json!({"content": w})),
        ),
    }
    deltas
        .into_iter()
        .map(|delta| json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}))
        .collect()
}

/// `POST .../completions` (legacy text completions).
fn completions(req: &MockRequest) -> Answer {
    let mut prompt = Prompt::default();
    prompt.turn("user", &text_of(&req.body["prompt"]), false);
    let completion = req.complete(prompt);
    if req.stream_flag(false) {
        let choices = completion
            .chunks()
            .into_iter()
            .map(|w| json!({"text": w, "index": 0, "logprobs": null, "finish_reason": null}))
            .collect();
        let chunks = StreamChunks::new(req, COMPLETION_ID, "text_completion");
        return chunks.answer(&completion, choices, "stop");
    }
    Answer::json(
        json!({
            "id": COMPLETION_ID, "object": "text_completion", "created": CREATED,
            "model": req.model(),
            "choices": [{"text": completion.text(), "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage(&completion),
        }),
        "choices",
    )
}

/// Frames an OpenAI SSE stream: one chunk per content choice, the finish chunk, the usage chunk
/// when `stream_options.include_usage` asks for it, then `[DONE]`.
struct StreamChunks<'a> {
    id: &'static str,
    object: &'static str,
    model: &'a str,
    include_usage: bool,
}

impl<'a> StreamChunks<'a> {
    fn new(req: &'a MockRequest, id: &'static str, object: &'static str) -> Self {
        let include_usage = req
            .body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        StreamChunks {
            id,
            object,
            model: req.model(),
            include_usage,
        }
    }

    fn frame(&self, choices: Value, usage: Value) -> Bytes {
        let mut chunk = json!({
            "id": self.id, "object": self.object, "created": CREATED, "model": self.model,
            "system_fingerprint": FINGERPRINT, "choices": choices,
        });
        // With include_usage OpenAI puts `"usage": null` on every chunk but the last.
        if self.include_usage {
            chunk["usage"] = usage;
        }
        sse_data(&chunk)
    }

    fn answer(&self, completion: &Completion, choices: Vec<Value>, finish_reason: &str) -> Answer {
        let finish = if self.object == "text_completion" {
            json!({"text": "", "index": 0, "logprobs": null, "finish_reason": finish_reason})
        } else {
            json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason})
        };
        let mut frames: Vec<Bytes> = choices
            .into_iter()
            .chain(std::iter::once(finish))
            .map(|choice| self.frame(json!([choice]), Value::Null))
            .collect();
        if self.include_usage {
            frames.push(self.frame(json!([]), usage(completion)));
        }
        frames.push(Bytes::from_static(SSE_DONE.as_bytes()));
        Answer::Stream {
            content_type: "text/event-stream",
            frames,
        }
    }
}

/// `POST .../embeddings`: `input` is a string or an array; honours `dimensions` and
/// `encoding_format: "base64"`.
fn embeddings(req: &MockRequest) -> Answer {
    let body = &req.body;
    let dims = body["dimensions"].as_u64();
    let base64 = body["encoding_format"] == "base64";
    let texts = input_texts(body.get("input"));
    let words: u64 = texts.iter().map(|t| word_count(t)).sum();
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embedding_json(&embedding(text, dims), base64);
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    Answer::json(
        json!({
            "object": "list", "data": data, "model": req.model(),
            "usage": {"prompt_tokens": words, "total_tokens": words},
        }),
        "data",
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::mock::testkit::{post_json, sse_json, words_of};

    fn chat_body(stream: bool) -> Value {
        json!({"model": "gpt-4o-mini", "stream": stream, "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "5."},
            {"role": "user", "content": "Double it."}]})
    }

    const REPLY: &str = "Mock openai reply to: Double it.";

    #[actix_rt::test]
    async fn chat_answers_deterministically_with_word_usage() {
        let v = post_json("/v1/chat/completions", &chat_body(false), None)
            .await
            .assert_sized_json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["choices"][0]["message"]["content"], REPLY);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let usage = json!({"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16});
        assert_eq!(v["usage"], usage);
    }

    #[actix_rt::test]
    async fn chat_streams_one_chunk_per_word_with_usage_chunk() {
        let mut body = chat_body(true);
        body["stream_options"] = json!({"include_usage": true});
        let got = post_json("/v1/chat/completions", &body, None).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.content_type(), "text/event-stream");
        let (events, done) = sse_json(&got.body);
        assert!(done);
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, REPLY);
        // The role chunk, one chunk per word, the finish chunk and the usage chunk.
        assert_eq!(events.len(), 1 + words_of(REPLY) + 2);
        assert_eq!(
            events[events.len() - 2]["choices"][0]["finish_reason"],
            "stop"
        );
        let last = events.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 6);
        assert!(events[0]["usage"].is_null());
    }

    #[actix_rt::test]
    async fn chat_calls_the_first_tool() {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "add 2 and 12"}],
            "tools": [{"type": "function", "function": {"name": "add", "parameters": {}}},
                      {"type": "function", "function": {"name": "mul", "parameters": {}}}]});
        let v = post_json("/v1/chat/completions", &body, None).await.json();
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "add");
        assert_eq!(call["function"]["arguments"], r#"{"a":2,"b":12}"#);
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let got = post_json("/v1/chat/completions", &streamed, None).await;
        let (events, _) = sse_json(&got.body);
        let call = |e: &Value| e["choices"][0]["delta"]["tool_calls"][0].clone();
        let args: String = events
            .iter()
            .filter_map(|e| call(e)["function"]["arguments"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(args, r#"{"a":2,"b":12}"#);
        assert_eq!(call(&events[1])["function"]["name"], "add");
        let finish = &events[events.len() - 1]["choices"][0]["finish_reason"];
        assert_eq!(finish, "tool_calls");
    }

    #[actix_rt::test]
    async fn tool_results_get_a_text_answer() {
        let call =
            json!({"id": "c", "type": "function", "function": {"name": "add", "arguments": "{}"}});
        let body = json!({"model": "gpt-4o", "tools": [{"type": "function", "function": {"name": "add"}}],
            "messages": [{"role": "user", "content": "add"},
                         {"role": "assistant", "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "c", "content": "14"}]});
        let v = post_json("/v1/chat/completions", &body, None).await.json();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "Mock openai reply to: add"
        );
    }

    #[actix_rt::test]
    async fn azure_mistral_and_prefixed_paths_speak_openai() {
        let body = chat_body(false);
        for (path, label) in [
            (
                "/openai/deployments/dep/chat/completions?api-version=2024-02-01",
                "azure",
            ),
            ("/mistral/v1/chat/completions", "mistral"),
            ("/llama2/v1/chat/completions", "llama2"),
            ("/some/prefix/chat/completions", "openai"),
        ] {
            let v = post_json(path, &body, None).await.assert_sized_json();
            let expected = format!("Mock {label} reply to: Double it.");
            assert_eq!(v["choices"][0]["message"]["content"], expected, "{path}");
        }
    }

    #[actix_rt::test]
    async fn azure_errors_carry_the_status_as_code() {
        let path = "/openai/deployments/dep/chat/completions";
        let got = post_json(path, &chat_body(false), Some("status=429")).await;
        assert_eq!(got.status, 429);
        assert_eq!(got.json()["error"]["code"], "429");
    }

    #[actix_rt::test]
    async fn completions_answer_and_stream() {
        let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi to Bob."});
        let v = post_json("/v1/completions", &body, None)
            .await
            .assert_sized_json();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(
            v["choices"][0]["text"],
            "Mock openai reply to: Say hi to Bob."
        );
        assert_eq!(v["usage"]["prompt_tokens"], 4);

        let body = json!({"model": "m", "prompt": "hi", "stream": true});
        let got = post_json("/v1/completions", &body, None).await;
        let (events, done) = sse_json(&got.body);
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(text, "Mock openai reply to: hi");
        assert!(done);
    }

    #[actix_rt::test]
    async fn embeddings_as_floats_and_base64() {
        let body =
            json!({"model": "text-embedding-3-small", "input": ["a b", "c"], "dimensions": 4});
        let v = post_json("/v1/embeddings", &body, None)
            .await
            .assert_sized_json();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);
        assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

        let body = json!({"model": "m", "input": "a", "encoding_format": "base64"});
        let v = post_json("/v1/embeddings", &body, None).await.json();
        assert!(v["data"][0]["embedding"].is_string());
    }

    #[actix_rt::test]
    async fn openai_error_body_for_status_fault() {
        let got = post_json(
            "/v1/chat/completions",
            &chat_body(false),
            Some("status=401"),
        )
        .await;
        assert_eq!(got.status, 401);
        let v = got.json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(v["error"]["message"].as_str().unwrap().contains("401"));
    }
}
