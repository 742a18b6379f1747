//! AWS Bedrock wire format: the Converse API and `InvokeModel` for embeddings.
//!
//! * `POST /model/{modelId}/converse` — JSON answer (`output.message.content`, `stopReason`,
//!   `usage.inputTokens/outputTokens/totalTokens`).
//! * `POST /model/{modelId}/converse-stream` — `application/vnd.amazon.eventstream` binary frames:
//!   `messageStart`, (`contentBlockStart` for a tool call), one `contentBlockDelta` per word or
//!   tool-input fragment, `contentBlockStop`, `messageStop`, `metadata` (usage).
//! * `POST /model/{modelId}/invoke` — Titan (`inputText`) and Cohere (`texts`) embeddings, and
//!   Anthropic Messages bodies.
//!
//! Signatures are not checked; the request log shows the SigV4 headers for tests to inspect.

use actix_web::web::{self, Bytes};
use base64::Engine;
use serde_json::{json, Value};

use super::{
    anthropic, post,
    reply::{
        embedding, input_texts, text_of, tool_arguments, word_chunks, word_count, Completion,
        Content, Prompt, THINKING, THINKING_SIGNATURE, TOOL_ARGUMENTS, TOOL_ARGUMENT_PIECES,
    },
    Answer, MockRequest, Wire,
};
use crate::codec::eventstream::encode_event;

const TOOL_USE_ID: &str = "tooluse_mock_1";

/// The content type of Bedrock's streams (AWS event stream framing).
pub(crate) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
const EMBEDDING_ID: &str = "mock-embedding";

static BEDROCK: Wire = Wire {
    error_header: Some(("x-amzn-errortype", error_type)),
    ..Wire::new("bedrock", error_body)
};

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/model/{model}/converse", &BEDROCK, converse))
        .service(post(
            "/model/{model}/converse-stream",
            &BEDROCK,
            converse_stream,
        ))
        .service(post("/model/{model}/invoke", &BEDROCK, invoke))
        .service(post(
            "/model/{model}/invoke-with-response-stream",
            &BEDROCK,
            invoke_stream,
        ))
        .service(post("/rerank", &BEDROCK, rerank));
}

/// Agent runtime `POST /rerank`: text sources ranked like Cohere's rerank.
fn rerank(req: &MockRequest) -> Answer {
    let query = &req.body["queries"][0]["textQuery"]["text"];
    let documents: Vec<Value> = req.body["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["inlineDocumentSource"]["textDocument"]["text"].clone())
        .collect();
    let results = super::reply::rank(
        query,
        &Value::Array(documents),
        |i, score| json!({"index": i, "relevanceScore": score}),
    );
    Answer::json(json!({"results": results}), "results")
}

/// Bedrock errors are `{"message": ...}`, the exception name travels in a header.
fn error_body(_status: u16, message: &str) -> Value {
    json!({"message": message})
}

fn error_type(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// The prompt of a Converse body: `system` blocks, then the messages. User messages made of
/// `toolResult` blocks are tool results.
fn converse_prompt(body: &Value) -> Prompt {
    let mut prompt = Prompt::default();
    prompt.context(&text_of(&body["system"]));
    for message in body["messages"].as_array().into_iter().flatten() {
        let content = &message["content"];
        let tool_result = content
            .as_array()
            .is_some_and(|blocks| blocks.iter().any(|b| b.get("toolResult").is_some()));
        let role = message["role"].as_str().unwrap_or("user");
        prompt.turn(role, &text_of(content), tool_result);
    }
    prompt.offer_tools(body.pointer("/toolConfig/tools"));
    prompt
}

fn usage(completion: &Completion) -> Value {
    json!({"inputTokens": completion.prompt_tokens, "outputTokens": completion.completion_tokens,
           "totalTokens": completion.total_tokens()})
}

fn stop_reason(completion: &Completion) -> &'static str {
    completion.stop_reason("end_turn", "tool_use")
}

/// The answer to a Converse body: Claude's refusal of a forced tool call while it thinks, as
/// Bedrock passes it on; with structured output (`outputConfig.textFormat`) JSON text, the
/// same arguments every mock tool call carries.
fn converse_completion(req: &MockRequest) -> Result<Completion, Answer> {
    if thinks(&req.body) && req.body.pointer("/toolConfig/toolChoice/tool").is_some() {
        return Err(Answer::error(
            400,
            "Thinking may not be enabled when tool_choice forces tool use.",
        ));
    }
    let mut completion = req.complete(converse_prompt(&req.body));
    let structured = req.body["outputConfig"]["textFormat"]["type"] == "json_schema";
    if structured && completion.tool().is_none() {
        completion.content = Content::Text(TOOL_ARGUMENTS.into());
    }
    Ok(completion)
}

/// Claude on Bedrock reasons when the request passes Anthropic's `thinking` through.
fn thinks(body: &Value) -> bool {
    body["additionalModelRequestFields"]["thinking"]["type"] == "enabled"
}

/// `POST /model/{modelId}/converse`.
fn converse(req: &MockRequest) -> Answer {
    let completion = match converse_completion(req) {
        Ok(completion) => completion,
        Err(refused) => return refused,
    };
    let block = match completion.tool() {
        Some(name) => json!({"toolUse": {"toolUseId": TOOL_USE_ID, "name": name,
                                         "input": tool_arguments()}}),
        None => json!({"text": completion.text()}),
    };
    let mut content = Vec::new();
    if thinks(&req.body) {
        content.push(json!({"reasoningContent": {"reasoningText": {
            "text": THINKING, "signature": THINKING_SIGNATURE}}}));
    }
    content.push(block);
    Answer::json(
        json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason(&completion),
            "usage": usage(&completion),
            "metrics": {"latencyMs": 1},
        }),
        "output",
    )
}

/// `POST /model/{modelId}/converse-stream`.
fn converse_stream(req: &MockRequest) -> Answer {
    let completion = match converse_completion(req) {
        Ok(completion) => completion,
        Err(refused) => return refused,
    };
    let event = |name: &str, body: Value| encode_event(name, body.to_string().as_bytes());
    let mut frames: Vec<Bytes> = vec![event("messageStart", json!({"role": "assistant"}))];
    let thinks = thinks(&req.body);
    if thinks {
        let reasoning = |delta: Value| {
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"reasoningContent": delta}}),
            )
        };
        frames.extend(
            word_chunks(THINKING)
                .into_iter()
                .map(|word| reasoning(json!({ "text": word }))),
        );
        frames.push(reasoning(json!({ "signature": THINKING_SIGNATURE })));
        frames.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    }
    let index = usize::from(thinks);
    let delta = |delta: Value| {
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": index, "delta": delta}),
        )
    };
    match completion.tool() {
        Some(name) => {
            frames.push(event(
                "contentBlockStart",
                json!({"contentBlockIndex": index,
                       "start": {"toolUse": {"toolUseId": TOOL_USE_ID, "name": name}}}),
            ));
            frames.extend(
                TOOL_ARGUMENT_PIECES
                    .iter()
                    .map(|piece| delta(json!({"toolUse": {"input": piece}}))),
            );
        }
        None => frames.extend(
            completion
                .chunks()
                .into_iter()
                .map(|word| delta(json!({"text": word}))),
        ),
    }
    frames.extend([
        event("contentBlockStop", json!({"contentBlockIndex": index})),
        event(
            "messageStop",
            json!({"stopReason": stop_reason(&completion)}),
        ),
        event(
            "metadata",
            json!({"usage": usage(&completion), "metrics": {"latencyMs": 1}}),
        ),
    ]);
    Answer::Stream {
        content_type: EVENT_STREAM,
        frames,
    }
}

/// `POST /model/{modelId}/invoke-with-response-stream` for Claude (a Messages API body): each
/// of Anthropic's stream events base64 in a `chunk` event's `bytes`, the last one carrying
/// `amazon-bedrock-invocationMetrics`, as Bedrock sends them.
fn invoke_stream(req: &MockRequest) -> Answer {
    if req.body.get("messages").is_none() {
        return Answer::error(
            400,
            "mock: invoke-with-response-stream takes a Messages API body (Claude models)",
        );
    }
    let completion = req.complete(anthropic::messages_prompt(&req.body));
    let thinks = req.body["thinking"]["type"] == "enabled";
    let mut events = anthropic::stream_events(req.model(), &completion, thinks);
    if let Some(last) = events.last_mut() {
        last["amazon-bedrock-invocationMetrics"] = json!({
            "inputTokenCount": completion.prompt_tokens,
            "outputTokenCount": completion.completion_tokens,
            "invocationLatency": 1, "firstByteLatency": 1});
    }
    let frames = events
        .iter()
        .map(|event| {
            let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
            encode_event("chunk", json!({ "bytes": bytes }).to_string().as_bytes())
        })
        .collect();
    Answer::Stream {
        content_type: EVENT_STREAM,
        frames,
    }
}

/// `POST /model/{modelId}/invoke`, by body shape.
/// `n` base64 "PNG" images naming what they show.
fn mock_images(n: u64, what: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            base64::engine::general_purpose::STANDARD
                .encode(format!("\u{89}PNG mock bedrock image {i}: {what}"))
        })
        .collect()
}

fn invoke(req: &MockRequest) -> Answer {
    let body = &req.body;
    if let Some(input) = body.get("inputText") {
        // Amazon Titan text embeddings.
        let text = text_of(input);
        return Answer::json(
            json!({"embedding": embedding(&text, body["dimensions"].as_u64()),
                   "inputTextTokenCount": word_count(&text)}),
            "embedding",
        );
    }
    if body.get("texts").is_some() {
        // Cohere Embed on Bedrock.
        let vectors: Vec<Vec<f32>> = input_texts(body.get("texts"))
            .iter()
            .map(|t| embedding(t, None))
            .collect();
        return Answer::json(
            json!({"id": EMBEDDING_ID, "response_type": "embeddings_floats",
                   "embeddings": vectors, "texts": body["texts"]}),
            "embeddings",
        );
    }
    if let Some(task) = body["taskType"].as_str() {
        // Amazon Titan Image / Nova Canvas.
        let n = body["imageGenerationConfig"]["numberOfImages"]
            .as_u64()
            .unwrap_or(1);
        let text = [
            "textToImageParams",
            "inPaintingParams",
            "imageVariationParams",
        ]
        .iter()
        .find_map(|k| body[*k]["text"].as_str())
        .unwrap_or_default();
        return Answer::json(
            json!({"images": mock_images(n, &format!("{task}: {text}")), "error": null}),
            "images",
        );
    }
    if let Some(prompt) = body["prompt"].as_str() {
        // Stability models.
        return Answer::json(
            json!({"images": mock_images(1, &format!("stability {}: {prompt}", body["mode"].as_str().unwrap_or("text-to-image"))),
                   "seeds": [1], "finish_reasons": [null]}),
            "images",
        );
    }
    if body.get("messages").is_some() {
        // Anthropic models take the Messages API body on InvokeModel.
        return anthropic::messages(req);
    }
    Answer::error(
        400,
        "mock: unsupported InvokeModel body (expected inputText, texts or messages)",
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use base64::Engine;

    use super::EVENT_STREAM;
    use crate::{codec::eventstream::EventStreamDecoder, mock::testkit::post_json};

    const MODEL: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0";
    const REPLY: &str = "Mock bedrock reply to: Double it.";

    fn body() -> Value {
        json!({"system": [{"text": "Be terse."}], "inferenceConfig": {"maxTokens": 64},
               "messages": [{"role": "user", "content": [{"text": "What is 2 + 3?"}]},
                            {"role": "assistant", "content": [{"text": "5."}]},
                            {"role": "user", "content": [{"text": "Double it."}]}]})
    }

    fn with_tools(mut body: Value) -> Value {
        body["toolConfig"] =
            json!({"tools": [{"toolSpec": {"name": "add", "inputSchema": {"json": {}}}}]});
        body
    }

    /// `(event type, payload JSON)` of every frame.
    fn decode(raw: &[u8]) -> Vec<(String, Value)> {
        let mut messages = Vec::new();
        EventStreamDecoder::new().feed(raw, &mut messages).unwrap();
        messages
            .into_iter()
            .map(|m| {
                (
                    m.event_type.unwrap(),
                    serde_json::from_slice(&m.body).unwrap(),
                )
            })
            .collect()
    }

    #[actix_rt::test]
    async fn converse_answers_with_usage() {
        let got = post_json(&format!("{MODEL}/converse"), &body(), None).await;
        let v = got.assert_sized_json();
        assert_eq!(v["output"]["message"]["content"], json!([{"text": REPLY}]));
        assert_eq!(v["stopReason"], "end_turn");
        assert_eq!(
            v["usage"],
            json!({"inputTokens": 10, "outputTokens": 6, "totalTokens": 16})
        );
    }

    #[actix_rt::test]
    async fn converse_stream_is_an_aws_event_stream() {
        let got = post_json(&format!("{MODEL}/converse-stream"), &body(), None).await;
        assert_eq!(got.content_type(), "application/vnd.amazon.eventstream");
        let events = decode(&got.body);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        let deltas = vec!["contentBlockDelta"; 6];
        let expected = [
            &["messageStart"][..],
            &deltas,
            &["contentBlockStop", "messageStop", "metadata"],
        ]
        .concat();
        assert_eq!(names, expected);
        let text: String = events
            .iter()
            .filter_map(|(_, b)| b["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, REPLY);
        assert_eq!(events.last().unwrap().1["usage"]["outputTokens"], 6);
    }

    fn claude_body() -> Value {
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
               "messages": [{"role": "user", "content": "Double it."}]})
    }

    #[actix_rt::test]
    async fn invoke_with_response_stream_wraps_claude_events_in_chunks() {
        let path = format!("{MODEL}/invoke-with-response-stream");
        let got = post_json(&path, &claude_body(), None).await;
        assert_eq!(got.content_type(), EVENT_STREAM);
        let events: Vec<Value> = decode(&got.body)
            .into_iter()
            .map(|(name, chunk)| {
                assert_eq!(name, "chunk");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(chunk["bytes"].as_str().unwrap())
                    .unwrap();
                serde_json::from_slice(&bytes).unwrap()
            })
            .collect();
        assert_eq!(events[0]["type"], "message_start");
        let text: String = events
            .iter()
            .filter_map(|e| e["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, REPLY);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "message_stop");
        assert_eq!(
            last["amazon-bedrock-invocationMetrics"]["outputTokenCount"],
            6
        );
        // Only Claude's Messages body streams here.
        let got = post_json(&path, &json!({"inputText": "x"}), None).await;
        assert_eq!(got.status, 400);
    }

    #[actix_rt::test]
    async fn thinking_refuses_a_forced_tool_and_structured_output_is_json_text() {
        let mut thinking = body();
        thinking["additionalModelRequestFields"] =
            json!({"thinking": {"type": "enabled", "budget_tokens": 1024}});
        let mut forced = with_tools(thinking.clone());
        forced["toolConfig"]["toolChoice"] = json!({"tool": {"name": "add"}});
        let got = post_json(&format!("{MODEL}/converse"), &forced, None).await;
        assert_eq!(got.status, 400);
        thinking["outputConfig"] = json!({"textFormat": {"type": "json_schema",
            "structure": {"jsonSchema": {"schema": "{\"type\":\"object\"}"}}}});
        let v = post_json(&format!("{MODEL}/converse"), &thinking, None)
            .await
            .json();
        let content = &v["output"]["message"]["content"];
        assert!(content[0].get("reasoningContent").is_some(), "{v}");
        assert_eq!(content[1]["text"], r#"{"a":2,"b":12}"#);
    }

    #[actix_rt::test]
    async fn stream_error_ends_a_bedrock_stream_with_an_exception_frame() {
        for path in ["converse-stream", "invoke-with-response-stream"] {
            let body = if path == "converse-stream" {
                body()
            } else {
                claude_body()
            };
            let got = post_json(&format!("{MODEL}/{path}"), &body, Some("stream_error")).await;
            let mut messages = Vec::new();
            EventStreamDecoder::new()
                .feed(&got.body, &mut messages)
                .unwrap();
            let last = messages.pop().unwrap();
            assert_eq!(last.message_type.as_deref(), Some("exception"), "{path}");
            assert_eq!(last.exception_type.as_deref(), Some("throttlingException"));
            assert!(messages.iter().all(|m| m.event_type.is_some()));
            assert!(!messages.is_empty(), "{path}: the first half comes first");
        }
    }

    #[actix_rt::test]
    async fn tools_get_tool_use_in_both_modes() {
        let v = post_json(&format!("{MODEL}/converse"), &with_tools(body()), None)
            .await
            .json();
        let tool_use = &v["output"]["message"]["content"][0]["toolUse"];
        assert_eq!(tool_use["name"], "add");
        assert_eq!(tool_use["input"], json!({"a": 2, "b": 12}));
        assert_eq!(v["stopReason"], "tool_use");

        let got = post_json(
            &format!("{MODEL}/converse-stream"),
            &with_tools(body()),
            None,
        )
        .await;
        let events = decode(&got.body);
        assert_eq!(events[1].0, "contentBlockStart");
        assert_eq!(events[1].1["start"]["toolUse"]["name"], "add");
        let input: String = events
            .iter()
            .filter_map(|(_, b)| b["delta"]["toolUse"]["input"].as_str())
            .collect();
        assert_eq!(input, r#"{"a":2,"b":12}"#);
        let stop = events.iter().find(|(n, _)| n == "messageStop").unwrap();
        assert_eq!(stop.1["stopReason"], "tool_use");
    }

    #[actix_rt::test]
    async fn tool_results_get_text() {
        let mut body = with_tools(body());
        body["messages"] = json!([
            {"role": "user", "content": [{"text": "add"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "add", "input": {}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"json": {"r": 14}}]}}]}]);
        let v = post_json(&format!("{MODEL}/converse"), &body, None)
            .await
            .json();
        assert_eq!(
            v["output"]["message"]["content"][0]["text"],
            "Mock bedrock reply to: add"
        );
    }

    #[actix_rt::test]
    async fn invoke_embeds_for_titan_and_cohere() {
        let path = "/model/amazon.titan-embed-text-v2:0/invoke";
        let v = post_json(path, &json!({"inputText": "a b", "dimensions": 5}), None)
            .await
            .assert_sized_json();
        assert_eq!(v["embedding"].as_array().unwrap().len(), 5);
        assert_eq!(v["inputTextTokenCount"], 2);

        let path = "/model/cohere.embed-english-v3/invoke";
        let v = post_json(
            path,
            &json!({"texts": ["a", "b"], "input_type": "search_query"}),
            None,
        )
        .await
        .json();
        assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);

        let got = post_json(path, &json!({"nothing": 1}), None).await;
        assert_eq!(got.status, 400);
    }

    #[actix_rt::test]
    async fn errors_carry_the_exception_header() {
        let got = post_json(&format!("{MODEL}/converse"), &body(), Some("status=429")).await;
        assert_eq!(got.status, 429);
        assert_eq!(
            got.headers.get("x-amzn-errortype").unwrap(),
            "ThrottlingException"
        );
        assert!(got.json()["message"].is_string());
    }
}
