//! OpenAI images on Gemini / Vertex: `generateContent` on an image-capable model with
//! `responseModalities: [TEXT, IMAGE]`; input images (edits) and the mask go in as inline
//! parts after the prompt, and the answer's inline image parts come back as `b64_json`.

use serde_json::{json, Map, Value};

use crate::providers::images::{self, ImageAsk};
use crate::providers::oai::Usage;
use crate::providers::{RequestCtx, Translated};

pub(super) fn request(body: &Map<String, Value>) -> Result<Value, String> {
    let ask = ImageAsk::from_body(body)?;
    let mut parts = vec![json!({"text": ask.prompt})];
    for image in ask.images.iter().chain(ask.mask.iter()) {
        parts.push(json!({"inlineData": {"mimeType": image.mime_type, "data": image.data}}));
    }
    Ok(json!({
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "candidateCount": ask.n},
    }))
}

pub(super) fn response(ctx: &RequestCtx<'_>, body: &[u8]) -> Result<Translated, String> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| super::UNDECODABLE)?;
    let mut found = Vec::new();
    // Each candidate's text is about that candidate's images.
    for candidate in answer["candidates"].as_array().into_iter().flatten() {
        let parts = candidate["content"]["parts"].as_array();
        let text: Vec<&str> = parts
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect();
        let text = (!text.is_empty()).then(|| text.join(" "));
        for part in parts.into_iter().flatten() {
            let inline = part.get("inlineData").or(part.get("inline_data"));
            if let Some(data) = inline.and_then(|i| i["data"].as_str()) {
                found.push(images::Generated {
                    b64: data.to_string(),
                    text: text.clone(),
                });
            }
        }
    }
    let meta = &answer["usageMetadata"];
    let usage = Usage::new(
        meta["promptTokenCount"].as_u64().unwrap_or(0),
        meta["candidatesTokenCount"].as_u64().unwrap_or(0),
    );
    images::answer(ctx.created, found, usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ai_proxy::{ModelOptions, RouteType};
    use crate::providers::testkit::ctx;

    #[test]
    fn edits_send_the_prompt_then_every_image_inline() {
        let body = json!({"prompt": "add a hat", "n": 2,
            "image": [{"mime_type": "image/png", "data": "AAA"}],
            "mask": {"mime_type": "image/png", "data": "MMM"}});
        let out = request(body.as_object().unwrap()).unwrap();
        assert_eq!(out["contents"][0]["parts"][0]["text"], "add a hat");
        assert_eq!(out["contents"][0]["parts"][1]["inlineData"]["data"], "AAA");
        assert_eq!(out["contents"][0]["parts"][2]["inlineData"]["data"], "MMM");
        assert_eq!(out["generationConfig"]["candidateCount"], 2);
        assert_eq!(
            out["generationConfig"]["responseModalities"],
            json!(["TEXT", "IMAGE"])
        );
    }

    #[test]
    fn inline_image_parts_become_b64_json() {
        let options = ModelOptions::default();
        let c = ctx(
            RouteType::ImageGenerations,
            "gemini-2.5-flash-image",
            false,
            &options,
        );
        let answer = json!({"candidates": [{"content": {"parts": [
            {"text": "Here is a fox"}, {"inlineData": {"mimeType": "image/png", "data": "QUJD"}}]}}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1290}});
        let t = response(&c, answer.to_string().as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["data"][0]["b64_json"], "QUJD");
        assert_eq!(v["data"][0]["revised_prompt"], "Here is a fox");
        assert_eq!(t.usage.total_tokens, 1293);
        let text_only = json!({"candidates": [{"content": {"parts": [{"text": "no"}]}}]});
        assert!(response(&c, text_only.to_string().as_bytes()).is_err());
    }
}
