#!/usr/bin/env python3
"""
stream_stub.py - the smallest Sequin Stream server the HTTP client unit test needs
(test/unit/http_client_test.cpp, started by test/unit/run_http_client_test.sh).

It checks a request the way Sequin does (sequin-stream-api.md, sections 1.2-1.4 and 1.6) and
answers with fixed replies, one scenario per sink name:

  POST /api/sequin_streams/<name>/receive   {"max_batch_size": 1..1000, "wait_for": >= 500 or absent}
  POST /api/sequin_streams/<name>/ack|nack  {"ack_ids": [<uuid>, ...]} (non-empty) -> 200 {"success": true}
  (the same under /api/http_pull_consumers/)

  orders            two messages (UUID ack ids), the second without "data"
  empty             {"data": []}
  ratelimited       429, Retry-After: 3
  ratelimiteddate   429, Retry-After: an HTTP date 120 s ahead
  ratelimitedpast   429, Retry-After: an HTTP date an hour ago
  ratelimitedzero   429, Retry-After: 0
  ratelimitedjunk   429, Retry-After: soon (neither form)
  anything else     404 {"summary": "Not found: ..."}

A request without the bearer token "sekret-T0KEN-4242" is a 401, a POST without a JSON
content type or with a bad body a 400, each with Sequin's {"summary": ...}.  The last request is
served as text at GET /admin/requests.txt in fake_sequin.py's format; POST /admin/requests/reset
forgets it.  The Sequin Stream fake for the worker suites is fake_sequin.py's; this stub only
pins down request shapes and error bodies.

    python3 test/unit/stream_stub.py --port-file FILE    (writes its 127.0.0.1 port there)
"""
import argparse
import email.utils
import json
import os
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "sekret-T0KEN-4242"
ROUTE = re.compile(r"^/api/(?:sequin_streams|http_pull_consumers)/([^/]+)/(receive|ack|nack)$")
ORDERS = {"data": [
    {"ack_id": "0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11",
     "data": {"record": {"id": 1, "total": "12.50"}, "changes": None, "action": "insert",
              "metadata": {"table_schema": "public", "table_name": "orders",
                           "commit_lsn": 123456, "commit_idx": 0}}},
    {"ack_id": "6F9619FF-8B86-D011-B42D-00C04FC964FF"},
]}
BATCH_ERROR = "Invalid `max_batch_size`. `max_batch_size` must be an integer between 1 and 1000."
WAIT_ERROR = ("Invalid `wait_for`. Must be between 500 and 300,000 milliseconds, or use duration "
              "format like '60s', '5m', '1000ms'.")
ACK_ERROR = ("Invalid ack_ids. Must send a top-level `ack_ids` property that is a non-empty list "
             "of valid UUID strings")

lock = threading.Lock()
last = {"text": "connections: 0\nrequests: 0\n\n"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, doc, headers=()):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/admin/requests.txt":
            return self.reply(404, {"summary": "no route"})
        with lock:
            body = last["text"].encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/admin/requests/reset":
            with lock:
                last["text"] = "connections: 0\nrequests: 0\n\n"
            return self.reply(200, {"ok": True})
        headers = "".join("h-%s: %s\n" % (k.lower(), v) for k, v in self.headers.items())
        with lock:
            last["text"] = ("connections: 0\nrequests: 1\nmethod: POST\npath: %s\n%s\n%s"
                            % (self.path, headers, raw.decode("utf-8", "replace")))
        m = ROUTE.match(self.path)
        if not m:
            return self.reply(404, {"summary": "no route"})
        name, action = m.groups()
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self.reply(401, {"summary": "The API token is invalid or has expired."})
        if "application/json" not in self.headers.get("Content-Type", ""):
            return self.reply(400, {"summary": "Content-Type: application/json is required"})
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self.reply(400, {"summary": "malformed JSON"})
        if action != "receive":
            ids = body.get("ack_ids") if isinstance(body, dict) else None
            ok = isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)
            try:
                ok = ok and all(uuid.UUID(i) for i in ids)
            except ValueError:
                ok = False
            return self.reply(200, {"success": True}) if ok else self.reply(400, {"summary": ACK_ERROR})
        size = body.get("max_batch_size", 1)
        if not isinstance(size, int) or not 0 < size <= 1000:
            return self.reply(400, {"summary": BATCH_ERROR})
        wait = body.get("wait_for")
        if wait is not None and (not isinstance(wait, int) or not 500 <= wait <= 300000):
            return self.reply(400, {"summary": WAIT_ERROR})
        if name == "orders":
            return self.reply(200, ORDERS)
        if name == "empty":
            return self.reply(200, {"data": []})
        retry_after = {
            "ratelimited": "3",
            "ratelimiteddate": email.utils.formatdate(time.time() + 120, usegmt=True),
            "ratelimitedpast": email.utils.formatdate(time.time() - 3600, usegmt=True),
            "ratelimitedzero": "0",
            "ratelimitedjunk": "soon",
        }.get(name)
        if retry_after is not None:
            return self.reply(429, {"summary": "Too many requests"}, [("Retry-After", retry_after)])
        return self.reply(404, {"summary": "Not found: no sink named %s" % name})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
