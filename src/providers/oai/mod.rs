//! OpenAI wire types shared by every translator: the request shapes translators read, the
//! response and chunk shapes they write, and the stream builder that gives every synthesised
//! stream the same OpenAI-correct framing (role on the first chunk, a finish chunk, optional
//! usage chunk, `[DONE]`).

mod request;
mod response;
mod stream;

pub use request::*;
pub use response::*;
pub use stream::*;

#[cfg(test)]
mod tests;
