//! OpenAI's REST APIs beyond chat — responses, files, batches, the assistants family, audio
//! and images — under OpenAI paths (`/v1/...`) and Azure's layout (`/openai/...`,
//! `/openai/deployments/{d}/...`, `/openai/v1/responses`), found by the first API resource
//! name in the path so any `upstream_url` prefix works.
//!
//! Multipart uploads are read as a stream and never held whole: the log records each part's
//! name, filename, content type, size and FNV-1a hash (text fields up to 1 KiB verbatim), which
//! is what tests compare. Answers are deterministic; `x-mock-fault` works as for chat (`status`,
//! `html`, `delay`, `hang`, `chunk_delay`).
//!
//! Special ids: `GET /files/file-large-<n>/content` streams `n` MiB of bytes (64 KiB frames),
//! and a batch's `output_file_id` is `file-output-<batch id>`, whose content is batch JSONL.

use actix_web::{
    guard,
    http::Method,
    web::{self, Bytes},
    HttpRequest, HttpResponse,
};
use base64::Engine;
use serde_json::{json, Map, Value};

use super::{
    fault::{self, Faults},
    not_found,
    openai::{AZURE, OPENAI},
    responses,
    stream::MockStream,
    Wire,
};

/// Fixed so answers are reproducible.
pub(crate) const CREATED: u64 = 1_730_000_000;
/// Text form fields longer than this are recorded by size and hash only.
const MAX_RECORDED_TEXT: usize = 1024;
/// Largest non-multipart body the mock reads.
const MAX_JSON_BODY: usize = 64 << 20;
const MIB: usize = 1 << 20;
const FRAME: usize = 64 * 1024;
/// A client that sends nothing for this long has abandoned its upload.
const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The API resource names the mock recognises as the first segment of an API path.
const RESOURCES: [&str; 9] = [
    "responses",
    "files",
    "batches",
    "assistants",
    "threads",
    "vector_stores",
    "audio",
    "images",
    "realtime",
];

/// The resource segments of an API path (`["files", "file-1", "content"]`), if it is one.
pub(crate) fn api_segments(path: &str) -> Option<Vec<&str>> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let at = segments.iter().position(|s| RESOURCES.contains(s))?;
    Some(segments[at..].to_vec())
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/{tail:.*}")
            .guard(guard::fn_guard(|ctx| {
                api_segments(ctx.head().uri.path()).is_some()
            }))
            .to(serve),
    );
}

/// The parts of a multipart form as the log records them.
async fn read_form(req: &HttpRequest, payload: web::Payload) -> Result<Vec<Value>, String> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|e| e.to_string())?;
    // multer needs a `Send` stream; the gateway's upload pump turns the payload into one.
    let upload = crate::proxy::upload::pump(payload, None, None, UPLOAD_IDLE);
    let mut form = multer::Multipart::new(upload.into_stream(), boundary);
    let mut parts = Vec::new();
    while let Some(mut field) = form.next_field().await.map_err(|e| e.to_string())? {
        let mut part = Map::new();
        part.insert("name".into(), json!(field.name()));
        part.insert("filename".into(), json!(field.file_name()));
        part.insert(
            "content_type".into(),
            json!(field.content_type().map(|m| m.to_string())),
        );
        let (mut size, mut hash, mut text) = (0usize, FNV_OFFSET, Vec::new());
        while let Some(chunk) = field.chunk().await.map_err(|e| e.to_string())? {
            size += chunk.len();
            hash = fnv1a(hash, &chunk);
            if text.len() <= MAX_RECORDED_TEXT {
                text.extend_from_slice(&chunk);
            }
        }
        part.insert("bytes".into(), json!(size));
        part.insert("fnv1a".into(), json!(format!("{hash:016x}")));
        if part["filename"].is_null() && text.len() <= MAX_RECORDED_TEXT {
            part.insert("text".into(), json!(String::from_utf8_lossy(&text)));
        }
        parts.push(Value::Object(part));
    }
    Ok(parts)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bit: cheap, streaming, and easy to recompute in a test.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A request as the API handlers see it: JSON body, or the parts of a form.
pub(crate) struct ApiRequest<'a> {
    pub method: &'a Method,
    pub segments: Vec<&'a str>,
    pub body: Value,
    pub parts: Vec<Value>,
    pub faults: Faults,
    pub wire: &'static Wire,
    pub http: &'a HttpRequest,
}

impl ApiRequest<'_> {
    /// A form field's text, or a JSON body field's string.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p["name"] == name && p["filename"].is_null())
            .and_then(|p| p["text"].as_str())
            .or_else(|| self.body.get(name).and_then(Value::as_str))
    }

    fn files(&self) -> impl Iterator<Item = &Value> {
        self.parts.iter().filter(|p| !p["filename"].is_null())
    }
}

async fn serve(req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let path = req.path().to_string();
    let Some(segments) = api_segments(&path) else {
        return not_found(&path);
    };
    let wire: &'static Wire = if path.starts_with("/openai/") {
        &AZURE
    } else {
        &OPENAI
    };
    if segments[0] == "realtime" {
        return super::realtime::serve(req, payload);
    }
    let multipart = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (body, parts, raw) = if multipart {
        match read_form(&req, payload).await {
            Ok(parts) => (Value::Null, parts, Bytes::new()),
            Err(e) => {
                return fault::native_error(wire, 400, &format!("mock: bad multipart body: {e}"))
            }
        }
    } else {
        match payload.to_bytes_limited(MAX_JSON_BODY).await {
            Ok(Ok(raw)) => (
                serde_json::from_slice(&raw).unwrap_or(Value::Null),
                Vec::new(),
                raw,
            ),
            _ => return fault::native_error(wire, 413, "mock: body too large"),
        }
    };
    let recorded = if multipart {
        Some(json!({ "parts": parts }))
    } else {
        serde_json::from_slice::<Value>(&raw).ok()
    };
    super::state_of(&req).record(&req, &raw, recorded.as_ref());
    let header = req
        .headers()
        .get(fault::HEADER)
        .and_then(|v| v.to_str().ok());
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let defaults = super::state_of(&req).default_faults();
    let faults = Faults::parse_over(&defaults, header, model);
    if let Some(refused) = super::before_answer(&faults, wire).await {
        return refused;
    }
    let request = ApiRequest {
        method: req.method(),
        segments: segments.clone(),
        body,
        parts,
        faults,
        wire,
        http: &req,
    };
    match segments[0] {
        "responses" => responses::responses(&request),
        "assistants" | "threads" | "vector_stores" => responses::assistants(&request),
        "files" => files(&request),
        "batches" => batches(&request),
        "audio" => audio(&request),
        "images" => images(&request),
        _ => not_found(&path),
    }
}

/// `{"object":"list","data":[...]}` with OpenAI's cursor fields.
pub(crate) fn list(data: Vec<Value>) -> HttpResponse {
    let first = data.first().map(|d| d["id"].clone()).unwrap_or(Value::Null);
    let last = data.last().map(|d| d["id"].clone()).unwrap_or(Value::Null);
    HttpResponse::Ok().json(json!({
        "object": "list", "data": data, "first_id": first, "last_id": last, "has_more": false
    }))
}

pub(crate) fn deleted(id: &str, object: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"id": id, "object": object, "deleted": true}))
}

/// A streamed body of pre-built frames, counted in the mock's stream statistics.
pub(crate) fn streamed(
    req: &ApiRequest<'_>,
    content_type: &str,
    frames: Vec<Bytes>,
) -> HttpResponse {
    let body = MockStream::new(
        frames,
        req.faults.chunk_delay,
        req.faults.close_mid_stream,
        req.http
            .app_data::<web::Data<super::log::MockState>>()
            .cloned(),
    );
    HttpResponse::Ok()
        .content_type(content_type)
        .streaming(body)
}

fn file_object(id: &str, filename: &str, bytes: u64, purpose: &str) -> Value {
    json!({
        "id": id, "object": "file", "bytes": bytes, "created_at": CREATED,
        "filename": filename, "purpose": purpose, "status": "processed", "status_details": null
    })
}

fn files(req: &ApiRequest<'_>) -> HttpResponse {
    match (req.method.as_str(), &req.segments[1..]) {
        ("POST", []) => {
            let Some(file) = req.files().next() else {
                return fault::native_error(req.wire, 400, "mock: no file part");
            };
            let bytes = file["bytes"].as_u64().unwrap_or(0);
            let id = format!("file-mock-{}", file["fnv1a"].as_str().unwrap_or("0"));
            let object = file_object(
                &id,
                file["filename"].as_str().unwrap_or_default(),
                bytes,
                req.field("purpose").unwrap_or("user_data"),
            );
            // Azure answers an upload with 201 Created.
            let mut response = if req.wire.provider == "azure" {
                HttpResponse::Created()
            } else {
                HttpResponse::Ok()
            };
            response.json(object)
        }
        ("GET", []) => list(vec![file_object(
            "file-mock-1",
            "input.jsonl",
            120,
            "batch",
        )]),
        ("GET", [id]) => HttpResponse::Ok().json(file_object(id, "input.jsonl", 120, "batch")),
        ("DELETE", [id]) => deleted(id, "file"),
        ("GET", [id, "content"]) => file_content(req, id),
        _ => super::not_found(req.http.path()),
    }
}

fn file_content(req: &ApiRequest<'_>, id: &str) -> HttpResponse {
    if let Some(mib) = id
        .strip_prefix("file-large-")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let frame = Bytes::from(vec![b'x'; FRAME]);
        return streamed(
            req,
            "application/octet-stream",
            vec![frame; mib * MIB / FRAME],
        );
    }
    let batch = id.strip_prefix("file-output-").unwrap_or(id);
    let lines: String = (1..=2)
        .map(|n| {
            json!({"id": format!("batch_req_{n}"), "custom_id": format!("request-{n}"),
                   "response": {"status_code": 200, "request_id": batch, "body": {
                       "object": "chat.completion", "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("Mock openai batch answer {n}")}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}},
                   "error": null})
            .to_string()
                + "\n"
        })
        .collect();
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(lines)
}

fn batch_object(id: &str, status: &str, body: &Value) -> Value {
    let done = status == "completed";
    json!({
        "id": id, "object": "batch",
        "endpoint": body.get("endpoint").cloned().unwrap_or(json!("/v1/chat/completions")),
        "input_file_id": body.get("input_file_id").cloned().unwrap_or(json!("file-mock-1")),
        "completion_window": "24h", "status": status, "created_at": CREATED,
        "output_file_id": if done { json!(format!("file-output-{id}")) } else { Value::Null },
        "error_file_id": null, "errors": null,
        "request_counts": {"total": 2, "completed": if done { 2 } else { 0 }, "failed": 0},
        "metadata": body.get("metadata").cloned().unwrap_or(Value::Null)
    })
}

fn batches(req: &ApiRequest<'_>) -> HttpResponse {
    match (req.method.as_str(), &req.segments[1..]) {
        ("POST", []) => {
            HttpResponse::Ok().json(batch_object("batch_mock_1", "validating", &req.body))
        }
        ("GET", []) => list(vec![batch_object(
            "batch_mock_1",
            "completed",
            &Value::Null,
        )]),
        ("GET", [id]) => HttpResponse::Ok().json(batch_object(id, "completed", &Value::Null)),
        ("POST", [id, "cancel"]) => {
            HttpResponse::Ok().json(batch_object(id, "cancelling", &Value::Null))
        }
        _ => super::not_found(req.http.path()),
    }
}

fn audio_type(format: &str) -> &'static str {
    match format {
        "opus" => "audio/ogg",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        _ => "audio/mpeg",
    }
}

/// Speech is `n` frames of deterministic "audio" (the input's words, repeated); transcripts
/// name the file they heard.
fn audio(req: &ApiRequest<'_>) -> HttpResponse {
    if req.method != Method::POST {
        return super::not_found(req.http.path());
    }
    match req.segments.get(1).copied() {
        Some("speech") => {
            let format = req.field("response_format").unwrap_or("mp3");
            let input = req.field("input").unwrap_or_default();
            let frame = Bytes::from(
                std::iter::repeat_n(input.as_bytes(), 2048)
                    .flatten()
                    .copied()
                    .collect::<Vec<u8>>(),
            );
            streamed(req, audio_type(format), vec![frame; 8])
        }
        Some(op @ ("transcriptions" | "translations")) => {
            let file = req.files().next();
            let heard = format!(
                "Mock {} {} of {} ({} bytes)",
                req.wire.provider,
                if op == "transcriptions" {
                    "transcript"
                } else {
                    "translation"
                },
                file.and_then(|f| f["filename"].as_str())
                    .unwrap_or("nothing"),
                file.and_then(|f| f["bytes"].as_u64()).unwrap_or(0)
            );
            match req.field("response_format").unwrap_or("json") {
                "text" => HttpResponse::Ok()
                    .content_type("text/plain; charset=utf-8")
                    .body(heard + "\n"),
                "srt" => HttpResponse::Ok()
                    .content_type("text/plain; charset=utf-8")
                    .body(format!("1\n00:00:00,000 --> 00:00:01,000\n{heard}\n\n")),
                "vtt" => HttpResponse::Ok()
                    .content_type("text/vtt; charset=utf-8")
                    .body(format!(
                        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{heard}\n\n"
                    )),
                _ if op == "translations" => HttpResponse::Ok().json(json!({"text": heard})),
                _ => {
                    let words = super::reply::word_count(&heard);
                    HttpResponse::Ok().json(json!({"text": heard, "usage": {
                        "type": "tokens", "input_tokens": 10, "output_tokens": words,
                        "total_tokens": 10 + words,
                        "input_token_details": {"text_tokens": 0, "audio_tokens": 10}}}))
                }
            }
        }
        _ => super::not_found(req.http.path()),
    }
}

/// Images: `n` results as `b64_json` (a few deterministic bytes) or `url`; an edit's revised
/// prompt says how many images and whether a mask arrived.
fn images(req: &ApiRequest<'_>) -> HttpResponse {
    if req.method != Method::POST {
        return super::not_found(req.http.path());
    }
    let prompt = req.field("prompt").unwrap_or_default();
    let n = req
        .body
        .get("n")
        .and_then(Value::as_u64)
        .or_else(|| req.field("n").and_then(|n| n.parse().ok()))
        .unwrap_or(1);
    let revised = match req.segments.get(1).copied() {
        Some("generations") => format!("Mock {} image of: {prompt}", req.wire.provider),
        Some("edits") => {
            let images = req
                .files()
                .filter(|f| f["name"].as_str().is_some_and(|n| n.starts_with("image")))
                .count();
            let mask = req.files().any(|f| f["name"] == "mask");
            format!(
                "Mock {} edit of {images} image(s){}: {prompt}",
                req.wire.provider,
                if mask { " with a mask" } else { "" }
            )
        }
        _ => return super::not_found(req.http.path()),
    };
    let url = req.field("response_format") == Some("url");
    let data: Vec<Value> = (0..n)
        .map(|i| {
            let bytes = format!("\u{89}PNG mock image {i}: {revised}");
            if url {
                json!({"url": format!("https://images.mock/{i}.png"), "revised_prompt": revised})
            } else {
                json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(bytes), "revised_prompt": revised})
            }
        })
        .collect();
    let words = super::reply::word_count(prompt);
    HttpResponse::Ok().json(json!({
        "created": CREATED, "data": data,
        "usage": {"input_tokens": words, "output_tokens": 100 * n, "total_tokens": words + 100 * n,
                  "input_tokens_details": {"text_tokens": words, "image_tokens": 0}}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_found_under_any_prefix() {
        assert_eq!(
            api_segments("/v1/files/file-1/content"),
            Some(vec!["files", "file-1", "content"])
        );
        assert_eq!(
            api_segments("/openai/deployments/d/audio/speech"),
            Some(vec!["audio", "speech"])
        );
        assert_eq!(api_segments("/v1/chat/completions"), None);
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
