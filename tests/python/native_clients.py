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


def boto3_native(base):
    import boto3
    from botocore.config import Config

    client = boto3.client("bedrock-runtime", endpoint_url=base, region_name="us-east-1",
                          aws_access_key_id="AKIACLIENTKEY", aws_secret_access_key="client-aws-secret",
                          config=Config(retries={"max_attempts": 1}))
    model = "anthropic.claude-3-haiku-20240307-v1:0"
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
    return {
        "converse": {"text": r["output"]["message"]["content"][0]["text"], "stop": r["stopReason"],
                     "usage": [r["usage"]["inputTokens"], r["usage"]["outputTokens"]]},
        "stream": {"text": text, "kinds": kinds,
                   "usage": [usage["inputTokens"], usage["outputTokens"]] if usage else None},
    }


def main() -> None:
    sdk, base = sys.argv[1], sys.argv[2]
    run = {"anthropic": anthropic_native, "genai": genai_native, "boto3": boto3_native}[sdk]
    print(json.dumps(run(base)))


if __name__ == "__main__":
    main()
