//! Anthropic SSE (Messages events, legacy `completion` events) -> OpenAI chunks.

use super::*;

// ---------------------------------------------------------------------------------------------
// Stream wire types
// ---------------------------------------------------------------------------------------------

/// One SSE event, told apart by the `type` in its data (which always repeats the `event:` name).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicStreamEvent {
    MessageStart {
        #[serde(default)]
        message: AnthropicStreamMessage,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u64,
        content_block: AnthropicResponseBlock,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u64,
        delta: AnthropicBlockDelta,
    },
    ContentBlockStop {
        #[serde(default)]
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: AnthropicMessageDelta,
        #[serde(default, deserialize_with = "lenient")]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    /// Legacy Text Completions stream.
    Completion(AnthropicCompletion),
    Error {
        #[serde(default)]
        error: AnthropicError,
    },
    /// `ping` and anything newer: nothing to send.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Default, Deserialize)]
struct AnthropicStreamMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    usage: Option<AnthropicUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicBlockDelta {
    TextDelta {
        #[serde(default)]
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    ThinkingDelta {
        #[serde(default)]
        thinking: String,
    },
    SignatureDelta {
        #[serde(default)]
        signature: String,
    },
    /// `citations_delta` and anything newer: no OpenAI equivalent.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Default, Deserialize)]
struct AnthropicMessageDelta {
    #[serde(default)]
    stop_reason: Option<AnthropicStopReason>,
}

// ---------------------------------------------------------------------------------------------
// Stream translation
// ---------------------------------------------------------------------------------------------

/// A `tool_use` content block being streamed as OpenAI tool call `index`.
#[derive(Debug)]
struct ToolBlock {
    block: u64,
    index: u32,
    has_arguments: bool,
}

/// Anthropic SSE (Messages events, or legacy `completion` events) -> OpenAI chunks.
pub type AnthropicStream = DecodedStream<SseDecoder, AnthropicEvents>;

impl AnthropicStream {
    pub fn new(ctx: &RequestCtx<'_>) -> Self {
        let mut chunks = ctx.chunk_builder();
        if ctx.route_type == RouteType::Completions {
            chunks.set_id(&ctx.meta().id.replacen("chatcmpl-", "cmpl-", 1));
        }
        let events = AnthropicEvents {
            format_block: None,
            opened: false,
            request_id: ctx.request_id.to_string(),
            tools: Vec::new(),
            usage: AnthropicUsage::default(),
        };
        DecodedStream::from_parts(SseDecoder::new(), events, chunks)
    }
}

pub struct AnthropicEvents {
    /// The block of the `response_format` tool call, streamed as content.
    format_block: Option<u64>,
    /// An event was handled; `message_start` may set the id only before that.
    opened: bool,
    request_id: String,
    tools: Vec<ToolBlock>,
    usage: AnthropicUsage,
}

impl EventTranslate<SseEvent> for AnthropicEvents {
    fn event(
        &mut self,
        event: SseEvent,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        // Nothing follows `message_stop`. Anthropic sends no `[DONE]`; one added by a proxy in
        // between means nothing.
        if chunks.is_done() || event.data.trim().is_empty() || event.data == "[DONE]" {
            return Ok(());
        }
        let e: AnthropicStreamEvent = serde_json::from_str(&event.data)
            .map_err(|err| StreamError(format!("undecodable anthropic stream event: {err}")))?;
        self.translate(e, chunks, out)
    }
}

impl AnthropicEvents {
    fn add_usage(&mut self, usage: Option<&AnthropicUsage>, chunks: &mut ChunkBuilder) {
        if let Some(u) = usage {
            self.usage.merge(u);
            chunks.usage = self.usage.to_openai();
        }
    }

    /// Chunks carry the upstream id (`msg_...`, `compl_...`) when the first event names one:
    /// nothing was written yet.
    fn adopt_id(&mut self, id: Option<String>, chunks: &mut ChunkBuilder) {
        if self.opened {
            return;
        }
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            chunks.set_id(&id);
        }
    }

    fn tool_block(&mut self, block: u64) -> Option<&mut ToolBlock> {
        self.tools.iter_mut().rev().find(|t| t.block == block)
    }

    fn translate(
        &mut self,
        e: AnthropicStreamEvent,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        match e {
            AnthropicStreamEvent::MessageStart { message } => {
                self.adopt_id(message.id, chunks);
                if let Some(model) = message.model.filter(|m| !m.is_empty()) {
                    chunks.set_model(&model);
                }
                self.add_usage(message.usage.as_ref(), chunks);
                chunks.start(out);
            }
            AnthropicStreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                AnthropicResponseBlock::Text { text } => chunks.text(out, &text),
                AnthropicResponseBlock::ToolUse { name, input, .. }
                    if name == RESPONSE_FORMAT_TOOL =>
                {
                    self.format_block = Some(index);
                    if input.as_object().is_some_and(|o| !o.is_empty()) {
                        chunks.text(out, &input.to_string());
                    }
                }
                AnthropicResponseBlock::ToolUse { id, name, input } => {
                    let tool = self.tools.len() as u32;
                    let id = if id.is_empty() {
                        format!("call_{}_{tool}", self.request_id)
                    } else {
                        id
                    };
                    chunks.tool_call_start(out, tool, &id, &name);
                    // The input normally arrives as deltas; a non-empty start is sent whole.
                    let whole = input.as_object().is_some_and(|o| !o.is_empty());
                    if whole {
                        chunks.tool_call_arguments(out, tool, &input.to_string());
                    }
                    self.tools.push(ToolBlock {
                        block: index,
                        index: tool,
                        has_arguments: whole,
                    });
                }
                AnthropicResponseBlock::Thinking { thinking, .. } => {
                    chunks.reasoning(out, &thinking)
                }
                AnthropicResponseBlock::RedactedThinking { .. }
                | AnthropicResponseBlock::Unknown => {}
            },
            AnthropicStreamEvent::ContentBlockDelta { index, delta } => match delta {
                AnthropicBlockDelta::TextDelta { text } => chunks.text(out, &text),
                AnthropicBlockDelta::InputJsonDelta { partial_json }
                    if self.format_block == Some(index) =>
                {
                    chunks.text(out, &partial_json)
                }
                AnthropicBlockDelta::InputJsonDelta { partial_json } => {
                    if let Some(tool) = self.tool_block(index) {
                        tool.has_arguments |= !partial_json.is_empty();
                        let tool = tool.index;
                        chunks.tool_call_arguments(out, tool, &partial_json);
                    }
                }
                AnthropicBlockDelta::ThinkingDelta { thinking } => chunks.reasoning(out, &thinking),
                AnthropicBlockDelta::SignatureDelta { signature } => {
                    chunks.thinking_signature(out, &signature)
                }
                AnthropicBlockDelta::Unknown => {}
            },
            AnthropicStreamEvent::ContentBlockStop { index } => {
                // A call without parameters streams no input: OpenAI clients expect `{}`.
                if let Some(tool) = self.tool_block(index).filter(|t| !t.has_arguments) {
                    tool.has_arguments = true;
                    let tool = tool.index;
                    chunks.tool_call_arguments(out, tool, "{}");
                }
            }
            AnthropicStreamEvent::MessageDelta { delta, usage } => {
                self.add_usage(usage.as_ref(), chunks);
                if let Some(reason) = delta.stop_reason {
                    let format_call = self.format_block.is_some();
                    let finish =
                        format_finish(reason.finish_reason(), format_call, self.tools.len());
                    chunks.finish(out, finish);
                }
            }
            AnthropicStreamEvent::MessageStop => chunks.done(out),
            AnthropicStreamEvent::Completion(c) => {
                self.adopt_id(c.id, chunks);
                if let Some(model) = c.model.filter(|m| !m.is_empty()) {
                    chunks.set_model(&model);
                }
                chunks.text(out, c.completion.as_deref().unwrap_or(""));
                if let Some(reason) = c.stop_reason {
                    chunks.finish(out, reason.finish_reason());
                }
            }
            AnthropicStreamEvent::Error { error } => return Err(StreamError(error.message())),
            AnthropicStreamEvent::Unknown => return Ok(()),
        }
        self.opened = true;
        Ok(())
    }
}
