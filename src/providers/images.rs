//! OpenAI's image API (`images/generations`, `images/edits`) on providers that only have
//! their own image models (Gemini's image output, Bedrock's InvokeModel image models): the
//! OpenAI request as the translators read it, and the OpenAI answer they build.

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::oai::Usage;
use super::Translated;

/// An input image (edits): its type and base64 data, as the gateway read it from the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputImage {
    pub mime_type: String,
    pub data: String,
}

/// What an OpenAI image request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageAsk {
    pub prompt: String,
    pub n: u64,
    pub size: Option<(u64, u64)>,
    pub images: Vec<InputImage>,
    pub mask: Option<InputImage>,
}

fn input_image(value: &Value) -> Option<InputImage> {
    Some(InputImage {
        mime_type: value.get("mime_type")?.as_str()?.to_string(),
        data: value.get("data")?.as_str()?.to_string(),
    })
}

impl ImageAsk {
    /// Reads the body the gateway built: JSON fields, with form files as
    /// `{"mime_type","data"}` objects under `image` (a list) and `mask`.
    pub fn from_body(body: &Map<String, Value>) -> Result<ImageAsk, String> {
        let prompt = body
            .get("prompt")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or("request body doesn't contain valid prompts")?
            .to_string();
        let number = |v: &Value| v.as_u64().or_else(|| v.as_str()?.parse().ok());
        let n = body.get("n").and_then(number).unwrap_or(1).clamp(1, 10);
        let size = body
            .get("size")
            .and_then(Value::as_str)
            .and_then(|s| s.split_once('x'))
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
        let images = body
            .get("image")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(input_image).collect())
            .unwrap_or_default();
        let mask = body.get("mask").and_then(input_image);
        Ok(ImageAsk {
            prompt,
            n,
            size,
            images,
            mask,
        })
    }
}

/// One generated image: its base64 bytes, and the provider's text about it (`revised_prompt`).
pub struct Generated {
    pub b64: String,
    pub text: Option<String>,
}

/// The OpenAI images answer: every image as `b64_json` (providers return image bytes, not
/// URLs), with the provider's text about it as `revised_prompt` when it sent one.
pub fn answer(created: u64, images: Vec<Generated>, usage: Usage) -> Result<Translated, String> {
    if images.is_empty() {
        return Err("the provider answered without an image".into());
    }
    let data: Vec<Value> = images
        .into_iter()
        .map(|image| match image.text {
            Some(text) => json!({"b64_json": image.b64, "revised_prompt": text}),
            None => json!({"b64_json": image.b64}),
        })
        .collect();
    let body = json!({
        "created": created,
        "data": data,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
                  "total_tokens": usage.total_tokens},
    });
    Ok(Translated {
        body: Bytes::from(body.to_string()),
        usage,
    })
}

/// Base64 of raw bytes, as every provider's JSON carries images.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_read_prompt_count_size_and_images() {
        let body = json!({"prompt": "a fox", "n": "2", "size": "512x768",
            "image": [{"mime_type": "image/png", "data": "AAA"}],
            "mask": {"mime_type": "image/png", "data": "BBB"}});
        let ask = ImageAsk::from_body(body.as_object().unwrap()).unwrap();
        assert_eq!(ask.n, 2);
        assert_eq!(ask.size, Some((512, 768)));
        assert_eq!(ask.images[0].data, "AAA");
        assert_eq!(ask.mask.unwrap().data, "BBB");
        let err = ImageAsk::from_body(json!({"n": 1}).as_object().unwrap()).unwrap_err();
        assert_eq!(err, "request body doesn't contain valid prompts");
    }

    #[test]
    fn answers_carry_b64_json_and_usage() {
        let image = Generated {
            b64: "AAA".into(),
            text: Some("a fox".into()),
        };
        let t = answer(7, vec![image], Usage::new(2, 3)).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["data"][0]["b64_json"], "AAA");
        assert_eq!(v["data"][0]["revised_prompt"], "a fox");
        assert_eq!(v["usage"]["total_tokens"], 5);
        assert!(answer(7, vec![], Usage::default()).is_err());
    }
}
