//! The stream translator shared by the client formats that re-encode the route's OpenAI chat
//! stream (Anthropic Messages, Responses): it runs the route's own stream translator, decodes
//! the OpenAI chunks it writes and hands each to the format. So every provider gets the same
//! sequence, and framing, usage and truncation rules stay in one place per provider.

use bytes::BytesMut;
use serde_json::Value;

use crate::codec::sse::{SseDecoder, SseEvent};
use crate::providers::oai::Usage;
use crate::providers::{StreamError, StreamTranslate};

/// A client format's event sequence, written from OpenAI chat chunks.
pub trait ChatEvents {
    /// The opening events, before the first chunk's content (with its `model`, when it has one)
    /// or before the end of a stream that had none.
    fn start(&mut self, model: Option<&str>, out: &mut BytesMut);
    /// One chunk's first choice.
    fn choice(&mut self, choice: &Value, out: &mut BytesMut);
    /// The closing events, with the last `usage` object the stream carried.
    fn end(&mut self, usage: Option<&Value>, out: &mut BytesMut);
    /// The format's error event, which ends the stream.
    fn error(&mut self, message: &str, out: &mut BytesMut);
    /// Whether a choice carried a finish reason (a stream that has one but no `[DONE]` still
    /// ends cleanly).
    fn finished(&self) -> bool;
}

pub struct Reencoded<F> {
    inner: Box<dyn StreamTranslate>,
    decoder: SseDecoder,
    chat: BytesMut,
    events: Vec<SseEvent>,
    started: bool,
    usage: Option<Value>,
    ended: bool,
    format: F,
}

impl<F: ChatEvents> Reencoded<F> {
    pub(crate) fn wrap(inner: Box<dyn StreamTranslate>, format: F) -> Self {
        Reencoded {
            inner,
            decoder: SseDecoder::new(),
            chat: BytesMut::new(),
            events: Vec::new(),
            started: false,
            usage: None,
            ended: false,
            format,
        }
    }

    fn translate(&mut self, out: &mut BytesMut) {
        self.decoder.feed(&self.chat, &mut self.events);
        self.chat.clear();
        let events = std::mem::take(&mut self.events);
        for event in &events {
            self.event(event, out);
        }
        self.events = events;
        self.events.clear();
    }

    fn event(&mut self, event: &SseEvent, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        if event.data == "[DONE]" {
            return self.end(out);
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error");
            return self.error(out, message);
        }
        if !self.started {
            self.started = true;
            let model = chunk.get("model").and_then(Value::as_str);
            self.format.start(model, out);
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        if let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) {
            self.format.choice(choice, out);
        }
    }

    fn end(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            self.format.start(None, out);
        }
        self.ended = true;
        self.format.end(self.usage.as_ref(), out);
    }

    fn error(&mut self, out: &mut BytesMut, message: &str) {
        self.ended = true;
        self.format.error(message, out);
    }
}

impl<F: ChatEvents + Send> StreamTranslate for Reencoded<F> {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), StreamError> {
        let result = self.inner.feed(input, &mut self.chat);
        self.translate(out);
        result
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), StreamError> {
        let result = self.inner.finish(&mut self.chat);
        self.translate(out);
        let mut rest = Vec::new();
        self.decoder.finish(&mut rest);
        for event in &rest {
            self.event(event, out);
        }
        result?;
        // A pass-through OpenAI stream that ended with a finish reason but no `[DONE]`.
        if !self.ended && self.format.finished() {
            self.end(out);
        }
        if !self.ended {
            return Err(StreamError(crate::providers::stream::TRUNCATED.into()));
        }
        Ok(())
    }

    fn usage(&self) -> Usage {
        self.inner.usage()
    }

    fn write_error(&mut self, out: &mut BytesMut, message: &str) {
        if !self.ended {
            self.error(out, message);
        }
    }
}
