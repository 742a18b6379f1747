//! The Responses API and the Assistants v2 family, answered from the same deterministic
//! "model" as chat. Responses streams carry the typed events (`event:` lines, increasing
//! `sequence_number`, usage in `response.completed`, no `[DONE]`); assistants runs stream the
//! `thread.*` events and end with `event: done` / `data: [DONE]`.

use actix_web::{web::Bytes, HttpResponse};
use serde_json::{json, Map, Value};

use super::{
    api::{deleted, list, streamed, ApiRequest, CREATED},
    reply::{text_of, Completion, Prompt, TOOL_ARGUMENTS, TOOL_ARGUMENT_PIECES},
    stream::sse_event,
};

const RESPONSE_ID: &str = "resp_mock_1";
const MESSAGE_ID: &str = "msg_mock_1";
const CALL_ID: &str = "call_mock_1";

/// The prompt of a Responses body: `instructions` as context, `input` as a string or items
/// (messages, and `function_call_output` items that answer a tool call).
fn prompt(body: &Value) -> Prompt {
    let mut prompt = Prompt::default();
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
        prompt.context(instructions);
    }
    match body.get("input") {
        Some(Value::String(text)) => prompt.turn("user", text, false),
        Some(Value::Array(items)) => {
            for item in items {
                match item.get("type").and_then(Value::as_str) {
                    Some("function_call_output") => {
                        let output = item["output"].as_str().unwrap_or_default();
                        prompt.turn("user", output, true);
                    }
                    Some("function_call") => prompt.turn("assistant", "", false),
                    _ => {
                        let role = item["role"].as_str().unwrap_or("user");
                        let text = text_of(&item["content"]);
                        if role == "system" || role == "developer" {
                            prompt.context(&text);
                        } else {
                            prompt.turn(role, &text, false);
                        }
                    }
                }
            }
        }
        _ => {}
    }
    prompt.offer_tools(body.get("tools"));
    prompt
}

fn output_item(completion: &Completion, done: bool) -> Value {
    let status = if done { "completed" } else { "in_progress" };
    match completion.tool() {
        Some(name) => json!({
            "type": "function_call", "id": "fc_mock_1", "call_id": CALL_ID, "name": name,
            "arguments": if done { TOOL_ARGUMENTS } else { "" }, "status": status
        }),
        None => json!({
            "type": "message", "id": MESSAGE_ID, "status": status, "role": "assistant",
            "content": if done { json!([text_part(completion.text())]) } else { json!([]) }
        }),
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

fn response_object(body: &Value, completion: Option<&Completion>, status: &str) -> Value {
    let mut object = json!({
        "id": RESPONSE_ID, "object": "response", "created_at": CREATED, "status": status,
        "model": body.get("model").cloned().unwrap_or(json!("gpt-4o-mini")),
        "instructions": body.get("instructions").cloned().unwrap_or(Value::Null),
        "previous_response_id": body.get("previous_response_id").cloned().unwrap_or(Value::Null),
        "tools": body.get("tools").cloned().unwrap_or(json!([])),
        "tool_choice": "auto", "parallel_tool_calls": true, "metadata": {},
        "text": {"format": {"type": "text"}}, "error": null, "incomplete_details": null,
        "output": [], "usage": null
    });
    if let Some(c) = completion.filter(|_| status == "completed") {
        object["output"] = json!([output_item(c, true)]);
        object["usage"] = json!({
            "input_tokens": c.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": c.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": c.total_tokens()
        });
    }
    object
}

/// The typed event sequence of one streamed response.
fn response_events(body: &Value, completion: &Completion) -> Vec<Bytes> {
    let mut events: Vec<(&str, Value)> = vec![
        (
            "response.created",
            json!({"response": response_object(body, None, "in_progress")}),
        ),
        (
            "response.in_progress",
            json!({"response": response_object(body, None, "in_progress")}),
        ),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": output_item(completion, false)}),
        ),
    ];
    if completion.tool().is_some() {
        for piece in TOOL_ARGUMENT_PIECES {
            events.push((
                "response.function_call_arguments.delta",
                json!({"item_id": "fc_mock_1", "output_index": 0, "delta": piece}),
            ));
        }
        events.push((
            "response.function_call_arguments.done",
            json!({"item_id": "fc_mock_1", "output_index": 0, "arguments": TOOL_ARGUMENTS}),
        ));
    } else {
        let at = json!({"item_id": MESSAGE_ID, "output_index": 0, "content_index": 0});
        let with = |extra: Value| {
            let mut v = at.clone();
            if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            v
        };
        events.push((
            "response.content_part.added",
            with(json!({"part": text_part("")})),
        ));
        for chunk in completion.chunks() {
            events.push(("response.output_text.delta", with(json!({"delta": chunk}))));
        }
        events.push((
            "response.output_text.done",
            with(json!({"text": completion.text()})),
        ));
        events.push((
            "response.content_part.done",
            with(json!({"part": text_part(completion.text())})),
        ));
    }
    events.push((
        "response.output_item.done",
        json!({"output_index": 0, "item": output_item(completion, true)}),
    ));
    events.push((
        "response.completed",
        json!({"response": response_object(body, Some(completion), "completed")}),
    ));
    events
        .into_iter()
        .enumerate()
        .map(|(n, (kind, mut data))| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(n);
            sse_event(kind, &data)
        })
        .collect()
}

pub(crate) fn responses(req: &ApiRequest<'_>) -> HttpResponse {
    let stored = json!({"model": "gpt-4o-mini", "input": "stored input"});
    match (req.method.as_str(), &req.segments[1..]) {
        ("POST", []) => {
            let completion = prompt(&req.body).complete(req.wire.provider, &req.faults);
            if req.body.get("stream").and_then(Value::as_bool) == Some(true) {
                let mut frames = response_events(&req.body, &completion);
                if req.faults.close_mid_stream {
                    frames.truncate(frames.len() / 2);
                }
                return streamed(req, "text/event-stream; charset=utf-8", frames);
            }
            HttpResponse::Ok().json(response_object(&req.body, Some(&completion), "completed"))
        }
        ("GET", [id]) => {
            let completion = prompt(&stored).complete(req.wire.provider, &req.faults);
            let mut object = response_object(&stored, Some(&completion), "completed");
            object["id"] = json!(id);
            HttpResponse::Ok().json(object)
        }
        ("DELETE", [id]) => deleted(id, "response"),
        ("POST", [id, "cancel"]) => {
            let mut object = response_object(&stored, None, "cancelled");
            object["id"] = json!(id);
            HttpResponse::Ok().json(object)
        }
        ("GET", [_, "input_items"]) => list(vec![json!({
            "id": "msg_mock_input", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": "stored input"}]
        })]),
        _ => super::not_found(req.http.path()),
    }
}

/// The object kind of an assistants-family collection.
fn kind(collection: &str) -> &'static str {
    match collection {
        "assistants" => "assistant",
        "threads" => "thread",
        "messages" => "thread.message",
        "runs" => "thread.run",
        "steps" => "thread.run.step",
        "vector_stores" => "vector_store",
        "files" => "vector_store.file",
        _ => "object",
    }
}

/// One object of `kind`: the request's fields, the ids from the path, and what the kind needs.
fn object(kind: &str, id: &str, parents: &Map<String, Value>, body: &Value) -> Value {
    let mut object = Map::new();
    if let Value::Object(fields) = body {
        object.extend(
            fields
                .iter()
                .filter(|(k, _)| *k != "stream")
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    object.extend(parents.clone());
    object.insert("id".into(), json!(id));
    object.insert("object".into(), json!(kind));
    object.insert("created_at".into(), json!(CREATED));
    object.entry("metadata").or_insert(json!({}));
    match kind {
        "assistant" => {
            object.entry("tools").or_insert(json!([]));
            object.entry("model").or_insert(json!("gpt-4o-mini"));
        }
        "thread.message" => {
            let text = text_of(&object.get("content").cloned().unwrap_or(json!(""))).into_owned();
            object.insert(
                "role".into(),
                object.get("role").cloned().unwrap_or(json!("user")),
            );
            object.insert(
                "content".into(),
                json!([{"type": "text", "text": {"value": text, "annotations": []}}]),
            );
            object.insert("attachments".into(), json!([]));
        }
        "thread.run" => {
            object.entry("status").or_insert(json!("completed"));
            object.entry("model").or_insert(json!("gpt-4o-mini"));
            object.entry("assistant_id").or_insert(json!("asst_mock_1"));
            object.entry("thread_id").or_insert(json!("thread_mock_1"));
            object.entry("tools").or_insert(json!([]));
            object.insert(
                "usage".into(),
                json!({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}),
            );
        }
        "thread.run.step" => {
            object.insert("type".into(), json!("message_creation"));
            object.insert("status".into(), json!("completed"));
            object.insert("step_details".into(), json!({"type": "message_creation", "message_creation": {"message_id": "msg_mock_1"}}));
        }
        _ => {}
    }
    Value::Object(object)
}

/// The streamed events of a run: created, a message built from deltas, completed, done.
fn run_events(run: &Value, provider: &str) -> Vec<Bytes> {
    let text = format!("Mock {provider} run answer");
    let message = |status: &str, content: Value| {
        json!({
            "id": "msg_mock_1", "object": "thread.message", "created_at": CREATED,
            "thread_id": run["thread_id"], "run_id": run["id"], "role": "assistant",
            "status": status, "content": content, "attachments": [], "metadata": {}
        })
    };
    let mut in_progress = run.clone();
    in_progress["status"] = json!("in_progress");
    let mut events = vec![
        sse_event("thread.run.created", &in_progress),
        sse_event("thread.run.in_progress", &in_progress),
        sse_event("thread.message.created", &message("in_progress", json!([]))),
    ];
    for word in super::reply::word_chunks(&text) {
        events.push(sse_event("thread.message.delta", &json!({
            "id": "msg_mock_1", "object": "thread.message.delta",
            "delta": {"content": [{"index": 0, "type": "text", "text": {"value": word, "annotations": []}}]}
        })));
    }
    events.push(sse_event(
        "thread.message.completed",
        &message(
            "completed",
            json!([{"type": "text", "text": {"value": text, "annotations": []}}]),
        ),
    ));
    events.push(sse_event("thread.run.completed", run));
    events.push(Bytes::from_static(b"event: done\ndata: [DONE]\n\n"));
    events
}

fn parent_key(collection: &str) -> &'static str {
    match collection {
        "assistants" => "assistant_id",
        "threads" => "thread_id",
        "runs" => "run_id",
        "messages" => "message_id",
        "vector_stores" => "vector_store_id",
        _ => "parent_id",
    }
}

/// The assistants family by path shape: a collection (list, create), an object (retrieve,
/// modify, delete) or an action on one (`cancel`, `submit_tool_outputs`).
pub(crate) fn assistants(req: &ApiRequest<'_>) -> HttpResponse {
    let segments = &req.segments;
    let mut parents = Map::new();
    let mut at = 0;
    // `collection/id` pairs above the last collection become the object's parent ids.
    while segments.len() - at > 2
        && !(segments.len() - at == 3
            && matches!(segments[at + 2], "cancel" | "submit_tool_outputs"))
    {
        parents.insert(parent_key(segments[at]).into(), json!(segments[at + 1]));
        at += 2;
    }
    let (collection, id, action) = match &segments[at..] {
        // Create a thread and run it in one call.
        ["threads", "runs"] => ("runs", None, None),
        [c] => (*c, None, None),
        [c, id] => (*c, Some(*id), None),
        [c, id, action] => (*c, Some(*id), Some(*action)),
        _ => return super::not_found(req.http.path()),
    };
    let kind = kind(collection);
    let new_id = format!("{}_mock_1", kind.rsplit('.').next().unwrap_or(kind));
    match (req.method.as_str(), id, action) {
        ("GET", None, _) => list(vec![object(kind, &new_id, &parents, &Value::Null)]),
        ("POST", _, _) => {
            let id = id.unwrap_or(&new_id);
            let mut made = object(kind, id, &parents, &req.body);
            if let Some(action) = action {
                made["status"] = json!(if action == "cancel" {
                    "cancelling"
                } else {
                    "queued"
                });
            }
            if kind == "thread.run" && req.body.get("stream").and_then(Value::as_bool) == Some(true)
            {
                return streamed(
                    req,
                    "text/event-stream",
                    run_events(&made, req.wire.provider),
                );
            }
            HttpResponse::Ok().json(made)
        }
        ("GET", Some(id), None) => {
            HttpResponse::Ok().json(object(kind, id, &parents, &Value::Null))
        }
        ("DELETE", Some(id), None) => deleted(id, &format!("{kind}.deleted")),
        _ => super::not_found(req.http.path()),
    }
}
