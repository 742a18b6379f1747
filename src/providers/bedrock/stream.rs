//! Bedrock stream translation: ConverseStream event-stream frames -> OpenAI chunks.

use super::*;

// Stream translation
// ---------------------------------------------------------------------------------------------

/// ConverseStream event-stream frames -> OpenAI chunks.
pub type BedrockStream = DecodedStream<EventStreamDecoder, BedrockEvents>;

impl BedrockStream {
    pub(super) fn new(ctx: &RequestCtx<'_>) -> Self {
        let events = BedrockEvents {
            tool_blocks: Vec::new(),
            format_block: None,
        };
        DecodedStream::from_parts(EventStreamDecoder::new(), events, ctx.chunk_builder())
    }
}

pub struct BedrockEvents {
    /// `contentBlockIndex` of each tool call, by OpenAI tool-call index.
    tool_blocks: Vec<u64>,
    /// `contentBlockIndex` of the `response_format` tool call, streamed as content.
    format_block: Option<u64>,
}

impl BedrockEvents {
    fn tool_index(&self, block: u64) -> Option<u32> {
        self.tool_blocks
            .iter()
            .position(|b| *b == block)
            .and_then(|i| u32::try_from(i).ok())
    }
}

impl EventTranslate<EventMessage> for BedrockEvents {
    fn event(
        &mut self,
        message: EventMessage,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        if matches!(message.message_type.as_deref(), Some("exception" | "error")) {
            return Err(stream_exception(&message));
        }
        let kind = BedrockEventType::parse(message.event_type.as_deref());
        let body = &message.body;
        match kind {
            BedrockEventType::MessageStart => chunks.start(out),
            BedrockEventType::ContentBlockStart => {
                let e: BedrockContentBlockStart = decode_event(kind, body)?;
                let tool = e.start.and_then(|s| s.tool_use);
                if tool
                    .as_ref()
                    .is_some_and(|t| t.name == RESPONSE_FORMAT_TOOL)
                {
                    self.format_block = Some(e.content_block_index);
                } else if let Some(tool) = tool {
                    let index = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
                    self.tool_blocks.push(e.content_block_index);
                    chunks.tool_call_start(out, index, &tool.tool_use_id, &tool.name);
                }
            }
            BedrockEventType::ContentBlockDelta => {
                let e: BedrockContentBlockDelta = decode_event(kind, body)?;
                let Some(delta) = e.delta else { return Ok(()) };
                if let Some(text) = &delta.text {
                    chunks.text(out, text);
                }
                if let Some(r) = &delta.reasoning_content {
                    chunks.reasoning(out, r.get("text").and_then(Value::as_str).unwrap_or(""));
                    let signature = r.get("signature").and_then(Value::as_str);
                    chunks.thinking_signature(out, signature.unwrap_or(""));
                }
                if let Some(tool) = delta
                    .tool_use
                    .as_ref()
                    .filter(|_| self.format_block == Some(e.content_block_index))
                {
                    chunks.text(out, &tool.input);
                } else if let Some(tool) = &delta.tool_use {
                    // Arguments of a block never started have no call to belong to.
                    if let Some(index) = self.tool_index(e.content_block_index) {
                        chunks.tool_call_arguments(out, index, &tool.input);
                    }
                }
            }
            BedrockEventType::MessageStop => {
                let e: BedrockMessageStop = decode_event(kind, body)?;
                let finish = match e.stop_reason {
                    Some(reason) => format_finish(
                        reason.finish_reason(),
                        self.format_block.is_some(),
                        self.tool_blocks.len(),
                    ),
                    None if !self.tool_blocks.is_empty() => FinishReason::ToolCalls,
                    None => FinishReason::Stop,
                };
                let stop = e
                    .additional_model_response_fields
                    .and_then(|f| f.stop_sequence);
                chunks.finish_at(out, finish, stop.as_deref());
            }
            BedrockEventType::Metadata => {
                let e: BedrockMetadata = decode_event(kind, body)?;
                if let Some(usage) = e.usage {
                    chunks.usage = usage.into();
                }
            }
            BedrockEventType::ContentBlockStop | BedrockEventType::Unknown => {}
        }
        Ok(())
    }
}

pub(super) fn decode_event<T: serde::de::DeserializeOwned>(
    kind: BedrockEventType,
    body: &[u8],
) -> Result<T, StreamError> {
    serde_json::from_slice(body)
        .map_err(|e| StreamError(format!("undecodable bedrock {kind:?} event: {e}")))
}

/// An exception frame (`throttlingException`, `validationException`, ...) ends the stream.
pub(super) fn stream_exception(message: &EventMessage) -> StreamError {
    let kind = message.exception_type.as_deref().unwrap_or("exception");
    let text = serde_json::from_slice::<BedrockErrorBody>(&message.body)
        .ok()
        .and_then(|b| b.message)
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&message.body)
                .chars()
                .take(512)
                .collect()
        });
    StreamError(format!("bedrock {kind}: {text}"))
}

// ---------------------------------------------------------------------------------------------
