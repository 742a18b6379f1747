//! ConverseStream event frames -> OpenAI chunks; property tests on arbitrary input.

use super::*;

#[test]
fn chat_stream_at_every_split_matches_fixture() {
    let input = fixture_bytes("bedrock/chat-stream/upstream-stream.bin");
    let expected = sse_payloads(&fixture("bedrock/chat-stream/expected-client-stream.txt"));
    for split in 0..=input.len() {
        let got = run(RouteType::Chat, &input, split);
        assert_eq!(got.len(), expected.len(), "split {split}");
        for (g, e) in got.iter().zip(&expected) {
            if e == "[DONE]" {
                assert_eq!(g, e);
                continue;
            }
            assert_eq!(
                g["choices"][0]["delta"], e["choices"][0]["delta"],
                "split {split}"
            );
            assert_eq!(g["model"], e["model"]);
            assert_eq!(g["object"], "chat.completion.chunk");
            assert_eq!(g["id"], "chatcmpl-test");
            assert_eq!(g["created"], 1_700_000_000);
        }
        assert_eq!(got[3]["choices"][0]["finish_reason"], "stop");
    }
}

#[test]
fn stream_fed_byte_by_byte_reports_usage() {
    let input = fixture_bytes("bedrock/chat-stream/upstream-stream.bin");
    let options = options();
    let mut c = ctx(RouteType::Chat, MODEL, true, &options);
    c.include_usage = true;
    let mut s = BedrockStream::new(&c);
    let got = sse_payloads(&run_pieces(&mut s, &input, 1));
    assert_eq!(s.usage(), Usage::new(22, 3));
    assert_eq!(got.len(), 6);
    assert_eq!(
        got[4]["usage"],
        json!({"prompt_tokens": 22, "completion_tokens": 3, "total_tokens": 25})
    );
    assert_eq!(got[5], "[DONE]");
}

#[test]
fn tools_stream_at_every_split_streams_tool_calls() {
    let input = fixture_bytes("bedrock/tools-stream/upstream-stream.bin");
    let expected = sse_payloads(&fixture("bedrock/tools-stream/expected-client-stream.txt"));
    for split in 0..=input.len() {
        let got = run(RouteType::Chat, &input, split);
        assert_eq!(got.len(), expected.len(), "split {split}");
        assert_eq!(
            got[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        // OpenAI-correct deviations from Kong's fixture: the tool-call index counts tool
        // calls from 0 (Kong uses Bedrock's contentBlockIndex, here 1), and the first delta
        // carries `type: "function"`.
        assert_eq!(
            got[1]["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "id": "tooluse_9", "type": "function",
                        "function": {"name": "add", "arguments": ""}}])
        );
        let args: String = got[2..4]
            .iter()
            .map(|c| {
                let tc = &c["choices"][0]["delta"]["tool_calls"][0];
                assert_eq!(tc["index"], 0);
                tc["function"]["arguments"].as_str().unwrap().to_string()
            })
            .collect();
        let expected_args: String = expected[2..4]
            .iter()
            .map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(args, expected_args);
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"a": 2, "b": 12})
        );
        assert_eq!(got[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(got[5], "[DONE]");
    }
}

#[test]
fn text_then_tools_stream_indexes_tool_calls_from_zero() {
    let input = stream_bytes(&[
        ("messageStart", json!({"role": "assistant"})),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Sure."}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 0})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "a", "name": "f"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{}"}}}),
        ),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "b", "name": "g"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\"x\":1}"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 7, "delta": {"toolUse": {"input": "orphan"}}}),
        ),
        ("someFutureEvent", json!({"whatever": true})),
        ("messageStop", json!({"stopReason": "tool_use"})),
    ]);
    let got = run(RouteType::Chat, &input, 0);
    let deltas: Vec<&Value> = got.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(deltas[1]["content"], "Sure.");
    assert_eq!(deltas[2]["tool_calls"][0]["index"], 0);
    assert_eq!(deltas[3]["tool_calls"][0]["function"]["arguments"], "{}");
    assert_eq!(deltas[4]["tool_calls"][0]["index"], 1);
    assert_eq!(deltas[4]["tool_calls"][0]["id"], "b");
    assert_eq!(deltas[5]["tool_calls"][0]["index"], 1);
    assert_eq!(got[6]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(got[7], "[DONE]");
    assert_eq!(got.len(), 8);
}

#[test]
fn stream_stop_reasons_are_mapped_and_a_missing_stop_is_a_truncation() {
    let input = stream_bytes(&[
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "a"}}),
        ),
        ("messageStop", json!({"stopReason": "max_tokens"})),
    ]);
    let got = run(RouteType::Chat, &input, 5);
    assert_eq!(
        got[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "a"})
    );
    assert_eq!(got[1]["choices"][0]["finish_reason"], "length");

    let input = stream_bytes(&[(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "a"}}),
    )]);
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    let (text, err) = run_truncated(driver().stream(&c).as_mut(), &input, 5);
    assert_eq!(sse_payloads(&text).len(), 1);
    assert_eq!(err, crate::providers::stream::TRUNCATED);
}

#[test]
fn completions_stream_sends_text_completion_chunks() {
    let input = fixture_bytes("bedrock/chat-stream/upstream-stream.bin");
    let got = run(RouteType::Completions, &input, 17);
    assert_eq!(got.len(), 4);
    assert_eq!(got[0]["object"], "text_completion");
    assert_eq!(got[0]["choices"][0]["text"], "Ten");
    assert_eq!(got[1]["choices"][0]["text"], ".");
    assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(got[3], "[DONE]");
}

#[test]
fn exception_frames_end_the_stream_with_their_type_and_message() {
    let mut input = stream_bytes(&[(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "a"}}),
    )]);
    input.extend_from_slice(&encode_exception(
        "throttlingException",
        br#"{"message":"Too many requests, please wait before trying again."}"#,
    ));
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    let mut s = BedrockStream::new(&c);
    let mut out = BytesMut::new();
    let err = s.feed(&input, &mut out).unwrap_err();
    assert_eq!(
        err.0,
        "bedrock throttlingException: Too many requests, please wait before trying again."
    );
    // What came before the exception was still written.
    assert!(std::str::from_utf8(&out)
        .unwrap()
        .contains("\"content\":\"a\""));
}

#[test]
fn corrupt_frames_are_a_stream_error() {
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    let mut s = BedrockStream::new(&c);
    let mut out = BytesMut::new();
    let mut input = fixture_bytes("bedrock/chat-stream/upstream-stream.bin");
    let last = input.len() - 1;
    input[last] ^= 0xff;
    assert!(s.feed(&input, &mut out).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512),
                                cuts in proptest::collection::vec(0usize..512, 0..8)) {
        let options = options();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        feed_at_cuts(&mut BedrockStream::new(&c), &data, &cuts);
    }

    #[test]
    fn random_event_bodies_never_panic(kind in prop::sample::select(vec![
            "messageStart", "contentBlockStart", "contentBlockDelta", "contentBlockStop",
            "messageStop", "metadata", "other"]),
        body in ".{0,64}") {
        let options = options();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let mut s = BedrockStream::new(&c);
        let mut out = BytesMut::new();
        let _ = s.feed(&encode_event(kind, body.as_bytes()), &mut out);
        let _ = s.finish(&mut out);
    }

    #[test]
    fn random_response_bodies_never_panic(body in ".{0,128}") {
        let options = options();
        let d = driver();
        for route in [RouteType::Chat, RouteType::Completions, RouteType::Embeddings] {
            let c = ctx(route, MODEL, false, &options);
            let _ = d.response(&c, Bytes::from(body.clone()));
        }
    }
}
