#!/usr/bin/env python3
"""A Celerity producer written from docs/protocol.md alone, with nats-py and the standard library.

It checks that the streams, consumers and bucket a worker provisioned match the document, sends
`it.add` and `it.fail` (and a MessagePack `it.add` when the `msgpack` package is importable),
writes their PENDING records create-only, waits for the final records on its own reply subject,
and reads them back from the results bucket in two ways.
It pings the worker on its own control subject (the hostname's token) and on the broadcast
subject, and checks that a publish to a queue without a stream is reported as such.
With --golden-dir it decodes the golden files and re-encodes them byte for byte.
With --park-queue it also creates that queue's stream itself and leaves one task in it for a
worker started later.

Usage:
    protocol_client.py --url nats://127.0.0.1:4222 [--namespace celerity] [--queue default]
                       [--expect-worker NAME] [--park-queue QUEUE] [--golden-dir DIR]
                       [--timeout SECONDS]

On success it prints one line of JSON and exits 0.
On failure it prints what went wrong on stderr and exits 1 (2 when nats-py is missing).
"""

import argparse
import asyncio
import json
import os
import pathlib
import secrets
import sys
import time
import uuid

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.js.api import (
        AckPolicy,
        DiscardPolicy,
        RePublish,
        RetentionPolicy,
        StorageType,
        StreamConfig,
    )
except ImportError as missing:
    print(
        f"protocol_client: cannot import nats-py ({missing}): run scripts/test, "
        "which creates .venv-test with nats-py",
        file=sys.stderr,
    )
    sys.exit(2)

try:
    import msgpack
except ImportError:
    msgpack = None

PROTOCOL_VERSION = "1"
# JetStream's error code for a failed Nats-Expected-Last-Subject-Sequence check.
WRONG_LAST_SEQUENCE = 10071
FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")


class ProtocolError(Exception):
    """The server or the worker did something protocol.md does not allow."""


class NoStream(Exception):
    """A task was published to a queue whose stream does not exist (protocol.md 3.7)."""

    def __init__(self, queue):
        super().__init__(f'no stream for queue "{queue}": start a worker of the queue once, or create its stream')
        self.queue = queue


def check(condition, what):
    if not condition:
        raise ProtocolError(what)


def now_ms():
    return int(time.time() * 1000)


class Layout:
    """The names of protocol.md section "Namespace and layout"."""

    def __init__(self, namespace):
        self.ns = namespace
        self.upper = namespace.upper()

    def task_subject(self, queue, priority):
        return f"{self.ns}.q.{queue}.{priority}"

    def queue_subjects(self, queue):
        return [self.task_subject(queue, priority) for priority in range(10)]

    def queue_wildcard(self, queue):
        return f"{self.ns}.q.{queue}.*"

    def queue_stream(self, queue):
        return f"{self.upper}_Q_{queue}"

    def doorbell_pattern(self, queue):
        return f"{self.ns}.bell.{queue}.{{{{wildcard(1)}}}}"

    def results_bucket(self):
        return f"{self.ns}_results"

    def results_stream(self):
        return f"KV_{self.results_bucket()}"

    def result_subject(self, task_id):
        return f"$KV.{self.results_bucket()}.{task_id}"

    def dead_letter_stream(self):
        return f"{self.upper}_DLQ"

    def reply_subject(self):
        return f"{self.ns}.reply.{secrets.token_hex(16)}"

    def control_subject(self, hostname):
        return f"{self.ns}.control.{worker_token(hostname)}"

    def control_broadcast_subject(self):
        return f"{self.ns}.control.all"


def worker_token(hostname):
    """A hostname as one subject token (protocol.md 7a): bytes of A-Z a-z 0-9 - _ kept, every
    other byte of its UTF-8 written =XX in upper-case hex."""
    kept = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(chr(byte) if byte in kept else f"={byte:02X}" for byte in hostname.encode())


def rings_doorbells(nc):
    """Whether queue streams republish doorbells on the connected server (protocol.md 3.1, 3.3):
    before nats-server 2.10.16 they do, and always with CELERITY_NEW_TASK_SIGNAL=republish (or its
    older spelling doorbells); from 2.10.16 on, workers send max-bytes probes instead."""
    if os.environ.get("CELERITY_NEW_TASK_SIGNAL", "").strip() in ("republish", "doorbells"):
        return True
    version = nc.connected_server_version
    return (version.major, version.minor, version.patch) < (2, 10, 16)


def queue_stream_config(layout, queue, doorbells):
    """The queue stream exactly as protocol.md specifies it."""
    republish = None
    if doorbells:
        republish = RePublish(
            src=layout.queue_wildcard(queue),
            dest=layout.doorbell_pattern(queue),
            headers_only=True,
        )
    return StreamConfig(
        name=layout.queue_stream(queue),
        subjects=layout.queue_subjects(queue),
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=120.0,
        republish=republish,
    )


# Encoding.


def encode(value, content_type):
    if content_type == "application/msgpack":
        return msgpack.packb(value, use_bin_type=True)
    return json.dumps(value, separators=(",", ":")).encode()


def decode_record(data):
    """Decodes a stored record, telling JSON from MessagePack by its first byte."""
    check(len(data) > 0, "a result record is empty")
    first = data[0]
    if first in b"{ \t\r\n":
        return json.loads(data)
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        check(msgpack is not None, "a MessagePack record arrived but msgpack is not installed")
        return msgpack.unpackb(data, raw=False)
    raise ProtocolError(f"a result record starts with byte 0x{first:02x}, neither JSON nor MessagePack")


# Layout check: what a worker created is what protocol.md says.


async def check_layout(js, layout, queue, doorbells):
    stream = (await js.stream_info(layout.queue_stream(queue))).config
    subjects = layout.queue_subjects(queue)
    check(stream.subjects == subjects, f"queue stream subjects are {stream.subjects}, not {subjects}")
    check(stream.retention == RetentionPolicy.WORK_QUEUE, f"queue stream retention is {stream.retention}")
    check(stream.storage == StorageType.FILE, f"queue stream storage is {stream.storage}")
    check(stream.duplicate_window == 120, f"queue stream duplicate window is {stream.duplicate_window} s")
    republish = stream.republish
    if doorbells:
        check(republish is not None, "the queue stream has no republish")
        check(republish.src == layout.queue_wildcard(queue), f"republish source is {republish.src}")
        check(republish.dest == layout.doorbell_pattern(queue), f"republish destination is {republish.dest}")
        check(republish.headers_only is True, "republish is not headers-only")
    else:
        check(republish is None, f"the queue stream republishes on a server with max-bytes probes: {republish}")

    for priority in range(10):
        name = f"p{priority}"
        consumer = (await js.consumer_info(layout.queue_stream(queue), name)).config
        check(consumer.durable_name == name, f"consumer {name} is not durable")
        check(consumer.deliver_subject is None, f"consumer {name} is a push consumer")
        subject = layout.task_subject(queue, priority)
        check(consumer.filter_subject == subject, f"consumer {name} filters {consumer.filter_subject}, not {subject}")
        check(consumer.ack_policy == AckPolicy.EXPLICIT, f"consumer {name} ack policy is {consumer.ack_policy}")
        check(consumer.ack_wait == 30, f"consumer {name} AckWait is {consumer.ack_wait} s, not 30 s")
        check(consumer.max_ack_pending == -1, f"consumer {name} max_ack_pending is {consumer.max_ack_pending}")

    kv = (await js.stream_info(layout.results_stream())).config
    kv_subjects = [f"$KV.{layout.results_bucket()}.>"]
    check(kv.subjects == kv_subjects, f"results stream subjects are {kv.subjects}")
    check(kv.max_msgs_per_subject == 1, f"results bucket history is {kv.max_msgs_per_subject}, not 1")
    check(kv.max_age and kv.max_age > 0, "results bucket has no expiry (max_age)")
    check(kv.allow_direct is True, "results bucket does not allow direct get")
    check(kv.allow_rollup_hdrs is True, "results bucket does not allow roll-ups")
    check(kv.deny_delete is True, "results bucket allows message deletes")
    check(kv.discard == DiscardPolicy.NEW, f"results bucket discard policy is {kv.discard}")
    check(kv.storage == StorageType.FILE, f"results bucket storage is {kv.storage}")

    dlq = (await js.stream_info(layout.dead_letter_stream())).config
    check(dlq.subjects == [f"{layout.ns}.dlq.*"], f"dead-letter stream subjects are {dlq.subjects}")
    check(dlq.retention == RetentionPolicy.LIMITS, f"dead-letter stream retention is {dlq.retention}")
    check(dlq.storage == StorageType.FILE, f"dead-letter stream storage is {dlq.storage}")


async def ensure_queue_stream(js, layout, queue, doorbells):
    """Creates the queue stream with the documented configuration if it is missing."""
    try:
        await js.stream_info(layout.queue_stream(queue))
        return "existing"
    except nats.js.errors.NotFoundError:
        await js.add_stream(queue_stream_config(layout, queue, doorbells))
        return "created"


# Producing.


async def create_pending(js, layout, task_id, task_name, content_type):
    """Writes PENDING only if the task has no record yet; returns False when one exists."""
    record = {
        "v": 1,
        "id": task_id,
        "state": "PENDING",
        "task": task_name,
        "retries": 0,
        "updated_at_ms": now_ms(),
    }
    try:
        await js.publish(
            layout.result_subject(task_id),
            encode(record, content_type),
            headers={"Nats-Expected-Last-Subject-Sequence": "0"},
        )
        return True
    except nats.js.errors.APIError as error:
        if error.err_code == WRONG_LAST_SEQUENCE:
            return False
        raise


# The priority levels of each queue stream read so far: a stream's subjects do not change.
QUEUE_LEVELS = {}


async def queue_levels(js, layout, queue):
    """The priority levels the queue's stream lists (protocol.md 3.1), or None without a stream."""
    stream = layout.queue_stream(queue)
    if stream not in QUEUE_LEVELS:
        try:
            subjects = (await js.stream_info(stream)).config.subjects
        except nats.js.errors.NotFoundError:
            return None
        prefix = layout.task_subject(queue, "")
        QUEUE_LEVELS[stream] = sorted(int(subject[len(prefix):]) for subject in subjects if subject.startswith(prefix))
    return QUEUE_LEVELS[stream]


def round_priority(priority, levels):
    """Rounds a priority as protocol.md 3.1 says: down to the nearest level in use, and up to the
    lowest level when it is below every level."""
    if not levels:
        return priority
    below = [level for level in levels if level <= priority]
    return max(below) if below else min(levels)


async def publish_task(js, layout, queue, priority, task_id, task_name, args, kwargs, reply_to, content_type):
    """Publishes one task message and returns JetStream's PubAck."""
    priority = round_priority(priority, await queue_levels(js, layout, queue))
    headers = {
        "Celerity-Version": PROTOCOL_VERSION,
        "Celerity-Task": task_name,
        "Celerity-Id": task_id,
        "Nats-Msg-Id": task_id,
        "Celerity-Sent-At": str(now_ms()),
    }
    if content_type != "application/json":
        headers["Content-Type"] = content_type
    if priority != 0:
        headers["Celerity-Priority"] = str(priority)
    if reply_to is not None:
        headers["Celerity-Reply-To"] = reply_to
    body = encode({"args": args, "kwargs": kwargs}, content_type)
    try:
        ack = await js.publish(
            layout.task_subject(queue, priority),
            body,
            headers=headers,
            stream=layout.queue_stream(queue),
        )
    except nats.js.errors.NoStreamResponseError as missing:
        # protocol.md 3.7: the server answers "no responders" when no stream has the subject.
        raise NoStream(queue) from missing
    check(ack.stream == layout.queue_stream(queue), f"task {task_id} was stored in {ack.stream}")
    return ack


async def send(js, layout, queue, task_name, args, kwargs, reply_to, content_type="application/json", task_id=None, priority=0):
    """The producer's steps from protocol.md: PENDING create, then the task publish."""
    task_id = task_id or str(uuid.uuid4())
    created = await create_pending(js, layout, task_id, task_name, content_type)
    try:
        ack = await publish_task(js, layout, queue, priority, task_id, task_name, args, kwargs, reply_to, content_type)
    except Exception:
        # protocol.md 5.5: a task that was not sent must not look queued.
        if created:
            await js.publish(layout.result_subject(task_id), b"", headers={"KV-Operation": "PURGE", "Nats-Rollup": "sub"})
        raise
    check(not ack.duplicate, f"the first publish of task {task_id} was reported as a duplicate")
    return task_id


# Reading results.


async def direct_get(nc, layout, task_id):
    """Reads a record with the raw Direct Get API; returns its bytes or None."""
    request = json.dumps({"last_by_subj": layout.result_subject(task_id)}).encode()
    reply = await nc.request(f"$JS.API.DIRECT.GET.{layout.results_stream()}", request, timeout=5)
    headers = reply.headers or {}
    if headers.get("Status") == "404":
        return None
    check("Status" not in headers, f"direct get of {task_id} answered {headers}")
    if headers.get("KV-Operation") in ("DEL", "PURGE"):
        return None
    return reply.data


async def kv_get(kv, task_id):
    """Reads a record with nats-py's KV API; returns its bytes or None."""
    try:
        entry = await kv.get(task_id)
    except nats.js.errors.KeyNotFoundError:
        return None
    return entry.value


async def wait_for_final(sub, kv, task_ids, deadline):
    """Waits for a final record of every id: first a KV read (closing the race with a
    notification sent before we subscribed), then notifications on the reply subject."""
    finals = {}
    for task_id in task_ids:
        value = await kv_get(kv, task_id)
        if value is not None and decode_record(value)["state"] in FINAL_STATES:
            finals[task_id] = (value, "bucket")
    while len(finals) < len(task_ids):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            missing = sorted(set(task_ids) - set(finals))
            raise ProtocolError(f"no final record arrived for {missing}")
        try:
            message = await sub.next_msg(timeout=remaining)
        except nats.errors.TimeoutError:
            continue
        task_id = (message.headers or {}).get("Celerity-Id")
        check(task_id is not None, f"a notification on {message.subject} has no Celerity-Id header")
        record = decode_record(message.data)
        check(record["id"] == task_id, f"notification for {task_id} holds the record of {record['id']}")
        check(record["state"] in FINAL_STATES, f"notification for {task_id} holds state {record['state']}")
        if task_id in task_ids:
            finals[task_id] = (message.data, "reply")
    return finals


async def read_back(nc, kv, layout, task_id, notified):
    """Reads the stored record both ways and checks it equals what was notified."""
    stored = await kv_get(kv, task_id)
    raw = await direct_get(nc, layout, task_id)
    check(stored is not None, f"no record of {task_id} in the bucket after its notification")
    check(stored == raw, f"KV get and direct get of {task_id} disagree")
    check(stored == notified, f"the notification of {task_id} differs from the stored record")
    return decode_record(stored)


def check_golden_files(directory):
    """Decodes every golden file with the standard library (and msgpack when installed) and checks
    that re-encoding the decoded body gives back the golden bytes; returns how many were checked."""
    n_files = 0
    for path in sorted(pathlib.Path(directory).glob("*.json")):
        golden = json.loads(path.read_text())
        body = bytes.fromhex(golden["body_hex"])
        check(all(len(pair) == 2 for pair in golden["headers"]), f"{path.name}: headers are not pairs")
        if "body_text" in golden:
            check(golden["body_text"].encode() == body, f"{path.name}: body_text differs from body_hex")
            check(encode(json.loads(body), "application/json") == body, f"{path.name}: JSON re-encoding differs")
        elif msgpack is not None:
            value = msgpack.unpackb(body, raw=False)
            check(value == golden["body_decoded"], f"{path.name}: body_decoded differs from body_hex")
            check(encode(value, "application/msgpack") == body, f"{path.name}: MessagePack re-encoding differs")
        n_files += 1
    check(n_files > 0, f"no golden files in {directory}")
    return n_files


async def control(nc, subject, command, deadline_s):
    """Sends a control request (protocol.md 7a) and gathers every reply until the deadline."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, json.dumps({"v": 1, "command": command}).encode(), reply=inbox)
    replies = []
    deadline = time.monotonic() + deadline_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            message = await sub.next_msg(timeout=remaining)
        except nats.errors.TimeoutError:
            break
        replies.append(json.loads(message.data))
    await sub.unsubscribe()
    return replies


async def check_control(nc, layout, hostname):
    """Pings one worker on its own subject, then every worker on the broadcast subject."""
    direct = await nc.request(layout.control_subject(hostname), json.dumps({"v": 1, "command": "ping"}).encode(), timeout=5)
    reply = json.loads(direct.data)
    check(reply.get("worker") == hostname, f"the ping to {hostname} was answered by {reply.get('worker')!r}")
    check(reply.get("ok") is True and reply["result"].get("pong") is True, f"ping reply {reply}")
    replies = await control(nc, layout.control_broadcast_subject(), "ping", 1.0)
    workers = sorted(reply["worker"] for reply in replies)
    check(hostname in workers, f"the broadcast ping got replies from {workers}, not from {hostname}")
    return {"direct": reply["worker"], "broadcast": workers}


def check_common(record, task_id, task_name, expect_worker):
    check(record["v"] == 1, f"{task_id}: record version {record['v']}")
    check(record["id"] == task_id, f"{task_id}: record id {record['id']}")
    check(record.get("task") == task_name, f"{task_id}: record task {record.get('task')}")
    check(record.get("retries", 0) == 0, f"{task_id}: retries {record.get('retries')}")
    if expect_worker:
        worker = record.get("worker")
        check(worker == expect_worker, f"{task_id}: the record names worker {worker!r}, expected {expect_worker!r}")
    check(isinstance(record["updated_at_ms"], int), f"{task_id}: updated_at_ms is not an integer")
    started = record.get("started_at_ms")
    check(isinstance(started, int) and started <= record["updated_at_ms"], f"{task_id}: started_at_ms {started}")


async def run(args):
    layout = Layout(args.namespace)
    deadline = time.monotonic() + args.timeout
    nc = await nats.connect(servers=[args.url], connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=5)
        doorbells = rings_doorbells(nc)
        await check_layout(js, layout, args.queue, doorbells)
        kv = await js.key_value(layout.results_bucket())

        # Subscribe before publishing, so no notification can be missed.
        reply_to = layout.reply_subject()
        sub = await nc.subscribe(reply_to)
        await nc.flush()

        add_id = await send(js, layout, args.queue, "it.add", [2], {"y": 40}, reply_to)
        duplicate = await publish_task(js, layout, args.queue, 0, add_id, "it.add", [2], {"y": 40}, reply_to, "application/json")
        fail_id = await send(
            js, layout, args.queue, "it.fail", ["no funds"], {}, reply_to,
            task_id=f"py-fail-{secrets.token_hex(8)}",
        )
        ids = [add_id, fail_id]
        msgpack_id = None
        if msgpack is not None:
            msgpack_id = await send(js, layout, args.queue, "it.add", [20], {"y": 22}, reply_to, "application/msgpack", priority=9)
            ids.append(msgpack_id)

        finals = await wait_for_final(sub, kv, ids, deadline)

        add_bytes, add_via = finals[add_id]
        add = await read_back(nc, kv, layout, add_id, add_bytes)
        check_common(add, add_id, "it.add", args.expect_worker)
        check(add["state"] == "SUCCESS", f"it.add ended in {add['state']}: {add.get('error')}")
        check(add.get("result") == 42, f"it.add returned {add.get('result')}")
        check("error" not in add, "a SUCCESS record has an error field")
        # A final record is never replaced: a late PENDING create is refused.
        late_create = await create_pending(js, layout, add_id, "it.add", "application/json")

        fail_bytes, fail_via = finals[fail_id]
        fail = await read_back(nc, kv, layout, fail_id, fail_bytes)
        check_common(fail, fail_id, "it.fail", args.expect_worker)
        check(fail["state"] == "FAILURE", f"it.fail ended in {fail['state']}")
        check("result" not in fail, "a FAILURE record has a result field")
        error = fail.get("error") or {}
        check(str(error.get("type", "")).endswith("PaymentError"), f"it.fail error type {error.get('type')}")
        check(error.get("message") == "card declined: no funds", f"it.fail error message {error.get('message')}")
        check(error.get("causes") == ["gateway timeout"], f"it.fail error causes {error.get('causes')}")

        summary = {
            "ok": True,
            "layout": "matches protocol.md",
            "reply_subject": reply_to,
            "add": {
                "id": add_id,
                "state": add["state"],
                "result": add["result"],
                "via": add_via,
                "duplicate_publish_dropped": duplicate.duplicate,
                "pending_create_after_final": "accepted" if late_create else "refused",
            },
            "fail": {"id": fail_id, "state": fail["state"], "error": error, "via": fail_via},
            "msgpack": "skipped: the msgpack package is not installed",
        }
        if msgpack_id is not None:
            packed_bytes, packed_via = finals[msgpack_id]
            check(packed_bytes[0] != ord("{"), "the record of a MessagePack task is not MessagePack")
            packed = await read_back(nc, kv, layout, msgpack_id, packed_bytes)
            check_common(packed, msgpack_id, "it.add", args.expect_worker)
            check(packed["state"] == "SUCCESS" and packed.get("result") == 42, f"MessagePack it.add: {packed}")
            summary["msgpack"] = {"id": msgpack_id, "state": packed["state"], "result": packed["result"], "via": packed_via}

        if args.golden_dir:
            summary["golden_files_checked"] = check_golden_files(args.golden_dir)

        if args.expect_worker:
            summary["control"] = await check_control(nc, layout, args.expect_worker)

        unsent_id = str(uuid.uuid4())
        try:
            await send(js, layout, "py_no_stream", "it.add", [1], {"y": 1}, None, task_id=unsent_id)
            summary["no_stream"] = "published"
        except NoStream as missing:
            summary["no_stream"] = str(missing)
        check(await kv_get(kv, unsent_id) is None, "a task that was not sent keeps its PENDING record")

        if args.park_queue:
            stream = await ensure_queue_stream(js, layout, args.park_queue, doorbells)
            parked_id = await send(js, layout, args.park_queue, "it.add", [20], {"y": 22}, None, priority=3)
            summary["parked"] = {"id": parked_id, "queue": args.park_queue, "stream": stream}

        await sub.unsubscribe()
        return summary
    finally:
        await nc.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="NATS server URL")
    parser.add_argument("--namespace", default="celerity")
    parser.add_argument("--queue", default="default", help="queue a worker consumes")
    parser.add_argument("--expect-worker", help="hostname the worker writes into records")
    parser.add_argument("--park-queue", help="queue to create and leave one it.add task in")
    parser.add_argument("--golden-dir", help="directory of golden files to decode and re-encode")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for results")
    args = parser.parse_args()
    try:
        summary = asyncio.run(run(args))
    except ProtocolError as error:
        print(f"protocol_client: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - any other failure is reported, not a traceback.
        print(f"protocol_client: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
