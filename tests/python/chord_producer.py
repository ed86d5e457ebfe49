#!/usr/bin/env python3
"""A chord sent from Python with nats-py alone, following docs/protocol.md section 4.5.

It stores the chord's definition in the chords bucket, writes PENDING for the body, sends the
header members (`it.add(i, 1)` for i in 0..size) with their chord membership, and waits on its
own reply subject for the body (`it.total`, which sums the header results).

Usage:
    chord_producer.py --url nats://127.0.0.1:4222 [--size 50] [--timeout 30]

On success it prints one line of JSON and exits 0; on failure it says why on stderr and exits 1.
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
    chord_id = str(uuid.uuid4())
    body_id = str(uuid.uuid4())
    reply_to = f"{ns}.reply.{secrets.token_hex(16)}"
    finals = asyncio.Queue()

    async def on_reply(message):
        await finals.put(json.loads(message.data))

    await nc.subscribe(reply_to, cb=on_reply)
    await nc.flush()

    # 1. The definition, under the chord id in the chords bucket.
    body = {"kind": "signature", "id": body_id, "task": "it.total"}
    definition = {"v": 1, "id": chord_id, "size": args.size, "body": body, "reply_to": reply_to,
                  "content_type": "application/json", "root_id": chord_id}
    chords = await js.key_value(f"{ns}_chords")
    await chords.put(chord_id, json.dumps(definition).encode())

    # 2. PENDING for the body (create-only).
    results = await js.key_value(f"{ns}_results")
    pending = {"v": 1, "id": body_id, "state": "PENDING", "task": "it.total",
               "updated_at_ms": int(time.time() * 1000)}
    await results.create(body_id, json.dumps(pending).encode())

    # 3. The header members: ids <chord id>-<index>, with their membership.
    for index in range(args.size):
        member_id = f"{chord_id}-{index}"
        headers = {
            "Celerity-Version": "1",
            "Celerity-Task": "it.add",
            "Celerity-Id": member_id,
            "Nats-Msg-Id": member_id,
            "Celerity-Root-Id": chord_id,
            "Celerity-Group-Id": chord_id,
            "Celerity-Chord-Id": chord_id,
        }
        task_body = {"args": [index, 1], "chord": {"id": chord_id, "index": index, "size": args.size}}
        await js.publish(f"{ns}.q.default.0", json.dumps(task_body).encode(), headers=headers)

    # 4. The body's final record arrives on the reply subject (members notify nobody: no Reply-To).
    deadline = time.monotonic() + args.timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SystemExit(f"the chord's body did not finish within {args.timeout} s")
        record = await asyncio.wait_for(finals.get(), remaining)
        if record.get("id") == body_id:
            break
    await nc.close()
    expected = sum(index + 1 for index in range(args.size))
    if record.get("state") != "SUCCESS" or record.get("result") != expected:
        print(f"unexpected body record: {record}", file=sys.stderr)
        return 1
    print(json.dumps({"chord_id": chord_id, "body_id": body_id, "result": record["result"]}))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(run(args)))
    except Exception as error:  # noqa: BLE001 - the test wants the reason, whatever it is
        print(f"chord producer failed: {error!r}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
