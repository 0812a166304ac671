"""
fakeclient.py - a keep-alive HTTP client for test/fake_sequin.py: its admin API (consumers,
publish, stats), the consumer API (/next, /ack) that the external Python worker uses, and Sequin
Stream's (/receive, /ack) for the fake's cost per stream batch.
"""

import http.client
import json
import socket


class Http:
    """One persistent HTTP/1.1 connection to 127.0.0.1:port."""

    def __init__(self, port, timeout=120):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def _connect(self):
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, method, path, body=None, headers=None, retry=True):
        hdrs = {"Content-Type": "application/json"}
        if headers:
            hdrs.update(headers)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self._connect()
                self.conn.request(method, path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, data
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt or not retry:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class FakeAdmin:
    """The fake consumer's admin API."""

    def __init__(self, port):
        self.port = port
        self.http = Http(port)

    def _json(self, method, path, body=None, ok=(200, 201)):
        status, data = self.http.request(method, path, body)
        if status not in ok:
            raise RuntimeError("fake %s %s: HTTP %d %s" % (method, path, status, data[:300]))
        return json.loads(data) if data else {}

    def create_consumer(self, cid, token, **settings):
        doc = {"id": cid, "token": token, "purge": True}
        doc.update(settings)
        return self._json("POST", "/admin/consumers", doc)

    def delete_consumer(self, cid):
        return self._json("DELETE", "/admin/consumers/%s" % cid)

    def publish_raw(self, cid, body):
        """Publish a JSON array given as bytes; returns how many records were published."""
        return self._json("POST", "/admin/consumers/%s/publish" % cid, body)["published"]

    def publish_lines(self, cid, lines, chunk=20000):
        """Publish records given as JSON texts (bytes), in chunks."""
        n = 0
        for i in range(0, len(lines), chunk):
            n += self.publish_raw(cid, b"[" + b",".join(lines[i:i + chunk]) + b"]")
        return n

    def stats(self, cid):
        return self._json("GET", "/admin/consumers/%s/stats" % cid)

    def close(self):
        self.http.close()


class ConsumerClient:
    """Sequin's consumer API as a user's worker calls it: POST /next, POST /ack."""

    def __init__(self, port, cid, token):
        self.http = Http(port)
        self.base = "/v1/http-consumers/%s" % cid
        self.auth = {"Authorization": "Bearer " + token}

    def next_raw(self, batch_size, wait_for_ms):
        status, data = self.http.request("POST", self.base + "/next",
                                         json.dumps({"batch_size": batch_size, "wait_for": wait_for_ms}).encode(),
                                         self.auth, retry=False)
        if status != 200:
            raise RuntimeError("/next: HTTP %d %s" % (status, data[:300]))
        return data

    def ack(self, tokens):
        status, data = self.http.request("POST", self.base + "/ack", json.dumps({"ack_tokens": tokens}).encode(),
                                         self.auth, retry=False)
        if status not in (200, 204):
            raise RuntimeError("/ack: HTTP %d %s" % (status, data[:300]))

    def close(self):
        self.http.close()


class StreamClient:
    """Sequin Stream's pull API as a client calls it: POST .../receive, POST .../ack."""

    def __init__(self, port, cid, token):
        self.http = Http(port)
        self.base = "/api/sequin_streams/%s" % cid
        self.auth = {"Authorization": "Bearer " + token, "Accept": "application/json"}

    def next_raw(self, batch_size, wait_for_ms):
        """One receive; wait_for 0 is left out (Sequin refuses 0: omitted means no wait)."""
        doc = {"max_batch_size": batch_size}
        if wait_for_ms:
            doc["wait_for"] = wait_for_ms
        status, data = self.http.request("POST", self.base + "/receive", json.dumps(doc).encode(), self.auth,
                                         retry=False)
        if status != 200:
            raise RuntimeError("/receive: HTTP %d %s" % (status, data[:300]))
        return data

    def ack(self, ack_ids):
        status, data = self.http.request("POST", self.base + "/ack", json.dumps({"ack_ids": ack_ids}).encode(),
                                         self.auth, retry=False)
        if status != 200:
            raise RuntimeError("/ack: HTTP %d %s" % (status, data[:300]))

    def close(self):
        self.http.close()
