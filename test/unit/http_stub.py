#!/usr/bin/env python3
"""
http_stub.py - a misbehaving Sequin consumer for the HTTP client's unit test
(test/unit/http_client_test.cpp).  Python 3 standard library only.

Listens on 127.0.0.1 on a free port and writes the port to --port-file (atomically, so a reader
never sees half a number).  Requests to /v1/http-consumers/<scenario>/<op> behave as the
scenario says (see SCENARIOS below); every such request is recorded.  Side routes, which are
neither recorded nor counted:

    GET  /_last    the last recorded request, as text the C++ test reads without a JSON parser:
                   "method: POST", "path: /...", one "h-<name lower-cased>: <value>" line per
                   header, an empty line, then the request body verbatim
    GET  /_stats   "connections N requests M": connections that carried a recorded request, and
                   recorded requests
    POST /_reset   zero the counters and forget the last request
"""
import argparse
import email.utils
import gzip
import json
import os
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"connections": 0, "requests": 0, "last": None}

BIG = 10 * 1024 * 1024
CHUNK = 64 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection reuse is visible
    server_version = "http_stub"
    sys_version = ""

    def setup(self):
        super().setup()
        self.counted = False

    def log_message(self, fmt, *args):
        pass

    # ---- plumbing ----

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def reply(self, status, body=b"", headers=None, content_type="application/json"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        if content_type and body:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status != 204:  # a 204 carries no Content-Length (RFC 9110, 8.6)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def token(self):
        auth = self.headers.get("Authorization") or ""
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else auth

    def client_gone(self, timeout):
        """Waits up to timeout seconds; True if the client closed the connection meanwhile."""
        readable, _, _ = select.select([self.connection], [], [], timeout)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # ---- routes ----

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def dispatch(self):
        body = self.read_body()
        if self.path.startswith("/_"):
            return self.side_route()
        with LOCK:
            if not self.counted:
                self.counted = True
                STATE["connections"] += 1
            STATE["requests"] += 1
            STATE["last"] = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
            }
        parts = self.path.strip("/").split("/")
        scenario = parts[2] if len(parts) >= 4 else ""
        op = parts[3] if len(parts) >= 4 else ""
        handler = SCENARIOS.get(scenario)
        if handler is None:
            return self.reply(404, json.dumps({"summary": "no such consumer"}))
        try:
            handler(self, op)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def side_route(self):
        with LOCK:
            if self.path == "/_last":
                last = STATE["last"]
                if last is None:
                    return self.reply(404, "", content_type=None)
                lines = ["method: " + last["method"], "path: " + last["path"]]
                lines += ["h-%s: %s" % (k, v) for k, v in last["headers"].items()]
                text = "\n".join(lines) + "\n\n" + last["body"]
                return self.reply(200, text, content_type="text/plain")
            if self.path == "/_stats":
                return self.reply(200, "connections %d requests %d" % (
                    STATE["connections"], STATE["requests"]), content_type="text/plain")
            if self.path == "/_reset":
                STATE.update(connections=0, requests=0, last=None)
                # This connection may carry recorded requests later: count it again then.
                self.counted = False
                return self.reply(204)
        return self.reply(404, json.dumps({"summary": "no such side route"}))

    # ---- scenarios ----

    def s_ok(self, op):
        if op == "next":
            return self.reply(200, json.dumps({
                "data": [{"ack_token": "MTYyeJ7abUjl1pO", "record": {"id": "r1", "updated_idx": 1}}],
                "info": {"num_pending": 0, "num_ack_pending": 1}}))
        return self.reply(204)

    def s_ok200(self, op):
        return self.reply(200, "")

    def s_unauthorized(self, op):
        return self.reply(401, json.dumps({"summary": "Invalid API token"}))

    def s_validation(self, op):
        return self.reply(422, json.dumps({
            "validation_errors": {"batch_size": ["must be at most 1000"], "x": [{"y": "}]"}]},
            "summary": "Validation failed: \u00e9t\u00e9 \ud83d\ude00\n"}))

    def s_tokenecho(self, op):
        return self.reply(401, json.dumps({"summary": "token %s is not valid" % self.token()}))

    def s_ratelimited(self, op):
        return self.reply(429, json.dumps({"summary": "Too many requests"}), {"Retry-After": "7"})

    def s_ratelimiteddate(self, op):
        when = email.utils.formatdate(time.time() + 120, usegmt=True)
        return self.reply(429, json.dumps({"summary": "Too many requests"}), {"Retry-After": when})

    def s_servererror(self, op):
        return self.reply(500, "internal error", content_type="text/plain")

    def s_redirect(self, op):
        return self.reply(302, "", {"Location": "https://elsewhere.example/v1/http-consumers/x/" + op})

    def s_redirecttoken(self, op):
        return self.reply(307, "", {"Location": "/elsewhere?token=" + self.token()})

    def s_huge(self, op):
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(BIG))
        self.end_headers()
        block = b" " * CHUNK
        for _ in range(BIG // CHUNK):
            self.wfile.write(block)

    def s_hugechunked(self, op):
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        block = b" " * CHUNK
        for _ in range(BIG // CHUNK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
        self.wfile.write(b"0\r\n\r\n")

    def s_gzip(self, op):
        body = gzip.compress(json.dumps({"data": [], "pad": "x" * 1000}).encode())
        return self.reply(200, body, {"Content-Encoding": "gzip"})

    def s_gzipbomb(self, op):
        body = gzip.compress(b" " * BIG)  # about 10 kB on the wire, 10 MB decoded
        return self.reply(200, body, {"Content-Encoding": "gzip"})

    def s_slow(self, op):
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.flush()
        for _ in range(100):
            self.wfile.write(b" ")
            self.wfile.flush()
            if self.client_gone(1.0):
                return

    def s_cut(self, op):
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"{" * 100)
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def s_cutchunked(self, op):
        self.close_connection = True
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"64\r\n" + b"{" * 50)
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def s_empty(self, op):
        return self.reply(200, b"")

    def s_longpoll(self, op):
        # Holds the request for up to 30 s, as a long poll with nothing to deliver would.
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.client_gone(0.1):
                self.close_connection = True
                return
        return self.reply(200, json.dumps({"data": []}))


SCENARIOS = {name[2:]: func for name, func in vars(Handler).items() if name.startswith("s_")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
