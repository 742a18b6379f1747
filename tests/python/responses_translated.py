"""The Responses API through the official OpenAI SDK on a route whose provider only chats (the
gateway translates Responses <-> chat); prints what the SDK returned as JSON.

Usage: responses_translated.py BASE_URL MODEL [reasons]
("reasons": the provider reasons when asked, so reasoning items and events are checked too)
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


def reasoning(c: openai.OpenAI) -> dict:
    """The provider's reasoning as a reasoning item, and as reasoning summary events."""
    r = c.responses.create(model=MODEL, input="think first", reasoning={"effort": "low"})
    items = [o for o in r.output if o.type == "reasoning"]
    out = {"items": [o.type for o in r.output], "effort": r.reasoning.effort,
           "summary": items[0].summary[0].text if items else None,
           "signed": bool(items and items[0].encrypted_content), "text": r.output_text}
    types, deltas = [], []
    with c.responses.stream(model=MODEL, input="think first", reasoning={"effort": "low"}) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.reasoning_summary_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    out["stream"] = {"types": types, "deltas": "".join(deltas), "text": final.output_text,
                     "items": [o.type for o in final.output]}
    return out


def main() -> None:
    c = openai.OpenAI(base_url=sys.argv[1], api_key="sk-client", max_retries=0, timeout=60)
    out = {}
    raw = c.responses.with_raw_response.create(model=MODEL, input="hello responses",
                                               instructions="be brief", max_output_tokens=100,
                                               temperature=0.5, top_p=0.9,
                                               metadata={"team": "qa"})
    r = raw.parse()
    out["create"] = {"type": type(r).__name__, "id": r.id, "status": r.status, "text": r.output_text,
                     "usage": r.usage.model_dump(), "header": raw.headers.get("x-kong-llm-model")}
    out["echo"] = {"instructions": r.instructions, "max_output_tokens": r.max_output_tokens,
                   "temperature": r.temperature, "top_p": r.top_p, "metadata": r.metadata,
                   "previous_response_id": r.previous_response_id, "tools": len(r.tools),
                   "tool_choice": r.tool_choice}
    r = c.responses.create(model=MODEL, input=[
        {"role": "developer", "content": "answer in one line"},
        {"role": "user", "content": [{"type": "input_text", "text": "item list input"}]}])
    out["items"] = r.output_text
    r = c.responses.create(model=MODEL, input="add 2 and 12", tools=TOOLS)
    out["echo"]["call_tools"] = [t.name for t in r.tools]
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
    if sys.argv[3:] == ["reasons"]:
        out["reasoning"] = reasoning(c)
    out["previous"] = refused(lambda: c.responses.create(model=MODEL, input="x",
                                                         previous_response_id="resp_1"))
    out["retrieve"] = refused(lambda: c.responses.retrieve("resp_1"))
    out["hosted_tool"] = refused(lambda: c.responses.create(model=MODEL, input="x",
                                                            tools=[{"type": "web_search"}]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
