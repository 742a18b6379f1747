//! Anthropic wire format: `/v1/messages` (with `tool_use`), `/v1/messages/count_tokens` and the
//! legacy `/v1/complete`.
//!
//! Streams (`"stream": true`) are SSE with `event:` names, in Anthropic's order: `message_start`,
//! `content_block_start`, `ping`, one `content_block_delta` per word (or `input_json_delta`
//! fragments for a tool call), `content_block_stop`, `message_delta` (stop reason, output
//! tokens), `message_stop`. `message_start` reports 0 output tokens, so a gateway adding the two
//! counts (as Kong does) still gets the word count.

use actix_web::web::{self, Bytes};
use serde_json::{json, Value};

use super::{
    post,
    reply::{
        text_of, tool_arguments, word_chunks, Completion, Content, Prompt, THINKING,
        THINKING_SIGNATURE, TOOL_ARGUMENTS, TOOL_ARGUMENT_PIECES,
    },
    stream::sse_event,
    Answer, MockRequest, Wire,
};

const MESSAGE_ID: &str = "msg_mock";
const COMPLETION_ID: &str = "compl_mock";
const TOOL_USE_ID: &str = "toolu_mock_1";

static ANTHROPIC: Wire = Wire::new("anthropic", error_body);

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/v1/messages", &ANTHROPIC, messages))
        .service(post("/v1/messages/count_tokens", &ANTHROPIC, count_tokens))
        .service(post("/v1/complete", &ANTHROPIC, complete));
}

/// `POST /v1/messages/count_tokens`: the prompt's word count, as usage counts everywhere.
fn count_tokens(req: &MockRequest) -> Answer {
    let words = messages_prompt(&req.body).words();
    Answer::json(json!({"input_tokens": words}), "input_tokens")
}

/// `{"type":"error","error":{"type","message"}}` with Anthropic's error types.
fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The prompt of a Messages API body; also used for Bedrock `invoke` with Anthropic models.
pub(crate) fn messages_prompt(body: &Value) -> Prompt {
    let mut prompt = Prompt::default();
    prompt.context(&text_of(&body["system"]));
    for message in body["messages"].as_array().into_iter().flatten() {
        let content = &message["content"];
        prompt.turn(
            message["role"].as_str().unwrap_or("user"),
            &text_of(content),
            has_block(content, "tool_result"),
        );
    }
    prompt.offer_tools(body.get("tools"));
    prompt
}

fn has_block(content: &Value, kind: &str) -> bool {
    content
        .as_array()
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == kind))
}

/// `POST /v1/messages`.
pub(crate) fn messages(req: &MockRequest) -> Answer {
    let thinks = req.body["thinking"]["type"] == "enabled";
    if thinks
        && matches!(
            req.body["tool_choice"]["type"].as_str(),
            Some("tool" | "any")
        )
    {
        // Anthropic's own refusal.
        return Answer::error(
            400,
            "Thinking may not be enabled when tool_choice forces tool use.",
        );
    }
    let mut completion = req.complete(messages_prompt(&req.body));
    // Structured output (`output_config.format`): the answer is JSON text, the same arguments
    // every mock tool call carries.
    if req.body["output_config"]["format"]["type"] == "json_schema" && completion.tool().is_none() {
        completion.content = Content::Text(TOOL_ARGUMENTS.into());
    }
    if req.stream_flag(false) {
        return message_stream(req.model(), &completion, thinks);
    }
    let mut content = Vec::new();
    if thinks {
        content.push(json!({"type": "thinking", "thinking": THINKING,
                            "signature": THINKING_SIGNATURE}));
    }
    content.push(content_block(&completion, true));
    Answer::json(
        json!({
            "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": req.model(),
            "content": content,
            "stop_reason": stop_reason(&completion), "stop_sequence": null,
            "usage": {"input_tokens": completion.prompt_tokens,
                      "output_tokens": completion.completion_tokens},
        }),
        "content",
    )
}

fn stop_reason(completion: &Completion) -> &'static str {
    completion.stop_reason("end_turn", "tool_use")
}

/// The one content block: text, or `tool_use` (with its input, or `{}` as a stream starts it).
fn content_block(completion: &Completion, complete: bool) -> Value {
    match completion.tool() {
        Some(name) => {
            let input = if complete {
                tool_arguments()
            } else {
                json!({})
            };
            json!({"type": "tool_use", "id": TOOL_USE_ID, "name": name, "input": input})
        }
        None if complete => json!({"type": "text", "text": completion.text()}),
        None => json!({"type": "text", "text": ""}),
    }
}

fn message_stream(model: &str, completion: &Completion, thinks: bool) -> Answer {
    let frames = stream_events(model, completion, thinks)
        .iter()
        .map(|event| sse_event(event["type"].as_str().unwrap_or_default(), event))
        .collect();
    Answer::Stream {
        content_type: "text/event-stream",
        frames,
    }
}

/// The events of a streamed message, each with its `type`; also what Bedrock's
/// `invoke-with-response-stream` wraps for Claude.
pub(crate) fn stream_events(model: &str, completion: &Completion, thinks: bool) -> Vec<Value> {
    let mut events = vec![json!({"type": "message_start", "message": {
        "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": completion.prompt_tokens, "output_tokens": 0}}})];
    let block_delta = |index: usize, delta: Value| json!({"type": "content_block_delta", "index": index, "delta": delta});
    if thinks {
        events.push(json!({"type": "content_block_start", "index": 0,
                           "content_block": {"type": "thinking", "thinking": ""}}));
        events.extend(
            word_chunks(THINKING)
                .into_iter()
                .map(|word| block_delta(0, json!({"type": "thinking_delta", "thinking": word}))),
        );
        events.push(block_delta(
            0,
            json!({"type": "signature_delta", "signature": THINKING_SIGNATURE}),
        ));
        events.push(json!({"type": "content_block_stop", "index": 0}));
    }
    let index = usize::from(thinks);
    events.extend([
        json!({"type": "content_block_start", "index": index,
               "content_block": content_block(completion, false)}),
        json!({"type": "ping"}),
    ]);
    let deltas: Vec<Value> = match completion.tool() {
        Some(_) => TOOL_ARGUMENT_PIECES
            .iter()
            .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
            .collect(),
        None => completion
            .chunks()
            .into_iter()
            .map(|word| json!({"type": "text_delta", "text": word}))
            .collect(),
    };
    events.extend(deltas.into_iter().map(|delta| block_delta(index, delta)));
    events.extend([
        json!({"type": "content_block_stop", "index": index}),
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason(completion), "stop_sequence": null},
               "usage": {"output_tokens": completion.completion_tokens}}),
        json!({"type": "message_stop"}),
    ]);
    events
}

/// `POST /v1/complete` (legacy Text Completions): replies to the last `Human:` turn.
fn complete(req: &MockRequest) -> Answer {
    let prompt_text = req.body["prompt"].as_str().unwrap_or("");
    let mut prompt = Prompt::default();
    prompt.turn("user", last_human_turn(prompt_text), false);
    let completion = req.complete(prompt);
    let model = req.model();
    let event = |text: &str, stop: Value| {
        json!({"type": "completion", "id": COMPLETION_ID, "completion": text,
               "stop_reason": stop, "model": model})
    };
    if !req.stream_flag(false) {
        return Answer::json(
            event(completion.text(), json!("stop_sequence")),
            "completion",
        );
    }
    let mut frames: Vec<Bytes> = completion
        .chunks()
        .into_iter()
        .map(|word| sse_event("completion", &event(word, Value::Null)))
        .collect();
    frames.push(sse_event("completion", &event("", json!("stop_sequence"))));
    Answer::Stream {
        content_type: "text/event-stream",
        frames,
    }
}

/// The text after the last `Human:` and before the `Assistant:` that follows it.
fn last_human_turn(prompt: &str) -> &str {
    let after = prompt.rsplit("Human:").next().unwrap_or(prompt);
    after.split("Assistant:").next().unwrap_or(after).trim()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::mock::testkit::{post_json, sse_events};

    fn body(stream: bool) -> Value {
        json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 64, "stream": stream,
               "system": "You are a terse assistant.",
               "messages": [{"role": "user", "content": "What is 2 + 3?"},
                            {"role": "assistant", "content": "5."},
                            {"role": "user", "content": [{"type": "text", "text": "Double it."}]}]})
    }

    fn tools_body() -> Value {
        let mut body = body(false);
        body["tools"] = json!([{"name": "add", "input_schema": {"type": "object"}}]);
        body
    }

    const REPLY: &str = "Mock anthropic reply to: Double it.";

    #[actix_rt::test]
    async fn messages_answer_with_text_and_usage() {
        let v = post_json("/v1/messages", &body(false), None)
            .await
            .assert_sized_json();
        assert_eq!(v["type"], "message");
        assert_eq!(v["content"], json!([{"type": "text", "text": REPLY}]));
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"], json!({"input_tokens": 13, "output_tokens": 6}));
    }

    #[actix_rt::test]
    async fn messages_stream_in_anthropic_event_order() {
        let got = post_json("/v1/messages", &body(true), None).await;
        assert_eq!(got.content_type(), "text/event-stream");
        let events = sse_events(&got.body);
        let names: Vec<&str> = events.iter().filter_map(|(e, _)| e.as_deref()).collect();
        let deltas = vec!["content_block_delta"; 6];
        let expected = [
            &["message_start", "content_block_start", "ping"][..],
            &deltas,
            &["content_block_stop", "message_delta", "message_stop"],
        ]
        .concat();
        assert_eq!(names, expected);
        let data: Vec<Value> = events
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        let text: String = data
            .iter()
            .filter_map(|d| d["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, REPLY);
        assert_eq!(data[data.len() - 2]["usage"]["output_tokens"], 6);
        assert_eq!(data[0]["message"]["usage"]["input_tokens"], 13);
    }

    #[actix_rt::test]
    async fn tools_get_a_tool_use_block() {
        let v = post_json("/v1/messages", &tools_body(), None).await.json();
        let block = &v["content"][0];
        assert_eq!(block["type"], "tool_use");
        assert_eq!(block["name"], "add");
        assert_eq!(block["input"], json!({"a": 2, "b": 12}));
        assert_eq!(v["stop_reason"], "tool_use");

        let mut streamed = tools_body();
        streamed["stream"] = json!(true);
        let got = post_json("/v1/messages", &streamed, None).await;
        let data: Vec<Value> = sse_events(&got.body)
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(data[1]["content_block"]["name"], "add");
        let args: String = data
            .iter()
            .filter_map(|d| d["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(args, r#"{"a":2,"b":12}"#);
    }

    #[actix_rt::test]
    async fn tool_results_get_text() {
        let mut body = tools_body();
        body["messages"] = json!([
            {"role": "user", "content": "add"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "add", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "14"}]}]);
        let v = post_json("/v1/messages", &body, None).await.json();
        assert_eq!(v["content"][0]["text"], "Mock anthropic reply to: add");
    }

    #[actix_rt::test]
    async fn legacy_complete_replies_to_the_last_human_turn() {
        let body = json!({"model": "claude-2.1", "prompt": "Human: Say hi to Bob.\n\nAssistant:",
                          "max_tokens_to_sample": 32});
        let v = post_json("/v1/complete", &body, None)
            .await
            .assert_sized_json();
        assert_eq!(v["completion"], "Mock anthropic reply to: Say hi to Bob.");
        assert_eq!(v["stop_reason"], "stop_sequence");
    }

    #[actix_rt::test]
    async fn errors_and_no_choices_in_anthropic_shape() {
        let got = post_json("/v1/messages", &body(false), Some("status=529")).await;
        assert_eq!(got.status, 529);
        let expected_type = json!({"type": "error", "error": {"type": "overloaded_error"}});
        assert_eq!(got.json()["error"]["type"], expected_type["error"]["type"]);
        assert_eq!(got.json()["type"], "error");

        let v = post_json("/v1/messages", &body(false), Some("no_choices"))
            .await
            .json();
        assert!(v.get("content").is_none());
        assert_eq!(v["type"], "message");
    }
}
