//! A config problem located by its field path, and the collector every loading phase records
//! problems in (shared by `load`, `validate` and `env_subst`, so none of them depends on another
//! for it).

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One problem found in a decK file, located by its field path, e.g.
/// `services[0].routes[1].plugins[0].config.model.options.temperature` and message
/// `must be between 0 and 5`. The path is empty for problems with the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}
/// `base.key`, or `key` at the top.
pub(crate) fn field(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// `base[index]`.
pub(crate) fn item(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

/// Problems found so far, and the field paths whose values came from the environment (their
/// values must never be echoed).
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub(crate) list: Vec<ConfigProblem>,
    pub(crate) from_env: Vec<String>,
}

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigProblem::new(path, message));
    }

    /// Deserialises the mapping at `path`; on failure records serde's error at the exact field.
    pub(crate) fn parse_at<T: DeserializeOwned>(&mut self, value: &Value, path: &str) -> Option<T> {
        if !value.is_object() {
            // serde would read a list into a struct positionally; a decK entity is a mapping.
            self.push(
                path,
                format!("invalid type: {}, expected a mapping", kind(value)),
            );
            return None;
        }
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(parsed) => Some(parsed),
            Err(err) => {
                let inner = err.path().to_string();
                let at = match inner.as_str() {
                    "." => path.to_string(),
                    p if p.starts_with('[') => format!("{path}{p}"),
                    p => field(path, p),
                };
                let message = err.into_inner().to_string();
                self.push_serde(at, &message);
                None
            }
        }
    }

    /// Records a serde message in Kong's words where they differ, without echoing a value that
    /// is a credential or came from the environment.
    fn push_serde(&mut self, path: String, message: &str) {
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            let at = field(&path, name);
            self.push(at, "required field missing");
            return;
        }
        let message = if self.is_sensitive(&path) {
            redact_value(message)
        } else {
            message.to_string()
        };
        self.push(path, humanize(&message));
    }

    fn is_sensitive(&self, path: &str) -> bool {
        path.contains("config.auth")
            || path.contains("keyauth_credentials")
            || path.contains("config.redis")
            || self.from_env.iter().any(|p| {
                p.strip_prefix(path)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
    }
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

/// Drops the offending value from serde's `invalid type: string "sk-...", expected ...`,
/// keeping its kind: `invalid type: string, expected ...`.
fn redact_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        // The expected part never contains ", expected ", the value might: split at the last one.
        let (unexpected, expected) = rest
            .rfind(", expected ")
            .map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
        let kind = unexpected
            .split(['`', '"'])
            .next()
            .unwrap_or_default()
            .trim();
        return if kind.is_empty() {
            format!("{}{expected}", prefix.trim_end())
        } else {
            format!("{prefix}{kind}{expected}")
        };
    }
    message.to_string()
}

/// serde names Rust types; say what a YAML author writes instead.
fn humanize(message: &str) -> String {
    static STRUCT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"expected struct \w+").expect("static pattern compiles"));
    let message = STRUCT.replace_all(message, "expected a mapping");
    [
        ("expected u64", "expected a non-negative integer"),
        ("expected u16", "expected an integer between 0 and 65535"),
        ("expected u8", "expected an integer between 0 and 255"),
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping"),
        ("invalid type: sequence", "invalid type: list"),
        ("invalid type: map", "invalid type: mapping"),
    ]
    .iter()
    .fold(message.into_owned(), |text, (from, to)| {
        text.replace(from, to)
    })
}
