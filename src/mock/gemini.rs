//! Gemini wire format, for Google AI Studio and Vertex AI paths, plus an OAuth token endpoint.
//!
//! * AI Studio: `POST /v1beta/models/{model}:{operation}` (also `/v1/models/...`).
//! * Vertex: `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{operation}`
//!   (also `/v1beta1/...`).
//! * Operations: `generateContent`, `streamGenerateContent`, `embedContent`,
//!   `batchEmbedContents`, `predict` (Vertex text embeddings) and `countTokens`.
//! * `POST /token`: a JWT-bearer grant (as service-account auth sends it) gets
//!   `{"access_token":"mock-token-<n>","expires_in":3600,"token_type":"Bearer"}`; only the
//!   assertion's JWT shape is checked.
//!
//! Streaming is decided by the operation. `streamGenerateContent` answers a JSON array delivered
//! element by element (`application/json`), or SSE `data:` events with `?alt=sse`; elements carry
//! running `usageMetadata` and the last one `finishReason`.

use actix_web::web::{self, Bytes};
use base64::Engine;
use serde_json::{json, Value};

use super::{
    post,
    reply::{
        embedding, input_texts, text_of, tool_arguments, word_count, Completion, Prompt, THINKING,
    },
    Answer, MockRequest, Wire,
};

/// Lifetime of mock access tokens, in seconds.
const TOKEN_LIFETIME_SECS: u64 = 3600;

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Separator between streamed array elements, as Gemini writes it.
const ARRAY_SEPARATOR: &str = "\r\n,\r\n";

static GEMINI: Wire = Wire::new("gemini", error_body);

/// The token endpoint reads a form, not JSON.
static GOOGLE_OAUTH: Wire = Wire {
    json_body: false,
    ..Wire::new("google-oauth", oauth_error_body)
};

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    for path in [
        "/v1beta/models/{model}",
        "/v1/models/{model}",
        "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}",
        "/v1beta1/projects/{project}/locations/{location}/publishers/google/models/{model}",
    ] {
        cfg.service(post(path, &GEMINI, operation));
    }
    cfg.service(post("/token", &GOOGLE_OAUTH, token));
}

/// `{"error":{"code","message","status"}}` with Google's canonical status names.
fn error_body(status: u16, message: &str) -> Value {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    };
    json!({"error": {"code": status, "message": message, "status": name}})
}

fn oauth_error_body(_status: u16, message: &str) -> Value {
    json!({"error": "invalid_grant", "error_description": message})
}

/// Dispatches on the `:operation` suffix of the model segment.
fn operation(req: &MockRequest) -> Answer {
    let Some((_, op)) = req.path_param("model").rsplit_once(':') else {
        return Answer::error(404, "mock: the model path has no :operation");
    };
    match op {
        "generateContent" => generate(req, false),
        "streamGenerateContent" => generate(req, true),
        "embedContent" => embed_content(req),
        "batchEmbedContents" => batch_embed_contents(req),
        "predict" => predict(req),
        "countTokens" => Answer::json(
            json!({"totalTokens": contents_prompt(&req.body).words()}),
            "totalTokens",
        ),
        other => Answer::error(404, format!("mock: unknown Gemini operation {other}")),
    }
}

/// The prompt of a `contents` body: `systemInstruction`, then the turns. Turns whose parts return
/// a function response are tool results, whatever their role.
fn contents_prompt(body: &Value) -> Prompt {
    let mut prompt = Prompt::default();
    let system = body
        .get("systemInstruction")
        .or(body.get("system_instruction"));
    prompt.context(&text_of(system.unwrap_or(&Value::Null)));
    for content in body["contents"].as_array().into_iter().flatten() {
        let parts = &content["parts"];
        let tool_result = parts.as_array().is_some_and(|parts| {
            parts.iter().any(|p| {
                p.get("functionResponse")
                    .or(p.get("function_response"))
                    .is_some()
            })
        });
        let role = content["role"].as_str().unwrap_or("user");
        prompt.turn(role, &text_of(parts), tool_result);
    }
    prompt.offer_tools(body.get("tools"));
    prompt
}

/// One response element: a candidate with `parts` and the usage so far.
/// Image output: per candidate, a text part and an inline PNG naming the prompt and how many
/// input images came with it.
fn image(req: &MockRequest) -> Answer {
    let parts = req.body["contents"][0]["parts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let prompt = parts
        .iter()
        .find_map(|p| p["text"].as_str())
        .unwrap_or_default();
    let inputs = parts
        .iter()
        .filter(|p| p.get("inlineData").is_some())
        .count();
    let n = req.body["generationConfig"]["candidateCount"]
        .as_u64()
        .unwrap_or(1);
    let png = base64::engine::general_purpose::STANDARD.encode(format!(
        "\u{89}PNG mock gemini image of: {prompt} ({inputs} input images)"
    ));
    let candidates: Vec<Value> = (0..n)
        .map(|i| {
            json!({"index": i, "finishReason": "STOP", "content": {"role": "model", "parts": [
            {"text": format!("Mock gemini image of: {prompt}")},
            {"inlineData": {"mimeType": "image/png", "data": png}}]}})
        })
        .collect();
    Answer::json(
        json!({"candidates": candidates, "usageMetadata": {"promptTokenCount": word_count(prompt),
               "candidatesTokenCount": 1290 * n, "totalTokenCount": word_count(prompt) + 1290 * n}}),
        "candidates",
    )
}

fn element(parts: Value, finished: bool, completion: &Completion, output_tokens: u64) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if finished {
        candidate["finishReason"] = json!("STOP");
        candidate["safetyRatings"] = json!([]);
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": completion.prompt_tokens,
                          "candidatesTokenCount": output_tokens,
                          "totalTokenCount": completion.prompt_tokens + output_tokens},
        "modelVersion": "mock-gemini-001",
    })
}

/// `generateContent` / `streamGenerateContent`.
fn generate(req: &MockRequest, stream: bool) -> Answer {
    let wants_image = req.body["generationConfig"]["responseModalities"]
        .as_array()
        .is_some_and(|m| m.iter().any(|v| v == "IMAGE"));
    if wants_image {
        return image(req);
    }
    let completion = req.complete(contents_prompt(&req.body));
    let elements: Vec<Value> = match completion.tool() {
        Some(name) => {
            let call = json!([{"functionCall": {"name": name, "args": tool_arguments()}}]);
            vec![element(
                call,
                true,
                &completion,
                completion.completion_tokens,
            )]
        }
        None if !stream => {
            let parts = json!([{"text": completion.text()}]);
            vec![element(
                parts,
                true,
                &completion,
                completion.completion_tokens,
            )]
        }
        None => word_elements(&completion),
    };
    let mut elements = elements;
    // Thought summaries come first, as parts marked `thought`.
    if req.body["generationConfig"]["thinkingConfig"]["includeThoughts"] == true {
        let thought = json!({"text": THINKING, "thought": true});
        if stream {
            elements.insert(0, element(json!([thought]), false, &completion, 0));
        } else if let Some(parts) = elements[0]["candidates"][0]["content"]["parts"].as_array_mut()
        {
            parts.insert(0, thought);
        }
    }
    if !stream {
        let body = elements.into_iter().next().unwrap_or_default();
        return Answer::json(body, "candidates");
    }
    if req.query_param("alt").as_deref() == Some("sse") {
        // Gemini ends its SSE events with CRLF pairs and sends no terminator.
        let frames = elements
            .iter()
            .map(|e| Bytes::from(format!("data: {e}\r\n\r\n")))
            .collect();
        return Answer::Stream {
            content_type: "text/event-stream",
            frames,
        };
    }
    json_array_stream(&elements)
}

/// One element per word, the last one finished; at least one element.
fn word_elements(completion: &Completion) -> Vec<Value> {
    let words = completion.chunks();
    let words = if words.is_empty() { vec![""] } else { words };
    let last = words.len() - 1;
    words
        .iter()
        .enumerate()
        .map(|(i, word)| element(json!([{"text": word}]), i == last, completion, i as u64 + 1))
        .collect()
}

/// A JSON array written one element per frame: `[e0`, `,e1`, ..., `]`.
fn json_array_stream(elements: &[Value]) -> Answer {
    let mut frames: Vec<Bytes> = elements
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let lead = if i == 0 { "[" } else { ARRAY_SEPARATOR };
            Bytes::from(format!("{lead}{e}"))
        })
        .collect();
    frames.push(Bytes::from_static(b"]"));
    Answer::Stream {
        content_type: "application/json",
        frames,
    }
}

fn values(text: &str, dims: Option<u64>) -> Value {
    json!({"values": embedding(text, dims)})
}

/// `embedContent`: `{"content":{"parts":[...]}}` → `{"embedding":{"values":[...]}}`.
fn embed_content(req: &MockRequest) -> Answer {
    let dims = req.body["outputDimensionality"].as_u64();
    let embedding = values(&text_of(&req.body["content"]), dims);
    Answer::json(json!({"embedding": embedding}), "embedding")
}

/// `batchEmbedContents`: one embedding per request.
fn batch_embed_contents(req: &MockRequest) -> Answer {
    let embeddings: Vec<Value> = req.body["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| values(&text_of(&r["content"]), r["outputDimensionality"].as_u64()))
        .collect();
    Answer::json(json!({"embeddings": embeddings}), "embeddings")
}

/// Vertex `predict` for text-embedding models: `instances[].content`.
fn predict(req: &MockRequest) -> Answer {
    let dims = req
        .body
        .pointer("/parameters/outputDimensionality")
        .and_then(Value::as_u64);
    let texts = input_texts(req.body.get("instances"));
    let predictions: Vec<Value> = texts
        .iter()
        .map(|text| {
            let mut prediction = values(text, dims);
            prediction["statistics"] = json!({"token_count": word_count(text), "truncated": false});
            json!({"embeddings": prediction})
        })
        .collect();
    let characters: usize = texts.iter().map(|t| t.chars().count()).sum();
    Answer::json(
        json!({"predictions": predictions, "metadata": {"billableCharacterCount": characters}}),
        "predictions",
    )
}

/// `POST /token`: the OAuth 2.0 JWT-bearer grant (RFC 7523) Google service accounts use.
fn token(req: &MockRequest) -> Answer {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.raw).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("grant_type") != Some(JWT_BEARER_GRANT) {
        return Answer::error(400, format!("mock: grant_type must be {JWT_BEARER_GRANT}"));
    }
    if let Err(problem) = check_jwt_shape(field("assertion").unwrap_or("")) {
        return Answer::error(400, format!("mock: invalid JWT assertion: {problem}"));
    }
    let n = req.state().next_token();
    Answer::json(
        json!({"access_token": format!("mock-token-{n}"), "expires_in": TOKEN_LIFETIME_SECS,
               "token_type": "Bearer"}),
        "access_token",
    )
}

/// Three base64url segments; the first two JSON objects, the header naming an `alg`. The
/// signature is not verified: the mock has no key.
fn check_jwt_shape(jwt: &str) -> Result<(), &'static str> {
    let segments: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = segments[..] else {
        return Err("expected three dot-separated segments");
    };
    if signature.is_empty() {
        return Err("empty signature");
    }
    let decode = |segment: &str| -> Option<Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    };
    let header = decode(header).ok_or("header is not base64url JSON")?;
    decode(claims).ok_or("claims are not base64url JSON")?;
    if !header["alg"].is_string() {
        return Err("header has no alg");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use base64::Engine;
    use serde_json::{json, Value};

    use super::check_jwt_shape;
    use crate::mock::testkit::{post_json, send, sse_json};

    const STUDIO: &str = "/v1beta/models/gemini-1.5-flash";
    const VERTEX: &str =
        "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-1.5-flash";
    const REPLY: &str = "Mock gemini reply to: Double it.";

    fn body() -> Value {
        json!({"contents": [
            {"role": "user", "parts": [{"text": "What is 2 + 3?"}]},
            {"role": "model", "parts": [{"text": "5."}]},
            {"role": "user", "parts": [{"text": "Double it."}]}],
            "systemInstruction": {"parts": [{"text": "Be terse."}]}})
    }

    #[actix_rt::test]
    async fn generate_content_on_studio_and_vertex_paths() {
        for base in [STUDIO, VERTEX] {
            let got = post_json(&format!("{base}:generateContent?key=k"), &body(), None).await;
            let v = got.assert_sized_json();
            let candidate = &v["candidates"][0];
            assert_eq!(candidate["content"]["parts"][0]["text"], REPLY);
            assert_eq!(candidate["finishReason"], "STOP");
            let usage =
                json!({"promptTokenCount": 10, "candidatesTokenCount": 6, "totalTokenCount": 16});
            assert_eq!(v["usageMetadata"], usage);
        }
    }

    #[actix_rt::test]
    async fn stream_is_a_json_array_without_alt_sse() {
        let got = post_json(&format!("{STUDIO}:streamGenerateContent"), &body(), None).await;
        assert_eq!(got.content_type(), "application/json");
        let elements: Vec<Value> = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(elements.len(), 6);
        let text: String = elements
            .iter()
            .filter_map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str())
            .collect();
        assert_eq!(text, REPLY);
        let last = elements.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 6);
        assert!(elements[0]["candidates"][0].get("finishReason").is_none());
    }

    #[actix_rt::test]
    async fn stream_is_sse_with_alt_sse() {
        let got = post_json(
            &format!("{VERTEX}:streamGenerateContent?alt=sse"),
            &body(),
            None,
        )
        .await;
        assert_eq!(got.content_type(), "text/event-stream");
        assert!(got.body.ends_with(b"\r\n\r\n"));
        let (events, done) = sse_json(&got.body);
        assert!(!done);
        assert_eq!(events.len(), 6);
    }

    #[actix_rt::test]
    async fn tools_get_a_function_call() {
        let mut body = body();
        body["tools"] = json!([{"function_declarations": [{"name": "add"}, {"name": "mul"}]}]);
        let v = post_json(&format!("{STUDIO}:generateContent"), &body, None)
            .await
            .json();
        let call = &v["candidates"][0]["content"]["parts"][0]["functionCall"];
        assert_eq!(*call, json!({"name": "add", "args": {"a": 2, "b": 12}}));

        let got = post_json(&format!("{STUDIO}:streamGenerateContent"), &body, None).await;
        let elements: Vec<Value> = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(
            elements[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
            "add"
        );
    }

    #[actix_rt::test]
    async fn function_responses_get_text() {
        let mut body = body();
        body["tools"] = json!([{"functionDeclarations": [{"name": "add"}]}]);
        body["contents"] = json!([
            {"role": "user", "parts": [{"text": "add"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "add", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "add", "response": {"r": 14}}}]}]);
        let v = post_json(&format!("{STUDIO}:generateContent"), &body, None)
            .await
            .json();
        let text = &v["candidates"][0]["content"]["parts"][0]["text"];
        assert_eq!(text, "Mock gemini reply to: add");
    }

    #[actix_rt::test]
    async fn embeddings_in_every_gemini_shape() {
        let path = "/v1beta/models/text-embedding-004";
        let one = json!({"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 3});
        let v = post_json(&format!("{path}:embedContent"), &one, None)
            .await
            .assert_sized_json();
        assert_eq!(v["embedding"]["values"].as_array().unwrap().len(), 3);

        let batch = json!({"requests": [{"content": {"parts": [{"text": "a"}]}}, {"content": {"parts": [{"text": "b"}]}}]});
        let v = post_json(&format!("{path}:batchEmbedContents"), &batch, None)
            .await
            .json();
        assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);

        let vertex =
            "/v1/projects/p/locations/l/publishers/google/models/text-embedding-004:predict";
        let v = post_json(vertex, &json!({"instances": [{"content": "a b"}]}), None)
            .await
            .json();
        assert_eq!(
            v["predictions"][0]["embeddings"]["statistics"]["token_count"],
            2
        );
    }

    #[actix_rt::test]
    async fn errors_in_google_shape() {
        let got = post_json(
            &format!("{STUDIO}:generateContent"),
            &body(),
            Some("status=503"),
        )
        .await;
        assert_eq!(got.status, 503);
        let v = got.json();
        assert_eq!(v["error"]["code"], 503);
        assert_eq!(v["error"]["status"], "UNAVAILABLE");

        let got = post_json(&format!("{STUDIO}:frobnicate"), &body(), None).await;
        assert_eq!(got.status, 404);
    }

    fn jwt() -> String {
        let enc = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let header = enc(json!({"alg": "RS256", "typ": "JWT"}));
        let claims = enc(json!({"iss": "sa@p.iam.gserviceaccount.com", "scope": "x"}));
        format!("{header}.{claims}.c2ln")
    }

    #[actix_rt::test]
    async fn token_endpoint_issues_numbered_tokens_for_jwt_grants() {
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            jwt()
        );
        let req = TestRequest::post()
            .uri("/token")
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .set_payload(form);
        let v = send(req).await.assert_sized_json();
        assert!(v["access_token"]
            .as_str()
            .unwrap()
            .starts_with("mock-token-"));
        assert_eq!(v["expires_in"], 3600);
        assert_eq!(v["token_type"], "Bearer");

        let bad = TestRequest::post()
            .uri("/token")
            .set_payload("grant_type=password");
        let got = send(bad).await;
        assert_eq!(got.status, 400);
        assert_eq!(got.json()["error"], "invalid_grant");
    }

    #[test]
    fn jwt_shape_checks() {
        assert!(check_jwt_shape(&jwt()).is_ok());
        assert!(check_jwt_shape("a.b").is_err());
        assert!(check_jwt_shape("bm90.anNvbg.sig").is_err());
    }
}
