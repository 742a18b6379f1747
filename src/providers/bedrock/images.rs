//! OpenAI images on Bedrock's InvokeModel image models. Amazon Titan Image / Nova Canvas take
//! `taskType` bodies (`TEXT_IMAGE`; an edit is `INPAINTING` with a mask, else
//! `IMAGE_VARIATION`); Stability models take `prompt` (plus `image` and `mode:
//! image-to-image` for an edit). Both answer `{"images": [base64, ...]}`.

use serde_json::{json, Map, Value};

use crate::providers::images::{self, ImageAsk};
use crate::providers::oai::Usage;
use crate::providers::{RequestCtx, Translated};

pub(super) fn request(ctx: &RequestCtx<'_>, body: &Map<String, Value>) -> Result<Value, String> {
    let ask = ImageAsk::from_body(body)?;
    if ctx.model.starts_with("stability.") {
        let mut out = json!({"prompt": ask.prompt, "output_format": "png"});
        if let Some(image) = ask.images.first() {
            out["image"] = json!(image.data);
            out["mode"] = json!("image-to-image");
            out["strength"] = json!(0.7);
        }
        return Ok(out);
    }
    let mut config = json!({"numberOfImages": ask.n});
    if let Some((width, height)) = ask.size {
        config["width"] = json!(width);
        config["height"] = json!(height);
    }
    let out = match (ask.images.first(), &ask.mask) {
        (None, _) => json!({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": ask.prompt}}),
        (Some(image), Some(mask)) => json!({"taskType": "INPAINTING", "inPaintingParams": {
            "text": ask.prompt, "image": image.data, "maskImage": mask.data}}),
        (Some(_), None) => json!({"taskType": "IMAGE_VARIATION", "imageVariationParams": {
            "text": ask.prompt,
            "images": ask.images.iter().map(|i| i.data.clone()).collect::<Vec<_>>()}}),
    };
    let mut out = out;
    out["imageGenerationConfig"] = config;
    Ok(out)
}

pub(super) fn response(ctx: &RequestCtx<'_>, body: &[u8]) -> Result<Translated, String> {
    let answer: Value = serde_json::from_slice(body)
        .map_err(|_| "failed to decode response from Bedrock".to_string())?;
    if let Some(error) = answer["error"].as_str().filter(|e| !e.is_empty()) {
        return Err(format!("Bedrock answered an error: {error}"));
    }
    let found = answer["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str())
        .map(|b64| images::Generated {
            b64: b64.to_string(),
            text: None,
        })
        .collect();
    // Bedrock's image models report no token usage.
    images::answer(ctx.created, found, Usage::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ai_proxy::{ModelOptions, RouteType};
    use crate::providers::testkit::ctx;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn titan_and_nova_get_task_bodies() {
        let options = ModelOptions::default();
        let c = ctx(
            RouteType::ImageGenerations,
            "amazon.nova-canvas-v1:0",
            false,
            &options,
        );
        let out = request(
            &c,
            &body(json!({"prompt": "a fox", "n": 2, "size": "512x512"})),
        )
        .unwrap();
        assert_eq!(out["taskType"], "TEXT_IMAGE");
        assert_eq!(out["textToImageParams"]["text"], "a fox");
        assert_eq!(
            out["imageGenerationConfig"],
            json!({"numberOfImages": 2, "width": 512, "height": 512})
        );
        let image = json!([{"mime_type": "image/png", "data": "AAA"}]);
        let mask = json!({"mime_type": "image/png", "data": "MMM"});
        let out = request(
            &c,
            &body(json!({"prompt": "hat", "image": image, "mask": mask})),
        )
        .unwrap();
        assert_eq!(out["taskType"], "INPAINTING");
        assert_eq!(out["inPaintingParams"]["maskImage"], "MMM");
        let out = request(&c, &body(json!({"prompt": "hat", "image": image}))).unwrap();
        assert_eq!(out["taskType"], "IMAGE_VARIATION");
    }

    #[test]
    fn stability_gets_a_prompt_body_and_images_come_back() {
        let options = ModelOptions::default();
        let c = ctx(
            RouteType::ImageGenerations,
            "stability.sd3-5-large-v1:0",
            false,
            &options,
        );
        let out = request(&c, &body(json!({"prompt": "a fox"}))).unwrap();
        assert_eq!(out, json!({"prompt": "a fox", "output_format": "png"}));
        let t = response(&c, br#"{"images":["QUJD"],"seeds":[1]}"#).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["data"][0]["b64_json"], "QUJD");
        assert!(response(&c, br#"{"images":[],"error":"blocked"}"#).is_err());
    }
}
