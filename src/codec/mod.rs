//! Pure, incremental decoders for the streaming body formats upstream providers use.
//!
//! Every decoder is fed reads exactly as they come off the socket, keeps whatever
//! partial frame a read ends in, and yields only complete items, so the result never
//! depends on how the network chunked the body. They do no I/O and hold no actors:
//! the proxy layer drives them and the provider adapters interpret what they yield.
//!
//! - [`sse`]: `text/event-stream` (OpenAI-compatible, Anthropic, Gemini `alt=sse`, ...).
//! - [`ndjson`]: newline-delimited JSON (Ollama, Cohere, HF TGI).
//! - [`json_array`]: one streamed top-level JSON array (Gemini without `alt=sse`).
//! - [`eventstream`]: AWS event-stream binary framing (Bedrock `ConverseStream`).

pub mod eventstream;
pub mod json_array;
pub mod ndjson;
pub mod sse;
#[cfg(test)]
pub(crate) mod test_kit;
