//! Reload under faults: a reload while upstreams are slow changes nothing for requests in
//! flight; a decK path that is missing, a directory, empty, half-written, binary or
//! semantically invalid is rejected on SIGHUP and the old config stays in force.

mod common;

use std::time::Duration;

use common::*;

fn chat_route(mock: u16, model: &str) -> String {
    deck(&[(
        "chat",
        "/chat",
        &format!(
            "route_type: llm/v1/chat\nmodel: {{provider: openai, name: {model}, options: {{upstream_url: \"http://127.0.0.1:{mock}/v1/chat/completions\"}}}}"
        ),
    )])
}

fn model_header(port: u16) -> (u16, Option<String>) {
    let r = post_json(port, "/chat", &chat_body("hi", false));
    (r.status, r.header("x-kong-llm-model").map(str::to_string))
}

/// Sends SIGHUP and waits until `needle` appears once more in the logs.
fn reload_and_wait(gw: &Proc, needle: &str) {
    let before = gw.logs().matches(needle).count();
    gw.signal("HUP");
    assert!(
        poll_until(Duration::from_secs(10), || gw
            .logs()
            .matches(needle)
            .count()
            > before),
        "no '{needle}' after SIGHUP:\n{}",
        gw.logs()
    );
}

#[test]
fn reload_while_upstreams_are_slow_changes_nothing_in_flight() {
    let mock = start_mock();
    let path = write_deck(&chat_route(mock.port, "model-one"));
    let (gw, status) = start_gateway_with_status(&path, &[]);
    let port = gw.port;
    let plain = slow_request(port, "delay=1500", "slow");
    let stream = RawConn::slow_stream(port, "chunk_delay=300,chunks=4", "slow stream");
    assert!(poll_until(Duration::from_secs(10), || mock_stats(&mock)
        ["requests"]
        == 2));

    // The new generation points the route at an upstream that refuses connections.
    let dead = free_port();
    std::fs::write(&path, chat_route(dead, "model-two")).unwrap();
    reload_and_wait(&gw, "config reloaded");
    assert_eq!(gateway_status(status)["config_generation"], 2);

    let plain = plain.join().unwrap();
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(plain.header("x-kong-llm-model"), Some("openai/model-one"));
    let stream = stream.join().unwrap().response();
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("x-kong-llm-model"), Some("openai/model-one"));
    assert_eq!(sse_content(&stream.text()), "w1 w2 w3 w4");
    // New requests use the new generation (whose upstream is down).
    assert_eq!(model_header(gw.port).0, 502);
    assert_no_leaks(status);
}

#[test]
fn unreadable_half_written_and_invalid_files_are_rejected_and_the_old_config_kept() {
    let mock = start_mock();
    let path = write_deck(&chat_route(mock.port, "model-one"));
    let (gw, status) = start_gateway_with_status(&path, &[]);
    let good = chat_route(mock.port, "model-one");
    let cut = good.find("upstream_url").unwrap() + 20;
    let half_written = good[..cut].to_string();
    let semantic: [(&str, String); 4] = [
        (
            "unknown provider",
            good.replace("provider: openai", "provider: skynet"),
        ),
        ("bad regex path", good.replace("\"/chat\"", "\"~/chat[\"")),
        (
            "unknown plugin field",
            good.replace("route_type:", "route_typo: x\n              route_type:"),
        ),
        (
            "missing env variable",
            good.replace("model-one", "'${{ env \"DECK_NOT_SET_ANYWHERE\" }}'"),
        ),
    ];
    let mut cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("missing file", None),
        ("empty file", Some(Vec::new())),
        ("half-written file", Some(half_written.into_bytes())),
        (
            "binary garbage",
            Some(vec![0xff, 0xfe, 0x00, 0x9c, b'\n', 0x80]),
        ),
    ];
    for (what, text) in &semantic {
        cases.push((what, Some(text.clone().into_bytes())));
    }
    for (what, contents) in cases {
        let _ = std::fs::remove_file(&path);
        if let Some(bytes) = contents {
            std::fs::write(&path, bytes).unwrap();
        }
        reload_and_wait(&gw, "previous config stays");
        assert_eq!(
            model_header(gw.port),
            (200, Some("openai/model-one".into())),
            "{what}"
        );
    }
    // The path turns into a directory.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    reload_and_wait(&gw, "previous config stays");
    assert_eq!(
        model_header(gw.port),
        (200, Some("openai/model-one".into()))
    );
    std::fs::remove_dir(&path).unwrap();

    assert_eq!(gateway_status(status)["config_generation"], 1);
    // Each rejection names its problem.
    let logs = gw.logs();
    for needle in [
        "cannot read",
        "skynet",
        "route_typo",
        "DECK_NOT_SET_ANYWHERE",
    ] {
        assert!(logs.contains(needle), "no '{needle}' in:\n{logs}");
    }
    // A good file is taken again afterwards.
    std::fs::write(&path, chat_route(mock.port, "model-three")).unwrap();
    reload_and_wait(&gw, "config reloaded");
    assert_eq!(
        model_header(gw.port),
        (200, Some("openai/model-three".into()))
    );
}
