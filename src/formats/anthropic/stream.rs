//! OpenAI chat chunks (what every driver's stream produces) -> Anthropic's streaming event
//! sequence: `message_start`, then per content block `content_block_start` / `_delta` /
//! `_stop` (text, `thinking` with `signature_delta`, `tool_use` with `input_json_delta`), then
//! `message_delta` (stop reason and usage) and `message_stop`.
//! https://docs.anthropic.com/en/api/messages-streaming
//!
//! It wraps the route's own stream translator, so every provider gets the same sequence and
//! its framing, usage and truncation rules stay in one place.

use bytes::{BufMut, BytesMut};
use serde_json::{json, Value};

use super::response::{error_type, stop, usage as usage_of};
use crate::formats::reencode::{ChatEvents, Reencoded};
use crate::providers::StreamTranslate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, by its OpenAI `index`.
    Tool(u64),
}

/// The Anthropic event sequence over the route's OpenAI chat stream.
pub type AnthropicEvents = Reencoded<Messages>;

impl AnthropicEvents {
    pub fn new(
        inner: Box<dyn StreamTranslate>,
        id: String,
        model: String,
        input_estimate: u64,
    ) -> Self {
        let messages = Messages {
            id,
            model,
            input_estimate,
            open: None,
            next_index: 0,
            stop_reason: None,
            stop_sequence: Value::Null,
            signature: None,
        };
        Reencoded::wrap(inner, messages)
    }
}

pub struct Messages {
    id: String,
    model: String,
    /// The request's token estimate, for `message_start` (the exact count comes at the end).
    input_estimate: u64,
    open: Option<Block>,
    /// Index of the next content block.
    next_index: u64,
    stop_reason: Option<&'static str>,
    stop_sequence: Value,
    signature: Option<String>,
}

impl ChatEvents for Messages {
    fn start(&mut self, model: Option<&str>, out: &mut BytesMut) {
        if let Some(model) = model {
            self.model = model.to_string();
        }
        let message = json!({
            "type": "message_start",
            "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.input_estimate, "output_tokens": 0,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            },
        });
        write(out, "message_start", &message);
    }

    fn choice(&mut self, choice: &Value, out: &mut BytesMut) {
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(r) = delta.get("reasoning_content").and_then(Value::as_str) {
            if !r.is_empty() {
                self.open_block(Block::Thinking, out);
                let delta = json!({"type": "thinking_delta", "thinking": r});
                self.block_delta(out, delta);
            }
        }
        let signatures = delta.get("thinking_blocks").and_then(Value::as_array);
        for block in signatures.into_iter().flatten() {
            if let Some(s) = block.get("signature").and_then(Value::as_str) {
                self.signature = Some(s.to_string());
            }
        }
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            if !text.is_empty() {
                self.open_block(Block::Text, out);
                self.block_delta(out, json!({"type": "text_delta", "text": text}));
            }
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.tool_delta(call, out);
        }
        if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
            let (reason, sequence) = stop(choice);
            self.stop_reason = Some(reason);
            self.stop_sequence = sequence;
        }
    }

    fn end(&mut self, usage: Option<&Value>, out: &mut BytesMut) {
        self.close_block(out);
        let event = json!({
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"),
                      "stop_sequence": self.stop_sequence},
            "usage": usage_of(usage),
        });
        write(out, "message_delta", &event);
        write(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn error(&mut self, message: &str, out: &mut BytesMut) {
        let event =
            json!({"type": "error", "error": {"type": error_type(500), "message": message}});
        write(out, "error", &event);
    }

    fn finished(&self) -> bool {
        self.stop_reason.is_some()
    }
}

impl Messages {
    fn tool_delta(&mut self, call: &Value, out: &mut BytesMut) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function").unwrap_or(&Value::Null);
        if self.open != Some(Block::Tool(index)) {
            self.close_block(out);
            let block = json!({
                "type": "tool_use",
                "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
                "name": function.get("name").and_then(Value::as_str).unwrap_or_default(),
                "input": {},
            });
            self.start_block(Block::Tool(index), block, out);
        }
        if let Some(args) = function.get("arguments").and_then(Value::as_str) {
            if !args.is_empty() {
                self.block_delta(
                    out,
                    json!({"type": "input_json_delta", "partial_json": args}),
                );
            }
        }
    }

    fn open_block(&mut self, block: Block, out: &mut BytesMut) {
        if self.open == Some(block) {
            return;
        }
        self.close_block(out);
        let content = match block {
            Block::Text => json!({"type": "text", "text": ""}),
            _ => json!({"type": "thinking", "thinking": "", "signature": ""}),
        };
        self.start_block(block, content, out);
    }

    fn start_block(&mut self, block: Block, content: Value, out: &mut BytesMut) {
        self.open = Some(block);
        let event = json!({"type": "content_block_start", "index": self.next_index, "content_block": content});
        write(out, "content_block_start", &event);
    }

    fn block_delta(&mut self, out: &mut BytesMut, delta: Value) {
        let event =
            json!({"type": "content_block_delta", "index": self.next_index, "delta": delta});
        write(out, "content_block_delta", &event);
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        let Some(block) = self.open.take() else {
            return;
        };
        if block == Block::Thinking {
            if let Some(signature) = self.signature.take() {
                let delta = json!({"type": "signature_delta", "signature": signature});
                self.block_delta(out, delta);
            }
        }
        let event = json!({"type": "content_block_stop", "index": self.next_index});
        write(out, "content_block_stop", &event);
        self.next_index += 1;
    }
}

fn write(out: &mut BytesMut, name: &str, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::sse::SseDecoder;
    use crate::providers::RawPassthrough;
    use crate::providers::StreamError;
    use proptest::prelude::*;

    /// An OpenAI stream with reasoning, text, two tool calls, finish and usage.
    const OPENAI: &str = concat!(
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"Hmm\"}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"thinking_blocks\":[{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"sig\"}]}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\u00e9\"}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"add\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"2}\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"function\":{\"name\":\"mul\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(input: &[u8], cuts: &[usize]) -> (Vec<(String, Value)>, Result<(), StreamError>) {
        let mut s = AnthropicEvents::new(Box::new(RawPassthrough), "msg_1".into(), "m".into(), 5);
        let mut out = BytesMut::new();
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let cut = cut.clamp(last, input.len());
            s.feed(&input[last..cut], &mut out).unwrap();
            last = cut;
        }
        let result = s.finish(&mut out);
        let mut events = Vec::new();
        let mut decoder = SseDecoder::new();
        let mut raw = Vec::new();
        decoder.feed(&out, &mut raw);
        for e in raw {
            events.push((e.event.unwrap(), serde_json::from_str(&e.data).unwrap()));
        }
        (events, result)
    }

    #[test]
    fn the_full_anthropic_event_sequence() {
        let (events, result) = run(OPENAI.as_bytes(), &[]);
        result.unwrap();
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        // Four blocks: thinking (delta + signature), text (2 deltas), two tool calls.
        let block = |deltas: usize| {
            let mut b = vec!["content_block_start"];
            b.extend(std::iter::repeat_n("content_block_delta", deltas));
            b.push("content_block_stop");
            b
        };
        let mut expected = vec!["message_start"];
        for deltas in [2, 2, 2, 1] {
            expected.extend(block(deltas));
        }
        expected.extend(["message_delta", "message_stop"]);
        assert_eq!(names, expected);
        let start = &events[0].1["message"];
        assert_eq!(start["id"], "msg_1");
        assert_eq!(start["model"], "gpt-x");
        assert_eq!(start["usage"]["input_tokens"], 5);
        assert_eq!(events[1].1["content_block"]["type"], "thinking");
        assert_eq!(
            events[2].1["delta"],
            json!({"type": "thinking_delta", "thinking": "Hmm"})
        );
        assert_eq!(
            events[3].1["delta"],
            json!({"type": "signature_delta", "signature": "sig"})
        );
        assert_eq!(
            events[5].1,
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(events[7].1["delta"]["text"], "lo é");
        assert_eq!(
            events[9].1["content_block"],
            json!({"type": "tool_use", "id": "call_1", "name": "add", "input": {}})
        );
        assert_eq!(
            events[10].1["delta"],
            json!({"type": "input_json_delta", "partial_json": "{\"a\":"})
        );
        assert_eq!(events[13].1["index"], 3);
        assert_eq!(events[16].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[16].1["usage"]["output_tokens"], 4);
        assert_eq!(events[16].1["usage"]["input_tokens"], 9);
    }

    #[test]
    fn a_named_stop_sequence_reaches_message_delta() {
        let input = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\",\"stop_reason\":\"###\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let (events, result) = run(input.as_bytes(), &[]);
        result.unwrap();
        let delta = &events.iter().find(|e| e.0 == "message_delta").unwrap().1;
        assert_eq!(delta["delta"]["stop_reason"], "stop_sequence");
        assert_eq!(delta["delta"]["stop_sequence"], "###");
    }

    #[test]
    fn an_error_event_ends_the_stream_as_an_anthropic_error() {
        let input = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"boom\"}}\n\ndata: [DONE]\n\n";
        let (events, _) = run(input.as_bytes(), &[]);
        let last = events.last().unwrap();
        assert_eq!(last.0, "error");
        assert_eq!(last.1["error"]["message"], "boom");
    }

    #[test]
    fn a_stream_cut_short_is_a_truncation_error() {
        let input = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
        let (_, result) = run(input.as_bytes(), &[]);
        assert!(result.is_err());
        let mut s = AnthropicEvents::new(Box::new(RawPassthrough), "i".into(), "m".into(), 0);
        let mut out = BytesMut::new();
        s.write_error(&mut out, "idle");
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .starts_with("event: error\n"));
    }

    /// Each provider's own stream, through its driver and then this translator: one cut at
    /// every byte gives the same Anthropic events as the whole body.
    #[test]
    fn provider_streams_split_anywhere_give_the_same_events() {
        use crate::config::ai_proxy::RouteType;
        use crate::providers::testkit::{ctx, fixture_bytes, fixture_config};
        use crate::providers::Driver;
        for (config, stream, tool) in [
            (
                "bedrock/chat/config.json",
                "bedrock/tools-stream/upstream-stream.bin",
                true,
            ),
            (
                "bedrock/chat/config.json",
                "bedrock/chat-stream/upstream-stream.bin",
                false,
            ),
            (
                "gemini/chat/config.json",
                "gemini/tools-stream/upstream-stream.txt",
                true,
            ),
            (
                "anthropic/chat/config.json",
                "anthropic/chat-stream-tools/upstream-stream.txt",
                true,
            ),
        ] {
            let config = fixture_config(config);
            let driver = Driver::from_config(&config).unwrap();
            let options = config.model.options.clone().unwrap_or_default();
            let c = ctx(RouteType::Chat, "m", true, &options);
            let input = fixture_bytes(stream);
            let events = |cut: usize| {
                let mut s = AnthropicEvents::new(driver.stream(&c), "msg_1".into(), "m".into(), 1);
                let mut out = BytesMut::new();
                s.feed(&input[..cut], &mut out).unwrap();
                s.feed(&input[cut..], &mut out).unwrap();
                s.finish(&mut out).unwrap();
                let mut decoded = Vec::new();
                SseDecoder::new().feed(&out, &mut decoded);
                decoded
            };
            let whole = events(input.len());
            let names: Vec<&str> = whole.iter().filter_map(|e| e.event.as_deref()).collect();
            assert_eq!(names.first(), Some(&"message_start"), "{stream}");
            assert_eq!(names.last(), Some(&"message_stop"), "{stream}");
            assert!(names.contains(&"content_block_start"), "{stream}");
            let tool_use = whole.iter().any(|e| e.data.contains("input_json_delta"));
            assert_eq!(tool_use, tool, "{stream}: {names:?}");
            for cut in 0..input.len() {
                assert_eq!(events(cut), whole, "{stream} cut at {cut}");
            }
        }
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(cuts in proptest::collection::vec(0usize..OPENAI.len(), 0..8)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (whole, _) = run(OPENAI.as_bytes(), &[]);
            let (split, result) = run(OPENAI.as_bytes(), &cuts);
            prop_assert!(result.is_ok());
            prop_assert_eq!(whole, split);
        }
    }
}
