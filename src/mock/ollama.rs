//! Ollama wire format: `/api/chat`, `/api/generate`, and embeddings at `/api/embed` and the
//! legacy `/api/embeddings`. Serves llama2 and mistral in `ollama` format.
//!
//! Like Ollama, chat and generate stream unless the body says `"stream": false`. Streams are
//! newline-delimited JSON (`application/x-ndjson`): one `done: false` line per word, then a
//! `done: true` line with `prompt_eval_count` / `eval_count`.

use actix_web::web::{self, Bytes};
use serde_json::{json, Value};

use super::{
    openai, post,
    reply::{embedding, input_texts, text_of, tool_arguments, word_count, Completion, Prompt},
    stream::ndjson,
    Answer, MockRequest, Wire,
};

/// Fixed so answers are reproducible.
const CREATED_AT: &str = "2024-01-15T08:13:38Z";

/// Ollama streams when `stream` is absent.
const STREAM_BY_DEFAULT: bool = true;

static OLLAMA: Wire = Wire::new("ollama", error_body);

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/api/chat", &OLLAMA, chat))
        .service(post("/api/generate", &OLLAMA, generate))
        .service(post("/api/embed", &OLLAMA, embed))
        .service(post("/api/embeddings", &OLLAMA, embeddings_legacy));
}

/// Ollama errors are `{"error": "..."}`.
fn error_body(_status: u16, message: &str) -> Value {
    json!({"error": message})
}

/// Which endpoint a line belongs to: chat lines carry `message`, generate lines `response`.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Generate,
}

impl Kind {
    fn content_key(self) -> &'static str {
        match self {
            Kind::Chat => "message",
            Kind::Generate => "response",
        }
    }

    /// The content field for a piece of text.
    fn text(self, text: &str) -> Value {
        match self {
            Kind::Chat => json!({"role": "assistant", "content": text}),
            Kind::Generate => json!(text),
        }
    }

    /// The content field for the whole completion: its text, or (chat) its tool call, which
    /// Ollama sends whole with object arguments.
    fn whole(self, completion: &Completion) -> Value {
        match (self, completion.tool()) {
            (Kind::Chat, Some(name)) => json!({"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": name, "arguments": tool_arguments()}}]}),
            _ => self.text(completion.text()),
        }
    }
}

/// `POST /api/chat`.
fn chat(req: &MockRequest) -> Answer {
    let completion = req.complete(openai::chat_prompt(&req.body));
    answer(req, Kind::Chat, &completion)
}

/// `POST /api/generate`: replies to `prompt` (with the optional `system` as context).
fn generate(req: &MockRequest) -> Answer {
    let mut prompt = Prompt::default();
    prompt.context(&text_of(&req.body["system"]));
    prompt.turn("user", &text_of(&req.body["prompt"]), false);
    answer(req, Kind::Generate, &req.complete(prompt))
}

fn answer(req: &MockRequest, kind: Kind, completion: &Completion) -> Answer {
    let model = req.model();
    let line = |content: Value, done: bool| {
        let mut line = json!({"model": model, "created_at": CREATED_AT, "done": done});
        line[kind.content_key()] = content;
        if done {
            line["done_reason"] = json!("stop");
            line["total_duration"] = json!(1_000_000);
            line["prompt_eval_count"] = json!(completion.prompt_tokens);
            line["eval_count"] = json!(completion.completion_tokens);
        }
        line
    };
    if !req.stream_flag(STREAM_BY_DEFAULT) {
        return Answer::json(line(kind.whole(completion), true), kind.content_key());
    }
    let mut frames: Vec<Bytes> = match completion.tool() {
        Some(_) => vec![ndjson(&line(kind.whole(completion), false))],
        None => completion
            .chunks()
            .into_iter()
            .map(|word| ndjson(&line(kind.text(word), false)))
            .collect(),
    };
    // Ollama's final line carries the counts and no more content.
    frames.push(ndjson(&line(kind.text(""), true)));
    Answer::Stream {
        content_type: "application/x-ndjson",
        frames,
    }
}

/// `POST /api/embed`: `input` is a string or an array.
fn embed(req: &MockRequest) -> Answer {
    let texts = input_texts(req.body.get("input"));
    let vectors: Vec<Vec<f32>> = texts.iter().map(|t| embedding(t, None)).collect();
    let words: u64 = texts.iter().map(|t| word_count(t)).sum();
    Answer::json(
        json!({"model": req.model(), "embeddings": vectors, "prompt_eval_count": words}),
        "embeddings",
    )
}

/// `POST /api/embeddings` (legacy): one `prompt`, one `embedding`.
fn embeddings_legacy(req: &MockRequest) -> Answer {
    let vector = embedding(&text_of(&req.body["prompt"]), None);
    Answer::json(json!({"embedding": vector}), "embedding")
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::mock::testkit::{ndjson_lines, post_json};

    fn chat_body(stream: Option<bool>) -> Value {
        let mut body = json!({"model": "llama3", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 1 + 1?"}]});
        if let Some(stream) = stream {
            body["stream"] = json!(stream);
        }
        body
    }

    const REPLY: &str = "Mock ollama reply to: What is 1 + 1?";

    #[actix_rt::test]
    async fn chat_answers_when_stream_is_false() {
        let v = post_json("/api/chat", &chat_body(Some(false)), None)
            .await
            .assert_sized_json();
        assert_eq!(v["message"], json!({"role": "assistant", "content": REPLY}));
        assert_eq!(v["done"], true);
        assert_eq!(
            (v["prompt_eval_count"].as_u64(), v["eval_count"].as_u64()),
            (Some(7), Some(9))
        );
    }

    #[actix_rt::test]
    async fn chat_streams_ndjson_by_default() {
        let got = post_json("/api/chat", &chat_body(None), None).await;
        assert_eq!(got.content_type(), "application/x-ndjson");
        let lines = ndjson_lines(&got.body);
        let text: String = lines
            .iter()
            .filter(|l| l["done"] == false)
            .filter_map(|l| l["message"]["content"].as_str())
            .collect();
        assert_eq!(text, REPLY);
        let last = lines.last().unwrap();
        assert_eq!(last["done"], true);
        assert_eq!(last["eval_count"], 9);
        assert_eq!(lines.len(), 10);
    }

    #[actix_rt::test]
    async fn chat_calls_tools_with_object_arguments() {
        let mut body = chat_body(Some(false));
        body["tools"] = json!([{"type": "function", "function": {"name": "add"}}]);
        let v = post_json("/api/chat", &body, None).await.json();
        let call = &v["message"]["tool_calls"][0]["function"];
        assert_eq!(call["name"], "add");
        assert_eq!(call["arguments"], json!({"a": 2, "b": 12}));
    }

    #[actix_rt::test]
    async fn generate_answers_and_streams() {
        let body = json!({"model": "llama3", "prompt": "Explain zero.", "stream": false});
        let v = post_json("/api/generate", &body, None)
            .await
            .assert_sized_json();
        assert_eq!(v["response"], "Mock ollama reply to: Explain zero.");
        assert_eq!(v["prompt_eval_count"], 2);

        let body = json!({"model": "llama3", "prompt": "Explain zero."});
        let lines = ndjson_lines(&post_json("/api/generate", &body, None).await.body);
        let text: String = lines
            .iter()
            .filter_map(|l| l["response"].as_str())
            .collect();
        assert_eq!(text, "Mock ollama reply to: Explain zero.");
    }

    #[actix_rt::test]
    async fn embeds() {
        let body = json!({"model": "nomic-embed-text", "input": ["a", "b"]});
        let v = post_json("/api/embed", &body, None)
            .await
            .assert_sized_json();
        assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
        let v = post_json(
            "/api/embeddings",
            &json!({"model": "m", "prompt": "a"}),
            None,
        )
        .await
        .json();
        assert_eq!(
            v["embedding"],
            json!(crate::mock::reply::embedding("a", None))
        );
    }

    #[actix_rt::test]
    async fn errors_in_ollama_shape() {
        let got = post_json("/api/chat", &chat_body(Some(false)), Some("status=404")).await;
        assert_eq!(got.status, 404);
        assert!(got.json()["error"].is_string());
    }
}
