//! Cohere wire format (API v1): `/v1/chat`, `/v1/generate`, and embeddings at `/v1/embed` and
//! `/v2/embed`.
//!
//! `/v1/chat` takes Cohere's native body (`message`, `chat_history`, `preamble`) and answers in
//! the v1 shape (`text`, `meta.billed_units`). Kong sends requests *with tools* in OpenAI shape
//! (`messages`, `tools`); those get the v2-like shape (`message.tool_calls`, `finish_reason`,
//! `usage.billed_units`) that Kong's Cohere translator reads tool calls from.
//!
//! Streams (`"stream": true`) are newline-delimited JSON (`application/stream+json`):
//! `stream-start`, one `text-generation` per word, `stream-end` with the full response.

use actix_web::web::{self, Bytes};
use serde_json::{json, Value};

use super::{
    openai, post,
    reply::{
        embedding, input_texts, text_of, tool_arguments, word_count, Completion, Prompt,
        TOOL_ARGUMENTS,
    },
    stream::ndjson,
    Answer, MockRequest, Wire,
};

const RESPONSE_ID: &str = "mock-response";
const GENERATION_ID: &str = "mock-generation";
const TOOL_CALL_ID: &str = "call_mock_1";

static COHERE: Wire = Wire::new("cohere", error_body);

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/v1/chat", &COHERE, chat))
        .service(post("/v1/generate", &COHERE, generate))
        .service(post("/v1/embed", &COHERE, embed_v1))
        .service(post("/v2/embed", &COHERE, embed_v2))
        .service(post("/v1/rerank", &COHERE, rerank))
        .service(post("/v2/rerank", &COHERE, rerank));
}

/// `POST /v1|v2/rerank`: documents ranked by how many of the query's words they contain
/// (ties keep input order), cut to `top_n`.
fn rerank(req: &MockRequest) -> Answer {
    let results = super::reply::rank(
        &req.body["query"],
        &req.body["documents"],
        |i, score| json!({"index": i, "relevance_score": score}),
    );
    let top_n = req.body["top_n"]
        .as_u64()
        .map_or(usize::MAX, |n| n as usize);
    let results: Vec<Value> = results.into_iter().take(top_n).collect();
    Answer::json(
        json!({"id": RESPONSE_ID, "results": results,
               "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}}),
        "results",
    )
}

/// Cohere errors are `{"message": ...}`.
fn error_body(_status: u16, message: &str) -> Value {
    json!({"message": message})
}

/// Usage in Cohere's `meta` (v1) or `usage` (v2) object.
fn billed(completion: &Completion) -> Value {
    let units = json!({"input_tokens": completion.prompt_tokens,
                       "output_tokens": completion.completion_tokens});
    json!({"billed_units": units, "tokens": units})
}

/// The prompt of a native chat body: `preamble`, `chat_history`, then `message`.
fn native_chat_prompt(body: &Value) -> Prompt {
    let mut prompt = Prompt::default();
    prompt.context(&text_of(&body["preamble"]));
    for turn in body["chat_history"].as_array().into_iter().flatten() {
        let text = text_of(&turn["message"]);
        match turn["role"].as_str().unwrap_or("USER") {
            "SYSTEM" => prompt.context(&text),
            role => prompt.turn(role, &text, false),
        }
    }
    let returns_tool_results = body["tool_results"]
        .as_array()
        .is_some_and(|r| !r.is_empty());
    prompt.turn("user", &text_of(&body["message"]), returns_tool_results);
    prompt.offer_tools(body.get("tools"));
    prompt
}

/// `POST /v1/chat`.
fn chat(req: &MockRequest) -> Answer {
    let openai_shaped = req.body.get("messages").is_some();
    let prompt = if openai_shaped {
        openai::chat_prompt(&req.body)
    } else {
        native_chat_prompt(&req.body)
    };
    let completion = req.complete(prompt);
    if req.stream_flag(false) {
        let end = chat_v1_body(&completion);
        return event_stream(&completion, end);
    }
    if openai_shaped {
        return Answer::json(chat_v2_body(&completion), "message");
    }
    Answer::json(chat_v1_body(&completion), "text")
}

fn chat_v1_body(completion: &Completion) -> Value {
    let mut body = json!({
        "response_id": RESPONSE_ID, "text": completion.text(), "generation_id": GENERATION_ID,
        "chat_history": [], "finish_reason": "COMPLETE",
        "meta": {"api_version": {"version": "1"}, "billed_units": billed(completion)["billed_units"]},
    });
    if let Some(name) = completion.tool() {
        body["tool_calls"] = json!([{"name": name, "parameters": tool_arguments()}]);
    }
    body
}

fn chat_v2_body(completion: &Completion) -> Value {
    let message = match completion.tool() {
        Some(name) => json!({"role": "assistant", "tool_plan": format!("I will call {name}."),
            "tool_calls": [{"id": TOOL_CALL_ID, "type": "function",
                            "function": {"name": name, "arguments": TOOL_ARGUMENTS}}]}),
        None => json!({"role": "assistant",
                       "content": [{"type": "text", "text": completion.text()}]}),
    };
    json!({
        "id": RESPONSE_ID, "message": message,
        "finish_reason": completion.stop_reason("COMPLETE", "TOOL_CALL"),
        "usage": billed(completion),
    })
}

/// `POST /v1/generate`: replies to `prompt`.
fn generate(req: &MockRequest) -> Answer {
    let prompt_text = text_of(&req.body["prompt"]);
    let mut prompt = Prompt::default();
    prompt.turn("user", &prompt_text, false);
    let completion = req.complete(prompt);
    let body = json!({
        "id": GENERATION_ID, "prompt": prompt_text,
        "generations": [{"id": format!("{GENERATION_ID}-0"), "text": completion.text(),
                         "finish_reason": "COMPLETE"}],
        "meta": {"api_version": {"version": "1"}, "billed_units": billed(&completion)["billed_units"]},
    });
    if req.stream_flag(false) {
        return event_stream(&completion, body);
    }
    Answer::json(body, "generations")
}

/// The NDJSON event stream; `response` is the full answer carried by `stream-end`.
fn event_stream(completion: &Completion, response: Value) -> Answer {
    let start = json!({"is_finished": false, "event_type": "stream-start",
                       "generation_id": GENERATION_ID});
    let mut frames: Vec<Bytes> = vec![ndjson(&start)];
    frames.extend(completion.chunks().into_iter().map(|word| {
        ndjson(&json!({"is_finished": false, "event_type": "text-generation", "text": word}))
    }));
    if let Some(calls) = response.get("tool_calls") {
        frames.push(ndjson(&json!({"is_finished": false,
            "event_type": "tool-calls-generation", "tool_calls": calls})));
    }
    frames.push(ndjson(&json!({
        "is_finished": true, "event_type": "stream-end",
        "finish_reason": "COMPLETE", "response": response,
    })));
    Answer::Stream {
        content_type: "application/stream+json",
        frames,
    }
}

/// Embeddings of `texts` and their word count.
fn embed_texts(req: &MockRequest) -> (Vec<Vec<f32>>, u64) {
    let texts = input_texts(req.body.get("texts"));
    let vectors = texts.iter().map(|t| embedding(t, None)).collect();
    (vectors, texts.iter().map(|t| word_count(t)).sum())
}

/// `POST /v1/embed`: `embeddings` is a list of float vectors.
fn embed_v1(req: &MockRequest) -> Answer {
    let (vectors, words) = embed_texts(req);
    Answer::json(
        json!({"id": RESPONSE_ID, "response_type": "embeddings_floats", "embeddings": vectors,
               "texts": req.body["texts"],
               "meta": {"api_version": {"version": "1"}, "billed_units": {"input_tokens": words}}}),
        "embeddings",
    )
}

/// `POST /v2/embed`: `embeddings` is keyed by type (`float`).
fn embed_v2(req: &MockRequest) -> Answer {
    let (vectors, words) = embed_texts(req);
    Answer::json(
        json!({"id": RESPONSE_ID, "response_type": "embeddings_by_type",
               "embeddings": {"float": vectors}, "texts": req.body["texts"],
               "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": words}}}),
        "embeddings",
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::mock::testkit::{ndjson_lines, post_json};

    fn chat_body(stream: bool) -> Value {
        json!({"model": "command-r", "stream": stream, "message": "Double it.",
               "chat_history": [{"role": "USER", "message": "You are terse."},
                                {"role": "USER", "message": "What is 2 + 3?"},
                                {"role": "CHATBOT", "message": "5."}]})
    }

    const REPLY: &str = "Mock cohere reply to: Double it.";

    #[actix_rt::test]
    async fn chat_answers_in_v1_shape() {
        let v = post_json("/v1/chat", &chat_body(false), None)
            .await
            .assert_sized_json();
        assert_eq!(v["text"], REPLY);
        assert_eq!(v["generation_id"], "mock-generation");
        let units = json!({"input_tokens": 11, "output_tokens": 6});
        assert_eq!(v["meta"]["billed_units"], units);
    }

    #[actix_rt::test]
    async fn chat_streams_ndjson_events() {
        let got = post_json("/v1/chat", &chat_body(true), None).await;
        assert_eq!(got.content_type(), "application/stream+json");
        let lines = ndjson_lines(&got.body);
        assert_eq!(lines[0]["event_type"], "stream-start");
        let text: String = lines
            .iter()
            .filter(|l| l["event_type"] == "text-generation")
            .filter_map(|l| l["text"].as_str())
            .collect();
        assert_eq!(text, REPLY);
        let end = lines.last().unwrap();
        assert_eq!(end["event_type"], "stream-end");
        assert_eq!(end["response"]["meta"]["billed_units"]["output_tokens"], 6);
    }

    #[actix_rt::test]
    async fn openai_shaped_tool_requests_get_v2_tool_calls() {
        let body = json!({"model": "command-r", "messages": [{"role": "user", "content": "add"}],
                          "tools": [{"type": "function", "function": {"name": "add"}}]});
        let v = post_json("/v1/chat", &body, None).await.json();
        let call = &v["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "add");
        assert_eq!(call["function"]["arguments"], r#"{"a":2,"b":12}"#);
        assert_eq!(v["finish_reason"], "TOOL_CALL");
        assert_eq!(v["usage"]["billed_units"]["input_tokens"], 1);
    }

    #[actix_rt::test]
    async fn generate_answers_and_streams() {
        let body = json!({"model": "command", "prompt": "Say hi to Bob."});
        let v = post_json("/v1/generate", &body, None)
            .await
            .assert_sized_json();
        assert_eq!(
            v["generations"][0]["text"],
            "Mock cohere reply to: Say hi to Bob."
        );

        let body = json!({"model": "command", "prompt": "hi", "stream": true});
        let lines = ndjson_lines(&post_json("/v1/generate", &body, None).await.body);
        let end = lines.last().unwrap();
        assert_eq!(
            end["response"]["generations"][0]["text"],
            "Mock cohere reply to: hi"
        );
    }

    #[actix_rt::test]
    async fn embeds_in_v1_and_v2_shapes() {
        let body = json!({"model": "embed-english-v3.0", "texts": ["a", "b c"],
                          "input_type": "search_document", "embedding_types": ["float"]});
        let v2 = post_json("/v2/embed", &body, None)
            .await
            .assert_sized_json();
        assert_eq!(v2["embeddings"]["float"].as_array().unwrap().len(), 2);
        assert_eq!(v2["meta"]["billed_units"]["input_tokens"], 3);
        let v1 = post_json("/v1/embed", &body, None).await.json();
        assert_eq!(v1["embeddings"][0], v2["embeddings"]["float"][0]);
    }

    #[actix_rt::test]
    async fn errors_and_no_choices_in_cohere_shape() {
        let got = post_json("/v1/chat", &chat_body(false), Some("status=401")).await;
        assert_eq!(got.status, 401);
        assert!(got.json()["message"].is_string());

        let v = post_json("/v1/chat", &chat_body(false), Some("no_choices"))
            .await
            .json();
        assert!(v.get("text").is_none());
        assert_eq!(v["generation_id"], "mock-generation");
    }
}
