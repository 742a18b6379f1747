//! Which OpenAI chat request fields each provider can honour: native (a field of its own),
//! emulated (the gateway does it), or dropped (no equivalent). Dropped fields the client sent
//! are named in `x-ai-gateway-dropped-fields` and the access log, or refused with a 400 when the
//! route sets `dropped_fields: reject`: translation is lossless or loud, never silently lossy.
//! The README's mapping table is generated from [`TABLE`] (a test keeps them equal).

use serde_json::{Map, Value};

use super::bedrock::claude_model;
use super::oai::{thinking_budget, thinking_conflicts, MIN_THINKING_BUDGET};
use crate::config::ai_proxy::{Llama2Format, MistralFormat, ModelOptions, ProviderName};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Native,
    Emulated,
    Dropped,
}

use Support::{Dropped as D, Emulated as E, Native as N};

/// The providers as columns: OpenAI-format bodies (openai, azure, mistral and llama2 in
/// `openai` format, Hugging Face's TGI Messages API) pass through, so the provider itself
/// decides ("native"); then the translated ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    OpenAiFormat,
    Anthropic,
    Gemini,
    Bedrock,
    Cohere,
    Ollama,
    Llama2Raw,
}

pub const COLUMNS: [(&str, Column); 7] = [
    (
        "openai / azure / mistral / llama2 (openai format) / huggingface",
        Column::OpenAiFormat,
    ),
    ("anthropic", Column::Anthropic),
    ("gemini / Vertex", Column::Gemini),
    ("bedrock", Column::Bedrock),
    ("cohere", Column::Cohere),
    ("ollama (llama2 / mistral)", Column::Ollama),
    ("llama2 raw", Column::Llama2Raw),
];

/// Field x column. `response_format` is emulated by a forced tool call whose arguments become
/// the content (Anthropic, Bedrock). `n` counts only above 1 and `logprobs` only when true (the defaults change
/// nothing); any other field counts when present and not null. `top_k` on OpenAI-format
/// providers is dropped by the gateway (OpenAI rejects it).
pub const TABLE: &[(&str, [Support; 7])] = &[
    ("messages (text)", [N, N, N, N, N, N, E]),
    ("messages (images)", [N, N, N, N, D, N, D]),
    ("cache_control", [N, N, D, N, D, D, D]),
    ("max_tokens / max_completion_tokens", [N, N, N, N, N, N, N]),
    ("temperature", [N, N, N, N, N, N, N]),
    ("top_p", [N, N, N, N, N, N, N]),
    ("top_k", [D, N, N, E, N, N, N]),
    ("stop", [N, N, N, N, N, N, N]),
    ("stream", [N, N, N, N, N, N, N]),
    ("stream_options", [N, E, E, E, E, E, E]),
    ("tools", [N, N, N, N, N, N, D]),
    ("tool_choice", [N, N, N, N, N, D, D]),
    ("parallel_tool_calls", [N, N, D, D, D, D, D]),
    ("response_format", [N, E, N, E, N, N, D]),
    ("reasoning_effort", [N, N, N, E, D, D, D]),
    ("n", [N, D, N, D, D, D, D]),
    ("logprobs", [N, D, D, D, D, D, D]),
    ("top_logprobs", [N, D, D, D, D, D, D]),
    ("logit_bias", [N, D, D, D, D, D, D]),
    ("seed", [N, D, N, D, N, D, D]),
    ("presence_penalty", [N, D, N, D, N, D, D]),
    ("frequency_penalty", [N, D, N, D, N, D, D]),
    ("user", [N, N, D, D, D, D, D]),
    ("service_tier", [N, D, D, D, D, D, D]),
    ("store", [N, D, D, D, D, D, D]),
    ("metadata", [N, D, D, D, D, D, D]),
    ("prediction", [N, D, D, D, D, D, D]),
    ("modalities", [N, D, D, D, D, D, D]),
    ("audio", [N, D, D, D, D, D, D]),
    ("web_search_options", [N, D, D, D, D, D, D]),
];

/// The column a route's provider (and its format option) falls in.
pub fn column(provider: ProviderName, options: &ModelOptions) -> Column {
    match provider {
        ProviderName::Openai | ProviderName::Azure => Column::OpenAiFormat,
        ProviderName::Mistral => match options.mistral_format {
            Some(MistralFormat::Ollama) => Column::Ollama,
            _ => Column::OpenAiFormat,
        },
        ProviderName::Llama2 => match options.llama2_format {
            Some(Llama2Format::Openai) => Column::OpenAiFormat,
            Some(Llama2Format::Ollama) => Column::Ollama,
            _ => Column::Llama2Raw,
        },
        ProviderName::Anthropic => Column::Anthropic,
        ProviderName::Gemini => Column::Gemini,
        ProviderName::Bedrock => Column::Bedrock,
        ProviderName::Cohere => Column::Cohere,
        ProviderName::Huggingface => Column::OpenAiFormat,
    }
}

fn support(field: &str, column: Column) -> Option<Support> {
    let i = COLUMNS.iter().position(|(_, c)| *c == column)?;
    TABLE
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, row)| row[i])
}

fn has_images(body: &Map<String, Value>) -> bool {
    body.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .any(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
}

/// Prompt-caching breakpoints on message parts or tool definitions (Anthropic's convention).
fn has_cache_control(body: &Map<String, Value>) -> bool {
    let cached = |v: &Value| v.get("cache_control").is_some_and(|c| !c.is_null());
    let parts = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten();
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    parts.chain(tools).any(cached)
}

/// Whether [`dropped`] reads the top-level field `key` for `column` (a field it drops).
pub fn droppable(column: Column, key: &str) -> bool {
    support(key, column) == Some(Support::Dropped)
}

/// Whether [`dropped`] looks inside the messages or tools for `column` (it drops images or
/// prompt-caching breakpoints).
pub fn looks_inside_messages(column: Column) -> bool {
    ["messages (images)", "cache_control"]
        .iter()
        .any(|field| support(field, column) == Some(Support::Dropped))
}

/// The fields of an OpenAI chat request that `column` would drop, in the table's order, then
/// the sampling fields Claude's extended thinking overrides (`model` tells Claude on Bedrock).
pub fn dropped(column: Column, model: &str, body: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    let Some(i) = COLUMNS.iter().position(|(_, c)| *c == column) else {
        return out;
    };
    // Only the rows this column drops are looked up (one for OpenAI-format providers).
    for (field, _) in TABLE.iter().filter(|(_, row)| row[i] == Support::Dropped) {
        let sent = match *field {
            "messages (images)" => has_images(body),
            "cache_control" => has_cache_control(body),
            "max_tokens / max_completion_tokens" | "messages (text)" => false,
            "n" => body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1),
            "logprobs" => body.get("logprobs").and_then(Value::as_bool) == Some(true),
            name => body.get(name).is_some_and(|v| !v.is_null()),
        };
        if sent {
            out.push(field.to_string());
        }
    }
    let claude = match column {
        Column::Anthropic => true,
        Column::Bedrock => claude_model(model),
        _ => false,
    };
    if claude && thinking_budget(body).is_some_and(|b| b >= MIN_THINKING_BUDGET) {
        out.extend(thinking_conflicts(body).into_iter().map(String::from));
    }
    out
}

#[cfg(test)]
/// The README's mapping table.
pub fn markdown_table() -> String {
    let mut out = String::from("| field |");
    for (name, _) in COLUMNS {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(COLUMNS.len()));
    out.push('\n');
    for (field, row) in TABLE {
        out.push_str(&format!("| `{field}` |"));
        for s in row {
            out.push_str(match s {
                Support::Native => " native |",
                Support::Emulated => " emulated |",
                Support::Dropped => " **dropped** |",
            });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dropped_by(column: Column, body: &Map<String, Value>) -> Vec<String> {
        dropped(column, "some-model", body)
    }

    #[test]
    fn dropped_fields_are_named_only_when_they_change_something() {
        let body = json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}],
            "n": 2, "logprobs": false, "seed": 7, "logit_bias": null, "top_k": 3,
            "response_format": {"type": "json_object"}});
        let body = body.as_object().unwrap();
        assert_eq!(dropped_by(Column::Anthropic, body), ["n", "seed"]);
        assert_eq!(dropped_by(Column::Llama2Raw, body)[0], "messages (images)");
        assert_eq!(dropped_by(Column::OpenAiFormat, body), ["top_k"]);
        assert_eq!(dropped_by(Column::Cohere, body), ["messages (images)", "n"]);
        assert!(dropped_by(Column::Gemini, body).is_empty());
        let cached = json!({"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"},
                       "cache_control": {"type": "ephemeral"}}]});
        let cached = cached.as_object().unwrap();
        assert_eq!(dropped_by(Column::Gemini, cached), ["cache_control"]);
        assert_eq!(dropped_by(Column::Cohere, cached), ["cache_control"]);
        assert!(dropped_by(Column::Anthropic, cached).is_empty());
        assert!(dropped_by(Column::Bedrock, cached).is_empty());
        let thinking = json!({"reasoning_effort": "low", "temperature": 0.2, "top_p": 0.5});
        let thinking = thinking.as_object().unwrap();
        let conflicts = [
            "temperature (1 with thinking)",
            "top_p (0.95 or more with thinking)",
        ];
        assert_eq!(dropped_by(Column::Anthropic, thinking), conflicts);
        assert_eq!(
            dropped(Column::Bedrock, "anthropic.claude-3-7", thinking),
            conflicts
        );
        assert!(dropped(Column::Bedrock, "amazon.nova-pro-v1:0", thinking).is_empty());
        assert!(dropped_by(Column::Gemini, thinking).is_empty());
        let one = json!({"n": 1, "logprobs": true});
        assert_eq!(
            dropped_by(Column::Bedrock, one.as_object().unwrap()),
            ["logprobs"]
        );
    }

    #[test]
    fn columns_follow_the_format_options() {
        let ollama = ModelOptions {
            llama2_format: Some(Llama2Format::Ollama),
            ..ModelOptions::default()
        };
        assert_eq!(column(ProviderName::Llama2, &ollama), Column::Ollama);
        assert_eq!(
            column(ProviderName::Llama2, &ModelOptions::default()),
            Column::Llama2Raw
        );
        assert_eq!(
            column(ProviderName::Azure, &ModelOptions::default()),
            Column::OpenAiFormat
        );
    }

    #[test]
    fn readme_has_the_current_table() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README mapping table is stale; paste:\n{}",
            markdown_table()
        );
    }
}
