//! The route types beyond chat (responses, files, batches, assistants, audio, images, realtime,
//! preserve) through the official OpenAI SDK and `websockets`, against the bundled mock, on
//! OpenAI and on Azure's layout; what reached the mock is checked from its request log.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;

const KEY: &str = "Bearer sk-gateway-key";

/// One ai-proxy route per route type under `prefix`, answered by the mock at `upstream`
/// (`http://127.0.0.1:<port>` plus the provider's own path), with `options` added.
fn api_routes(
    prefix: &str,
    provider: &str,
    auth: &str,
    upstream: &dyn Fn(&str) -> String,
    options: &str,
) -> Vec<(String, String, String)> {
    let types: [(&str, &str, Option<&str>, &str); 10] = [
        (
            "responses",
            "llm/v1/responses",
            Some("gpt-4o-mini"),
            "responses",
        ),
        ("files", "llm/v1/files", None, "files"),
        ("batches", "llm/v1/batches", None, "batches"),
        (
            "assistants",
            "llm/v1/assistants",
            Some("gpt-4o-mini"),
            "assistants",
        ),
        (
            "audio/speech",
            "audio/v1/audio/speech",
            Some("tts-1"),
            "audio/speech",
        ),
        (
            "audio/transcriptions",
            "audio/v1/audio/transcriptions",
            Some("whisper-1"),
            "audio/transcriptions",
        ),
        (
            "audio/translations",
            "audio/v1/audio/translations",
            Some("whisper-1"),
            "audio/translations",
        ),
        (
            "images/generations",
            "image/v1/images/generations",
            Some("gpt-image-1"),
            "images/generations",
        ),
        (
            "images/edits",
            "image/v1/images/edits",
            Some("gpt-image-1"),
            "images/edits",
        ),
        (
            "realtime",
            "realtime/v1/realtime",
            Some("gpt-4o-realtime-preview"),
            "realtime",
        ),
    ];
    let mut routes = Vec::new();
    for (path, route_type, model, resource) in types {
        let name = match model {
            Some(m) => format!("name: {m}, "),
            None => String::new(),
        };
        let config = format!(
            "route_type: {route_type}\nauth: {auth}\nmodel: {{provider: {provider}, {name}options: {{{options}upstream_url: \"{}\"}}}}\n",
            upstream(resource)
        );
        let route = format!("{prefix}-{}", path.replace('/', "-"));
        routes.push((route, format!("/{prefix}/{path}"), config));
    }
    // The assistants family shares its route: threads and vector stores live under it too.
    routes
}

fn deck_for(mock: u16) -> String {
    let openai = |resource: &str| match resource {
        "realtime" => format!("ws://127.0.0.1:{mock}/v1/realtime"),
        r => format!("http://127.0.0.1:{mock}/v1/{r}"),
    };
    // Azure's layout: deployment-scoped audio and images, resource-level files, batches and
    // assistants, the v1 Responses API.
    let azure = |resource: &str| match resource {
        "responses" => format!("http://127.0.0.1:{mock}/openai/v1/responses"),
        r if r.starts_with("audio") || r.starts_with("images") => {
            format!("http://127.0.0.1:{mock}/openai/deployments/dep-1/{r}")
        }
        r => format!("http://127.0.0.1:{mock}/openai/{r}"),
    };
    let mut routes = api_routes(
        "openai",
        "openai",
        &format!("{{header_name: Authorization, header_value: \"{KEY}\"}}"),
        &openai,
        "",
    );
    routes.extend(api_routes(
        "azure",
        "azure",
        "{header_name: api-key, header_value: azure-secret}",
        &azure,
        "azure_instance: inst, azure_deployment_id: dep-1, azure_api_version: \"2024-10-21\", ",
    ));
    routes.push((
        "limited-files".into(),
        "/limited/files".into(),
        format!("route_type: llm/v1/files\nmax_request_body_size: 1048576\nmodel: {{provider: openai, options: {{upstream_url: \"http://127.0.0.1:{mock}/v1/files\"}}}}\n"),
    ));
    routes.push((
        "preserve".into(),
        "/preserve".into(),
        format!("route_type: preserve\nauth: {{header_name: Authorization, header_value: \"{KEY}\"}}\nmodel: {{provider: openai, options: {{upstream_url: \"http://127.0.0.1:{mock}\"}}}}\n"),
    ));
    let borrowed: Vec<(&str, &str, &str)> = routes
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    let mut yaml = deck(&borrowed);
    // One route for the assistants family (Kong's `paths` list).
    for prefix in ["openai", "azure"] {
        yaml = yaml.replace(
            &format!("paths: [\"/{prefix}/assistants\"]"),
            &format!("paths: [\"/{prefix}/assistants\", \"/{prefix}/threads\", \"/{prefix}/vector_stores\"]"),
        );
    }
    yaml
}

fn setup() -> MockAndGateway {
    start_mock_and_gateway(deck_for)
}

/// The logged request with this method and path (the newest one).
fn seen<'a>(log: &'a [Value], method: &str, path: &str) -> &'a Value {
    log.iter()
        .rev()
        .find(|e| e["method"] == method && e["path"] == path)
        .unwrap_or_else(|| panic!("the mock never saw {method} {path}"))
}

fn parts_named<'a>(entry: &'a Value, name: &str) -> Vec<&'a Value> {
    entry["body"]["parts"]
        .as_array()
        .map(|parts| parts.iter().filter(|p| p["name"] == name).collect())
        .unwrap_or_default()
}

#[test]
fn the_sdk_drives_every_rest_route_type_on_openai() {
    let s = setup();
    let out: Value =
        serde_json::from_str(&run_python("api_routes.py", &[&s.gw.url("/openai"), "all"])).unwrap();
    let r = &out["responses"];
    assert_eq!(r["create"]["type"], "Response");
    assert_eq!(r["create"]["text"], "Mock openai reply to: hello responses");
    assert_eq!(r["create"]["header"], "openai/gpt-4o-mini");
    assert_eq!(r["create"]["usage"]["total_tokens"], 10);
    assert_eq!(r["items"], "Mock openai reply to: item list input");
    assert_eq!(r["tool_call"]["name"], "add");
    assert_eq!(r["tool_call"]["arguments"], r#"{"a":2,"b":12}"#);
    assert_eq!(r["previous"]["previous_response_id"], "resp_mock_1");
    // Every typed event, in order, with consecutive sequence numbers.
    let events = r["stream"]["events"].as_array().unwrap();
    assert_eq!(events.first().unwrap()["type"], "response.created");
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i, "{events:?}");
    }
    assert_eq!(
        r["stream"]["text"],
        "Mock openai reply to: stream this please"
    );
    assert_eq!(r["stream"]["usage"]["output_tokens"], 7);
    assert_eq!(r["stream_raw"].as_array().unwrap().len(), 13);
    assert_eq!(r["retrieve"], "resp_abc123");
    assert_eq!(r["cancel"], "cancelled");
    assert_eq!(r["input_items"], serde_json::json!(["message"]));

    let f = &out["files"];
    assert_eq!(f["upload"]["type"], "FileObject");
    assert_eq!(f["upload"]["bytes"], 26);
    assert_eq!(f["upload"]["filename"], "batch.jsonl");
    assert_eq!(f["retrieve"], "file-abc123");
    assert_eq!(f["delete"], true);
    assert_eq!(f["content"]["type"], "application/octet-stream");
    assert_eq!(f["content"]["lines"], 2);
    assert_eq!(f["batch_create"]["type"], "Batch");
    assert_eq!(
        f["batch_retrieve"]["output_file_id"],
        "file-output-batch_abc123"
    );
    assert!(f["batch_output"]
        .as_str()
        .unwrap()
        .contains("Mock openai batch answer 1"));
    assert_eq!(f["batch_cancel"], "cancelling");

    let a = &out["assistants"];
    assert_eq!(a["assistant"]["type"], "Assistant");
    assert_eq!(a["assistant"]["model"], "gpt-4o-mini");
    assert_eq!(a["message"]["thread_id"], "thread_abc");
    assert_eq!(a["run"]["type"], "Run");
    assert_eq!(a["steps"], serde_json::json!(["message_creation"]));
    assert_eq!(a["run_stream"]["text"], "Mock openai run answer");
    assert_eq!(
        a["run_stream"]["events"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        "thread.run.completed"
    );
    assert_eq!(a["thread_delete"], true);

    let m = &out["media"];
    assert_eq!(m["speech"]["type"], "audio/mpeg");
    assert_eq!(m["speech"]["bytes"], 8 * 2048 * 6);
    assert_eq!(m["speech"]["header"], "openai/tts-1");
    assert_eq!(m["transcription"]["type"], "Transcription");
    assert_eq!(
        m["transcription"]["text"],
        "Mock openai transcript of hello.wav (16 bytes)"
    );
    assert_eq!(
        m["transcription_text"],
        "Mock openai transcript of hello.mp3 (7 bytes)\n"
    );
    assert!(m["transcription_srt"]
        .as_str()
        .unwrap()
        .starts_with("1\n00:00:00,000 --> "));
    assert_eq!(
        m["translation"],
        "Mock openai translation of bonjour.mp3 (10 bytes)"
    );
    assert_eq!(m["generate"]["n"], 2);
    assert_eq!(m["generate"]["b64"], true);
    assert_eq!(m["generate"]["usage"]["total_tokens"], 203);
    assert_eq!(m["generate_url"], "https://images.mock/0.png");
    assert_eq!(
        m["edit"],
        "Mock openai edit of 2 image(s) with a mask: add a hat"
    );

    // What the provider saw: method, path after the prefix, query, credentials, headers.
    let log = mock_log(&s.mock);
    for entry in &log {
        assert_eq!(entry["headers"]["authorization"], KEY, "{entry}");
    }
    let create = seen(&log, "POST", "/v1/responses");
    assert_eq!(create["body"]["model"], "gpt-4o-mini");
    seen(&log, "GET", "/v1/responses/resp_abc123");
    seen(&log, "DELETE", "/v1/responses/resp_abc123");
    seen(&log, "POST", "/v1/responses/resp_abc123/cancel");
    seen(&log, "GET", "/v1/responses/resp_abc123/input_items");
    assert!(log
        .iter()
        .any(|e| e["path"] == "/v1/files" && e["query"] == "purpose=batch"));
    seen(&log, "GET", "/v1/files/file-abc123/content");
    seen(&log, "GET", "/v1/files/file-output-batch_abc123/content");
    seen(&log, "POST", "/v1/batches/batch_abc123/cancel");
    let steps = seen(&log, "GET", "/v1/threads/thread_abc/runs/run_abc/steps");
    assert_eq!(steps["headers"]["openai-beta"], "assistants=v2");
    seen(&log, "POST", "/v1/threads/thread_abc/messages");
    seen(&log, "DELETE", "/v1/threads/thread_abc");
    let speech = seen(&log, "POST", "/v1/audio/speech");
    assert_eq!(speech["body"]["voice"], "alloy");
    // Multipart: exactly one model part, each part's filename and content type kept.
    let transcription = log
        .iter()
        .find(|e| e["path"] == "/v1/audio/transcriptions")
        .unwrap();
    let models = parts_named(transcription, "model");
    assert_eq!(models.len(), 1, "{transcription}");
    assert_eq!(models[0]["text"], "whisper-1");
    let file = parts_named(transcription, "file")[0];
    assert_eq!(file["filename"], "hello.wav");
    assert_eq!(file["content_type"], "audio/wav");
    assert_eq!(file["bytes"], 16);
    let edit = seen(&log, "POST", "/v1/images/edits");
    let images = parts_named(edit, "image[]");
    assert_eq!(images.len(), 2, "{edit}");
    assert_eq!(images[1]["filename"], "hat.png");
    assert_eq!(parts_named(edit, "mask")[0]["content_type"], "image/png");
    assert_eq!(parts_named(edit, "model").len(), 1);
    assert_no_leaks(s.status);
}

#[test]
fn the_sdk_drives_every_rest_route_type_on_azures_layout() {
    let s = setup();
    let out: Value =
        serde_json::from_str(&run_python("api_routes.py", &[&s.gw.url("/azure"), "all"])).unwrap();
    assert_eq!(
        out["responses"]["create"]["text"],
        "Mock azure reply to: hello responses"
    );
    assert_eq!(out["responses"]["create"]["header"], "azure/gpt-4o-mini");
    assert_eq!(out["files"]["upload"]["type"], "FileObject");
    assert_eq!(
        out["assistants"]["run_stream"]["text"],
        "Mock azure run answer"
    );
    assert_eq!(
        out["media"]["transcription"]["text"],
        "Mock azure transcript of hello.wav (16 bytes)"
    );
    let log = mock_log(&s.mock);
    for entry in &log {
        assert_eq!(entry["headers"]["api-key"], "azure-secret", "{entry}");
        assert!(entry["headers"].get("authorization").is_none(), "{entry}");
        // The v1 API takes no api-version; everything else has the configured one.
        let v1 = entry["path"].as_str().unwrap().starts_with("/openai/v1/");
        let query = entry["query"].as_str().unwrap();
        assert_eq!(query.contains("api-version=2024-10-21"), !v1, "{entry}");
    }
    seen(&log, "GET", "/openai/v1/responses/resp_abc123/input_items");
    seen(&log, "GET", "/openai/files/file-abc123/content");
    seen(&log, "POST", "/openai/batches/batch_abc123/cancel");
    seen(&log, "POST", "/openai/threads/thread_abc/runs");
    seen(
        &log,
        "POST",
        "/openai/deployments/dep-1/audio/transcriptions",
    );
    seen(&log, "POST", "/openai/deployments/dep-1/images/edits");
}

#[test]
fn ids_that_could_climb_out_of_the_provider_path_never_reach_it() {
    let s = setup();
    let before = mock_stats(&s.mock)["requests"].as_u64().unwrap();
    for path in [
        "/openai/files/../../admin",
        "/openai/files/%2e%2e/secrets/content",
        "/openai/files/file-1%2Fcontent",
        "/openai/files/file-1%2fx",
        "/openai/files/%2E%2E",
        "/openai/files/.",
        "/openai/files/file%00",
        "/openai/batches/batch_1/..%2F..%2Fcancel",
        "/openai/threads/thread_1/runs/%2e%2e",
        "/openai/responses/resp%201",
        "/openai/responses/resp_1//input_items",
        "/azure/files/..%5Cx",
    ] {
        let r = request(s.gw.port, "GET", path, &[], b"");
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(
            r.text().contains("invalid path segment"),
            "{path}: {}",
            r.text()
        );
    }
    assert_eq!(mock_stats(&s.mock)["requests"].as_u64().unwrap(), before);
}

#[test]
fn per_type_rules_model_rules_and_untouched_bodies() {
    let s = setup();
    let json = [("content-type", "application/json")];
    let post = |path: &str, body: &str| request(s.gw.port, "POST", path, &json, body.as_bytes());
    // Required fields per route type, checked before anything goes upstream.
    let before = mock_stats(&s.mock)["requests"].as_u64().unwrap();
    assert_eq!(
        post("/openai/responses", r#"{"model":"gpt-4o-mini"}"#).status,
        400
    );
    assert!(post("/openai/audio/speech", r#"{"input":"hi"}"#)
        .text()
        .contains("voice"));
    assert_eq!(post("/openai/images/generations", r#"{"n":1}"#).status, 400);
    let mismatch = post("/openai/responses", r#"{"model":"gpt-4o","input":"x"}"#);
    assert_eq!(mismatch.status, 400);
    assert!(mismatch
        .text()
        .contains("cannot use own model - must be: gpt-4o-mini"));
    let r = request(s.gw.port, "GET", "/openai/files", &json, b"{\"x\":1}");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(mock_stats(&s.mock)["requests"].as_u64().unwrap(), before);

    // A body the gateway has no reason to change goes out byte for byte.
    let odd = "{ \"input_file_id\" : \"file-1\",\n  \"endpoint\": \"/v1/chat/completions\", \"completion_window\": \"24h\" }";
    assert_eq!(post("/openai/batches", odd).status, 200);
    let entry = mock_last(&s.mock);
    assert_eq!(entry["body_bytes"], odd.len());
    // The model is injected when the client leaves it out.
    assert_eq!(
        post("/openai/responses", r#"{"input":"no model"}"#).status,
        200
    );
    assert_eq!(mock_last(&s.mock)["body"]["model"], "gpt-4o-mini");

    // Multipart: a different model is refused, a missing one added exactly once.
    let form = |model: Option<&str>| {
        let mut body = String::new();
        if let Some(m) = model {
            body.push_str(&format!(
                "--b0\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{m}\r\n"
            ));
        }
        body.push_str("--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--b0--\r\n");
        body
    };
    let mp = [("content-type", "multipart/form-data; boundary=b0")];
    let r = request(
        s.gw.port,
        "POST",
        "/openai/audio/transcriptions",
        &mp,
        form(Some("whisper-2")).as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r
        .text()
        .contains("cannot use own model - must be: whisper-1"));
    let r = request(
        s.gw.port,
        "POST",
        "/openai/audio/transcriptions",
        &mp,
        form(None).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-kong-llm-model"), Some("openai/whisper-1"));
    let entry = mock_last(&s.mock);
    assert_eq!(parts_named(&entry, "model").len(), 1);
    assert_eq!(parts_named(&entry, "model")[0]["text"], "whisper-1");

    // Provider errors pass through with their status and body.
    let r = request(
        s.gw.port,
        "GET",
        "/openai/files/file-1",
        &[("x-mock-fault", "status=404")],
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
}

#[test]
fn preserve_keeps_path_and_body_and_warns_at_load() {
    let s = setup();
    assert!(s.gw.wait_for_log(
        "route_type 'preserve' is deprecated",
        Duration::from_secs(5)
    ));
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"kept as is"}]}"#;
    let r = post_json_bytes(
        s.gw.port,
        "/preserve/v1/chat/completions?x=1",
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let entry = mock_last(&s.mock);
    assert_eq!(entry["path"], "/preserve/v1/chat/completions");
    assert_eq!(entry["query"], "x=1");
    assert_eq!(entry["body_bytes"], body.len());
    assert_eq!(entry["headers"]["authorization"], KEY);
}

fn xorshift_file(path: &std::path::Path, size: usize) -> u64 {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    for b in &out {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    std::fs::write(path, &out).unwrap();
    hash
}

#[test]
fn a_50_mib_upload_streams_through_with_bounded_memory() {
    let s = setup();
    let size = 50 * 1024 * 1024;
    let file = std::env::temp_dir().join(format!("aigw-upload-{}.bin", std::process::id()));
    let hash = xorshift_file(&file, size);
    // Warm the route up, then sample the gateway's RSS during the upload.
    run_python(
        "api_routes.py",
        &[&s.gw.url("/openai"), "upload", "Cargo.toml"],
    );
    let pid = s.gw.pid();
    let baseline = rss_kib(pid).unwrap();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out: Value = serde_json::from_str(&run_python(
        "api_routes.py",
        &[&s.gw.url("/openai"), "upload", file.to_str().unwrap()],
    ))
    .unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(out["bytes"], size);
    let entry = mock_last(&s.mock);
    let part = parts_named(&entry, "file")[0];
    assert_eq!(part["bytes"], size);
    assert_eq!(
        part["fnv1a"],
        format!("{hash:016x}"),
        "the file arrived intact"
    );
    let growth_mib = (peak.load(Ordering::Relaxed) - baseline) / 1024;
    eprintln!("50 MiB upload: gateway RSS baseline {baseline} KiB, peak growth {growth_mib} MiB");
    assert!(
        growth_mib < 20,
        "the gateway grew by {growth_mib} MiB for a 50 MiB upload"
    );
}

#[test]
fn a_configured_limit_still_answers_413_for_uploads() {
    let s = setup();
    let big = vec![b'a'; 2 * 1024 * 1024];
    let mut body =
        b"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jsonl\"\r\n\r\n"
            .to_vec();
    body.extend_from_slice(&big);
    body.extend_from_slice(b"\r\n--b0--\r\n");
    let mp = [("content-type", "multipart/form-data; boundary=b0")];
    let r = request(s.gw.port, "POST", "/limited/files", &mp, &body);
    assert_eq!(r.status, 413, "{}", r.text());
    // Without a declared length the limit is found while streaming.
    let mut conn = RawConn::open(s.gw.port);
    conn.send(
        b"POST /limited/files HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: multipart/form-data; boundary=b0\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    conn.send_chunked(&body, 64 * 1024);
    conn.read_to_end();
    assert_eq!(conn.status(), Some(413), "{}", conn.text());
    // The default limit does not apply to a streamed upload.
    let r = request(s.gw.port, "POST", "/openai/files", &mp, &body);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_client_leaving_mid_download_cancels_the_upstream() {
    let s = setup();
    let mut conn = RawConn::open(s.gw.port);
    conn.send(
        request_head(
            "GET",
            "/openai/files/file-large-64/content",
            s.gw.port,
            &[("x-mock-fault", "chunk_delay=5")],
            0,
        )
        .as_bytes(),
    );
    assert!(conn.read_until(b"xxxxxxxx"));
    assert_eq!(conn.status(), Some(200));
    assert!(poll_until(Duration::from_secs(5), || mock_stats(&s.mock)
        ["open_streams"]
        == 1));
    drop(conn);
    assert!(
        poll_until(Duration::from_secs(5), || {
            let stats = mock_stats(&s.mock);
            stats["open_streams"] == 0 && stats["cancelled_streams"] == 1
        }),
        "{}",
        mock_stats(&s.mock)
    );
    assert_no_leaks(s.status);
}

#[test]
fn realtime_relays_a_thousand_frames_each_way_and_closes_cleanly() {
    let s = setup();
    let url = format!("ws://127.0.0.1:{}/openai/realtime", s.gw.port);
    let out: Value =
        serde_json::from_str(&run_python("realtime.py", &[&url, "relay", "1000"])).unwrap();
    assert_eq!(out["created"], "session.created");
    assert_eq!(out["model"], "gpt-4o-realtime-preview");
    assert_eq!(out["texts"], 1000);
    assert_eq!(out["binaries"], 1000);
    assert_eq!(out["in_order"], true);
    assert_eq!(out["usage"]["total_tokens"], 9);
    assert_eq!(out["close_code"], 4000, "{out}");
    let entry = seen(&mock_log(&s.mock), "GET", "/v1/realtime").clone();
    assert_eq!(entry["query"], "model=gpt-4o-realtime-preview");
    assert_eq!(entry["headers"]["openai-beta"], "realtime=v1");
    assert_eq!(entry["headers"]["authorization"], KEY);
    assert!(poll_until(Duration::from_secs(5), || {
        let stats = mock_stats(&s.mock);
        stats["open_streams"] == 0 && stats["cancelled_streams"] == 0
    }));
    assert!(
        s.gw.wait_for_log("prompt_tokens=4", Duration::from_secs(5)),
        "usage in the access log"
    );

    // Azure: deployment and api-version in the query, the api-key header.
    let url = format!("ws://127.0.0.1:{}/azure/realtime", s.gw.port);
    let out: Value =
        serde_json::from_str(&run_python("realtime.py", &[&url, "relay", "3"])).unwrap();
    assert_eq!(out["close_code"], 4000);
    let entry = seen(&mock_log(&s.mock), "GET", "/openai/realtime").clone();
    let query = entry["query"].as_str().unwrap();
    assert!(
        query.contains("api-version=2024-10-21") && query.contains("deployment=dep-1"),
        "{query}"
    );
    assert_eq!(entry["headers"]["api-key"], "azure-secret");
    assert_no_leaks(s.status);
}

#[test]
fn realtime_client_leaving_closes_the_upstream_and_refusals_pass_through() {
    let s = setup();
    let url = format!("ws://127.0.0.1:{}/openai/realtime", s.gw.port);
    let out: Value = serde_json::from_str(&run_python("realtime.py", &[&url, "drop"])).unwrap();
    assert_eq!(out["created"], "session.created");
    assert!(
        poll_until(Duration::from_secs(5), || mock_stats(&s.mock)
            ["open_streams"]
            == 0),
        "{}",
        mock_stats(&s.mock)
    );
    let out: Value = serde_json::from_str(&run_python("realtime.py", &[&url, "refused"])).unwrap();
    assert_eq!(out["status"], 401, "{out}");
    // A plain HTTP request to a realtime route is a clear 400.
    let r = request(s.gw.port, "GET", "/openai/realtime", &[], b"");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("WebSocket upgrade"));
    assert_no_leaks(s.status);
}

/// Realtime and a streamed upload behind key-auth and a token limit of 5 per minute.
fn guarded_deck(mock: u16) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: ai
    url: http://127.0.0.1:9
    routes:
      - name: rt
        paths: ["/rt/realtime"]
        plugins:
          - name: ai-proxy
            config: {{route_type: realtime/v1/realtime, auth: {{header_name: Authorization, header_value: "{KEY}"}}, model: {{provider: openai, name: gpt-4o-realtime-preview, options: {{upstream_url: "ws://127.0.0.1:{mock}/v1/realtime"}}}}}}
          - name: key-auth
          - name: ai-rate-limiting-advanced
            config: {{window_type: fixed, llm_providers: [{{name: openai, limit: [5], window_size: [3600]}}]}}
      - name: up
        paths: ["/up/audio/transcriptions"]
        plugins:
          - name: ai-proxy
            config: {{route_type: audio/v1/audio/transcriptions, auth: {{header_name: Authorization, header_value: "{KEY}"}}, model: {{provider: openai, name: whisper-1, options: {{upstream_url: "http://127.0.0.1:{mock}/v1/audio/transcriptions"}}}}}}
          - name: key-auth
          - name: ai-rate-limiting-advanced
            config: {{window_type: fixed, llm_providers: [{{name: openai, limit: [1000], window_size: [3600]}}]}}
consumers:
  - username: alice
    keyauth_credentials: [{{key: alice-key-0001}}]
"#
    )
}

#[test]
fn realtime_and_uploads_pass_key_auth_and_rate_limits() {
    // The session's tokens must still count when the next one asks: one hour-long window.
    wait_for_window_room(3600, Duration::from_secs(60));
    let mock = start_mock();
    let path = write_deck(&guarded_deck(mock.port));
    let (gw, status) = start_gateway_with_status(&path, &[]);
    let url = format!("ws://127.0.0.1:{}/rt/realtime", gw.port);
    let key = "apikey=alice-key-0001";

    // No key: refused at the upgrade, nothing reaches the provider.
    let out: Value = serde_json::from_str(&run_python("realtime.py", &[&url, "refused"])).unwrap();
    assert_eq!(out["status"], 401, "{out}");
    assert!(mock_log(&mock).iter().all(|e| e["path"] != "/v1/realtime"));

    // Admitted with the limit's headers on the 101; the session's usage (9 tokens) is charged
    // when it ends, so the next session is refused before the provider.
    let out: Value =
        serde_json::from_str(&run_python("realtime.py", &[&url, "relay", "3", key])).unwrap();
    assert_eq!(out["close_code"], 4000, "{out}");
    assert_eq!(out["ratelimit_remaining"], "5", "{out}");
    let sessions = || {
        mock_log(&mock)
            .iter()
            .filter(|e| e["path"] == "/v1/realtime")
            .count()
    };
    assert_eq!(sessions(), 1);
    let mut refused = Value::Null;
    assert!(
        poll_until(Duration::from_secs(5), || {
            refused =
                serde_json::from_str(&run_python("realtime.py", &[&url, "refused", key])).unwrap();
            refused["status"] == 429
        }),
        "{refused}"
    );
    assert_eq!(
        sessions(),
        1,
        "a refused session never reaches the provider"
    );

    // A streamed upload: the key from the header, the limit's headers on the answer.
    let body = b"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--b0--\r\n".to_vec();
    let mp = ("content-type", "multipart/form-data; boundary=b0");
    let r = request(gw.port, "POST", "/up/audio/transcriptions", &[mp], &body);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = request(
        gw.port,
        "POST",
        "/up/audio/transcriptions",
        &[mp, ("apikey", "alice-key-0001")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ai-ratelimit-limit-3600-openai"), Some("1000"));
    let uploads = mock_log(&mock)
        .iter()
        .filter(|e| e["path"] == "/v1/audio/transcriptions")
        .count();
    assert_eq!(
        uploads, 1,
        "the unauthenticated upload never reached the mock"
    );
    assert_no_leaks(status);
}

#[test]
fn images_on_gemini_and_bedrock_are_translated_to_their_image_models() {
    let mock = start_mock();
    let m = mock.port;
    let gemini = format!("auth: {{param_name: key, param_value: gemini-secret, param_location: query}}\nmodel: {{provider: gemini, name: gemini-2.5-flash-image, options: {{upstream_url: \"http://127.0.0.1:{m}\"}}}}\n");
    let bedrock = format!("auth: {{aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret}}\nmodel: {{provider: bedrock, name: amazon.nova-canvas-v1:0, options: {{bedrock: {{aws_region: us-east-1}}, upstream_url: \"http://127.0.0.1:{m}\"}}}}\n");
    let mut routes = Vec::new();
    for (provider, rest) in [("gemini", &gemini), ("bedrock", &bedrock)] {
        for op in ["generations", "edits"] {
            routes.push((
                format!("{provider}-{op}"),
                format!("/{provider}/images/{op}"),
                format!("route_type: image/v1/images/{op}\n{rest}"),
            ));
        }
    }
    let borrowed: Vec<(&str, &str, &str)> = routes
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    let gw = start_gateway(&write_deck(&deck(&borrowed)), &[]);

    let out: Value = serde_json::from_str(&run_python(
        "api_routes.py",
        &[&gw.url("/gemini"), "images", "gemini-2.5-flash-image"],
    ))
    .unwrap();
    assert_eq!(out["generate"].as_array().unwrap().len(), 2);
    assert!(out["generate"][0]
        .as_str()
        .unwrap()
        .ends_with("mock gemini image of: a red fox (0 input images)"));
    assert_eq!(out["revised"], "Mock gemini image of: a red fox");
    assert_eq!(out["usage"]["output_tokens"], 2580);
    assert!(
        out["edit"]
            .as_str()
            .unwrap()
            .ends_with("of: add a hat (3 input images)"),
        "{out}"
    );
    let log = mock_log(&mock);
    let call = seen(
        &log,
        "POST",
        "/v1beta/models/gemini-2.5-flash-image:generateContent",
    );
    assert_eq!(call["query"], "key=gemini-secret");
    assert_eq!(
        call["body"]["generationConfig"]["responseModalities"],
        serde_json::json!(["TEXT", "IMAGE"])
    );

    let out: Value = serde_json::from_str(&run_python(
        "api_routes.py",
        &[&gw.url("/bedrock"), "images", "amazon.nova-canvas-v1:0"],
    ))
    .unwrap();
    assert!(
        out["generate"][1]
            .as_str()
            .unwrap()
            .ends_with("image 1: TEXT_IMAGE: a red fox"),
        "{out}"
    );
    assert!(
        out["edit"]
            .as_str()
            .unwrap()
            .ends_with("image 0: INPAINTING: add a hat"),
        "{out}"
    );
    let log = mock_log(&mock);
    let call = seen(&log, "POST", "/model/amazon.nova-canvas-v1%3A0/invoke");
    assert!(call["headers"]["authorization"]
        .as_str()
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256"));
    assert_eq!(
        call["body"]["inPaintingParams"]["maskImage"],
        "iVBOR21hc2s="
    );

    // A provider that has neither the API nor a translation for it is a validate error.
    let bad = deck(&[(
        "x",
        "/x",
        "route_type: llm/v1/files\nmodel: {provider: gemini}\n",
    )]);
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config", write_deck(&bad).to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("services[0].routes[0].plugins[0].config.route_type: provider 'gemini' does not support route_type 'llm/v1/files'"),
        "{text}"
    );
}
