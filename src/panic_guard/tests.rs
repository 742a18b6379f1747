//! A real gateway (one worker) against the bundled mock, both in this process: a request that
//! panics while its request, response or stream is translated gets a 500 or a stream error
//! event, and the same worker and route actor go on serving.

use std::time::Duration;

use serde_json::{json, Value};

use crate::app;
use crate::config::settings::Settings;

async fn post(client: &awc::Client, url: &str, body: Value) -> (u16, String) {
    let mut response = client
        .post(url)
        .send_json(&body)
        .await
        .expect("gateway answers");
    let status = response.status().as_u16();
    let body = response.body().limit(1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[actix_rt::test]
async fn a_panicking_request_costs_only_that_request() {
    let (mock, mock_addr) = crate::mock::start("127.0.0.1:0", 1).unwrap();
    actix_rt::spawn(mock);
    let deck = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: ai\n    url: http://127.0.0.1:9\n    routes:\n      - name: chat\n        paths: [\"/chat\"]\n        plugins:\n          - name: ai-proxy\n            config:\n              route_type: llm/v1/chat\n              model: {{provider: openai, options: {{upstream_url: \"http://{mock_addr}/v1/chat/completions\"}}}}\n"
    );
    let path = std::env::temp_dir().join(format!("panic-guard-{}.yaml", std::process::id()));
    std::fs::write(&path, deck).unwrap();
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        config: path.display().to_string(),
        workers: 1,
        ..Settings::default()
    };
    let gateway = app::start(settings).expect("gateway starts");
    let url = format!("http://{}/chat", gateway.addrs[0]);
    actix_rt::spawn(gateway.server);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();

    for site in ["request", "response"] {
        let (status, body) = post(&client, &url, chat(&format!("panic-in-{site}"), false)).await;
        assert_eq!(status, 500, "{site}: {body}");
        assert!(body.contains("internal error"), "{site}: {body}");
        let (status, body) = post(&client, &url, chat("gpt-4o", false)).await;
        assert_eq!(status, 200, "after a panic in {site}: {body}");
    }

    let (status, body) = post(&client, &url, chat("panic-in-stream", true)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let (status, body) = post(&client, &url, chat("gpt-4o", true)).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("\"error\""), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let _ = std::fs::remove_file(&path);
}
