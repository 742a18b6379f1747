"""Drives the gateway with the official OpenAI Python SDK and prints what the SDK saw as JSON.

Usage: sdk_client.py BASE_URL MODE [PROMPT] [MODEL]
       sdk_client.py batch CASES_JSON   (a list of {"base", "mode", "prompt", "model"}; prints a list)
Modes: chat, stream, completions, stream-completions, embeddings (two inputs), embedding
(one input), tools, stream-tools, error,
stream-error. The Rust integration tests run this and assert on the printed JSON.
"""

import json
import sys

import openai

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
]


def run(base_url: str, mode: str, prompt: str, model: str) -> dict:
    # The key is deliberately wrong: the gateway must replace it with the configured one.
    client = openai.OpenAI(base_url=base_url, api_key="sk-client-key-must-not-reach-upstream", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": prompt}]
    out: dict = {}
    if mode == "chat":
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
        r = raw.parse()
        out = {
            "header": raw.headers.get("x-kong-llm-model"),
            "tried": raw.headers.get("x-kong-llm-tried"),
            "content": r.choices[0].message.content,
            "finish_reason": r.choices[0].finish_reason,
            "usage": r.usage.model_dump() if r.usage else None,
            "object": r.object,
            "id": r.id,
            "model": r.model,
        }
    elif mode in ("stream", "stream-tools"):
        kwargs = {"tools": TOOLS} if mode == "stream-tools" else {}
        stream = client.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **kwargs
        )
        text, finish, usage, chunks, role = "", None, None, 0, None
        calls: dict = {}
        for chunk in stream:
            chunks += 1
            if chunk.usage:
                usage = chunk.usage.model_dump()
            for choice in chunk.choices:
                if choice.delta.role:
                    role = choice.delta.role
                if choice.delta.content:
                    text += choice.delta.content
                for tc in choice.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                    if tc.id:
                        entry["id"] = tc.id
                    if tc.function and tc.function.name:
                        entry["name"] = tc.function.name
                    if tc.function and tc.function.arguments:
                        entry["arguments"] += tc.function.arguments
                if choice.finish_reason:
                    finish = choice.finish_reason
        out = {
            "content": text,
            "finish_reason": finish,
            "usage": usage,
            "chunks": chunks,
            "role": role,
            "tool_calls": [calls[i] for i in sorted(calls)],
        }
    elif mode == "tools":
        r = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
        m = r.choices[0].message
        out = {
            "finish_reason": r.choices[0].finish_reason,
            "tool_calls": [
                {"id": c.id, "type": c.type, "name": c.function.name, "arguments": c.function.arguments}
                for c in (m.tool_calls or [])
            ],
        }
    elif mode == "json-reasoning":
        # A JSON schema (and a schemaless JSON object) asked of a model that reasons.
        schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                  "required": ["a", "b"], "additionalProperties": False}
        formats = {"json_schema": {"type": "json_schema",
                                   "json_schema": {"name": "sum", "strict": True, "schema": schema}},
                   "json_object": {"type": "json_object"}}
        for name, fmt in formats.items():
            try:
                r = client.chat.completions.create(model=model, messages=messages, response_format=fmt,
                                                   reasoning_effort="low")
                m = r.choices[0].message
                out[name] = {"status": 200, "content": json.loads(m.content),
                             "reasoning": (m.model_extra or {}).get("reasoning_content"),
                             "finish_reason": r.choices[0].finish_reason}
            except openai.APIStatusError as e:
                out[name] = {"status": e.status_code, "message": e.message}
    elif mode == "completions":
        r = client.completions.create(model=model, prompt=prompt)
        out = {"text": r.choices[0].text, "finish_reason": r.choices[0].finish_reason, "object": r.object,
               "usage": r.usage.model_dump() if r.usage else None}
    elif mode == "stream-completions":
        text, finish = "", None
        for chunk in client.completions.create(model=model, prompt=prompt, stream=True):
            for choice in chunk.choices:
                text += choice.text or ""
                finish = choice.finish_reason or finish
        out = {"text": text, "finish_reason": finish}
    elif mode in ("embeddings", "embedding"):
        inputs = [prompt, prompt + " again"] if mode == "embeddings" else prompt
        r = client.embeddings.create(model=model, input=inputs)
        out = {"count": len(r.data), "dims": len(r.data[0].embedding), "object": r.object,
               "usage": r.usage.model_dump() if r.usage else None}
    elif mode == "error":
        try:
            client.chat.completions.create(model=model, messages=messages)
            out = {"error": None}
        except openai.APIStatusError as e:
            out = {"status": e.status_code, "body": e.body}
    elif mode == "stream-error":
        try:
            text = ""
            for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
                for choice in chunk.choices:
                    text += choice.delta.content or ""
            out = {"error": None, "content": text}
        except openai.APIError as e:
            out = {"error": type(e).__name__, "message": str(e)}
    else:
        raise SystemExit(f"unknown mode {mode}")
    return out


def main() -> None:
    if sys.argv[1] == "batch":
        results = []
        for case in json.loads(sys.argv[2]):
            try:
                results.append(run(case["base"], case["mode"], case["prompt"], case["model"]))
            except Exception as e:  # reported per case, so one failure doesn't hide the others
                results.append({"exception": f"{type(e).__name__}: {e}"})
        print(json.dumps(results))
        return
    prompt = sys.argv[3] if len(sys.argv) > 3 else "Say hello"
    model = sys.argv[4] if len(sys.argv) > 4 else "ignored-by-gateway"
    print(json.dumps(run(sys.argv[1], sys.argv[2], prompt, model)))


if __name__ == "__main__":
    main()
