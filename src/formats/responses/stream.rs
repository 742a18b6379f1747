//! OpenAI chat chunks (what every driver's stream produces) -> the typed Responses event
//! sequence: `response.created`, `response.in_progress`, per output item
//! `response.output_item.added`, its deltas (`response.reasoning_summary_part.added` /
//! `response.reasoning_summary_text.delta` / `.done` / `response.reasoning_summary_part.done`
//! for the provider's reasoning, `response.content_part.added` /
//! `response.output_text.delta` / `.done` / `response.content_part.done` for text,
//! `response.function_call_arguments.delta` / `.done` for a call) and
//! `response.output_item.done`, then `response.completed` (or `response.incomplete`) carrying
//! the whole Response with usage. Every event has its `sequence_number`; no `[DONE]`.
//!
//! It wraps the route's own stream translator, as the Anthropic format does, so framing,
//! usage and truncation rules stay in one place per provider.

use bytes::{BufMut, BytesMut};
use serde_json::{json, Map, Value};

use super::response::{call_item, message_item, object, reasoning_item, status_of, Meta};
use super::{call_item_id, message_id, reasoning_id, usage as usage_of};
use crate::formats::reencode::{ChatEvents, Reencoded};
use crate::providers::StreamTranslate;

/// The output item being streamed.
enum Open {
    Reasoning {
        text: String,
        /// The signature that closes the block (`delta.thinking_blocks`).
        signature: Option<String>,
    },
    Message {
        text: String,
    },
    Call {
        /// The chat tool call's `index`.
        index: u64,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// The Responses event sequence over the route's OpenAI chat stream.
pub type ResponsesEvents = Reencoded<Items>;

impl ResponsesEvents {
    pub fn new(inner: Box<dyn StreamTranslate>, meta: Meta<'_>) -> Self {
        let items = Items {
            request_id: meta.request_id.to_string(),
            model: meta.model.to_string(),
            created: meta.created,
            echo: meta.echo.clone(),
            sequence: 0,
            open: None,
            output: Vec::new(),
            calls: 0,
            reasonings: 0,
            finish_reason: None,
        };
        Reencoded::wrap(inner, items)
    }
}

pub struct Items {
    request_id: String,
    model: String,
    created: u64,
    echo: Map<String, Value>,
    sequence: u64,
    open: Option<Open>,
    /// Items done so far, for the final Response.
    output: Vec<Value>,
    calls: u64,
    reasonings: u64,
    finish_reason: Option<String>,
}

impl ChatEvents for Items {
    fn start(&mut self, model: Option<&str>, out: &mut BytesMut) {
        if let Some(model) = model {
            self.model = model.to_string();
        }
        let response = object(&self.meta(), "in_progress", Vec::new(), None);
        self.write(out, "response.created", json!({"response": response}));
        let response = object(&self.meta(), "in_progress", Vec::new(), None);
        self.write(out, "response.in_progress", json!({"response": response}));
    }

    fn choice(&mut self, choice: &Value, out: &mut BytesMut) {
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("reasoning_content").and_then(Value::as_str) {
            if !text.is_empty() {
                self.reasoning_delta(text, out);
            }
        }
        let signatures = delta.get("thinking_blocks").and_then(Value::as_array);
        for block in signatures.into_iter().flatten() {
            if let (
                Some(signature),
                Some(Open::Reasoning {
                    signature: open, ..
                }),
            ) = (
                block.get("signature").and_then(Value::as_str),
                &mut self.open,
            ) {
                *open = Some(signature.to_string());
            }
        }
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            if !text.is_empty() {
                self.text_delta(text, out);
            }
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.call_delta(call, out);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
    }

    fn end(&mut self, usage: Option<&Value>, out: &mut BytesMut) {
        self.close(out);
        let status = status_of(self.finish_reason.as_deref());
        let output = std::mem::take(&mut self.output);
        let response = object(&self.meta(), status, output, Some(usage_of(usage)));
        let name = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.write(out, name, json!({"response": response}));
    }

    fn error(&mut self, message: &str, out: &mut BytesMut) {
        self.write(
            out,
            "error",
            json!({"code": "server_error", "message": message, "param": null}),
        );
    }

    fn finished(&self) -> bool {
        self.finish_reason.is_some()
    }
}

impl Items {
    fn meta(&self) -> Meta<'_> {
        Meta {
            request_id: &self.request_id,
            model: &self.model,
            created: self.created,
            echo: &self.echo,
        }
    }

    fn write(&mut self, out: &mut BytesMut, name: &str, mut data: Value) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(data.to_string().as_bytes());
        out.put_slice(b"\n\n");
    }

    fn output_index(&self) -> usize {
        self.output.len()
    }

    fn reasoning_delta(&mut self, text: &str, out: &mut BytesMut) {
        let item_id = reasoning_id(&self.request_id, self.reasonings);
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            let open = Open::Reasoning {
                text: String::new(),
                signature: None,
            };
            let output_index = self.open_item(out, open, |s| {
                reasoning_item(&s.request_id, s.reasonings, "", &[], "in_progress")
            });
            self.write(
                out,
                "response.reasoning_summary_part.added",
                json!({"item_id": item_id, "output_index": output_index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            );
        }
        if let Some(Open::Reasoning { text: all, .. }) = &mut self.open {
            all.push_str(text);
        }
        let output_index = self.output_index();
        self.write(
            out,
            "response.reasoning_summary_text.delta",
            json!({"item_id": item_id, "output_index": output_index, "summary_index": 0,
                   "delta": text}),
        );
    }

    fn text_delta(&mut self, text: &str, out: &mut BytesMut) {
        let item_id = message_id(&self.request_id);
        if !matches!(self.open, Some(Open::Message { .. })) {
            let open = Open::Message {
                text: String::new(),
            };
            let index = self.open_item(out, open, |s| {
                let mut item = message_item(&s.request_id, "", "in_progress");
                item["content"] = json!([]);
                item
            });
            self.write(
                out,
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
        }
        if let Some(Open::Message { text: all }) = &mut self.open {
            all.push_str(text);
        }
        let index = self.output_index();
        self.write(
            out,
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": index, "content_index": 0,
                   "delta": text, "logprobs": []}),
        );
    }

    fn call_delta(&mut self, call: &Value, out: &mut BytesMut) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function").unwrap_or(&Value::Null);
        if !matches!(self.open, Some(Open::Call { index: open, .. }) if open == index) {
            let call_id = call.get("id").and_then(Value::as_str).unwrap_or_default();
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let open = Open::Call {
                index,
                call_id: call_id.to_string(),
                name: name.to_string(),
                arguments: String::new(),
            };
            self.open_item(out, open, |s| {
                call_item(&s.request_id, s.calls, call_id, name, "", "in_progress")
            });
        }
        let Some(delta) = function
            .get("arguments")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        if let Some(Open::Call { arguments, .. }) = &mut self.open {
            arguments.push_str(delta);
        }
        let item_id = call_item_id(&self.request_id, self.calls);
        let output_index = self.output_index();
        self.write(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": delta}),
        );
    }

    /// Ends the item in progress and starts `open` as the next output item
    /// (`response.output_item.added`, with the in-progress `item` built after the close, since
    /// closing counts the item just ended); returns its output index for the caller's own
    /// `.added` events.
    fn open_item(
        &mut self,
        out: &mut BytesMut,
        open: Open,
        item: impl FnOnce(&Self) -> Value,
    ) -> usize {
        self.close(out);
        let item = item(self);
        let output_index = self.output_index();
        self.write(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        self.open = Some(open);
        output_index
    }

    /// Ends the open item with its `.done` events.
    fn close(&mut self, out: &mut BytesMut) {
        let output_index = self.output_index();
        let item = match self.open.take() {
            None => return,
            Some(Open::Reasoning { text, signature }) => {
                let item_id = reasoning_id(&self.request_id, self.reasonings);
                self.write(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": item_id, "output_index": output_index, "summary_index": 0,
                           "text": text}),
                );
                self.write(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": item_id, "output_index": output_index, "summary_index": 0,
                           "part": {"type": "summary_text", "text": text}}),
                );
                let blocks: Vec<Value> = signature
                    .map(|s| json!({"type": "thinking", "thinking": text, "signature": s}))
                    .into_iter()
                    .collect();
                let item = reasoning_item(
                    &self.request_id,
                    self.reasonings,
                    &text,
                    &blocks,
                    "completed",
                );
                self.reasonings += 1;
                item
            }
            Some(Open::Message { text }) => {
                let item_id = message_id(&self.request_id);
                self.write(
                    out,
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                           "text": text, "logprobs": []}),
                );
                self.write(
                    out,
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                           "part": {"type": "output_text", "text": text, "annotations": []}}),
                );
                message_item(&self.request_id, &text, "completed")
            }
            Some(Open::Call {
                call_id,
                name,
                arguments,
                ..
            }) => {
                let arguments = if arguments.is_empty() {
                    "{}".to_string()
                } else {
                    arguments
                };
                let item_id = call_item_id(&self.request_id, self.calls);
                self.write(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": output_index,
                           "arguments": arguments}),
                );
                let item = call_item(
                    &self.request_id,
                    self.calls,
                    &call_id,
                    &name,
                    &arguments,
                    "completed",
                );
                self.calls += 1;
                item
            }
        };
        self.write(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        self.output.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::responses::tests::events_of;
    use crate::providers::RawPassthrough;
    use crate::providers::StreamError;

    const CHAT: &str = concat!(
        "data: {\"model\":\"claude-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"add\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":2}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(input: &[u8], cut: usize) -> (Vec<(String, Value)>, Result<(), StreamError>) {
        let echo = serde_json::Map::new();
        let meta = Meta {
            request_id: "r1",
            model: "m",
            created: 5,
            echo: &echo,
        };
        let mut s = ResponsesEvents::new(Box::new(RawPassthrough), meta);
        let mut out = BytesMut::new();
        s.feed(&input[..cut], &mut out).unwrap();
        s.feed(&input[cut..], &mut out).unwrap();
        let result = s.finish(&mut out);
        (events_of(&out), result)
    }

    #[test]
    fn the_full_responses_event_sequence() {
        let (events, result) = run(CHAT.as_bytes(), CHAT.len());
        result.unwrap();
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (name, data)) in events.iter().enumerate() {
            assert_eq!(data["type"], name.as_str());
            assert_eq!(data["sequence_number"], i);
        }
        assert_eq!(events[0].1["response"]["model"], "claude-x");
        assert_eq!(events[6].1["text"], "Hello");
        assert_eq!(events[9].1["output_index"], 1);
        assert_eq!(events[11].1["arguments"], "{\"a\":2}");
        let done = &events[13].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][1]["call_id"], "call_1");
        assert_eq!(done["usage"]["total_tokens"], 13);
    }

    #[test]
    fn split_anywhere_gives_the_same_events() {
        let whole = run(CHAT.as_bytes(), CHAT.len()).0;
        for cut in 0..CHAT.len() {
            assert_eq!(run(CHAT.as_bytes(), cut).0, whole, "cut at {cut}");
        }
    }

    #[test]
    fn reasoning_after_text_is_the_next_output_item() {
        // Interleaved thinking: the message closes first, so the reasoning is output 1.
        let input = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let (events, result) = run(input.as_bytes(), input.len());
        result.unwrap();
        let reasoning: Vec<&Value> = events
            .iter()
            .filter(|(name, data)| {
                name.starts_with("response.reasoning_summary")
                    || data["item"]["type"] == "reasoning"
            })
            .map(|(_, data)| data)
            .collect();
        assert_eq!(reasoning.len(), 6, "{events:?}");
        for data in reasoning {
            assert_eq!(data["output_index"], 1, "{data}");
        }
        let done = &events.last().unwrap().1["response"]["output"];
        assert_eq!(done[0]["type"], "message");
        assert_eq!(done[1]["type"], "reasoning");
    }

    #[test]
    fn errors_and_truncation_end_with_an_error_event() {
        let input = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"boom\"}}\n\n";
        let (events, _) = run(input.as_bytes(), input.len());
        let last = events.last().unwrap();
        assert_eq!(last.0, "error");
        assert_eq!(last.1["message"], "boom");
        let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
        assert!(run(cut.as_bytes(), cut.len()).1.is_err());
    }
}
