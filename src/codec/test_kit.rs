//! What the decoders' tests share: driving a decoder with reads cut anywhere.

use std::convert::Infallible;

use bytes::Bytes;

use super::eventstream::{EventMessage, EventStreamDecoder, EventStreamError};
use super::json_array::{JsonArrayDecoder, JsonArrayError, JsonArrayItem};
use super::ndjson::NdjsonDecoder;
use super::sse::{SseDecoder, SseEvent};

/// A decoder as its tests drive it.
pub(crate) trait Decode {
    type Item;
    type Error;
    fn start() -> Self;
    fn read(&mut self, input: &[u8], out: &mut Vec<Self::Item>) -> Result<(), Self::Error>;
    /// The body ended (a decoder that holds nothing back yields nothing more).
    fn end(&mut self, _out: &mut Vec<Self::Item>) {}
}

/// Feeds `chunks` to a new decoder one read at a time, then ends the body.
pub(crate) fn decode_chunks<'a, D: Decode>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<D::Item>, D::Error> {
    let mut decoder = D::start();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.read(chunk, &mut out)?;
    }
    decoder.end(&mut out);
    Ok(out)
}

/// Splits `input` at the given (unsorted, possibly out of range) positions.
pub(crate) fn chunk_at(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(input[start..cut].to_vec());
        start = cut;
    }
    chunks.push(input[start..].to_vec());
    chunks
}

impl Decode for SseDecoder {
    type Item = SseEvent;
    type Error = Infallible;
    fn start() -> Self {
        SseDecoder::new()
    }
    fn read(&mut self, input: &[u8], out: &mut Vec<SseEvent>) -> Result<(), Infallible> {
        self.feed(input, out);
        Ok(())
    }
    fn end(&mut self, out: &mut Vec<SseEvent>) {
        self.finish(out);
    }
}

impl Decode for NdjsonDecoder {
    type Item = Bytes;
    type Error = Infallible;
    fn start() -> Self {
        NdjsonDecoder::new()
    }
    fn read(&mut self, input: &[u8], out: &mut Vec<Bytes>) -> Result<(), Infallible> {
        self.feed(input, out);
        Ok(())
    }
    fn end(&mut self, out: &mut Vec<Bytes>) {
        self.finish(out);
    }
}

impl Decode for JsonArrayDecoder {
    type Item = JsonArrayItem;
    type Error = JsonArrayError;
    fn start() -> Self {
        JsonArrayDecoder::new()
    }
    fn read(&mut self, input: &[u8], out: &mut Vec<JsonArrayItem>) -> Result<(), JsonArrayError> {
        self.feed(input, out)
    }
}

impl Decode for EventStreamDecoder {
    type Item = EventMessage;
    type Error = EventStreamError;
    fn start() -> Self {
        EventStreamDecoder::new()
    }
    fn read(&mut self, input: &[u8], out: &mut Vec<EventMessage>) -> Result<(), EventStreamError> {
        self.feed(input, out)
    }
}
