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


read()
send({"type": "hello", "protocol": 99 if MODE == "bad-hello" else 1, "name": "hostile",
      "version": MODE, "capabilities": {"async_cancel": True}})
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
