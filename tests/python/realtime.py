"""Realtime WebSocket sessions through the gateway with the `websockets` package; prints JSON.

Usage: realtime.py URL relay N    N text and N binary frames each way, then a close with code 4000
       realtime.py URL drop       waits for session.created, then drops the TCP connection
       realtime.py URL refused    expects the upgrade to be refused; prints the status
A trailing `apikey=KEY` argument sends that key-auth key.
"""

import asyncio
import json
import sys

import websockets

HEADERS = {"OpenAI-Beta": "realtime=v1", "Authorization": "Bearer sk-client-key-must-not-reach-upstream"}


async def relay(url: str, n: int) -> dict:
    async with websockets.connect(url, additional_headers=HEADERS, max_size=None) as ws:
        created = json.loads(await ws.recv())

        async def send():
            for i in range(n):
                await ws.send(json.dumps({"type": "input_text.append", "seq": i}))
                await ws.send(i.to_bytes(4, "big") * 8)

        sender = asyncio.create_task(send())
        texts, binaries, in_order = 0, 0, True
        while texts + binaries < 2 * n:
            frame = await ws.recv()
            if isinstance(frame, bytes):
                in_order &= frame == binaries.to_bytes(4, "big") * 8
                binaries += 1
            else:
                in_order &= json.loads(frame)["received"]["seq"] == texts
                texts += 1
        await sender
        await ws.send(json.dumps({"type": "response.create"}))
        done = None
        while done is None:
            event = json.loads(await ws.recv())
            if event["type"] == "response.done":
                done = event
        await ws.close(code=4000, reason="client done")
        return {"created": created["type"], "model": created["session"]["model"], "texts": texts,
                "binaries": binaries, "in_order": in_order, "usage": done["response"]["usage"],
                "close_code": ws.close_code, "close_reason": ws.close_reason,
                "ratelimit_remaining": ws.response.headers.get("x-ai-ratelimit-remaining-3600-openai")}


async def drop(url: str) -> dict:
    ws = await websockets.connect(url, additional_headers=HEADERS)
    created = json.loads(await ws.recv())
    ws.transport.abort()
    return {"created": created["type"]}


async def refused(url: str) -> dict:
    try:
        async with websockets.connect(url, additional_headers={**HEADERS, "x-mock-fault": "status=401"}):
            return {"status": 101}
    except websockets.exceptions.InvalidStatus as e:
        return {"status": e.response.status_code, "body": e.response.body.decode()}


def main() -> None:
    keys = [a for a in sys.argv if a.startswith("apikey=")]
    if keys:
        HEADERS["apikey"] = keys[0].removeprefix("apikey=")
    url, mode = sys.argv[1], sys.argv[2]
    if mode == "relay":
        out = asyncio.run(relay(url, int(sys.argv[3])))
    elif mode == "drop":
        out = asyncio.run(drop(url))
    else:
        out = asyncio.run(refused(url))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
