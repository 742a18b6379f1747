//! The one shape every synthesised stream has: a codec decoder cuts the upstream body into
//! items ([`Frames`]), a per-provider [`EventTranslate`] turns each item into OpenAI chunks
//! through one [`ChunkBuilder`], and [`DecodedStream`] joins the two into a
//! [`StreamTranslate`]. Providers only write the item -> chunks step; feeding, flushing the
//! decoder at the end, the closing chunks and the usage report live here once.
//!
//! Everything is generic, so each provider's stream is one concrete type with no dynamic
//! dispatch per item, and the item buffer is reused from read to read.

use bytes::{Bytes, BytesMut};

use super::oai::{ChunkBuilder, Usage};
use super::{StreamError, StreamTranslate};
use crate::codec::eventstream::{EventMessage, EventStreamDecoder};
use crate::codec::ndjson::NdjsonDecoder;
use crate::codec::sse::{SseDecoder, SseEvent};

/// Why a stream that ended without the provider's end marker fails.
pub const TRUNCATED: &str = "the provider closed the stream before the answer was complete";

/// An incremental decoder of an upstream body: it keeps partial frames between reads and
/// yields complete items only.
pub trait Frames: Send {
    type Item;

    /// One upstream read. Whatever `out` holds when it fails is still translated before the
    /// error ends the stream.
    fn feed(&mut self, input: &[u8], out: &mut Vec<Self::Item>) -> Result<(), StreamError>;

    /// The body ended: yields what was held back waiting for a terminator.
    fn finish(&mut self, out: &mut Vec<Self::Item>);

    /// Bytes held back waiting for a terminator (memory the upstream controls).
    fn pending_bytes(&self) -> usize;
}

/// The largest single event an upstream may send before the stream is refused: memory per
/// stream stays bounded even if a provider never terminates a line.
pub const MAX_PENDING: usize = 16 * 1024 * 1024;

/// Fails a stream whose decoder holds more than [`MAX_PENDING`] bytes.
pub fn check_pending(pending: usize) -> Result<(), StreamError> {
    if pending > MAX_PENDING {
        return Err(StreamError(format!(
            "the provider sent an event larger than {MAX_PENDING} bytes"
        )));
    }
    Ok(())
}

impl Frames for SseDecoder {
    type Item = SseEvent;

    fn feed(&mut self, input: &[u8], out: &mut Vec<SseEvent>) -> Result<(), StreamError> {
        SseDecoder::feed(self, input, out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        SseDecoder::finish(self, out);
    }

    fn pending_bytes(&self) -> usize {
        SseDecoder::pending_bytes(self)
    }
}

impl Frames for NdjsonDecoder {
    type Item = Bytes;

    fn feed(&mut self, input: &[u8], out: &mut Vec<Bytes>) -> Result<(), StreamError> {
        NdjsonDecoder::feed(self, input, out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        NdjsonDecoder::finish(self, out);
    }

    fn pending_bytes(&self) -> usize {
        NdjsonDecoder::pending_bytes(self)
    }
}

impl Frames for EventStreamDecoder {
    type Item = EventMessage;

    fn feed(&mut self, input: &[u8], out: &mut Vec<EventMessage>) -> Result<(), StreamError> {
        EventStreamDecoder::feed(self, input, out).map_err(|e| StreamError(e.to_string()))
    }

    /// A frame cut short by the end of the body is dropped: it has no CRC to trust.
    fn finish(&mut self, _out: &mut Vec<EventMessage>) {}

    /// The decoder refuses frames over 16 MiB itself.
    fn pending_bytes(&self) -> usize {
        0
    }
}

/// One provider's reading of its stream items: the state a stream needs beyond the
/// [`ChunkBuilder`] (tool-call numbering, ids, cumulative usage, ...).
pub trait EventTranslate<Item>: Send {
    /// One complete upstream item -> chunks appended to `out`. An error ends the stream.
    fn event(
        &mut self,
        item: Item,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError>;

    /// The body ended after the last item, before the closing chunks: for a finish reason
    /// only known once nothing more can come.
    fn end(&mut self, _chunks: &mut ChunkBuilder, _out: &mut BytesMut) {}
}

/// A [`StreamTranslate`] made of a decoder `D` and a provider's item translator `T`.
pub struct DecodedStream<D: Frames, T> {
    frames: D,
    items: Vec<D::Item>,
    events: T,
    chunks: ChunkBuilder,
}

impl<D: Frames, T: EventTranslate<D::Item>> DecodedStream<D, T> {
    pub fn from_parts(frames: D, events: T, chunks: ChunkBuilder) -> Self {
        DecodedStream {
            frames,
            items: Vec::new(),
            events,
            chunks,
        }
    }

    fn emit(&mut self, out: &mut BytesMut) -> Result<(), StreamError> {
        // On an error the rest is dropped with the drain: the stream is over.
        for item in self.items.drain(..) {
            self.events.event(item, &mut self.chunks, out)?;
        }
        Ok(())
    }
}

impl<D, T> StreamTranslate for DecodedStream<D, T>
where
    D: Frames,
    D::Item: Send,
    T: EventTranslate<D::Item>,
{
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), StreamError> {
        let framed = self.frames.feed(input, &mut self.items);
        self.emit(out)?;
        framed?;
        check_pending(self.frames.pending_bytes())
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), StreamError> {
        self.frames.finish(&mut self.items);
        self.emit(out)?;
        self.events.end(&mut self.chunks, out);
        // Every provider signals the end of an answer (a stop reason, `done: true`, ...);
        // a body that ends without one was cut short, which the client must be told.
        if !self.chunks.is_finished() {
            return Err(StreamError(TRUNCATED.into()));
        }
        self.chunks.done(out);
        Ok(())
    }

    fn usage(&self) -> Usage {
        self.chunks.usage
    }
}
