//! An OpenAI-format body kept as the client wrote it, but for the fields Kong's request rules
//! read or set. For routes whose provider takes the OpenAI format itself ([`Translate::openai_body`]),
//! the messages (the bulk of a request) are checked without being built as values, and copied
//! to the upstream body byte for byte: no parse into a `serde_json::Value` and no re-serialisation
//! (~10k instructions per small request, loadtest/ANALYSIS.md session 3).
//!
//! It covers the common body only. Anything unusual (an escaped key, a repeated field inside a
//! message) returns `None`, and the request takes the general path, which stays the reference
//! (the tests compare both on the same bodies).
//!
//! [`Translate::openai_body`]: crate::providers::Translate::openai_body

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::Shape;
use crate::providers::openai;

/// The top-level fields Kong's request rules read or set (model selection, streaming, option
/// merge). They are parsed, with those `openai::request` edits; every other field is kept raw.
const RULE_FIELDS: [&str; 8] = [
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
];

/// The fields that go on untouched, as the client wrote them, in key order.
pub(super) struct Kept<'a>(Vec<(&'a str, &'a RawValue)>);

/// Splits `body` into the fields the rules work on (as values), the fields kept raw, and the
/// prompt checks' [`Shape`]. `also_parsed` names other fields something reads (those the
/// provider drops, a body auth parameter). `None`: the general path must take this body.
pub(super) fn split(
    body: &[u8],
    also_parsed: impl Fn(&str) -> bool,
) -> Option<(Map<String, Value>, Kept<'_>, Shape)> {
    // A key with escapes cannot be borrowed: such a body takes the general path. Repeated keys
    // keep the last value, as `serde_json::Map` does.
    // Every byte of a valid body is in a key, a kept value or between them, so checking its
    // UTF-8 once up front refuses what `from_slice` would, without a check per key and value.
    let text = std::str::from_utf8(body).ok()?;
    let fields: BTreeMap<&str, &RawValue> = serde_json::from_str(text).ok()?;
    let mut parsed = Map::new();
    let mut kept = Vec::with_capacity(fields.len());
    let mut shape = Shape::default();
    for (key, raw) in fields {
        match key {
            "messages" => shape.messages(raw)?,
            "prompt" => shape.has_prompt = prompt(raw)?,
            "input" => shape.input_valid = input(raw)?,
            _ => {}
        }
        if RULE_FIELDS.contains(&key) || openai::REQUEST_FIELDS.contains(&key) || also_parsed(key) {
            parsed.insert(key.to_string(), serde_json::from_str(raw.get()).ok()?);
        } else {
            kept.push((key, raw));
        }
    }
    Some((parsed, Kept(kept), shape))
}

impl Kept<'_> {
    /// The upstream body: the kept fields and the driver's `body` (an object), merged in key
    /// order as `serde_json` writes a map; a field the driver set replaces a kept one.
    pub(super) fn join(self, body: &Value) -> Result<Vec<u8>, serde_json::Error> {
        let Value::Object(set) = body else {
            return serde_json::to_vec(body);
        };
        let size: usize = self
            .0
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + 128);
        out.push(b'{');
        let mut kept = self.0.into_iter().peekable();
        for (key, value) in set {
            while let Some((k, raw)) = kept.next_if(|(k, _)| *k <= key.as_str()) {
                if k != key {
                    write_raw(&mut out, k, raw);
                }
            }
            comma(&mut out);
            serde_json::to_writer(&mut out, key)?;
            out.push(b':');
            serde_json::to_writer(&mut out, value)?;
        }
        for (k, raw) in kept {
            write_raw(&mut out, k, raw);
        }
        out.push(b'}');
        Ok(out)
    }
}

/// A comma unless this is the object's first field.
fn comma(out: &mut Vec<u8>) {
    if out.len() > 1 {
        out.push(b',');
    }
}

/// A kept field: its key needs no escaping (it was borrowed unescaped from valid JSON).
fn write_raw(out: &mut Vec<u8>, key: &str, raw: &RawValue) {
    comma(out);
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(raw.get().as_bytes());
}

/// Just a message's `role`, whatever else it holds.
#[derive(Deserialize)]
struct Role<'a> {
    #[serde(borrow)]
    role: Option<&'a RawValue>,
}

impl Shape {
    /// `messages`: a non-empty array makes a chat body; every element needs a string `role`.
    fn messages(&mut self, raw: &RawValue) -> Option<()> {
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
            return Some(());
        };
        self.has_messages = !items.is_empty();
        for (i, item) in items.iter().enumerate() {
            let string_role = item.get().starts_with('{')
                && serde_json::from_str::<Role<'_>>(item.get())
                    .ok()?
                    .role
                    .is_some_and(|r| r.get().starts_with('"'));
            if !string_role {
                self.bad_role = Some(i);
                break;
            }
        }
        Some(())
    }
}

/// `prompt`: a string, or a non-empty array of strings.
fn prompt(raw: &RawValue) -> Option<bool> {
    let text = raw.get();
    if text.starts_with('"') {
        return Some(true);
    }
    if !text.starts_with('[') {
        return Some(false);
    }
    let items = serde_json::from_str::<Vec<&RawValue>>(text).ok()?;
    Some(!items.is_empty() && items.iter().all(|i| i.get().starts_with('"')))
}

/// `input` (embeddings): a non-empty string or a non-empty array.
fn input(raw: &RawValue) -> Option<bool> {
    let text = raw.get();
    if text.starts_with('"') {
        return Some(text != "\"\"");
    }
    if !text.starts_with('[') {
        return Some(false);
    }
    Some(
        !serde_json::from_str::<Vec<&RawValue>>(text)
            .ok()?
            .is_empty(),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::valid_input;
    use super::*;

    /// Both readings of one body: the raw path's shape (`None` when it hands the body to the
    /// general path) and the general path's, from the parsed map.
    fn both(body: &str) -> (Option<Shape>, Option<Shape>) {
        let raw = split(body.as_bytes(), |_| false).map(|(_, _, shape)| shape);
        let general = serde_json::from_str::<Map<String, Value>>(body)
            .ok()
            .map(|map| Shape::of(&map));
        (raw, general)
    }

    /// `input` read raw and as a value.
    fn input_both(text: &str) -> (Option<bool>, bool) {
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        (input(raw), valid_input(Some(&value)))
    }

    fn agree(body: &str) {
        // `None`: not an object, or something the raw path leaves to the general one.
        if let (Some(raw), general) = both(body) {
            assert_eq!(Some(raw), general, "{body}");
        }
    }

    fn client_requests(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                client_requests(&path, out);
            } else if path.file_name().is_some_and(|n| n == "client-request.json") {
                out.push(std::fs::read_to_string(path).unwrap());
            }
        }
    }

    #[test]
    fn every_fixture_body_reads_the_same_both_ways() {
        let mut bodies = Vec::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        client_requests(&root, &mut bodies);
        assert!(bodies.len() >= 10, "fixtures found: {}", bodies.len());
        let mut with_input = 0;
        for body in &bodies {
            let (raw, general) = both(body);
            assert_eq!(raw, general, "{body}");
            let map: Map<String, Value> = serde_json::from_str(body).unwrap();
            if let Some(value) = map.get("input") {
                with_input += 1;
                assert_eq!(input_both(&value.to_string()), (Some(true), true), "{body}");
            }
        }
        assert!(with_input >= 2, "fixtures with an input: {with_input}");
    }

    /// A body with invalid UTF-8 anywhere is left to the general path, which refuses it.
    #[test]
    fn invalid_utf8_takes_the_general_path() {
        for body in [
            &b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}"[..],
            b"{\"mo\xffdel\":\"m\",\"messages\":[]}",
        ] {
            assert!(split(body, |_| false).is_none());
            assert!(serde_json::from_slice::<Value>(body).is_err());
        }
    }

    #[test]
    fn input_agrees_on_valid_empty_and_malformed_values() {
        let table = [
            (r#""x""#, true),
            (r#""""#, false),
            (r#"" ""#, true),
            (r#""\u0000""#, true),
            (r#""\"\"""#, true),
            ("[1]", true),
            (r#"[""]"#, true),
            ("[[]]", true),
            ("[]", false),
            ("[ ]", false),
            ("[\n\t]", false),
            ("null", false),
            ("0", false),
            ("true", false),
            ("{}", false),
            (r#"{"a":1}"#, false),
        ];
        for (text, valid) in table {
            assert_eq!(input_both(text), (Some(valid), valid), "{text}");
            // The same value inside a body, compact and with white space around it.
            agree(&format!(r#"{{"input":{text}}}"#));
            agree(&format!("{{ \"input\" :\n {text} \n}}"));
        }
        // Bodies neither path can read, or that the raw path leaves to the general one.
        for body in [
            "",
            "{",
            r#"{"input":}"#,
            r#"{"input":[1,]}"#,
            r#"{"input":"x""#,
            r#"["input"]"#,
            r#"{"in\u0070ut":""}"#,
            r#"{"input":"x","input":""}"#,
        ] {
            agree(body);
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("input|prompt|messages|role|[a-z]{1,3}", inner), 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_input_reads_the_same_both_ways(value in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            let (raw, general) = input_both(&text);
            prop_assert_eq!(raw, Some(general), "{}", text);
        }

        #[test]
        fn any_body_reads_the_same_both_ways(
            fields in prop::collection::vec(("input|prompt|messages|model|[a-z]{1,3}", json_value()), 0..5),
            pretty in any::<bool>(),
        ) {
            let body = Value::Object(fields.into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&body).unwrap()
            } else {
                body.to_string()
            };
            let (raw, general) = both(&text);
            if let Some(raw) = raw {
                prop_assert_eq!(Some(raw), general, "{}", text);
            }
        }
    }
}
