//! The deterministic "model" behind every format.
//!
//! A format walks its native request into a [`Prompt`] (turns, tools, extra prompt text); the
//! prompt decides the [`Completion`]: a call to the first tool when tools are offered and the
//! conversation ends with a user message, else the text
//! `Mock <provider> reply to: <last user text>` (200 chars at most). Usage counts are
//! whitespace-separated words, so tests can predict them.

use std::borrow::Cow;

use base64::Engine;
use serde_json::{json, Value};

use super::fault::Faults;

/// The arguments of every mock tool call.
pub(crate) const TOOL_ARGUMENTS: &str = r#"{"a":2,"b":12}"#;

/// [`TOOL_ARGUMENTS`] in two fragments: streamed tool calls arrive in pieces from real providers.
pub(crate) const TOOL_ARGUMENT_PIECES: [&str; 2] = [r#"{"a":2,"#, r#""b":12}"#];

/// What the mock "thinks" when a request turns reasoning on (Anthropic `thinking`, Bedrock
/// `additionalModelRequestFields.thinking`, Gemini `thinkingConfig.includeThoughts`), streamed
/// word by word like the answer, ahead of it.
pub(crate) const THINKING: &str = "Mock thinking: the user wants a short answer.";

/// The signature that closes the mock's thinking block (Anthropic, Bedrock Claude).
pub(crate) const THINKING_SIGNATURE: &str = "mock-signature";

/// Reply texts are cut to this many characters.
const MAX_REPLY_CHARS: usize = 200;

/// Embedding width when the request does not ask for one; small keeps load tests cheap.
const DEFAULT_EMBEDDING_DIMS: usize = 8;

/// Requests asking for wider embeddings are capped here.
const MAX_EMBEDDING_DIMS: usize = 4096;

/// [`TOOL_ARGUMENTS`] as JSON, for formats that carry arguments as objects.
pub(crate) fn tool_arguments() -> Value {
    json!({"a": 2, "b": 12})
}

/// What the mock knows about a request's conversation.
#[derive(Debug, Default)]
pub(crate) struct Prompt {
    words: u64,
    last_user_text: String,
    ends_with_user: bool,
    tool: Option<String>,
}

impl Prompt {
    /// A single-string prompt (raw formats): all of `text` counts, `instruction` gets the reply.
    pub(crate) fn raw(text: &str, instruction: &str) -> Prompt {
        Prompt {
            words: word_count(text),
            last_user_text: instruction.to_owned(),
            ends_with_user: true,
            tool: None,
        }
    }

    /// Prompt text that is not a turn (a system prompt): counted, never replied to.
    pub(crate) fn context(&mut self, text: &str) {
        self.words += word_count(text);
    }

    /// The next turn, oldest first. `tool_result` marks user-role turns that only return tool
    /// output (Anthropic, Bedrock): they do not count as the user speaking, so the mock answers
    /// them with text instead of calling the tool again.
    pub(crate) fn turn(&mut self, role: &str, text: &str, tool_result: bool) {
        self.words += word_count(text);
        let from_user = role.eq_ignore_ascii_case("user") && !tool_result;
        if from_user {
            text.clone_into(&mut self.last_user_text);
        }
        self.ends_with_user = from_user;
    }

    /// The tools offered (any provider's shape); only the first one is ever called.
    pub(crate) fn offer_tools(&mut self, tools: Option<&Value>) {
        self.tool = tools.and_then(first_tool_name).map(str::to_owned);
    }

    /// Words counted so far: the prompt's usage.
    pub(crate) fn words(&self) -> u64 {
        self.words
    }

    /// The answer for a provider label, shaped by the `chunks`/`bytes` faults.
    pub(crate) fn complete(self, provider: &str, faults: &Faults) -> Completion {
        let content = match self.tool {
            Some(name) if self.ends_with_user => Content::ToolCall(name),
            _ => Content::Text(reply_text(provider, &self.last_user_text, faults)),
        };
        let completion_tokens = match &content {
            Content::Text(text) => word_count(text),
            // The name plus the one-word argument object.
            Content::ToolCall(name) => word_count(name) + 1,
        };
        Completion {
            content,
            prompt_tokens: self.words,
            completion_tokens,
        }
    }
}

/// What the mock answers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Content {
    Text(String),
    /// A call to the named tool with [`TOOL_ARGUMENTS`].
    ToolCall(String),
}

/// An answer and its usage.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub content: Content,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Completion {
    pub(crate) fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// The reply text (`""` for a tool call).
    pub(crate) fn text(&self) -> &str {
        match &self.content {
            Content::Text(text) => text,
            Content::ToolCall(_) => "",
        }
    }

    /// The called tool, if this is a tool call.
    pub(crate) fn tool(&self) -> Option<&str> {
        match &self.content {
            Content::ToolCall(name) => Some(name),
            Content::Text(_) => None,
        }
    }

    /// The reply text in stream chunks, one per word; see [`word_chunks`].
    pub(crate) fn chunks(&self) -> Vec<&str> {
        word_chunks(self.text())
    }

    /// The provider's stop reason: `on_text` for text, `on_tool` for a tool call.
    pub(crate) fn stop_reason<'a>(&self, on_text: &'a str, on_tool: &'a str) -> &'a str {
        if self.tool().is_some() {
            on_tool
        } else {
            on_text
        }
    }
}

/// Splits text into words, each carrying its leading whitespace, so the chunks concatenate back
/// to the text (`"a b"` → `["a", " b"]`).
pub(crate) fn word_chunks(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    // Starting "after a space" keeps leading whitespace in the first chunk.
    let mut previous_space = true;
    for (at, c) in text.char_indices() {
        let space = c.is_whitespace();
        if space && !previous_space {
            chunks.push(&text[start..at]);
            start = at;
        }
        previous_space = space;
    }
    if start < text.len() {
        chunks.push(&text[start..]);
    }
    chunks
}

pub(crate) fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn reply_text(provider: &str, last_user_text: &str, faults: &Faults) -> String {
    if let Some(n) = faults.chunks {
        return numbered_words(n, usize::MAX);
    }
    if let Some(bytes) = faults.bytes {
        return numbered_words(usize::MAX, bytes);
    }
    let text = format!("Mock {provider} reply to: {last_user_text}");
    match text.char_indices().nth(MAX_REPLY_CHARS) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text,
    }
}

/// `w1 w2 w3 ...`: at most `words` words and `max_bytes` bytes.
fn numbered_words(words: usize, max_bytes: usize) -> String {
    let mut text = String::new();
    for i in 1..=words {
        let sep = if i == 1 { "" } else { " " };
        let word = format!("{sep}w{i}");
        if text.len() + word.len() > max_bytes {
            // Pad to the exact size so `bytes=n` means n bytes.
            let missing = max_bytes - text.len();
            text.extend(std::iter::repeat_n('x', missing));
            break;
        }
        text.push_str(&word);
    }
    text
}

/// The text inside any provider's content: a string, or the `text`/`content`/`parts` of parts,
/// blocks and nested arrays, joined by spaces. Images and other non-text parts count as nothing.
pub(crate) fn text_of(content: &Value) -> Cow<'_, str> {
    match content {
        Value::String(text) => Cow::Borrowed(text),
        Value::Array(items) => {
            let texts: Vec<Cow<'_, str>> = items
                .iter()
                .map(text_of)
                .filter(|t| !t.is_empty())
                .collect();
            match texts.len() {
                0 => Cow::Borrowed(""),
                1 => texts.into_iter().next().unwrap_or_default(),
                _ => Cow::Owned(texts.join(" ")),
            }
        }
        Value::Object(map) => ["text", "content", "parts"]
            .iter()
            .find_map(|key| map.get(*key))
            .map_or(Cow::Borrowed(""), text_of),
        _ => Cow::Borrowed(""),
    }
}

/// Rerank results, best first: each document's score is the share of the query's words it
/// contains; `result` renders one (index, score).
pub(crate) fn rank(
    query: &Value,
    documents: &Value,
    result: impl Fn(usize, f64) -> Value,
) -> Vec<Value> {
    let query = text_of(query).to_lowercase();
    let words: Vec<&str> = query.split_whitespace().collect();
    let mut scored: Vec<(usize, f64)> = documents
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, d)| {
            let text = text_of(d).to_lowercase();
            let hits = words.iter().filter(|w| text.contains(*w)).count();
            (i, hits as f64 / words.len().max(1) as f64)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().map(|(i, s)| result(i, s)).collect()
}

/// The first tool's name in OpenAI (`function.name`), Anthropic/Cohere (`name`), Bedrock
/// (`toolSpec.name`) or Gemini (`function_declarations[0].name`) shape.
pub(crate) fn first_tool_name(tools: &Value) -> Option<&str> {
    let first = tools.as_array()?.first()?;
    [
        "/function/name",
        "/name",
        "/toolSpec/name",
        "/function_declarations/0/name",
        "/functionDeclarations/0/name",
    ]
    .iter()
    .find_map(|pointer| first.pointer(pointer))?
    .as_str()
}

/// A deterministic unit-ish vector for `text`: same text, same vector.
pub(crate) fn embedding(text: &str, dims: Option<u64>) -> Vec<f32> {
    let dims = dims.map_or(DEFAULT_EMBEDDING_DIMS, |d| {
        usize::try_from(d).unwrap_or(MAX_EMBEDDING_DIMS)
    });
    // FNV-1a seeds an xorshift generator: cheap and stable across runs and platforms.
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    (0..dims.clamp(1, MAX_EMBEDDING_DIMS))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Top 24 bits mapped to [-1, 1), rounded to 4 decimals to keep bodies short.
            let unit = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            (unit * 10_000.0).round() / 10_000.0
        })
        .collect()
}

/// An embedding as JSON numbers, or as base64 of little-endian f32s when `base64` (OpenAI's
/// `encoding_format: "base64"`, which the OpenAI SDKs request by default).
pub(crate) fn embedding_json(vector: &[f32], base64: bool) -> Value {
    if base64 {
        let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
        return Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    json!(vector)
}

/// The texts of an embeddings `input`: a string or an array of strings (token arrays become "").
pub(crate) fn input_texts(input: Option<&Value>) -> Vec<Cow<'_, str>> {
    match input {
        Some(Value::Array(items)) => items.iter().map(text_of).collect(),
        Some(other) => vec![text_of(other)],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(turns: &[(&str, &str)]) -> Prompt {
        let mut prompt = Prompt::default();
        for (role, text) in turns {
            prompt.turn(role, text, false);
        }
        prompt
    }

    #[test]
    fn replies_to_the_last_user_turn_and_counts_words() {
        let mut p = prompt(&[
            ("user", "What is 2 + 3?"),
            ("assistant", "5."),
            ("user", "Double it."),
        ]);
        p.context("Be terse.");
        let c = p.complete("openai", &Faults::default());
        assert_eq!(
            c.content,
            Content::Text("Mock openai reply to: Double it.".into())
        );
        assert_eq!((c.prompt_tokens, c.completion_tokens), (10, 6));
    }

    #[test]
    fn calls_the_first_tool_only_when_the_user_spoke_last() {
        let tools = json!([{"type": "function", "function": {"name": "add"}}, {"name": "other"}]);
        let mut p = prompt(&[("user", "add")]);
        p.offer_tools(Some(&tools));
        assert_eq!(p.complete("x", &Faults::default()).tool(), Some("add"));

        let mut p = prompt(&[("user", "add")]);
        p.turn("user", "result 14", true);
        p.offer_tools(Some(&tools));
        let c = p.complete("x", &Faults::default());
        assert_eq!(c.text(), "Mock x reply to: add");
    }

    #[test]
    fn long_replies_are_cut_at_200_chars() {
        let long = "é".repeat(300);
        let c = prompt(&[("user", &long)]).complete("openai", &Faults::default());
        assert_eq!(c.text().chars().count(), 200);
    }

    #[test]
    fn chunks_and_bytes_faults_shape_the_text() {
        let faults = Faults {
            chunks: Some(3),
            ..Faults::default()
        };
        let c = Prompt::default().complete("x", &faults);
        assert_eq!(c.chunks(), vec!["w1", " w2", " w3"]);
        let faults = Faults {
            bytes: Some(100),
            ..Faults::default()
        };
        assert_eq!(Prompt::default().complete("x", &faults).text().len(), 100);
    }

    #[test]
    fn word_chunks_concatenate_back() {
        let text = "  Mock  a\nb c ";
        assert_eq!(word_chunks(text).concat(), text);
        assert_eq!(word_chunks("Mock a"), vec!["Mock", " a"]);
        assert!(word_chunks("").is_empty());
    }

    #[test]
    fn text_of_reads_every_provider_shape() {
        assert_eq!(text_of(&json!("hi")), "hi");
        assert_eq!(
            text_of(&json!([{"type": "text", "text": "a"}, {"type": "image_url"}, {"text": "b"}])),
            "a b"
        );
        assert_eq!(text_of(&json!({"parts": [{"text": "g"}]})), "g");
    }

    #[test]
    fn finds_the_first_tool_in_every_shape() {
        for tools in [
            json!([{"function": {"name": "t"}}]),
            json!([{"name": "t"}]),
            json!([{"toolSpec": {"name": "t"}}]),
            json!([{"function_declarations": [{"name": "t"}]}]),
            json!([{"functionDeclarations": [{"name": "t"}]}]),
        ] {
            assert_eq!(first_tool_name(&tools), Some("t"));
        }
        assert_eq!(first_tool_name(&json!([])), None);
    }

    #[test]
    fn embeddings_are_deterministic_and_sized() {
        assert_eq!(embedding("a", None), embedding("a", None));
        assert_ne!(embedding("a", None), embedding("b", None));
        assert_eq!(embedding("a", Some(3)).len(), 3);
        assert!(embedding("a", None)
            .iter()
            .all(|v| (-1.0..=1.0).contains(v)));
        let encoded = embedding_json(&[1.0], true);
        assert_eq!(encoded, json!("AACAPw=="));
    }
}
