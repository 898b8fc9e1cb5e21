#!/usr/bin/env python3
"""A driver that breaks the external driver protocol on purpose, one way per MODE.

It answers the hello correctly, then misbehaves when the first acquisition starts:
  exit-mid-transfer   sends a USB request, then exits with status 3 without waiting
  stop-answering      never answers (the runner's wall-clock guard must fire)
  sleep-forever       asks for virtual-time sleeps forever (the scenario budget must fire)
  garbage             writes a line that is not JSON
  huge-line           writes a 100 MB line
  unknown-type        answers with a message type the protocol does not have
  out-of-turn         sends notify_done when no notify was delivered
  close-stdout        closes its stdout and keeps running
  bad-hello           answers the hello with protocol version 99
Protocol version 2 (the driver picks 2 in its hello unless the mode says otherwise):
  v2-in-v1            picks version 1, then submits a transfer
  v2-bad-submit       submits a transfer kind the protocol does not have
  v2-duplicate-id     submits two transfers with one id
  v2-too-many         submits 65 timers without waiting
  v2-unknown-cancel   cancels an id it never submitted
  v2-cancel-finished  cancels a transfer whose done it has received
  v2-wait-nothing     waits with nothing submitted
  v2-overtake         a blocking bulk_in behind a submitted one on the same endpoint
  v2-submit-in-notify submits a transfer while handling notify (needs a scenario with one)
  v2-wait-stalled     submits a read no data will ever answer and waits
  v2-early-result     submits a read and returns S_OK at once (not a protocol error)
  v2-spin             submits timers of 0 and waits for them forever: time never moves
Usage: driver.py MODE
"""

import json
import os
import sys
import time

MODE = sys.argv[1]


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def read():
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    return json.loads(line)


def submit(ident, transfer, **fields):
    msg = {"type": "submit", "id": ident, "transfer": transfer}
    msg.update(fields)
    send(msg)


if MODE == "bad-hello":
    PROTOCOL = 99
elif MODE.startswith("v2-") and MODE != "v2-in-v1":
    PROTOCOL = 2
else:
    PROTOCOL = 1
read()
send({"type": "hello", "protocol": PROTOCOL, "name": "hostile", "version": MODE,
      "capabilities": {"async_cancel": True}})
sys.stderr.write("hostile driver, mode %s\n" % MODE)
sys.stderr.flush()
while read()["type"] != "acquire":
    pass
if MODE == "exit-mid-transfer":
    send({"type": "bulk_in", "id": 1, "ep": 0x81, "length": 4096, "timeout_us": 500000})
    sys.exit(3)
elif MODE == "stop-answering" or MODE == "bad-hello":
    time.sleep(3600)
elif MODE == "sleep-forever":
    n = 0
    while True:
        n += 1
        send({"type": "sleep", "id": n, "duration_us": 1000000})
        read()
elif MODE == "garbage":
    sys.stdout.write("this is not json {\n")
    sys.stdout.flush()
    time.sleep(3600)
elif MODE == "huge-line":
    chunk = "x" * (1 << 20)
    for _ in range(100):
        sys.stdout.write(chunk)
    sys.stdout.write("\n")
    sys.stdout.flush()
    time.sleep(3600)
elif MODE == "unknown-type":
    send({"type": "callback_result", "hr": 0})
    time.sleep(3600)
elif MODE == "out-of-turn":
    send({"type": "notify_done"})
    time.sleep(3600)
elif MODE == "close-stdout":
    sys.stdout.flush()
    os.close(1)
    time.sleep(3600)
elif MODE == "v2-in-v1":
    submit(1, "sleep", duration_us=10)
    time.sleep(3600)
elif MODE == "v2-bad-submit":
    submit(1, "warp_in", ep=0x81, length=512, timeout_us=0)
    time.sleep(3600)
elif MODE == "v2-duplicate-id":
    submit(1, "bulk_in", ep=0x81, length=512, timeout_us=0)
    submit(1, "bulk_in", ep=0x81, length=512, timeout_us=0)
    time.sleep(3600)
elif MODE == "v2-too-many":
    for n in range(65):
        submit(n + 1, "sleep", duration_us=1000)
    time.sleep(3600)
elif MODE == "v2-unknown-cancel":
    send({"type": "cancel", "id": 99})
    time.sleep(3600)
elif MODE == "v2-cancel-finished":
    submit(1, "sleep", duration_us=10)
    send({"type": "wait"})
    read()
    send({"type": "cancel", "id": 1})
    time.sleep(3600)
elif MODE == "v2-wait-nothing":
    send({"type": "wait"})
    time.sleep(3600)
elif MODE == "v2-overtake":
    submit(1, "bulk_in", ep=0x81, length=512, timeout_us=0)
    send({"type": "bulk_in", "id": 2, "ep": 0x81, "length": 512, "timeout_us": 0})
    time.sleep(3600)
elif MODE == "v2-submit-in-notify":
    submit(1, "sleep", duration_us=10_000_000)
    send({"type": "wait"})
    while read()["type"] != "notify":
        pass
    submit(2, "sleep", duration_us=10)
    time.sleep(3600)
elif MODE == "v2-wait-stalled":
    submit(1, "bulk_in", ep=0x81, length=512, timeout_us=0)
    send({"type": "wait"})
    time.sleep(3600)
elif MODE == "v2-spin":
    n = 0
    while True:
        n += 1
        submit(n, "sleep", duration_us=0)
        send({"type": "wait"})
        read()
elif MODE == "v2-early-result":
    submit(1, "bulk_in", ep=0x81, length=512, timeout_us=0)
    send({"type": "result", "hr": 0})
    while True:
        msg = read()
        if msg["type"] == "notify":
            send({"type": "notify_done"})
        elif msg["type"] == "acquire":
            send({"type": "result", "hr": 0})
