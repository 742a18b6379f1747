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

fn resolve_opt(value: &mut Option<String>, src: &TemplateSource<'_>) -> Result<(), String> {
    if let Some(v) = value.as_mut() {
        if is_template(v) {
            *v = resolve(v, src)?;
        }
    }
    Ok(())
}

/// Resolves every templatable string of the model options, into a copy (the shared config is
/// never mutated, so one client's values cannot leak into the next request).
pub fn resolve_options(
    options: &ModelOptions,
    src: &TemplateSource<'_>,
) -> Result<ModelOptions, String> {
    let mut o = options.clone();
    for field in [
        &mut o.anthropic_version,
        &mut o.azure_instance,
        &mut o.azure_api_version,
        &mut o.azure_deployment_id,
        &mut o.upstream_url,
        &mut o.upstream_path,
    ] {
        resolve_opt(field, src)?;
    }
    if let Some(g) = o.gemini.as_mut() {
        for field in [
            &mut g.api_endpoint,
            &mut g.project_id,
            &mut g.location_id,
            &mut g.endpoint_id,
        ] {
            resolve_opt(field, src)?;
        }
    }
    if let Some(b) = o.bedrock.as_mut() {
        resolve_opt(&mut b.aws_region, src)?;
    }
    Ok(o)
}

/// Whether any option string is templated, decided once at config load.
pub fn options_are_templated(o: &ModelOptions) -> bool {
    let strings = [
        &o.anthropic_version,
        &o.azure_instance,
        &o.azure_api_version,
        &o.azure_deployment_id,
        &o.upstream_url,
        &o.upstream_path,
    ];
    let gemini = o.gemini.iter().flat_map(|g| {
        [
            &g.api_endpoint,
            &g.project_id,
            &g.location_id,
            &g.endpoint_id,
        ]
    });
    let bedrock = o.bedrock.iter().map(|b| &b.aws_region);
    strings
        .into_iter()
        .chain(gemini)
        .chain(bedrock)
        .flatten()
        .any(|s| is_template(s))
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
}
