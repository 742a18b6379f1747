//! Raw llama2 wire format (Kong's `llama2_format: raw`): a TGI-style server fed a hand-built
//! `[INST]` prompt.
//!
//! `POST /raw/llama2` (and any path below it) with `{"inputs": "<s>[INST] ... [/INST]"}` answers
//! `{"data":[{"generated_text": "<inputs>[/INST] Mock llama2 reply to: <last instruction>"}]}`:
//! the prompt echoed, then the reply after a final `[/INST]`, which is where the gateway cuts.
//! Streaming is not part of this format.

use actix_web::web;
use serde_json::json;

use super::{huggingface, post, reply::Prompt, Answer, MockRequest, Wire};

const INST_OPEN: &str = "[INST]";
const INST_CLOSE: &str = "[/INST]";

static LLAMA2_RAW: Wire = Wire::new("llama2", huggingface::error_body);

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/raw/llama2", &LLAMA2_RAW, generate))
        .service(post("/raw/llama2/{tail:.*}", &LLAMA2_RAW, generate));
}

fn generate(req: &MockRequest) -> Answer {
    let inputs = req.body["inputs"].as_str().unwrap_or("");
    let completion = req.complete(Prompt::raw(inputs, last_instruction(inputs)));
    let separator = if inputs.trim_end().ends_with(INST_CLOSE) {
        " "
    } else {
        "[/INST] "
    };
    let generated = format!("{inputs}{separator}{}", completion.text());
    Answer::json(
        json!({
            "data": [{"generated_text": generated}],
            "usage": {"prompt_tokens": completion.prompt_tokens,
                      "completion_tokens": completion.completion_tokens,
                      "total_tokens": completion.total_tokens()},
        }),
        "data",
    )
}

/// The user text of the last `[INST] ... [/INST]` block, without a `<<SYS>>` preamble (closed by
/// `<</SYS>>`, or by a second `<<SYS>>` as Kong's completions prompt has it).
fn last_instruction(prompt: &str) -> &str {
    let body = prompt.rsplit(INST_OPEN).next().unwrap_or(prompt);
    let body = body.split(INST_CLOSE).next().unwrap_or(body);
    let body = match body.rsplit_once("<</SYS>>") {
        Some((_, after)) => after,
        None => body.rsplit("<<SYS>>").next().unwrap_or(body),
    };
    body.trim()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::last_instruction;
    use crate::mock::testkit::post_json;

    const CHAT: &str =
        "<s>[INST] <<SYS>> You are a mathematician. <</SYS>> What is 1 + 2? [/INST] \
                        <s>[INST] Why can't you divide by zero? [/INST]";
    const COMPLETION: &str =
        "<s> [INST] <<SYS>> You are a helpful assistant. <<SYS>> Explain zero. [/INST]";

    #[test]
    fn finds_the_last_instruction() {
        assert_eq!(last_instruction(CHAT), "Why can't you divide by zero?");
        assert_eq!(last_instruction(COMPLETION), "Explain zero.");
        assert_eq!(last_instruction("plain text"), "plain text");
    }

    #[actix_rt::test]
    async fn echoes_the_prompt_and_replies_after_the_last_inst() {
        let body = json!({"inputs": CHAT, "parameters": {"max_new_tokens": 128, "stream": false}});
        let v = post_json("/raw/llama2", &body, None)
            .await
            .assert_sized_json();
        let generated = v["data"][0]["generated_text"].as_str().unwrap();
        assert!(generated.starts_with(CHAT));
        let answer = generated.rsplit("[/INST]").next().unwrap().trim();
        assert_eq!(
            answer,
            "Mock llama2 reply to: Why can't you divide by zero?"
        );
        assert_eq!(v["usage"]["prompt_tokens"], CHAT.split_whitespace().count());
    }

    #[actix_rt::test]
    async fn prompts_without_a_closing_inst_get_one() {
        let body = json!({"inputs": "hello"});
        let v = post_json("/raw/llama2/generate", &body, None).await.json();
        let expected = "hello[/INST] Mock llama2 reply to: hello";
        assert_eq!(v["data"][0]["generated_text"], expected);
    }

    #[actix_rt::test]
    async fn errors_in_hub_shape() {
        let got = post_json("/raw/llama2", &json!({"inputs": "x"}), Some("status=500")).await;
        assert_eq!(got.status, 500);
        assert!(got.json()["error"].is_string());
    }
}
