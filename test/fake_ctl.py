#!/usr/bin/env python3
"""
fake_ctl.py - drives test/fake_sequin.py's admin API from a shell or from SQL
(COPY ... FROM/TO PROGRAM in the regression tests).  Prints one line of JSON.

  fake_ctl.py --port N consumer ID TOKEN [ACK_WAIT_MS]   create or update a consumer
  fake_ctl.py --port N publish ID                         publish the JSON array read from stdin
  fake_ctl.py --port N publish-file ID PATH               publish a JSON array file, byte for byte
  fake_ctl.py --port N stats ID                           the consumer's counters
  fake_ctl.py --port N faults ID JSON                     set fault injection ({} clears)
"""
import json
import sys
import urllib.request


def call(port, method, path, body=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def main(argv):
    if len(argv) < 4 or argv[1] != "--port":
        sys.exit(__doc__)
    port, cmd, args = argv[2], argv[3], argv[4:]
    if cmd == "consumer":
        doc = {"id": args[0], "token": args[1]}
        if len(args) > 2:
            doc["ack_wait_ms"] = int(args[2])
        out = call(port, "POST", "/admin/consumers", doc)
    elif cmd == "publish":
        body = sys.stdin.buffer.read().strip()
        out = call(port, "POST", f"/admin/consumers/{args[0]}/publish", body)
    elif cmd == "publish-file":
        with open(args[1], "rb") as f:
            out = call(port, "POST", f"/admin/consumers/{args[0]}/publish", f.read())
    elif cmd == "stats":
        out = call(port, "GET", f"/admin/consumers/{args[0]}/stats")
    elif cmd == "faults":
        out = call(port, "POST", f"/admin/consumers/{args[0]}/faults", json.loads(args[1]))
    else:
        sys.exit(__doc__)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv)
