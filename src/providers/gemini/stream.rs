//! Gemini stream translation: SSE or JSON-array framed responses -> OpenAI chunks.

use super::*;

// ---------------------------------------------------------------------------------------------
// Translation: stream
// ---------------------------------------------------------------------------------------------

/// Gemini stream events (SSE or JSON-array elements) -> OpenAI chunks.
pub type GeminiStream = DecodedStream<GeminiFrames, GeminiEvents>;

impl GeminiStream {
    pub fn new(ctx: &RequestCtx<'_>) -> Self {
        let events = GeminiEvents {
            request_id: ctx.request_id.to_string(),
            tool_calls: 0,
        };
        DecodedStream::from_parts(GeminiFrames::default(), events, ctx.chunk_builder())
    }
}

/// The body cut into `GenerateContentResponse` JSON documents, whatever the [`Framing`].
#[derive(Default)]
pub struct GeminiFrames {
    framing: Framing,
    sse: Vec<SseEvent>,
    array: Vec<JsonArrayItem>,
}

impl GeminiFrames {
    fn sse_payloads(&mut self, out: &mut Vec<Bytes>) {
        let events = self.sse.drain(..);
        let payloads = events.filter(|e| !e.data.is_empty() && e.data != "[DONE]");
        out.extend(payloads.map(|e| Bytes::from(e.data)));
    }
}

impl Frames for GeminiFrames {
    type Item = Bytes;

    /// A broken JSON array fails the read without handing out the elements decoded in it.
    fn feed(&mut self, input: &[u8], out: &mut Vec<Bytes>) -> Result<(), StreamError> {
        let mut input = input;
        if let Framing::Undecided = self.framing {
            let Some(start) = input.iter().position(|b| !b.is_ascii_whitespace()) else {
                return Ok(());
            };
            input = &input[start..];
            self.framing = match input.first() {
                Some(b'[') => Framing::JsonArray(JsonArrayDecoder::new()),
                Some(b'{') => Framing::Object(BytesMut::new()),
                _ => Framing::Sse(SseDecoder::new()),
            };
        }
        match &mut self.framing {
            Framing::Undecided => {}
            Framing::Sse(d) => {
                d.feed(input, &mut self.sse);
                self.sse_payloads(out);
            }
            Framing::JsonArray(d) => {
                d.feed(input, &mut self.array)
                    .map_err(|e| StreamError(format!("gemini stream: {e}")))?;
                out.extend(self.array.drain(..).filter_map(|item| match item {
                    JsonArrayItem::Element(bytes) => Some(bytes),
                    JsonArrayItem::End => None,
                }));
            }
            Framing::Object(buf) => {
                if buf.len() + input.len() > MAX_OBJECT_BODY {
                    return Err(StreamError(
                        "gemini stream: answer too large to buffer".into(),
                    ));
                }
                buf.extend_from_slice(input);
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        match &mut self.framing {
            Framing::Sse(d) => {
                d.finish(&mut self.sse);
                self.sse_payloads(out);
            }
            Framing::Object(buf) if !buf.is_empty() => out.push(buf.split().freeze()),
            _ => {}
        }
    }

    /// A whole-object answer is capped by `MAX_OBJECT_BODY` in `feed`.
    fn pending_bytes(&self) -> usize {
        match &self.framing {
            Framing::Sse(d) => d.pending_bytes(),
            Framing::JsonArray(d) => d.pending_bytes(),
            Framing::Undecided | Framing::Object(_) => 0,
        }
    }
}

pub struct GeminiEvents {
    request_id: String,
    tool_calls: u32,
}

impl EventTranslate<Bytes> for GeminiEvents {
    fn event(
        &mut self,
        data: Bytes,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        let r: GeminiResponse = serde_json::from_slice(&data)
            .map_err(|e| StreamError(format!("undecodable gemini stream event: {e}")))?;
        if let Some(error) = &r.error {
            let message = error
                .message
                .clone()
                .or_else(|| error.status.clone())
                .unwrap_or_else(|| "gemini sent an error event".into());
            return Err(StreamError(message));
        }
        if let Some(usage) = r.usage_metadata {
            chunks.usage = usage.to_openai();
        }
        let Some(candidate) = r.candidates.first() else {
            if r.prompt_feedback.is_some_and(|f| f.block_reason.is_some()) {
                chunks.finish(out, FinishReason::ContentFilter);
            }
            return Ok(());
        };
        let parts = candidate.content.iter().flat_map(|c| c.parts.iter());
        for part in parts {
            if part.thought {
                chunks.reasoning(out, part.text.as_deref().unwrap_or(""));
                continue;
            }
            if let Some(call) = &part.function_call {
                let index = self.tool_calls;
                self.tool_calls += 1;
                let id = tool_call_id(
                    &self.request_id,
                    index as usize,
                    part.thought_signature.as_deref(),
                );
                chunks.tool_call_start(out, index, &id, &call.name);
                chunks.tool_call_arguments(out, index, &arguments_string(&call.args));
            } else if let Some(text) = part.text.as_deref().filter(|_| !part.thought) {
                chunks.text(out, text);
            }
        }
        if let Some(reason) = candidate.finish_reason {
            chunks.finish(out, reason.to_openai(self.tool_calls > 0));
        }
        Ok(())
    }

    /// A stream that called tools but never said why it stopped stopped for them.
    fn end(&mut self, chunks: &mut ChunkBuilder, out: &mut BytesMut) {
        if !chunks.is_finished() && self.tool_calls > 0 {
            chunks.finish(out, FinishReason::ToolCalls);
        }
    }
}
