"""The Responses API through the official OpenAI SDK on a route whose provider only chats (the
gateway translates Responses <-> chat); prints what the SDK returned as JSON.

Usage: responses_translated.py BASE_URL MODEL
"""

import json
import sys

import openai

from api_routes import TOOLS


def refused(call) -> dict:
    try:
        call()
        return {"status": 200}
    except openai.APIStatusError as e:
        return {"status": e.status_code, "message": e.message}


MODEL = sys.argv[2]


def main() -> None:
    c = openai.OpenAI(base_url=sys.argv[1], api_key="sk-client", max_retries=0, timeout=60)
    out = {}
    raw = c.responses.with_raw_response.create(model=MODEL, input="hello responses",
                                               instructions="be brief", max_output_tokens=100)
    r = raw.parse()
    out["create"] = {"type": type(r).__name__, "id": r.id, "status": r.status, "text": r.output_text,
                     "usage": r.usage.model_dump(), "header": raw.headers.get("x-kong-llm-model")}
    r = c.responses.create(model=MODEL, input=[
        {"role": "developer", "content": "answer in one line"},
        {"role": "user", "content": [{"type": "input_text", "text": "item list input"}]}])
    out["items"] = r.output_text
    r = c.responses.create(model=MODEL, input="add 2 and 12", tools=TOOLS)
    call = next(o for o in r.output if o.type == "function_call")
    out["tool_call"] = {"name": call.name, "arguments": json.loads(call.arguments),
                        "call_id": bool(call.call_id)}
    r = c.responses.create(model=MODEL, tools=TOOLS, input=[
        {"role": "user", "content": "add 2 and 12"},
        {"type": "function_call", "call_id": call.call_id, "name": "add", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "14"}])
    out["tool_result"] = r.output_text
    events = []
    with c.responses.stream(model=MODEL, input="stream this please") as stream:
        for event in stream:
            events.append({"type": event.type, "seq": event.sequence_number})
        final = stream.get_final_response()
    out["stream"] = {"events": events, "text": final.output_text, "usage": final.usage.model_dump()}
    calls = []
    with c.responses.stream(model=MODEL, input="add 2 and 12", tools=TOOLS) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.done":
                calls.append(json.loads(event.arguments))
        final = stream.get_final_response()
    out["stream_tool"] = {"calls": calls,
                          "items": [o.type for o in final.output]}
    out["previous"] = refused(lambda: c.responses.create(model=MODEL, input="x",
                                                         previous_response_id="resp_1"))
    out["retrieve"] = refused(lambda: c.responses.retrieve("resp_1"))
    out["hosted_tool"] = refused(lambda: c.responses.create(model=MODEL, input="x",
                                                            tools=[{"type": "web_search"}]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
