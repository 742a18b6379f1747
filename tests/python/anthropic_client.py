"""The official Anthropic Python SDK against a gateway route, unchanged: messages.create,
messages.stream (get_final_message), a tool-use round trip and count_tokens.

Usage: anthropic_client.py <base_url> -> one JSON object with every scenario's observations.
The client's key is a sentinel the test checks never reaches the provider.
"""

import json
import sys

import anthropic

TOOLS = [{
    "name": "add",
    "description": "Add two integers",
    "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                     "required": ["a", "b"]},
}]


def message_dump(m):
    return {
        "id": m.id,
        "type": m.type,
        "role": m.role,
        "model": m.model,
        "stop_reason": m.stop_reason,
        "content": [b.model_dump() for b in m.content],
        "usage": {"input_tokens": m.usage.input_tokens, "output_tokens": m.usage.output_tokens},
    }


def main() -> None:
    base = sys.argv[1]
    client = anthropic.Anthropic(base_url=base, api_key="sk-ant-client-secret", max_retries=0)
    out = {}

    m = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, system="You are terse.",
        messages=[{"role": "user", "content": "Say hello"}],
        temperature=0.2, top_p=0.9, top_k=20, stop_sequences=["END"], metadata={"user_id": "u-1"},
    )
    out["create"] = message_dump(m)

    events = []
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=256,
        messages=[{"role": "user", "content": "Stream hello"}],
    ) as stream:
        text = ""
        for event in stream:
            events.append(event.type)
            if event.type == "text":
                text += event.text
        final = stream.get_final_message()
    out["stream"] = {"events": events, "text": text, "final": message_dump(final)}

    first = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, tools=TOOLS, tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": "What is 2 + 12?"}],
    )
    tool_use = next(b for b in first.content if b.type == "tool_use")
    second = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, tools=TOOLS,
        messages=[
            {"role": "user", "content": "What is 2 + 12?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,
                                          "content": str(tool_use.input["a"] + tool_use.input["b"])}]},
        ],
    )
    out["tools"] = {"first": message_dump(first), "second": message_dump(second)}

    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=256, tools=TOOLS,
        messages=[{"role": "user", "content": "What is 2 + 12?"}],
    ) as stream:
        streamed_tool = stream.get_final_message()
    out["stream_tools"] = message_dump(streamed_tool)

    counted = client.messages.count_tokens(
        model="claude-sonnet-4-5", system="You are terse.",
        messages=[{"role": "user", "content": "Count the tokens of this sentence, please."}],
    )
    out["count_tokens"] = counted.input_tokens

    try:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=10,
                               messages=[{"role": "system", "content": "x"}])
        out["bad_request"] = None
    except anthropic.APIStatusError as e:
        out["bad_request"] = {"status": e.status_code, "body": e.body}

    print(json.dumps(out))


if __name__ == "__main__":
    main()
