"""Providers' own SDKs pointed at native-format gateway routes, unchanged.

Usage: native_clients.py <sdk> <base_url> -> one JSON object of observations.
  anthropic: messages.create, messages.stream, count_tokens (llm_format anthropic, provider anthropic)
  genai:     google-genai generate_content, generate_content_stream, embed_content, count_tokens
  boto3:     bedrock-runtime converse, converse_stream (any client credentials: the gateway re-signs)
Every client credential is a sentinel the test checks never reaches the provider.
"""

import json
import sys


def anthropic_native(base):
    import anthropic

    client = anthropic.Anthropic(base_url=base, api_key="sk-ant-client-secret", max_retries=0)
    m = client.messages.create(model="claude-3-5-haiku-latest", max_tokens=64,
                               messages=[{"role": "user", "content": "Say hello"}])
    with client.messages.stream(model="claude-3-5-haiku-latest", max_tokens=64,
                                messages=[{"role": "user", "content": "Stream hello"}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    counted = client.messages.count_tokens(model="claude-3-5-haiku-latest",
                                           messages=[{"role": "user", "content": "one two three"}])
    return {
        "create": {"text": m.content[0].text, "model": m.model, "id": m.id,
                   "usage": [m.usage.input_tokens, m.usage.output_tokens]},
        "stream": {"events": events, "text": final.content[0].text, "stop": final.stop_reason,
                   "usage": [final.usage.input_tokens, final.usage.output_tokens]},
        "count_tokens": counted.input_tokens,
    }


def genai_native(base):
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="client-google-secret", http_options=types.HttpOptions(base_url=base))
    r = client.models.generate_content(model="gemini-2.0-flash", contents="Say hello")
    chunks = list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="Stream hello"))
    e = client.models.embed_content(model="text-embedding-004", contents=["one", "two"])
    counted = client.models.count_tokens(model="gemini-2.0-flash", contents="Count these three")
    return {
        "generate": {"text": r.text, "usage": [r.usage_metadata.prompt_token_count,
                                               r.usage_metadata.candidates_token_count]},
        "stream": {"chunks": len(chunks), "text": "".join(c.text or "" for c in chunks)},
        "embed": {"count": len(e.embeddings), "dims": len(e.embeddings[0].values)},
        "count_tokens": counted.total_tokens,
    }


BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def bedrock_client(base):
    import boto3
    from botocore.config import Config

    return boto3.client("bedrock-runtime", endpoint_url=base, region_name="us-east-1",
                        aws_access_key_id="AKIACLIENTKEY", aws_secret_access_key="client-aws-secret",
                        config=Config(retries={"max_attempts": 1}))


def invoke_stream(client, prompt):
    """invoke_model_with_response_stream with a Claude Messages body: the decoded chunk events."""
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                       "messages": [{"role": "user", "content": prompt}]})
    r = client.invoke_model_with_response_stream(modelId=BEDROCK_MODEL, body=body)
    return [json.loads(event["chunk"]["bytes"]) for event in r["body"]]


def boto3_native(base):
    client = bedrock_client(base)
    model = BEDROCK_MODEL
    r = client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "Say hello"}]}])
    s = client.converse_stream(modelId=model,
                               messages=[{"role": "user", "content": [{"text": "Stream hello"}]}])
    text, kinds, usage = "", [], None
    for event in s["stream"]:
        kind = next(iter(event))
        kinds.append(kind)
        if kind == "contentBlockDelta":
            text += event[kind]["delta"].get("text", "")
        if kind == "metadata":
            usage = event[kind]["usage"]
    chunks = invoke_stream(client, "Invoke hello")
    metrics = chunks[-1].get("amazon-bedrock-invocationMetrics", {})
    return {
        "converse": {"text": r["output"]["message"]["content"][0]["text"], "stop": r["stopReason"],
                     "usage": [r["usage"]["inputTokens"], r["usage"]["outputTokens"]]},
        "stream": {"text": text, "kinds": kinds,
                   "usage": [usage["inputTokens"], usage["outputTokens"]] if usage else None},
        "invoke_stream": {"types": [c["type"] for c in chunks],
                          "text": "".join(c["delta"].get("text", "") for c in chunks
                                          if c["type"] == "content_block_delta"),
                          "usage": [metrics.get("inputTokenCount"), metrics.get("outputTokenCount")]},
    }


def boto3_stream_errors(base):
    """Both Bedrock streams when the provider reports an error mid-stream."""
    from botocore.exceptions import EventStreamError

    client = bedrock_client(base)
    out = {}
    calls = {
        "converse_stream": lambda: list(client.converse_stream(
            modelId=BEDROCK_MODEL,
            messages=[{"role": "user", "content": [{"text": "Stream hello"}]}])["stream"]),
        "invoke_stream": lambda: invoke_stream(client, "Invoke hello"),
    }
    for name, call in calls.items():
        try:
            call()
            out[name] = {"error": None}
        except EventStreamError as e:
            out[name] = {"error": e.response["Error"]["Code"], "message": e.response["Error"]["Message"]}
    return out


def main() -> None:
    sdk, base = sys.argv[1], sys.argv[2]
    run = {"anthropic": anthropic_native, "genai": genai_native, "boto3": boto3_native,
           "boto3-errors": boto3_stream_errors}[sdk]
    print(json.dumps(run(base)))


if __name__ == "__main__":
    main()
