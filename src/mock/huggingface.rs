//! Hugging Face Inference API wire format.
//!
//! * `POST /models/{model}/v1/chat/completions` — TGI's OpenAI-compatible chat (SSE `data:`
//!   chunks when `"stream": true`), answered by `openai.rs` with the "huggingface" label.
//! * `POST /models/{model}` — text generation: `{"inputs": "..."}` →
//!   `[{"generated_text": ...}]`, or with `"stream": true` TGI's SSE token events. Array
//!   `inputs`, or a model whose name looks like an embedding model, get feature extraction.
//! * `POST /models/{model}/pipeline/feature-extraction` and
//!   `POST /pipeline/feature-extraction/{model}` — embeddings: one vector per input (a bare vector
//!   for a string input).
//!
//! Model ids contain a slash (`mistralai/Mistral-7B-Instruct-v0.2`), hence the `.+` captures.

use actix_web::web::{self, Bytes};
use serde_json::{json, Value};

use super::{
    openai, post,
    reply::{embedding, text_of, Prompt},
    stream::sse_data,
    Answer, MockRequest, Wire,
};

/// Parts of model names that mark sentence-embedding models on the Hub.
const EMBEDDING_MODEL_MARKS: [&str; 7] = [
    "embed",
    "sentence-transformers/",
    "minilm",
    "mpnet",
    "bge-",
    "e5-",
    "gte-",
];

/// What a loading model's 503 says about the wait, in seconds.
const ESTIMATED_LOAD_SECS: f64 = 20.0;

static HUGGINGFACE: Wire = Wire::new("huggingface", error_body);

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    // Longest patterns first: `{model:.+}` would also swallow the suffixes.
    cfg.service(post(
        "/models/{model:.+}/v1/chat/completions",
        &HUGGINGFACE,
        openai::chat,
    ))
    .service(post(
        "/models/{model:.+}/pipeline/feature-extraction",
        &HUGGINGFACE,
        features,
    ))
    .service(post(
        "/pipeline/feature-extraction/{model:.+}",
        &HUGGINGFACE,
        features,
    ))
    .service(post("/models/{model:.+}", &HUGGINGFACE, inference))
    // A TGI server's own routes (Inference Endpoints).
    .service(post("/generate", &HUGGINGFACE, generate))
    .service(post("/generate_stream", &HUGGINGFACE, generate_stream));
}

/// TGI `POST /generate_stream`: the text generation stream, whatever the body says.
fn generate_stream(req: &MockRequest) -> Answer {
    generate_as(req, true)
}

/// `{"error": "..."}`; a 503 also says how long the model takes to load, as the Hub does.
pub(crate) fn error_body(status: u16, message: &str) -> Value {
    if status == 503 {
        return json!({"error": message, "estimated_time": ESTIMATED_LOAD_SECS});
    }
    json!({"error": message})
}

/// `POST /models/{model}`: text generation or, by input and model name, feature extraction.
fn inference(req: &MockRequest) -> Answer {
    let model = req.path_param("model").to_ascii_lowercase();
    let embedding_model = EMBEDDING_MODEL_MARKS.iter().any(|m| model.contains(m));
    if req.body["inputs"].is_array() || embedding_model {
        return features(req);
    }
    generate(req)
}

/// Text generation: the reply to `inputs`.
fn generate(req: &MockRequest) -> Answer {
    generate_as(req, req.stream_flag(false))
}

fn generate_as(req: &MockRequest, stream: bool) -> Answer {
    let mut prompt = Prompt::default();
    prompt.turn("user", &text_of(&req.body["inputs"]), false);
    let completion = req.complete(prompt);
    if !stream {
        return Answer::json(
            json!([{"generated_text": completion.text()}]),
            "generated_text",
        );
    }
    // TGI's stream: one token event per word; the last carries the whole text and details.
    let words = completion.chunks();
    let last = words.len().saturating_sub(1);
    let frames: Vec<Bytes> = words
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let (generated, details) = if i == last {
                (
                    json!(completion.text()),
                    json!({"finish_reason": "eos_token",
                           "generated_tokens": completion.completion_tokens}),
                )
            } else {
                (Value::Null, Value::Null)
            };
            sse_data(&json!({
                "index": i,
                "token": {"id": i, "text": word, "logprob": 0.0, "special": false},
                "generated_text": generated, "details": details,
            }))
        })
        .collect();
    Answer::Stream {
        content_type: "text/event-stream",
        frames,
    }
}

/// Feature extraction: a vector for a string input, a list of vectors for an array.
fn features(req: &MockRequest) -> Answer {
    let inputs = &req.body["inputs"];
    let body = match inputs.as_array() {
        Some(items) => json!(items
            .iter()
            .map(|item| embedding(&text_of(item), None))
            .collect::<Vec<_>>()),
        None => json!(embedding(&text_of(inputs), None)),
    };
    // A bare array has no content field for `no_choices` to remove.
    Answer::json(body, "")
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::mock::testkit::{post_json, sse_json};

    const MODEL: &str = "/models/mistralai/Mistral-7B-Instruct-v0.2";

    #[actix_rt::test]
    async fn text_generation_returns_generated_text() {
        let body = json!({"inputs": "Who made you?", "parameters": {"max_new_tokens": 64}});
        let v = post_json(MODEL, &body, None).await.assert_sized_json();
        assert_eq!(
            v,
            json!([{"generated_text": "Mock huggingface reply to: Who made you?"}])
        );
    }

    #[actix_rt::test]
    async fn text_generation_streams_tgi_tokens() {
        let body = json!({"inputs": "hi", "stream": true});
        let got = post_json(MODEL, &body, None).await;
        let (events, done) = sse_json(&got.body);
        assert!(!done);
        let text: String = events
            .iter()
            .filter_map(|e| e["token"]["text"].as_str())
            .collect();
        assert_eq!(text, "Mock huggingface reply to: hi");
        let last = events.last().unwrap();
        assert_eq!(last["generated_text"], "Mock huggingface reply to: hi");
        assert_eq!(last["details"]["generated_tokens"], 5);
    }

    #[actix_rt::test]
    async fn tgi_chat_speaks_openai_with_the_huggingface_label() {
        let body = json!({"model": "mistralai/Mistral-7B-Instruct-v0.2",
                          "messages": [{"role": "user", "content": "What is 1 + 1?"}]});
        let path = format!("{MODEL}/v1/chat/completions");
        let v = post_json(&path, &body, None).await.assert_sized_json();
        let content = &v["choices"][0]["message"]["content"];
        assert_eq!(content, "Mock huggingface reply to: What is 1 + 1?");

        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let (events, done) = sse_json(&post_json(&path, &streamed, None).await.body);
        assert!(done);
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Mock huggingface reply to: What is 1 + 1?");
    }

    #[actix_rt::test]
    async fn feature_extraction_by_path_input_or_model_name() {
        let one = json!({"inputs": "a"});
        let many = json!({"inputs": ["a", "b"]});
        let is_vector = |v: Value| v.as_array().unwrap().iter().all(Value::is_number);
        let vectors = |v: Value| v.as_array().unwrap().len();

        let path = "/pipeline/feature-extraction/sentence-transformers/all-MiniLM-L6-v2";
        assert!(is_vector(
            post_json(path, &one, None).await.assert_sized_json()
        ));
        let path = "/models/BAAI/bge-small-en-v1.5/pipeline/feature-extraction";
        assert_eq!(vectors(post_json(path, &many, None).await.json()), 2);
        let path = "/models/sentence-transformers/all-MiniLM-L6-v2";
        assert!(is_vector(post_json(path, &one, None).await.json()));
        assert_eq!(vectors(post_json(MODEL, &many, None).await.json()), 2);
    }

    #[actix_rt::test]
    async fn errors_in_hub_shape() {
        let got = post_json(MODEL, &json!({"inputs": "x"}), Some("status=503")).await;
        assert_eq!(got.status, 503);
        let v = got.json();
        assert!(v["error"].is_string());
        assert_eq!(v["estimated_time"], 20.0);

        let v = post_json(MODEL, &json!({"inputs": "x"}), Some("no_choices"))
            .await
            .json();
        assert_eq!(v, json!([{}]));
    }
}
