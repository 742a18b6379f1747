"""Drives key-auth and token limits with the official OpenAI Python SDK; prints JSON.

Usage:
  limits_client.py call BASE_URL KEY [stream]      one chat call with `apikey: KEY`
  limits_client.py flood BASE_URL KEYS CLIENTS MAX_TOKENS SECONDS
      CLIENTS threads (keys taken round-robin from the comma-separated KEYS) call until each
      has been refused once (or SECONDS pass); prints every outcome, with its start and end
      (`t0`, `t1`: seconds since the flood began).
The Rust integration tests run this and assert on the printed JSON.
"""

import json
import sys
import threading
import time

import openai


def client(base_url: str, key: str) -> openai.OpenAI:
    # The SDK's own api_key is the provider key the gateway replaces; the consumer's key goes
    # in the header key-auth reads.
    return openai.OpenAI(
        base_url=base_url,
        api_key="sk-client-key-must-not-reach-upstream",
        default_headers={"apikey": key} if key else {},
        max_retries=0,
        timeout=60,
    )


def one_call(c: openai.OpenAI, stream: bool, max_tokens=None, prompt="hello there") -> dict:
    messages = [{"role": "user", "content": prompt}]
    extra = {"max_tokens": max_tokens} if max_tokens else {}
    try:
        if stream:
            raw = c.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=messages, stream=True,
                stream_options={"include_usage": True}, **extra)
            usage, text = None, ""
            for chunk in raw.parse():
                if chunk.usage:
                    usage = chunk.usage.model_dump()
                for choice in chunk.choices:
                    text += choice.delta.content or ""
            return {"status": 200, "usage": usage, "content": text, "headers": dict(raw.headers)}
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, **extra)
        r = raw.parse()
        return {"status": 200, "usage": r.usage.model_dump(), "content": r.choices[0].message.content,
                "headers": dict(raw.headers)}
    except openai.APIStatusError as e:
        return {"status": e.status_code, "body": e.response.text, "headers": dict(e.response.headers)}


def flood(base_url: str, keys: list, clients: int, max_tokens: int, seconds: float) -> list:
    results, lock = [], threading.Lock()
    began = time.time()
    deadline = began + seconds

    def worker(i: int):
        c = client(base_url, keys[i % len(keys)])
        while time.time() < deadline:
            started = time.time()
            out = one_call(c, False, max_tokens)
            out = {"status": out["status"], "usage": out.get("usage"), "key": keys[i % len(keys)],
                   "retry_after": out["headers"].get("retry-after"), "ms": int((time.time() - started) * 1000),
                   "t0": started - began, "t1": time.time() - began, "body": out.get("body")}
            with lock:
                results.append(out)
            if out["status"] != 200:
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    mode = sys.argv[1]
    if mode == "call":
        stream = len(sys.argv) > 4 and sys.argv[4] == "stream"
        print(json.dumps(one_call(client(sys.argv[2], sys.argv[3]), stream)))
    elif mode == "flood":
        base, keys, clients, max_tokens, seconds = sys.argv[2:7]
        print(json.dumps(flood(base, keys.split(","), int(clients), int(max_tokens), float(seconds))))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
