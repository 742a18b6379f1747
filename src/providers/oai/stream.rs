//! The OpenAI stream chunks and the builder that frames every synthesised stream.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::Value;

use super::response::{FinishReason, ResponseMeta, Usage};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Option<Value>,
    /// The stop sequence that ended the answer ([`ChatChoice::stop_reason`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<&'a str>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    /// A reasoning block's signature, as `[{"type":"thinking","thinking":"","signature":…}]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub thinking_blocks: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallDelta<'a> {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<TextChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextChunkChoice<'a> {
    pub index: u32,
    pub text: &'a str,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Option<Value>,
}

/// Appends one SSE event `data: <json>\n\n`.
pub fn write_event(out: &mut BytesMut, value: &impl Serialize) {
    out.put_slice(b"data: ");
    // Serialising our own types into a buffer cannot fail.
    let _ = serde_json::to_writer((&mut *out).writer(), value);
    out.put_slice(b"\n\n");
}

/// Appends an SSE event whose data is already serialised.
pub fn write_raw_event(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 8);
    // Data spanning several lines needs a `data: ` prefix on each (SSE framing).
    let mut rest = data;
    while let Some(end) = memchr::memchr(b'\n', rest) {
        out.put_slice(b"data: ");
        out.put_slice(&rest[..=end]);
        rest = &rest[end + 1..];
    }
    out.put_slice(b"data: ");
    out.put_slice(rest);
    out.put_slice(b"\n\n");
}

/// Appends the stream terminator.
pub fn write_done(out: &mut BytesMut) {
    out.put_slice(b"data: [DONE]\n\n");
}

/// Appends an error event the OpenAI SDKs raise as an APIError, for a stream that failed midway.
pub fn write_error_event(out: &mut BytesMut, message: &str) {
    write_event(
        out,
        &serde_json::json!({ "error": { "message": message, "type": "upstream_error" } }),
    );
}

/// Builds the OpenAI chunk sequence of a synthesised stream (every provider but the
/// OpenAI-format ones, whose chunks pass through). Owns the per-stream state the framing needs:
/// whether the role was sent, the finish reason, the usage, and whether the client asked for a
/// usage chunk.
#[derive(Debug, Clone)]
pub struct ChunkBuilder {
    meta: ResponseMeta,
    completions: bool,
    include_usage: bool,
    role_sent: bool,
    finished: bool,
    /// `[DONE]` was written; the stream is over.
    done: bool,
    pub usage: Usage,
}

impl ChunkBuilder {
    /// `completions` selects `text_completion` chunks instead of `chat.completion.chunk`.
    pub fn new(meta: ResponseMeta, completions: bool, include_usage: bool) -> Self {
        ChunkBuilder {
            meta,
            completions,
            include_usage,
            role_sent: false,
            finished: false,
            done: false,
            usage: Usage::default(),
        }
    }

    pub fn model(&self) -> &str {
        &self.meta.model
    }

    pub fn set_model(&mut self, model: &str) {
        if self.meta.model != model {
            self.meta.model = model.to_string();
        }
    }

    /// Takes the provider's own response id (Anthropic `msg_...`, Cohere `generation_id`). Call
    /// it before the first chunk is written, so one stream never shows two ids.
    pub fn set_id(&mut self, id: &str) {
        if self.meta.id != id {
            self.meta.id = id.to_string();
        }
    }

    fn chat(&mut self, out: &mut BytesMut, delta: Delta<'_>, finish: Option<FinishReason>) {
        self.chat_choice(out, delta, finish, None)
    }

    fn chat_choice(
        &mut self,
        out: &mut BytesMut,
        delta: Delta<'_>,
        finish: Option<FinishReason>,
        stop_reason: Option<&str>,
    ) {
        let mut delta = delta;
        if !self.role_sent {
            delta.role = Some("assistant");
            self.role_sent = true;
        }
        write_event(
            out,
            &ChatChunk {
                id: &self.meta.id,
                object: "chat.completion.chunk",
                created: self.meta.created,
                model: &self.meta.model,
                choices: vec![ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish,
                    logprobs: None,
                    stop_reason,
                }],
                usage: None,
            },
        );
    }

    fn text_chunk(&self, out: &mut BytesMut, text: &str, finish: Option<FinishReason>) {
        write_event(
            out,
            &TextChunk {
                id: &self.meta.id,
                object: "text_completion",
                created: self.meta.created,
                model: &self.meta.model,
                choices: vec![TextChunkChoice {
                    index: 0,
                    text,
                    finish_reason: finish,
                    logprobs: None,
                }],
                usage: None,
            },
        );
    }

    /// Sends the role-only opening chunk if nothing was sent yet (providers that open a stream
    /// before any text, like Anthropic's `message_start`).
    pub fn start(&mut self, out: &mut BytesMut) {
        if !self.role_sent && !self.completions {
            self.chat(
                out,
                Delta {
                    content: Some(""),
                    ..Delta::default()
                },
                None,
            );
        }
    }

    /// A piece of generated text. Empty text produces nothing.
    pub fn text(&mut self, out: &mut BytesMut, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.completions {
            self.text_chunk(out, text, None);
        } else {
            self.chat(
                out,
                Delta {
                    content: Some(text),
                    ..Delta::default()
                },
                None,
            );
        }
    }

    /// A piece of the model's reasoning (`delta.reasoning_content`). Empty text produces nothing.
    pub fn reasoning(&mut self, out: &mut BytesMut, text: &str) {
        if text.is_empty() || self.completions {
            return;
        }
        self.chat(
            out,
            Delta {
                reasoning_content: Some(text),
                ..Delta::default()
            },
            None,
        );
    }

    /// The signature that closes a reasoning block, for clients that send the block back.
    pub fn thinking_signature(&mut self, out: &mut BytesMut, signature: &str) {
        if signature.is_empty() || self.completions {
            return;
        }
        let block = serde_json::json!({"type": "thinking", "thinking": "", "signature": signature});
        self.chat(
            out,
            Delta {
                thinking_blocks: vec![block],
                ..Delta::default()
            },
            None,
        );
    }

    /// The first delta of tool call `index`: its id and function name.
    pub fn tool_call_start(&mut self, out: &mut BytesMut, index: u32, id: &str, name: &str) {
        self.chat(
            out,
            Delta {
                tool_calls: vec![ToolCallDelta {
                    index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments: "",
                    },
                }],
                ..Delta::default()
            },
            None,
        );
    }

    /// A fragment of tool call `index`'s JSON arguments.
    pub fn tool_call_arguments(&mut self, out: &mut BytesMut, index: u32, arguments: &str) {
        if arguments.is_empty() {
            return;
        }
        self.chat(
            out,
            Delta {
                tool_calls: vec![ToolCallDelta {
                    index,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments,
                    },
                }],
                ..Delta::default()
            },
            None,
        );
    }

    /// The chunk carrying the finish reason (sent once; later calls are ignored).
    pub fn finish(&mut self, out: &mut BytesMut, reason: FinishReason) {
        self.finish_at(out, reason, None);
    }

    /// The finish chunk, naming the stop sequence that ended a chat answer when known.
    pub fn finish_at(&mut self, out: &mut BytesMut, reason: FinishReason, stop: Option<&str>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.completions {
            self.text_chunk(out, "", Some(reason));
        } else {
            self.chat_choice(out, Delta::default(), Some(reason), stop);
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether [`ChunkBuilder::done`] was called: nothing may follow `[DONE]`.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Ends the stream: a finish chunk if none was sent, the usage chunk when the client asked
    /// for it (`stream_options.include_usage`), then `[DONE]`. Only the first call writes, so a
    /// provider that ends its stream explicitly (Anthropic's `message_stop`) is not closed twice
    /// when the body ends.
    pub fn done(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.finished {
            self.finish(out, FinishReason::Stop);
        }
        if self.include_usage {
            let object = if self.completions {
                "text_completion"
            } else {
                "chat.completion.chunk"
            };
            write_event(
                out,
                &ChatChunk {
                    id: &self.meta.id,
                    object,
                    created: self.meta.created,
                    model: &self.meta.model,
                    choices: Vec::new(),
                    usage: Some(self.usage),
                },
            );
        }
        write_done(out);
    }
}
