//! Multipart uploads (files, transcriptions, translations, image edits) stream through the
//! gateway: the handler pumps the client's body into a bounded channel, audio and image
//! uploads are re-encoded part by part on the way (Kong's model rule applied to the `model`
//! form field), and the provider actor sends the channel as the upstream body. Memory stays
//! at a few chunks whatever the upload's size; a slow provider slows the client down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Method;
use actix_web::web;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::error::GatewayError;

/// Chunks in flight between the client and the provider, per upload.
const CHANNEL_CHUNKS: usize = 8;
/// A `model` (or other text) form field longer than this is not a model name.
const MAX_MODEL_FIELD: usize = 1024;

/// Why an upload stopped. Shared between the tasks feeding the upload and the provider actor,
/// which answers with it when the upstream call fails because of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadFault {
    #[error("request body too large: the limit for this route is {0} bytes")]
    TooLarge(u64),
    #[error("client closed the request")]
    ClientGone,
    #[error("timed out reading the request body")]
    Timeout,
    #[error("{0}")]
    Invalid(String),
}

impl From<UploadFault> for GatewayError {
    fn from(fault: UploadFault) -> GatewayError {
        match fault {
            UploadFault::TooLarge(limit) => GatewayError::BodyTooLarge { limit },
            UploadFault::ClientGone => GatewayError::ClientGone,
            UploadFault::Timeout => GatewayError::ClientTimeout,
            UploadFault::Invalid(message) => GatewayError::BadRequest(message),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    fault: Option<UploadFault>,
    model: Option<String>,
}

/// What the upload tasks learnt: the first fault, and the model the form carried.
#[derive(Debug, Clone, Default)]
pub struct UploadState(Arc<Mutex<Shared>>);

impl UploadState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fail(&self, fault: UploadFault) {
        self.lock().fault.get_or_insert(fault);
    }

    pub fn fault(&self) -> Option<UploadFault> {
        self.lock().fault.clone()
    }

    pub fn model(&self) -> Option<String> {
        self.lock().model.clone()
    }

    fn set_model(&self, model: &str) {
        self.lock().model = Some(model.to_string());
    }
}

/// An upload on its way: the chunks, the length when known (sent as `Content-Length`), and
/// the shared state.
pub struct Upload {
    pub chunks: mpsc::Receiver<Result<Bytes, UploadFault>>,
    pub length: Option<u64>,
    pub state: UploadState,
}

impl Upload {
    /// A body already read whole, as an upload: what a target that streams uploads gets on a
    /// route that read the form once because another target needs it whole.
    pub fn buffered(body: Bytes) -> Upload {
        let (tx, chunks) = mpsc::channel(1);
        let length = Some(body.len() as u64);
        // The channel is empty and its receiver alive: the send cannot fail.
        let _ = tx.try_send(Ok(body));
        Upload {
            chunks,
            length,
            state: UploadState::default(),
        }
    }

    /// The chunks as a body stream for the upstream request.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, UploadFault>> + Send + 'static {
        futures_util::stream::unfold(self.chunks, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }
}

/// Whether a request is a multipart upload (a `POST` of `multipart/form-data`).
pub fn is_multipart_post(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::POST
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            })
}

/// Starts pumping the client's body into an [`Upload`] on this worker. `limit` is a
/// configured `max_request_body_size`; a client silent for `idle` is timed out.
pub fn pump(
    mut payload: web::Payload,
    length: Option<u64>,
    limit: Option<u64>,
    idle: Duration,
) -> Upload {
    let (tx, chunks) = mpsc::channel(CHANNEL_CHUNKS);
    let state = UploadState::default();
    let shared = state.clone();
    actix_rt::spawn(async move {
        let mut seen = 0u64;
        loop {
            let item = match tokio::time::timeout(idle, payload.next()).await {
                Err(_) => Err(UploadFault::Timeout),
                Ok(None) => break,
                Ok(Some(Err(actix_web::error::PayloadError::Incomplete(_)))) => {
                    Err(UploadFault::ClientGone)
                }
                Ok(Some(Err(e))) => Err(UploadFault::Invalid(format!(
                    "reading the request body failed: {e}"
                ))),
                Ok(Some(Ok(chunk))) => {
                    seen += chunk.len() as u64;
                    match limit {
                        Some(limit) if seen > limit => Err(UploadFault::TooLarge(limit)),
                        _ => Ok(chunk),
                    }
                }
            };
            let failed = item.is_err();
            if let Err(fault) = &item {
                shared.fail(fault.clone());
            }
            // The receiver is gone when the upstream call ended (answered, failed, cancelled).
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    Upload {
        chunks,
        length,
        state,
    }
}

/// Kong's model rule for a multipart form.
#[derive(Debug, Clone)]
pub struct FormRules {
    /// The configured model: it wins, a different `model` field is a 400, and it is added
    /// when the form has none.
    pub model: Option<String>,
    /// Whether the provider needs a model (audio) when neither side names one.
    pub model_required: bool,
    /// Whether the form needs a non-empty `prompt` field (image edits).
    pub prompt_required: bool,
}

/// The `multipart/form-data` boundary of a content type.
pub fn boundary(content_type: &str) -> Option<String> {
    multer::parse_boundary(content_type).ok()
}

/// A multipart form already in memory as JSON fields: text parts as strings, files as
/// `{"mime_type","data"}` (base64) under `image` (a list, for `image` and `image[]`) or their
/// own name (`mask`). For providers whose JSON APIs carry images inline.
pub fn read_form(
    body: Bytes,
    boundary: String,
) -> Result<serde_json::Map<String, serde_json::Value>, UploadFault> {
    use futures_util::FutureExt;
    use serde_json::{json, Value};
    let source = futures_util::stream::once(async move { Ok::<_, UploadFault>(body) });
    let mut form = multer::Multipart::new(source, boundary);
    let mut map = serde_json::Map::new();
    // The whole body is in memory, so every step completes at once.
    fn now<T>(step: Option<Result<T, multer::Error>>) -> Result<T, UploadFault> {
        step.unwrap_or(Err(multer::Error::IncompleteStream))
            .map_err(malformed)
    }
    while let Some(field) = now(form.next_field().now_or_never())? {
        let name = field.name().unwrap_or_default().to_string();
        let mime = field.content_type().map(|m| m.to_string());
        let is_file = field.file_name().is_some();
        let data = now(field.bytes().now_or_never())?;
        if !is_file {
            map.insert(
                name,
                Value::String(String::from_utf8_lossy(&data).into_owned()),
            );
            continue;
        }
        let image = json!({
            "mime_type": mime.unwrap_or_else(|| "image/png".into()),
            "data": crate::providers::images::base64(&data),
        });
        if name == "image" || name == "image[]" {
            if let Value::Array(list) = map.entry("image").or_insert(json!([])) {
                list.push(image);
            }
        } else {
            map.insert(name, image);
        }
    }
    Ok(map)
}

/// Re-encodes the multipart `upload` part by part with a fresh boundary, applying `rules`.
/// Each part keeps its name, filename and content type; exactly one `model` part goes out,
/// before the first file. Returns the new upload and its content type.
pub fn rewrite(upload: Upload, input_boundary: String, rules: FormRules) -> (Upload, String) {
    let out_boundary = format!("aigw-{}", uuid::Uuid::new_v4().simple());
    let content_type = format!("multipart/form-data; boundary={out_boundary}");
    let (tx, chunks) = mpsc::channel(CHANNEL_CHUNKS);
    let state = upload.state.clone();
    let shared = state.clone();
    actix_rt::spawn(async move {
        let source = upload.into_stream();
        let mut form = multer::Multipart::new(source, input_boundary);
        let mut writer = FormWriter {
            tx: &tx,
            boundary: &out_boundary,
        };
        if let Err(fault) = reencode(&mut form, &mut writer, &rules, &shared).await {
            // A fault the pump saw first (size, timeout, client gone) is the real cause.
            let fault = shared.fault().unwrap_or(fault);
            shared.fail(fault.clone());
            let _ = tx.send(Err(fault)).await;
        }
    });
    (
        Upload {
            chunks,
            length: None,
            state,
        },
        content_type,
    )
}

struct FormWriter<'a> {
    tx: &'a mpsc::Sender<Result<Bytes, UploadFault>>,
    boundary: &'a str,
}

/// Form field names and filenames inside a quoted header parameter (the HTML encoding).
fn quoted(value: &str) -> String {
    value
        .replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

impl FormWriter<'_> {
    async fn send(&mut self, bytes: Bytes) -> Result<(), UploadFault> {
        // The upstream call is over (it answered or failed): stop reading the client.
        self.tx
            .send(Ok(bytes))
            .await
            .map_err(|_| UploadFault::ClientGone)
    }

    async fn head(
        &mut self,
        name: &str,
        filename: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<(), UploadFault> {
        let mut out = BytesMut::with_capacity(128);
        out.put_slice(b"--");
        out.put_slice(self.boundary.as_bytes());
        out.put_slice(b"\r\nContent-Disposition: form-data; name=\"");
        out.put_slice(quoted(name).as_bytes());
        out.put_slice(b"\"");
        if let Some(filename) = filename {
            out.put_slice(b"; filename=\"");
            out.put_slice(quoted(filename).as_bytes());
            out.put_slice(b"\"");
        }
        out.put_slice(b"\r\n");
        if let Some(content_type) = content_type {
            out.put_slice(b"Content-Type: ");
            out.put_slice(content_type.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        self.send(out.freeze()).await
    }

    async fn text_part(&mut self, name: &str, value: &str) -> Result<(), UploadFault> {
        self.head(name, None, None).await?;
        self.send(Bytes::from(format!("{value}\r\n"))).await
    }

    async fn end(&mut self) -> Result<(), UploadFault> {
        self.send(Bytes::from(format!("--{}--\r\n", self.boundary)))
            .await
    }
}

fn malformed(e: multer::Error) -> UploadFault {
    UploadFault::Invalid(format!("malformed multipart body: {e}"))
}

/// A short text field, refused when it is longer than any model name.
async fn small_text(field: &mut multer::Field<'_>) -> Result<String, UploadFault> {
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        value.extend_from_slice(&chunk);
        if value.len() > MAX_MODEL_FIELD {
            return Err(UploadFault::Invalid("the 'model' field is too long".into()));
        }
    }
    String::from_utf8(value)
        .map_err(|_| UploadFault::Invalid("the 'model' field is not text".into()))
}

async fn reencode(
    form: &mut multer::Multipart<'_>,
    out: &mut FormWriter<'_>,
    rules: &FormRules,
    state: &UploadState,
) -> Result<(), UploadFault> {
    let mut model_sent = false;
    let mut prompt_seen = false;
    while let Some(mut field) = form.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_string();
        let filename = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(|m| m.to_string());
        if filename.is_none() && name == "model" {
            let requested = small_text(&mut field).await?;
            let model = match &rules.model {
                Some(conf) if *conf != requested => {
                    return Err(UploadFault::Invalid(format!(
                        "cannot use own model - must be: {conf}"
                    )))
                }
                _ => requested,
            };
            if model == "." || model == ".." {
                return Err(UploadFault::Invalid(format!(
                    "invalid model name '{model}'"
                )));
            }
            if !model_sent {
                state.set_model(&model);
                out.text_part("model", &model).await?;
                model_sent = true;
            }
            continue;
        }
        if filename.is_some() && !model_sent {
            if let Some(conf) = &rules.model {
                state.set_model(conf);
                out.text_part("model", conf).await?;
                model_sent = true;
            }
        }
        out.head(&name, filename.as_deref(), content_type.as_deref())
            .await?;
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            prompt_seen |= name == "prompt" && filename.is_none() && !chunk.is_empty();
            out.send(chunk).await?;
        }
        out.send(Bytes::from_static(b"\r\n")).await?;
    }
    if !model_sent {
        match &rules.model {
            Some(conf) => {
                state.set_model(conf);
                out.text_part("model", conf).await?;
            }
            None if rules.model_required => {
                return Err(UploadFault::Invalid(
                    "model parameter not found in request, nor in gateway configuration".into(),
                ))
            }
            None => {}
        }
    }
    if rules.prompt_required && !prompt_seen {
        return Err(UploadFault::Invalid(
            "request body doesn't contain valid prompts".into(),
        ));
    }
    out.end().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....data\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\ntext\r\n--XyZ--\r\n";

    fn upload_of(body: &'static [u8], split: usize) -> Upload {
        let (tx, chunks) = mpsc::channel(4);
        let state = UploadState::default();
        actix_rt::spawn(async move {
            for part in [&body[..split], &body[split..]] {
                let _ = tx.send(Ok(Bytes::from_static(part))).await;
            }
        });
        Upload {
            chunks,
            length: None,
            state,
        }
    }

    async fn run(
        body: &'static [u8],
        split: usize,
        rules: FormRules,
    ) -> (Result<String, UploadFault>, UploadState) {
        let (upload, content_type) = rewrite(upload_of(body, split), "XyZ".into(), rules);
        let state = upload.state.clone();
        let chunks: Vec<Result<Bytes, UploadFault>> = upload.into_stream().collect().await;
        let mut out = Vec::new();
        for chunk in chunks {
            match chunk {
                Ok(c) => out.extend_from_slice(&c),
                Err(f) => return (Err(f), state),
            }
        }
        let boundary = content_type.split("boundary=").nth(1).unwrap().to_string();
        (
            Ok(String::from_utf8(out).unwrap().replace(&boundary, "B")),
            state,
        )
    }

    fn rules(model: Option<&str>) -> FormRules {
        FormRules {
            model: model.map(str::to_string),
            model_required: true,
            prompt_required: false,
        }
    }

    #[actix_rt::test]
    async fn parts_keep_names_filenames_and_types_at_every_split() {
        for split in [0, 1, 10, 60, 100, FORM.len() - 3, FORM.len()] {
            let (out, state) = run(FORM.as_bytes(), split, rules(Some("whisper-1"))).await;
            let out = out.unwrap();
            assert_eq!(out.matches("name=\"model\"").count(), 1, "{out}");
            assert!(out.contains("name=\"file\"; filename=\"a %22b%22.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....data\r\n"), "{out}");
            assert!(
                out.contains("name=\"response_format\"\r\n\r\ntext\r\n"),
                "{out}"
            );
            assert!(out.ends_with("--B--\r\n"));
            assert_eq!(state.model().as_deref(), Some("whisper-1"));
        }
    }

    #[actix_rt::test]
    async fn a_form_read_whole_is_rewritten_like_a_streamed_one() {
        let upload = Upload::buffered(Bytes::from_static(FORM.as_bytes()));
        assert_eq!(upload.length, Some(FORM.len() as u64));
        let (upload, _) = rewrite(upload, "XyZ".into(), rules(Some("whisper-1")));
        let chunks: Vec<Result<Bytes, UploadFault>> = upload.into_stream().collect().await;
        let out: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        let (streamed, _) = run(FORM.as_bytes(), 10, rules(Some("whisper-1"))).await;
        let boundary = |s: &str| s.replace(s.split("\r\n").next().unwrap(), "--B");
        assert_eq!(
            boundary(&String::from_utf8(out).unwrap()),
            boundary(&streamed.unwrap())
        );
        let multipart = HeaderMap::from_iter([(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        )]);
        assert!(is_multipart_post(&Method::POST, &multipart));
        assert!(!is_multipart_post(&Method::PUT, &multipart));
        assert!(!is_multipart_post(&Method::POST, &HeaderMap::new()));
    }

    #[actix_rt::test]
    async fn the_configured_model_is_added_before_the_file_once() {
        const NO_MODEL: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\nID3\r\n--XyZ--\r\n";
        let (out, _) = run(NO_MODEL.as_bytes(), 7, rules(Some("gpt-4o-transcribe"))).await;
        let out = out.unwrap();
        assert!(out.starts_with("--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-transcribe\r\n--B\r\n"), "{out}");
        let (out, _) = run(NO_MODEL.as_bytes(), 7, rules(None)).await;
        assert_eq!(
            out.unwrap_err().to_string(),
            "model parameter not found in request, nor in gateway configuration"
        );
    }

    #[actix_rt::test]
    async fn a_different_model_is_refused() {
        let (out, _) = run(FORM.as_bytes(), 5, rules(Some("gpt-4o-transcribe"))).await;
        assert_eq!(
            out.unwrap_err(),
            UploadFault::Invalid("cannot use own model - must be: gpt-4o-transcribe".into())
        );
    }

    #[actix_rt::test]
    async fn a_form_without_a_prompt_is_refused_when_one_is_needed() {
        let mut r = rules(Some("whisper-1"));
        r.prompt_required = true;
        let (out, _) = run(FORM.as_bytes(), 5, r).await;
        assert_eq!(
            out.unwrap_err().to_string(),
            "request body doesn't contain valid prompts"
        );
    }

    #[test]
    fn a_form_in_memory_becomes_json_fields_with_base64_images() {
        const EDIT: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nadd a hat\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\nABC\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"b.png\"\r\nContent-Type: image/png\r\n\r\nDEF\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"mask\"; filename=\"m.png\"\r\nContent-Type: image/png\r\n\r\nM\r\n--XyZ--\r\n";
        let map = read_form(Bytes::from_static(EDIT.as_bytes()), "XyZ".into()).unwrap();
        assert_eq!(map["prompt"], "add a hat");
        assert_eq!(map["image"][0]["data"], "QUJD");
        assert_eq!(map["image"][1]["data"], "REVG");
        assert_eq!(map["mask"]["mime_type"], "image/png");
        assert!(read_form(Bytes::from_static(b"--XyZ\r\nbroken"), "XyZ".into()).is_err());
    }

    #[actix_rt::test]
    async fn a_broken_form_is_a_bad_request() {
        let (out, _) = run(b"--XyZ\r\nno headers", 3, rules(None)).await;
        assert!(
            matches!(out.unwrap_err(), UploadFault::Invalid(m) if m.starts_with("malformed multipart body"))
        );
    }
}
