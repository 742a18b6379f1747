"""Drives every OpenAI-API route type through the gateway with the official OpenAI SDK and
prints what the SDK returned, as JSON, for the Rust integration tests to assert on.

Usage: api_routes.py BASE_URL all           every REST route type (typed objects)
       api_routes.py BASE_URL upload PATH   uploads one file (purpose batch), prints the file object
"""

import json
import sys

import openai

TOOLS = [{
    "type": "function",
    "name": "add",
    "description": "Add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]},
}]


def client(base: str) -> openai.OpenAI:
    # The key is deliberately wrong: the gateway must replace it with the configured one.
    return openai.OpenAI(base_url=base, api_key="sk-client-key-must-not-reach-upstream",
                         max_retries=0, timeout=60)


def responses(c: openai.OpenAI) -> dict:
    out = {}
    raw = c.responses.with_raw_response.create(model="gpt-4o-mini", input="hello responses",
                                               instructions="be brief")
    r = raw.parse()
    out["create"] = {"type": type(r).__name__, "id": r.id, "text": r.output_text,
                     "usage": r.usage.model_dump() if r.usage else None,
                     "header": raw.headers.get("x-kong-llm-model")}
    r = c.responses.create(model="gpt-4o-mini", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "item list input"}]}])
    out["items"] = r.output_text
    r = c.responses.create(model="gpt-4o-mini", input="add 2 and 12", tools=TOOLS)
    call = r.output[0]
    out["tool_call"] = {"type": call.type, "name": call.name, "arguments": call.arguments}
    r = c.responses.create(model="gpt-4o-mini", previous_response_id=r.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "14"}])
    out["previous"] = {"text": r.output_text, "previous_response_id": r.previous_response_id}
    events = []
    with c.responses.stream(model="gpt-4o-mini", input="stream this please") as stream:
        for event in stream:
            events.append({"type": event.type, "seq": event.sequence_number})
        final = stream.get_final_response()
    out["stream"] = {"events": events, "text": final.output_text, "usage": final.usage.model_dump()}
    raw_events = [e.type for e in c.responses.create(model="gpt-4o-mini", input="raw", stream=True)]
    out["stream_raw"] = raw_events
    out["retrieve"] = c.responses.retrieve("resp_abc123").id
    c.responses.delete("resp_abc123")
    out["cancel"] = c.responses.cancel("resp_abc123").status
    items = c.responses.input_items.list("resp_abc123")
    out["input_items"] = [i.type for i in items.data]
    return out


def files_and_batches(c: openai.OpenAI) -> dict:
    out = {}
    f = c.files.create(file=("batch.jsonl", b'{"custom_id":"request-1"}\n', "application/jsonl"),
                       purpose="batch")
    out["upload"] = {"type": type(f).__name__, "id": f.id, "bytes": f.bytes, "filename": f.filename}
    out["list"] = [x.id for x in c.files.list(purpose="batch").data]
    out["retrieve"] = c.files.retrieve("file-abc123").id
    out["delete"] = c.files.delete("file-abc123").deleted
    content = c.files.with_raw_response.content("file-abc123")
    out["content"] = {"type": content.headers.get("content-type"), "lines": content.text.count("\n")}
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                         metadata={"job": "nightly"})
    out["batch_create"] = {"type": type(b).__name__, "status": b.status, "input_file_id": b.input_file_id}
    b = c.batches.retrieve("batch_abc123")
    out["batch_retrieve"] = {"status": b.status, "output_file_id": b.output_file_id}
    out["batch_output"] = c.files.content(b.output_file_id).text.splitlines()[0]
    out["batch_list"] = [x.id for x in c.batches.list(limit=5).data]
    out["batch_cancel"] = c.batches.cancel("batch_abc123").status
    return out


def assistants(c: openai.OpenAI) -> dict:
    out = {}
    a = c.beta.assistants.create(model="gpt-4o-mini", name="Math", instructions="add numbers")
    out["assistant"] = {"type": type(a).__name__, "id": a.id, "model": a.model, "name": a.name}
    out["assistant_retrieve"] = c.beta.assistants.retrieve("asst_abc").id
    out["assistant_list"] = len(c.beta.assistants.list().data)
    t = c.beta.threads.create()
    out["thread"] = type(t).__name__
    m = c.beta.threads.messages.create("thread_abc", role="user", content="hi there")
    out["message"] = {"type": type(m).__name__, "thread_id": m.thread_id, "text": m.content[0].text.value}
    out["messages"] = len(c.beta.threads.messages.list("thread_abc").data)
    r = c.beta.threads.runs.create("thread_abc", assistant_id="asst_abc")
    out["run"] = {"type": type(r).__name__, "status": r.status, "thread_id": r.thread_id}
    out["run_cancel"] = c.beta.threads.runs.cancel("run_abc", thread_id="thread_abc").status
    out["steps"] = [s.type for s in c.beta.threads.runs.steps.list("run_abc", thread_id="thread_abc").data]
    events = []
    with c.beta.threads.runs.stream(thread_id="thread_abc", assistant_id="asst_abc") as stream:
        for event in stream:
            events.append(event.event)
        text = "".join(part.text.value for m in stream.get_final_messages() for part in m.content)
    out["run_stream"] = {"events": events, "text": text}
    out["thread_delete"] = c.beta.threads.delete("thread_abc").deleted
    return out


def audio_and_images(c: openai.OpenAI) -> dict:
    out = {}
    with c.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="say hi") as r:
        data = b"".join(r.iter_bytes())
        out["speech"] = {"type": r.headers.get("content-type"), "bytes": len(data),
                         "starts": data[:6].decode(), "header": r.headers.get("x-kong-llm-model")}
    t = c.audio.transcriptions.create(model="whisper-1", file=("hello.wav", b"RIFF0000WAVEfmt ", "audio/wav"))
    out["transcription"] = {"type": type(t).__name__, "text": t.text}
    out["transcription_text"] = c.audio.transcriptions.create(
        model="whisper-1", file=("hello.mp3", b"ID3mock", "audio/mpeg"), response_format="text")
    out["transcription_srt"] = c.audio.transcriptions.create(
        model="whisper-1", file=("hello.mp3", b"ID3mock", "audio/mpeg"), response_format="srt")
    tr = c.audio.translations.create(model="whisper-1", file=("bonjour.mp3", b"ID3bonjour", "audio/mpeg"))
    out["translation"] = tr.text
    img = c.images.generate(model="gpt-image-1", prompt="a red fox", n=2)
    out["generate"] = {"n": len(img.data), "b64": bool(img.data[0].b64_json),
                       "revised": img.data[0].revised_prompt,
                       "usage": img.usage.model_dump() if img.usage else None}
    img = c.images.generate(model="gpt-image-1", prompt="a blue fox", response_format="url")
    out["generate_url"] = img.data[0].url
    img = c.images.edit(model="gpt-image-1", prompt="add a hat",
                        image=[("fox.png", b"\x89PNGfox", "image/png"), ("hat.png", b"\x89PNGhat", "image/png")],
                        mask=("mask.png", b"\x89PNGmask", "image/png"))
    out["edit"] = img.data[0].revised_prompt
    return out


def main() -> None:
    base, mode = sys.argv[1], sys.argv[2]
    c = client(base)
    if mode == "all":
        out = {"responses": responses(c), "files": files_and_batches(c), "assistants": assistants(c),
               "media": audio_and_images(c)}
    elif mode == "upload":
        with open(sys.argv[3], "rb") as fh:
            f = c.files.create(file=fh, purpose="batch")
        out = {"id": f.id, "bytes": f.bytes, "filename": f.filename}
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
