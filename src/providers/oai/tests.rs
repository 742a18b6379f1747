use bytes::BytesMut;
use serde_json::Value;

use super::*;

#[test]
fn raw_events_frame_every_data_line() {
    let framed = |data: &str| {
        let mut out = BytesMut::new();
        write_raw_event(&mut out, data.as_bytes());
        String::from_utf8(out.to_vec()).unwrap()
    };
    assert_eq!(framed("{\"a\":1}"), "data: {\"a\":1}\n\n");
    assert_eq!(framed("one\ntwo\n"), "data: one\ndata: two\ndata: \n\n");
    assert_eq!(framed(""), "data: \n\n");
}

fn events(buf: &BytesMut) -> Vec<Value> {
    std::str::from_utf8(buf)
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                Value::String("[DONE]".into())
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

fn meta() -> ResponseMeta {
    ResponseMeta {
        id: "chatcmpl-1".into(),
        created: 7,
        model: "m".into(),
    }
}

#[test]
fn first_chunk_carries_the_role_and_stream_ends_with_finish_and_done() {
    let mut b = ChunkBuilder::new(meta(), false, false);
    let mut out = BytesMut::new();
    b.text(&mut out, "Hel");
    b.text(&mut out, "lo");
    b.done(&mut out);
    let ev = events(&out);
    assert_eq!(ev.len(), 4);
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(ev[0]["choices"][0]["delta"]["content"], "Hel");
    assert!(ev[1]["choices"][0]["delta"].get("role").is_none());
    assert_eq!(ev[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev[3], "[DONE]");
    assert_eq!(ev[0]["object"], "chat.completion.chunk");
    assert_eq!(ev[0]["id"], "chatcmpl-1");
}

#[test]
fn usage_chunk_only_when_asked() {
    let mut b = ChunkBuilder::new(meta(), false, true);
    b.usage = Usage::new(3, 4);
    let mut out = BytesMut::new();
    b.text(&mut out, "x");
    b.finish(&mut out, FinishReason::Length);
    b.done(&mut out);
    let ev = events(&out);
    assert_eq!(ev[1]["choices"][0]["finish_reason"], "length");
    assert_eq!(ev[2]["choices"], Value::Array(vec![]));
    assert_eq!(ev[2]["usage"]["total_tokens"], 7);
    assert_eq!(ev.len(), 4);
}

#[test]
fn tool_call_deltas_have_id_type_and_arguments() {
    let mut b = ChunkBuilder::new(meta(), false, false);
    let mut out = BytesMut::new();
    b.tool_call_start(&mut out, 0, "call_1", "add");
    b.tool_call_arguments(&mut out, 0, "{\"a\":");
    b.finish(&mut out, FinishReason::ToolCalls);
    b.done(&mut out);
    let ev = events(&out);
    let tc = &ev[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(tc["id"], "call_1");
    assert_eq!(tc["type"], "function");
    assert_eq!(tc["function"]["name"], "add");
    assert_eq!(tc["function"]["arguments"], "");
    assert_eq!(
        ev[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":"
    );
    assert_eq!(ev[2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(ev.len(), 4);
}

#[test]
fn completions_chunks_are_text_completion_objects() {
    let mut b = ChunkBuilder::new(meta(), true, false);
    let mut out = BytesMut::new();
    b.text(&mut out, "a");
    b.done(&mut out);
    let ev = events(&out);
    assert_eq!(ev[0]["object"], "text_completion");
    assert_eq!(ev[0]["choices"][0]["text"], "a");
    assert_eq!(ev[1]["choices"][0]["finish_reason"], "stop");
}

#[test]
fn upstream_id_replaces_ours_and_done_writes_once() {
    let mut b = ChunkBuilder::new(meta(), false, false);
    b.set_id("msg_1");
    let mut out = BytesMut::new();
    b.text(&mut out, "x");
    b.done(&mut out);
    b.done(&mut out);
    assert!(b.is_done());
    let ev = events(&out);
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[0]["id"], "msg_1");
    assert_eq!(ev[1]["id"], "msg_1");
    assert_eq!(ev[2], "[DONE]");
}

#[test]
fn tool_arguments_become_a_json_string() {
    assert_eq!(arguments_string(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
    assert_eq!(arguments_string(&Value::Null), "{}");
    assert_eq!(
        arguments_string(&Value::String("{\"b\":2}".into())),
        r#"{"b":2}"#
    );
}

#[test]
fn data_urls_split_into_mime_and_payload() {
    let u = ImageUrl {
        url: "data:image/png;base64,AAAA".into(),
        detail: None,
    };
    assert_eq!(u.as_data_url(), Some(("image/png", "AAAA")));
    let u = ImageUrl {
        url: "https://x/y.png".into(),
        detail: None,
    };
    assert_eq!(u.as_data_url(), None);
}
