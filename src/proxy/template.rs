//! Kong's `$(source.key)` templates in `config.model` strings, resolved per request from the
//! route's regex captures, the request headers or the query string. Only the first placeholder
//! of a string is replaced (Kong); text around it is kept.

use crate::config::ai_proxy::ModelOptions;

/// Where template values come from, for one request.
pub struct TemplateSource<'a> {
    pub captures: &'a [(String, String)],
    pub headers: &'a actix_web::http::header::HeaderMap,
    pub query: &'a str,
}

/// Whether a config string needs per-request resolution.
pub fn is_template(s: &str) -> bool {
    s.contains("$(")
}

/// Resolves the first `$(source.key)` in `value`, with Kong's error texts.
pub fn resolve(value: &str, src: &TemplateSource<'_>) -> Result<String, String> {
    let Some(start) = value.find("$(") else {
        return Ok(value.to_string());
    };
    let Some(len) = value[start..].find(')') else {
        return Err(format!("cannot parse expression for field '{value}'"));
    };
    let expr = &value[start + 2..start + len];
    let (source, key) = match expr.split('.').collect::<Vec<_>>().as_slice() {
        [source, key] if !source.is_empty() && !key.is_empty() => (*source, *key),
        _ => return Err(format!("cannot parse expression for field '{value}'")),
    };
    let found = match source {
        "uri_captures" => src
            .captures
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone()),
        "headers" => src
            .headers
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        "query_params" => url::form_urlencoded::parse(src.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned()),
        other => return Err(format!("source '{other}' is not supported")),
    };
    let found = found.ok_or_else(|| format!("{source} key {key} was not provided"))?;
    Ok(format!(
        "{}{}{}",
        &value[..start],
        found,
        &value[start + len + 1..]
    ))
}

/// Where a templated option's value ends up, which decides what a client may put in it: a
/// template lets the client choose part of the upstream request, so the value must not be able
/// to leave its place (change the host, climb the path, add a query key or a header line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// One DNS label of a host name (`{instance}.openai.azure.com`, an AWS region).
    HostLabel,
    /// One URL path segment (a deployment, a project id).
    PathSegment,
    /// A URL path, possibly several segments (Kong's `$(uri_captures.operation_path)`).
    Path,
    /// A query parameter value.
    QueryValue,
    /// An HTTP header value.
    HeaderValue,
    /// A whole URL: the placeholder's position in the configured template decides.
    Url,
}

/// A templatable model option: its name in the plugin config and where its value lands.
struct Field {
    name: &'static str,
    place: Place,
    get: fn(&mut ModelOptions) -> Option<&mut Option<String>>,
}

/// Every model option Kong resolves templates in, in one list (resolution, detection and
/// validation all walk it).
const FIELDS: [Field; 11] = [
    Field {
        name: "anthropic_version",
        place: Place::HeaderValue,
        get: |o| Some(&mut o.anthropic_version),
    },
    Field {
        name: "azure_instance",
        place: Place::HostLabel,
        get: |o| Some(&mut o.azure_instance),
    },
    Field {
        name: "azure_api_version",
        place: Place::QueryValue,
        get: |o| Some(&mut o.azure_api_version),
    },
    Field {
        name: "azure_deployment_id",
        place: Place::PathSegment,
        get: |o| Some(&mut o.azure_deployment_id),
    },
    Field {
        name: "upstream_url",
        place: Place::Url,
        get: |o| Some(&mut o.upstream_url),
    },
    Field {
        name: "upstream_path",
        place: Place::Path,
        get: |o| Some(&mut o.upstream_path),
    },
    Field {
        name: "gemini.api_endpoint",
        place: Place::HostLabel,
        get: |o| o.gemini.as_mut().map(|g| &mut g.api_endpoint),
    },
    Field {
        name: "gemini.project_id",
        place: Place::PathSegment,
        get: |o| o.gemini.as_mut().map(|g| &mut g.project_id),
    },
    Field {
        name: "gemini.location_id",
        place: Place::PathSegment,
        get: |o| o.gemini.as_mut().map(|g| &mut g.location_id),
    },
    Field {
        name: "gemini.endpoint_id",
        place: Place::PathSegment,
        get: |o| o.gemini.as_mut().map(|g| &mut g.endpoint_id),
    },
    Field {
        name: "bedrock.aws_region",
        place: Place::HostLabel,
        get: |o| o.bedrock.as_mut().map(|b| &mut b.aws_region),
    },
];

/// RFC 3986 unreserved characters: safe anywhere in a URL without changing its structure.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The place of the placeholder inside a templated URL: host, path or query.
fn place_in_url(template: &str) -> Place {
    let at = template.find("$(").unwrap_or(0);
    let Some(scheme_end) = template.find("://") else {
        return Place::HostLabel;
    };
    let authority_start = scheme_end + 3;
    let authority_end = template[authority_start..]
        .find(['/', '?', '#'])
        .map_or(template.len(), |i| authority_start + i);
    if at < authority_end {
        return Place::HostLabel;
    }
    place_in_path(template)
}

/// The place of the placeholder inside a templated path: path or query.
fn place_in_path(template: &str) -> Place {
    let at = template.find("$(").unwrap_or(0);
    match template.find('?') {
        Some(q) if q < at => Place::QueryValue,
        _ => Place::Path,
    }
}

/// Whether a value fits its place; `Err` says what the place accepts.
fn check(place: Place, value: &str) -> Result<(), &'static str> {
    let ok = match place {
        Place::HostLabel => {
            !value.is_empty()
                && value.len() <= 63
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !value.starts_with('-')
                && !value.ends_with('-')
        }
        Place::PathSegment => {
            !value.is_empty() && value != "." && value != ".." && value.bytes().all(unreserved)
        }
        Place::Path => {
            value
                .bytes()
                .all(|b| unreserved(b) || matches!(b, b'/' | b':' | b'@'))
                && !value.split('/').any(|s| s == "." || s == "..")
        }
        Place::QueryValue => !value.is_empty() && value.bytes().all(unreserved),
        Place::HeaderValue => value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)),
        Place::Url => unreachable!("a URL template is checked by the place of its placeholder"),
    };
    ok.then_some(()).ok_or(match place {
        Place::HostLabel => "a host name label (letters, digits and '-')",
        Place::PathSegment => "one URL path segment (letters, digits, '-', '.', '_', '~')",
        Place::Path => "a URL path (letters, digits, '-', '.', '_', '~', '/', ':', '@'; no '.' or '..' segments)",
        Place::QueryValue => "a query value (letters, digits, '-', '.', '_', '~')",
        Place::HeaderValue => "a header value (printable ASCII)",
        Place::Url => "",
    })
}

/// Resolves one templated field and checks the client's part of the result for its place.
fn resolve_field(
    field: &Field,
    value: &mut String,
    src: &TemplateSource<'_>,
) -> Result<(), String> {
    let resolved = resolve(value, src)?;
    // `resolve` succeeded, so the first placeholder is `template[start..end]`, and Kong
    // replaces only that one: the client's text is what stands in its place.
    let template = value.as_str();
    let start = template.find("$(").unwrap_or(0);
    let end = template[start..]
        .find(')')
        .map_or(template.len(), |e| start + e + 1);
    let inserted = &resolved[start..resolved.len() - (template.len() - end)];
    let place = match field.place {
        Place::Url => place_in_url(template),
        Place::Path => place_in_path(template),
        place => place,
    };
    let invalid = |accepts: &str| {
        format!(
            "invalid value for 'model.options.{}' from {}: it must be {accepts}",
            field.name,
            &template[start..end],
        )
    };
    check(place, inserted).map_err(invalid)?;
    // A path whose first character comes from the client must still start at the root, or it
    // could be read as part of the authority (`@host`, `:port`) once appended to a base URL.
    if place == Place::Path && start == 0 && !resolved.starts_with('/') {
        return Err(invalid("an absolute path starting with '/'"));
    }
    *value = resolved;
    Ok(())
}

/// Resolves every templatable string of the model options, into a copy (the shared config is
/// never mutated, so one client's values cannot leak into the next request). Each value is
/// checked for the place it lands before anything is sent: a value that does not fit is a 400
/// naming the option.
pub fn resolve_options(
    options: &ModelOptions,
    src: &TemplateSource<'_>,
) -> Result<ModelOptions, String> {
    let mut o = options.clone();
    for field in &FIELDS {
        if let Some(Some(value)) = (field.get)(&mut o) {
            if is_template(value) {
                resolve_field(field, value, src)?;
            }
        }
    }
    Ok(o)
}

/// Whether any option string is templated, decided once at config load.
pub fn options_are_templated(o: &ModelOptions) -> bool {
    let mut o = o.clone();
    FIELDS
        .iter()
        .any(|field| matches!((field.get)(&mut o), Some(Some(v)) if is_template(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    fn source<'a>(
        captures: &'a [(String, String)],
        headers: &'a HeaderMap,
        query: &'a str,
    ) -> TemplateSource<'a> {
        TemplateSource {
            captures,
            headers,
            query,
        }
    }

    #[test]
    fn resolves_each_source_keeping_surrounding_text() {
        let caps = vec![("model".to_string(), "gpt-4o".to_string())];
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-deployment"),
            HeaderValue::from_static("dep1"),
        );
        let src = source(&caps, &headers, "region=eu&x=1");
        assert_eq!(resolve("$(uri_captures.model)", &src).unwrap(), "gpt-4o");
        assert_eq!(
            resolve("pre-$(headers.x-deployment)-post", &src).unwrap(),
            "pre-dep1-post"
        );
        assert_eq!(resolve("$(query_params.region)", &src).unwrap(), "eu");
        assert_eq!(resolve("plain", &src).unwrap(), "plain");
    }

    #[test]
    fn errors_use_kongs_texts() {
        let headers = HeaderMap::new();
        let src = source(&[], &headers, "");
        assert_eq!(
            resolve("$(uri_captures.model)", &src).unwrap_err(),
            "uri_captures key model was not provided"
        );
        assert_eq!(
            resolve("$(uri_captures_uri_cap_1)", &src).unwrap_err(),
            "cannot parse expression for field '$(uri_captures_uri_cap_1)'"
        );
        assert_eq!(
            resolve("$(cookies.x)", &src).unwrap_err(),
            "source 'cookies' is not supported"
        );
    }

    #[test]
    fn options_resolution_copies_and_detects_templates() {
        let options = ModelOptions {
            azure_deployment_id: Some("$(uri_captures.dep)".into()),
            ..ModelOptions::default()
        };
        assert!(options_are_templated(&options));
        assert!(!options_are_templated(&ModelOptions::default()));
        let caps = vec![("dep".to_string(), "d1".to_string())];
        let headers = HeaderMap::new();
        let resolved = resolve_options(&options, &source(&caps, &headers, "")).unwrap();
        assert_eq!(resolved.azure_deployment_id.as_deref(), Some("d1"));
        assert_eq!(
            options.azure_deployment_id.as_deref(),
            Some("$(uri_captures.dep)")
        );
    }

    fn with_header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-v"),
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    /// Options with `$(headers.x-v)` in every templatable field.
    fn all_templated() -> ModelOptions {
        let mut o = ModelOptions {
            gemini: Some(Default::default()),
            bedrock: Some(Default::default()),
            ..ModelOptions::default()
        };
        for field in &FIELDS {
            let template = match field.name {
                "upstream_url" => "https://$(headers.x-v).example.com/v1",
                "upstream_path" => "/v1/$(headers.x-v)",
                _ => "$(headers.x-v)",
            };
            *(field.get)(&mut o).unwrap() = Some(template.into());
        }
        o
    }

    fn only(field: &Field) -> ModelOptions {
        let mut all = all_templated();
        let mut o = ModelOptions {
            gemini: Some(Default::default()),
            bedrock: Some(Default::default()),
            azure_api_version: None,
            ..ModelOptions::default()
        };
        *(field.get)(&mut o).unwrap() = (field.get)(&mut all).unwrap().clone();
        o
    }

    #[test]
    fn a_templated_host_label_cannot_name_another_host() {
        let options = ModelOptions {
            azure_instance: Some("$(headers.x-v)".into()),
            ..ModelOptions::default()
        };
        for hostile in ["127.0.0.1:9/", "evil.com", "a@b", "x/y", "-x", ""] {
            let headers = with_header(hostile);
            let err = resolve_options(&options, &source(&[], &headers, "")).unwrap_err();
            assert!(
                err.starts_with(
                    "invalid value for 'model.options.azure_instance' from $(headers.x-v)"
                ),
                "{hostile:?}: {err}"
            );
        }
        let headers = with_header("my-instance");
        let ok = resolve_options(&options, &source(&[], &headers, "")).unwrap();
        assert_eq!(ok.azure_instance.as_deref(), Some("my-instance"));
    }

    #[test]
    fn every_templated_option_is_checked_for_its_place_and_named() {
        // A value that leaves a label, a segment, a path and a query value (a header value is
        // checked below).
        let headers = with_header("../x?y=1&z#@h:1");
        for field in FIELDS.iter().filter(|f| f.place != Place::HeaderValue) {
            let err =
                resolve_options(&only(field), &source(&[], &headers, "")).expect_err(field.name);
            assert!(
                err.contains(&format!("'model.options.{}'", field.name)),
                "{}: {err}",
                field.name
            );
        }
        let headers = with_header("2023-06-01");
        for field in &FIELDS {
            resolve_options(&only(field), &source(&[], &headers, "")).expect(field.name);
        }
    }

    #[test]
    fn a_header_value_cannot_carry_a_line_break() {
        let options = ModelOptions {
            anthropic_version: Some("$(query_params.v)".into()),
            ..ModelOptions::default()
        };
        let headers = HeaderMap::new();
        let err =
            resolve_options(&options, &source(&[], &headers, "v=1%0D%0Ax-evil:1")).unwrap_err();
        assert!(err.contains("'model.options.anthropic_version'"), "{err}");
    }

    #[test]
    fn a_url_template_is_checked_where_its_placeholder_stands() {
        assert_eq!(
            place_in_url("https://$(headers.h).example.com/v1"),
            Place::HostLabel
        );
        assert_eq!(place_in_url("https://h:$(headers.p)/v1"), Place::HostLabel);
        assert_eq!(place_in_url("$(headers.url)"), Place::HostLabel);
        assert_eq!(place_in_url("https://h/v1/$(headers.p)/x"), Place::Path);
        assert_eq!(
            place_in_url("https://h/v1?x=$(headers.p)"),
            Place::QueryValue
        );
        assert_eq!(place_in_path("$(uri_captures.op)"), Place::Path);
        assert_eq!(place_in_path("/v1?x=$(uri_captures.op)"), Place::QueryValue);
    }

    #[test]
    fn a_whole_templated_path_must_stay_a_rooted_path() {
        let options = ModelOptions {
            upstream_path: Some("$(uri_captures.op)".into()),
            ..ModelOptions::default()
        };
        let headers = HeaderMap::new();
        for (value, ok) in [
            ("/chat/completions", true),
            ("/models/g:generateContent", true),
            ("@evil.com/x", false),
            (":9/x", false),
            ("/a/../../x", false),
            ("/a%2F..", false),
            ("/a?b", false),
        ] {
            let caps = vec![("op".to_string(), value.to_string())];
            let result = resolve_options(&options, &source(&caps, &headers, ""));
            assert_eq!(result.is_ok(), ok, "{value}: {result:?}");
        }
    }
}
