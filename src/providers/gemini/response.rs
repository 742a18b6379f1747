//! Gemini response translation: `GenerateContentResponse`, embeddings and predictions -> OpenAI.

use super::*;

// ---------------------------------------------------------------------------------------------
// Translation: response
// ---------------------------------------------------------------------------------------------

/// What one candidate says, in OpenAI terms.
pub(super) struct Answer {
    text: Option<String>,
    /// Thought summaries (`includeThoughts`), reported as `reasoning_content`.
    reasoning: String,
    tool_calls: Vec<ToolCall>,
    finish: FinishReason,
}

/// Tool call ids: `call_<request id>_<n>`, with the thought signature appended when present.
pub(super) fn tool_call_id(request_id: &str, n: usize, signature: Option<&str>) -> String {
    match signature.filter(|s| !s.is_empty()) {
        Some(sig) => format!("call_{request_id}_{n}{THOUGHT_SIGNATURE_MARK}{sig}"),
        None => format!("call_{request_id}_{n}"),
    }
}

pub(super) fn answer(candidate: &GeminiCandidate, request_id: &str, calls_before: usize) -> Answer {
    let parts = candidate.content.iter().flat_map(|c| c.parts.iter());
    let mut text: Option<String> = None;
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for part in parts {
        if part.thought {
            reasoning.push_str(part.text.as_deref().unwrap_or(""));
            continue;
        }
        if let Some(call) = &part.function_call {
            let id = tool_call_id(
                request_id,
                calls_before + tool_calls.len(),
                part.thought_signature.as_deref(),
            );
            tool_calls.push(ToolCall::function(
                id,
                call.name.clone(),
                arguments_string(&call.args),
            ));
        } else if let Some(t) = part.text.as_deref().filter(|_| !part.thought) {
            text.get_or_insert_with(String::new).push_str(t);
        }
    }
    let finish = candidate
        .finish_reason
        .unwrap_or(GeminiFinishReason::Stop)
        .to_openai(!tool_calls.is_empty());
    if text.is_none() && tool_calls.is_empty() {
        text = Some(String::new());
    }
    Answer {
        text,
        reasoning,
        tool_calls,
        finish,
    }
}

/// `GenerateContentResponse` -> chat completion (or text completion), one choice per candidate.
pub(super) fn generate_response(
    ctx: &RequestCtx<'_>,
    r: GeminiResponse,
) -> Result<(Vec<u8>, Usage), String> {
    if r.candidates.is_empty() {
        return Err(NO_CANDIDATES.into());
    }
    let usage = r.usage_metadata.unwrap_or_default().to_openai();
    let meta = ctx.meta();
    let mut answers = Vec::with_capacity(r.candidates.len());
    let mut calls = 0;
    for candidate in &r.candidates {
        let a = answer(candidate, ctx.request_id, calls);
        calls += a.tool_calls.len();
        answers.push(a);
    }
    let body = if ctx.route_type == RouteType::Completions {
        serde_json::to_vec(&text_completion(&meta, answers, usage))
    } else {
        serde_json::to_vec(&chat_completion(&meta, answers, usage))
    };
    Ok((body.map_err(|e| e.to_string())?, usage))
}

pub(super) fn chat_completion(
    meta: &ResponseMeta,
    answers: Vec<Answer>,
    usage: Usage,
) -> ChatCompletion {
    let mut out = ChatCompletion::single(meta, None, Vec::new(), None, usage);
    out.choices = answers
        .into_iter()
        .enumerate()
        .flat_map(|(i, a)| {
            let one = ChatCompletion::single(meta, a.text, a.tool_calls, Some(a.finish), usage)
                .with_reasoning(a.reasoning, Vec::new());
            one.choices.into_iter().map(move |c| ChatChoice {
                index: i as u32,
                ..c
            })
        })
        .collect();
    out
}

pub(super) fn text_completion(
    meta: &ResponseMeta,
    answers: Vec<Answer>,
    usage: Usage,
) -> TextCompletion {
    let mut out = TextCompletion::single(meta, String::new(), None, usage);
    out.choices = answers
        .into_iter()
        .enumerate()
        .map(|(i, a)| TextChoice {
            index: i as u32,
            text: a.text.unwrap_or_default(),
            finish_reason: Some(a.finish),
            logprobs: None,
        })
        .collect();
    out
}

/// `embedding` / `embeddings` (AI Studio) or `predictions` (Vertex) -> an OpenAI list.
pub(super) fn embeddings_response(
    ctx: &RequestCtx<'_>,
    r: GeminiResponse,
) -> Result<(Vec<u8>, Usage), String> {
    let mut prompt_tokens = r.usage_metadata.map_or(0, |u| u.prompt_token_count);
    let vectors: Vec<Vec<f64>> = if let Some(predictions) = r.predictions {
        let mut counted = 0.0;
        let vectors = predictions
            .into_iter()
            .map(|p| {
                let e = p.embeddings.unwrap_or_default();
                counted += e.statistics.and_then(|s| s.token_count).unwrap_or(0.0);
                e.values
            })
            .collect();
        if prompt_tokens == 0 && counted.is_finite() && counted > 0.0 {
            prompt_tokens = counted as u64;
        }
        vectors
    } else if let Some(embeddings) = r.embeddings {
        embeddings.into_iter().map(|e| e.values).collect()
    } else if let Some(embedding) = r.embedding {
        vec![embedding.values]
    } else {
        return Err("no embeddings received from Gemini".into());
    };
    let list = EmbeddingList::new(ctx.model, vectors, prompt_tokens);
    let body = serde_json::to_vec(&list).map_err(|e| e.to_string())?;
    Ok((body, Usage::new(prompt_tokens, 0)))
}
