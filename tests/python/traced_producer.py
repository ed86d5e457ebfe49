#!/usr/bin/env python3
"""A task sent from Python with a W3C traceparent, following docs/protocol.md 4.1 and 5.7.

It makes a trace id and a span id of its own (as an OpenTelemetry SDK would for its publish
span), sends `it.add(2, 3)` with `traceparent: 00-<trace id>-<span id>-01`, and waits for the
result on its reply subject.

Usage:
    traced_producer.py --url nats://127.0.0.1:4222 [--timeout 30]

On success it prints one line of JSON {"task_id", "trace_id", "span_id", "record"} and exits 0.
"""

import argparse
import asyncio
import json
import secrets
import sys
import time
import uuid

import nats


async def run(args):
    nc = await nats.connect(args.url)
    js = nc.jetstream()
    ns = "celerity"
    task_id = str(uuid.uuid4())
    trace_id = secrets.token_hex(16)
    span_id = secrets.token_hex(8)
    reply_to = f"{ns}.reply.{secrets.token_hex(16)}"
    finals = asyncio.Queue()

    async def on_reply(message):
        await finals.put(json.loads(message.data))

    await nc.subscribe(reply_to, cb=on_reply)
    await nc.flush()
    headers = {
        "Celerity-Version": "1",
        "Celerity-Task": "it.add",
        "Celerity-Id": task_id,
        "Nats-Msg-Id": task_id,
        "Celerity-Reply-To": reply_to,
        "Celerity-Sent-At": str(int(time.time() * 1000)),
        "traceparent": f"00-{trace_id}-{span_id}-01",
        "tracestate": "py=1",
    }
    await js.publish(f"{ns}.q.default.0", json.dumps({"args": [2, 3], "kwargs": {}}).encode(),
                     headers=headers)
    record = await asyncio.wait_for(finals.get(), args.timeout)
    await nc.close()
    print(json.dumps({"task_id": task_id, "trace_id": trace_id, "span_id": span_id,
                      "record": record}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except Exception as error:  # noqa: BLE001 - the test reads the reason on stderr
        print(f"traced_producer failed: {error!r}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
