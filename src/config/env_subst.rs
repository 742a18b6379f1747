//! decK's environment substitution: `${{ env "DECK_NAME" }}` inside string values.
//!
//! decK renders the whole file as a template before parsing it, so a value holding a newline or
//! a quote can break the YAML around it. Here substitution runs on string *values* after
//! parsing, which keeps the document's structure whatever the variables hold. It is a pure
//! function over an injected lookup: tests pass a map, the binary passes the process
//! environment. As in decK, only `DECK_`-prefixed variables may be read, so a config file cannot
//! pull arbitrary secrets out of the gateway's environment; decK's `toInt`, `toBool` and
//! `toFloat` conversions are supported for non-string fields
//! (`max_tokens: ${{ env "DECK_MAX_TOKENS" | toInt }}`).
//!
//! Problems name the variable and the field, never the variable's value: it is usually a key.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Number, Value};

use crate::config::problem::{field, item, ConfigProblem};

/// Only variables with this prefix may be referenced (decK's rule).
pub const ENV_PREFIX: &str = "DECK_";

const OPEN: &str = "${{";
const CLOSE: &str = "}}";

/// `env "NAME"`, optionally piped through one of decK's conversion functions.
static EXPRESSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^env\s+"([^"]*)"\s*(?:\|\s*(toInt|toBool|toFloat)\s*)?$"#)
        .expect("static expression pattern compiles")
});

/// Substitutes every `${{ env "DECK_X" }}` in the string values under `value`, whose field path
/// is `path`. Problems are appended to `problems`; a string with any problem is left as it was.
/// Returns the field paths whose values now hold data from the environment, so that later
/// messages about those fields do not echo them.
pub fn substitute(
    value: &mut Value,
    env: &dyn Fn(&str) -> Option<String>,
    path: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<String> {
    let mut substituted = Vec::new();
    walk(value, env, path, problems, &mut substituted);
    substituted
}

fn walk(
    value: &mut Value,
    env: &dyn Fn(&str) -> Option<String>,
    path: &str,
    problems: &mut Vec<ConfigProblem>,
    substituted: &mut Vec<String>,
) {
    match value {
        Value::String(text) if text.contains(OPEN) => {
            let before = problems.len();
            let rendered = render(text, env, path, problems);
            if problems.len() == before {
                *value = rendered;
                substituted.push(path.to_string());
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter_mut().enumerate() {
                walk(value, env, &item(path, i), problems, substituted);
            }
        }
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                walk(value, env, &field(path, key), problems, substituted);
            }
        }
        _ => {}
    }
}

/// One of decK's conversion functions, applied to the variable's text.
#[derive(Clone, Copy)]
enum Conversion {
    Int,
    Bool,
    Float,
}

impl Conversion {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "toInt" => Some(Conversion::Int),
            "toBool" => Some(Conversion::Bool),
            "toFloat" => Some(Conversion::Float),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Conversion::Int => "toInt",
            Conversion::Bool => "toBool",
            Conversion::Float => "toFloat",
        }
    }

    fn apply(self, raw: &str) -> Option<Value> {
        let raw = raw.trim();
        match self {
            Conversion::Int => raw.parse::<i64>().ok().map(Value::from),
            // The spellings Go's strconv.ParseBool accepts, which is what decK uses.
            Conversion::Bool => match raw {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(Value::Bool(true)),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(Value::Bool(false)),
                _ => None,
            },
            Conversion::Float => raw
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number),
        }
    }
}

/// Renders one string. A string that is exactly one converted expression becomes a typed
/// value (`toInt` gives a number), as it does when decK renders the text before YAML parsing.
fn render(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    path: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Value {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut whole: Option<Value> = None;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else {
            problems.push(ConfigProblem::new(
                path,
                "unterminated template expression: `${{` without `}}`",
            ));
            return Value::String(text.to_string());
        };
        let typed = expand(after[..end].trim(), env, path, problems);
        rest = &after[end + CLOSE.len()..];
        if let Some(typed) = typed {
            let is_whole = start == 0 && rest.is_empty() && out.is_empty();
            match typed {
                Value::String(s) => out.push_str(&s),
                other if is_whole => whole = Some(other),
                other => out.push_str(&other.to_string()),
            }
        }
    }
    out.push_str(rest);
    whole.unwrap_or(Value::String(out))
}

/// Evaluates one expression (the text between `${{` and `}}`).
fn expand(
    expr: &str,
    env: &dyn Fn(&str) -> Option<String>,
    path: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Value> {
    let Some(caps) = EXPRESSION.captures(expr) else {
        problems.push(ConfigProblem::new(
            path,
            format!(
                "invalid template expression `{expr}`: expected `${{{{ env \"DECK_NAME\" }}}}`"
            ),
        ));
        return None;
    };
    let name = caps.get(1).map_or("", |m| m.as_str());
    if !name.starts_with(ENV_PREFIX) {
        problems.push(ConfigProblem::new(
            path,
            format!(
                "environment variable '{name}' is not allowed: only {ENV_PREFIX}-prefixed variables can be used"
            ),
        ));
        return None;
    }
    let Some(raw) = env(name) else {
        problems.push(ConfigProblem::new(
            path,
            format!("environment variable '{name}' is not set"),
        ));
        return None;
    };
    let Some(conversion) = caps.get(2).and_then(|m| Conversion::parse(m.as_str())) else {
        return Some(Value::String(raw));
    };
    let converted = conversion.apply(&raw);
    if converted.is_none() {
        problems.push(ConfigProblem::new(
            path,
            format!(
                "environment variable '{name}' cannot be converted with {}",
                conversion.name()
            ),
        ));
    }
    converted
}

/// The lookup tests inject: these variables, and no other.
#[cfg(test)]
pub(crate) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(
        mut value: Value,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Value, Vec<ConfigProblem>, Vec<String>) {
        let mut problems = Vec::new();
        let paths = substitute(&mut value, env, "root", &mut problems);
        (value, problems, paths)
    }

    #[test]
    fn replaces_a_whole_value() {
        let env = env_of(&[("DECK_KEY", "sk-123")]);
        let (v, problems, paths) = run(json!({"k": "${{ env \"DECK_KEY\" }}"}), &env);
        assert!(problems.is_empty());
        assert_eq!(v, json!({"k": "sk-123"}));
        assert_eq!(paths, vec!["root.k".to_string()]);
    }

    #[test]
    fn replaces_embedded_and_repeated_expressions_with_flexible_spacing() {
        let env = env_of(&[("DECK_A", "x"), ("DECK_B", "y")]);
        let (v, problems, _) = run(
            json!([
                "Bearer ${{ env \"DECK_A\" }}",
                "${{env \"DECK_A\"}}-${{   env   \"DECK_B\"   }}!"
            ]),
            &env,
        );
        assert!(problems.is_empty());
        assert_eq!(v, json!(["Bearer x", "x-y!"]));
    }

    #[test]
    fn values_with_newlines_and_quotes_are_kept_verbatim() {
        let secret = "line1\nline2: \"quoted\" 'single' }} ${{";
        let env = env_of(&[("DECK_PEM", secret)]);
        let (v, problems, _) = run(json!({"pem": "${{ env \"DECK_PEM\" }}"}), &env);
        assert!(problems.is_empty());
        assert_eq!(v["pem"], json!(secret));
    }

    #[test]
    fn missing_variable_names_variable_and_field() {
        let env = env_of(&[]);
        let (v, problems, paths) = run(
            json!({"auth": {"v": "Bearer ${{ env \"DECK_MISSING\" }}"}}),
            &env,
        );
        assert_eq!(
            problems,
            vec![ConfigProblem::new(
                "root.auth.v",
                "environment variable 'DECK_MISSING' is not set"
            )]
        );
        assert_eq!(v["auth"]["v"], json!("Bearer ${{ env \"DECK_MISSING\" }}"));
        assert!(paths.is_empty());
    }

    #[test]
    fn non_deck_variable_is_refused_even_when_set() {
        let env = env_of(&[("HOME", "/root")]);
        let (_, problems, _) = run(json!(["${{ env \"HOME\" }}"]), &env);
        assert_eq!(
            problems,
            vec![ConfigProblem::new(
                "root[0]",
                "environment variable 'HOME' is not allowed: only DECK_-prefixed variables can be used"
            )]
        );
    }

    #[test]
    fn every_problem_in_a_value_is_reported() {
        let env = env_of(&[]);
        let (_, problems, _) = run(
            json!(["${{ env \"DECK_A\" }} ${{ env \"OTHER\" }} ${{ nonsense }}"]),
            &env,
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[2]
            .message
            .starts_with("invalid template expression `nonsense`"));
    }

    #[test]
    fn unterminated_expression_is_a_problem() {
        let env = env_of(&[("DECK_A", "x")]);
        let (_, problems, _) = run(json!(["${{ env \"DECK_A\" "]), &env);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.starts_with("unterminated"));
    }

    #[test]
    fn conversions_give_typed_values() {
        let env = env_of(&[("DECK_N", "512"), ("DECK_B", "true"), ("DECK_F", "0.5")]);
        let (v, problems, _) = run(
            json!({
                "n": "${{ env \"DECK_N\" | toInt }}",
                "b": "${{ env \"DECK_B\" | toBool }}",
                "f": "${{ env \"DECK_F\" | toFloat }}",
                "text": "n=${{ env \"DECK_N\" | toInt }}",
            }),
            &env,
        );
        assert!(problems.is_empty());
        assert_eq!(v, json!({"n": 512, "b": true, "f": 0.5, "text": "n=512"}));
    }

    #[test]
    fn failed_conversion_does_not_echo_the_value() {
        let env = env_of(&[("DECK_N", "sk-secret")]);
        let (_, problems, _) = run(json!(["${{ env \"DECK_N\" | toInt }}"]), &env);
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].message,
            "environment variable 'DECK_N' cannot be converted with toInt"
        );
    }

    #[test]
    fn strings_without_expressions_and_other_types_are_untouched() {
        let env = env_of(&[]);
        let input = json!({"a": "$(headers.x)", "b": 1, "c": null, "d": "{{ not decK }}"});
        let (v, problems, paths) = run(input.clone(), &env);
        assert!(problems.is_empty());
        assert!(paths.is_empty());
        assert_eq!(v, input);
    }

    #[test]
    fn substituted_text_is_not_expanded_again() {
        let env = env_of(&[("DECK_A", "${{ env \"DECK_B\" }}")]);
        let (v, problems, _) = run(json!(["${{ env \"DECK_A\" }}"]), &env);
        assert!(problems.is_empty());
        assert_eq!(v, json!(["${{ env \"DECK_B\" }}"]));
    }
}
