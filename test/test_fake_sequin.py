#!/usr/bin/env python3
"""
test_fake_sequin.py - self-test of the fake Sequin server (test/fake_sequin.py) and of the record
generator (test/gen_records.py).

The fake stands in for Sequin in every integration test of sequin_sync, so it has to behave as
section 1 of the consumer API notes says: auth and error bodies, next/ack/nack, redelivery after
ack_wait_ms, the max_ack_pending cap, long polls, fault injection, and speed (a 1000-record batch
must cost a few milliseconds, or benchmarks would measure the fake).

Run from the repository root:
    python3 -m unittest test/test_fake_sequin.py -v

The server runs in a subprocess on a free port (127.0.0.1), found through --port-file.
"""

import base64
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_records  # noqa: E402

FAKE = os.path.join(HERE, "fake_sequin.py")
FIXTURE = os.path.join(HERE, "fixtures", "sample_records.json")


def start_server(tmpdir, *extra):
    """Start fake_sequin.py; return (Popen, port)."""
    port_file = os.path.join(tmpdir, "fake.port.%d" % time.monotonic_ns())
    proc = subprocess.Popen([sys.executable, FAKE, "--port", "0", "--port-file", port_file,
                             "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("fake_sequin did not start: %r" % (proc.communicate(),))
        time.sleep(0.02)
    with open(port_file) as f:
        port = int(f.read())
    # The first stdout line is the port too.
    assert int(proc.stdout.readline()) == port
    return proc, port


def stop_server(proc, sig=signal.SIGTERM, timeout=10):
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    proc.stdout.close()
    proc.stderr.close()
    return rc


class Client:
    """A keep-alive HTTP/1.1 client (one connection, reopened after a failure)."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """Return (status, headers dict (lower-case names), body bytes)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            r = self.conn.getresponse()
            data = r.read()
        except Exception:
            self.close()
            raise
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def one_shot(port, method, path, body=None, headers=None):
    """One request on its own connection (for helper threads)."""
    c = Client(port)
    try:
        return c.request(method, path, body, headers)
    finally:
        c.close()


SERVER = None
PORT = None
TMP = None


def setUpModule():
    global SERVER, PORT, TMP
    TMP = tempfile.TemporaryDirectory()
    SERVER, PORT = start_server(TMP.name)


def tearDownModule():
    rc = stop_server(SERVER)
    TMP.cleanup()
    if rc != 0:
        raise AssertionError(f"fake_sequin exited {rc} on SIGTERM")


class FakeSequinCase(unittest.TestCase):
    """Shared helpers; every test starts from an empty server."""

    def setUp(self):
        self.c = Client(PORT)
        self.admin("POST", "/admin/reset")

    def tearDown(self):
        self.c.close()

    # -- helpers ------------------------------------------------------------------------------

    def admin(self, method, path, body=None, expect=200):
        status, _, data = self.c.request(method, path, body)
        self.assertEqual(status, expect, data)
        return json.loads(data) if data else None

    def consumer(self, cid="c1", token="secret", **settings):
        doc = {"id": cid, "token": token}
        doc.update(settings)
        status, _, data = self.c.request("POST", "/admin/consumers", doc)
        self.assertIn(status, (200, 201), data)
        return cid

    def publish(self, records, cid="c1"):
        out = self.admin("POST", f"/admin/consumers/{cid}/publish", records)
        self.assertEqual(out, {"published": len(records)})

    def stats(self, cid="c1"):
        return self.admin("GET", f"/admin/consumers/{cid}/stats")

    def faults(self, cfg, cid="c1"):
        return self.admin("POST", f"/admin/consumers/{cid}/faults", cfg)

    def raw_next(self, cid="c1", token="secret", client=None, **params):
        return (client or self.c).request("POST", f"/v1/http-consumers/{cid}/next", params,
                                          {"Authorization": f"Bearer {token}"})

    def next(self, cid="c1", token="secret", client=None, **params):
        status, _, data = self.raw_next(cid, token, client, **params)
        self.assertEqual(status, 200, data)
        return json.loads(data)

    def ack(self, tokens, cid="c1", token="secret", kind="ack"):
        status, hdrs, data = self.c.request("POST", f"/v1/http-consumers/{cid}/{kind}",
                                            {"ack_tokens": tokens},
                                            {"Authorization": f"Bearer {token}"})
        self.assertEqual(status, 204, data)
        self.assertEqual(data, b"")

    def nack(self, tokens, cid="c1"):
        self.ack(tokens, cid, kind="nack")

    @staticmethod
    def recs(*names):
        return [{"id": n, "updated_idx": i + 1, "data": {"n": n}} for i, n in enumerate(names)]

    @staticmethod
    def ids(reply):
        return [d["record"]["id"] for d in reply["data"]]

    def publish_later(self, records, delay, cid="c1"):
        def run():
            time.sleep(delay)
            one_shot(PORT, "POST", f"/admin/consumers/{cid}/publish", records)
        t = threading.Thread(target=run)
        t.start()
        return t


class AuthAndErrors(FakeSequinCase):

    def test_health(self):
        self.assertEqual(self.admin("GET", "/admin/health"), {"ok": True})

    def test_missing_and_wrong_token_401(self):
        self.consumer()
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
            status, hdrs, data = self.c.request("POST", "/v1/http-consumers/c1/next", {},
                                                headers)
            self.assertEqual(status, 401, headers)
            self.assertIsInstance(json.loads(data)["summary"], str)
            self.assertEqual(int(hdrs["content-length"]), len(data))
        status, _, data = self.c.request("POST", "/v1/http-consumers/c1/ack",
                                         {"ack_tokens": ["x"]}, {"Authorization": "Bearer no"})
        self.assertEqual(status, 401)
        self.assertIn("summary", json.loads(data))
        self.assertEqual(self.stats()["auth_failures"], 2)

    def test_unknown_consumer_404(self):
        self.consumer()
        status, _, data = self.raw_next(cid="nope")
        self.assertEqual(status, 404)
        self.assertIn("summary", json.loads(data))

    def test_bad_bodies_400_422(self):
        self.consumer()
        auth = {"Authorization": "Bearer secret"}
        for path, body in (("next", b"{not json"), ("next", b"[1]"), ("ack", b"{bad"),
                           ("ack", b'{"ack_tokens": []}'), ("ack", b"{}"),
                           ("nack", b'{"ack_tokens": "abc"}'), ("ack", b'{"ack_tokens": [1]}')):
            status, _, data = self.c.request("POST", f"/v1/http-consumers/c1/{path}", body, auth)
            self.assertEqual(status, 400, (path, body))
            self.assertIn("summary", json.loads(data))
        status, _, data = self.raw_next(batch_size=0)
        self.assertEqual(status, 422)
        self.assertIn("batch_size", json.loads(data)["validation_errors"])

    def test_admin_validation(self):
        for doc in ({"id": "c1"}, {"token": "t"}, {"id": "c1", "token": "t", "bogus": 1},
                    {"id": "c1", "token": "t", "max_deliver": 0}):
            status, _, _ = self.c.request("POST", "/admin/consumers", doc)
            self.assertEqual(status, 400, doc)
        self.consumer()
        status, _, data = self.c.request("POST", "/admin/consumers/c1/publish", b'{"a": 1}')
        self.assertEqual(status, 400)
        status, _, _ = self.c.request("POST", "/admin/consumers/c1/publish", b"[1, NaN]")
        self.assertEqual(status, 400)
        status, _, _ = self.c.request("POST", "/admin/consumers/zz/publish", b"[]")
        self.assertEqual(status, 404)

    def test_keep_alive_and_content_length(self):
        self.consumer()
        self.publish(self.recs("a", "b", "c"))
        self.c.request("GET", "/admin/health")
        sock = self.c.conn.sock
        for _ in range(3):
            status, hdrs, data = self.raw_next()
            self.assertEqual(int(hdrs["content-length"]), len(data))
            self.ack([json.loads(data)["data"][0]["ack_token"]])
        status, hdrs, data = self.raw_next(token="wrong")
        self.assertEqual(int(hdrs["content-length"]), len(data))
        self.assertIs(self.c.conn.sock, sock, "the connection was not kept alive")


class Delivery(FakeSequinCase):

    def test_next_ack_nack(self):
        self.consumer()
        self.publish(self.recs("a", "b", "c"))
        r = self.next(batch_size=2)
        self.assertEqual(self.ids(r), ["a", "b"])
        self.assertEqual(r["info"], {"num_pending": 1, "num_ack_pending": 2})
        ta, tb = (d["ack_token"] for d in r["data"])
        self.assertNotEqual(ta, tb)
        self.ack([ta])
        self.nack([tb])
        # b is available again at once, after the newer c.
        r = self.next(batch_size=10)
        self.assertEqual(self.ids(r), ["c", "b"])
        self.assertNotIn(tb, [d["ack_token"] for d in r["data"]])
        self.ack([d["ack_token"] for d in r["data"]])
        s = self.stats()
        self.assertEqual((s["published"], s["delivered"], s["redelivered"], s["acked"],
                          s["nacked"], s["pending"], s["ack_pending"], s["outstanding"],
                          s["bad_tokens"]), (3, 4, 1, 3, 1, 0, 0, 0, 0))
        self.assertEqual(self.next(batch_size=5)["data"], [])

    def test_defaults_and_get_with_query(self):
        self.consumer()
        self.publish(self.recs("a", "b", "c"))
        self.assertEqual(self.ids(self.next()), ["a"])             # batch_size defaults to 1
        status, _, data = self.c.request("GET", "/v1/http-consumers/c1/next?batch_size=5",
                                         None, {"Authorization": "Bearer secret"})
        self.assertEqual(status, 200)
        self.assertEqual(self.ids(json.loads(data)), ["b", "c"])

    def test_unknown_tokens_are_ignored(self):
        self.consumer()
        self.publish(self.recs("a"))
        t = self.next()["data"][0]["ack_token"]
        self.ack(["no-such-token", t, t])
        self.nack(["nope"])
        s = self.stats()
        self.assertEqual((s["acked"], s["bad_tokens"], s["outstanding"]), (1, 3, 0))

    def test_redelivery_after_ack_wait(self):
        self.consumer(ack_wait_ms=200)
        self.publish(self.recs("a"))
        t1 = self.next()["data"][0]["ack_token"]
        self.assertEqual(self.next(batch_size=5)["data"], [])      # in flight
        # A long poll wakes up when the message times out, not at the end of wait_for.
        t0 = time.monotonic()
        r = self.next(batch_size=5, wait_for=3000)
        elapsed = time.monotonic() - t0
        self.assertEqual(self.ids(r), ["a"])
        self.assertLess(elapsed, 1.5)
        t2 = r["data"][0]["ack_token"]
        self.assertNotEqual(t1, t2)
        self.ack([t1])                                              # expired token: ignored
        s = self.stats()
        self.assertEqual((s["acked"], s["bad_tokens"], s["outstanding"], s["redelivered"],
                          s["expired"]), (0, 1, 1, 1, 1))
        self.ack([t2])
        self.assertEqual(self.stats()["outstanding"], 0)

    def test_redelivered_message_comes_after_newer_ones(self):
        self.consumer(ack_wait_ms=150)
        self.publish([{"id": "A", "updated_idx": 1}])
        self.next()                                                 # A in flight, never acked
        self.publish([{"id": "A", "updated_idx": 2}, {"id": "B", "updated_idx": 1}])
        time.sleep(0.3)
        r = self.next(batch_size=10)
        self.assertEqual([(d["record"]["id"], d["record"]["updated_idx"]) for d in r["data"]],
                         [("A", 2), ("B", 1), ("A", 1)])

    def test_max_ack_pending(self):
        self.consumer(max_ack_pending=3)
        self.publish(self.recs("a", "b", "c", "d", "e"))
        r = self.next(batch_size=10)
        self.assertEqual(self.ids(r), ["a", "b", "c"])
        self.assertEqual(r["info"], {"num_pending": 2, "num_ack_pending": 3})
        self.assertEqual(self.next(batch_size=10)["data"], [])
        # A long poll blocked by the cap returns when an ack makes room.
        tokens = [d["ack_token"] for d in r["data"]]
        threading.Timer(0.2, lambda: one_shot(
            PORT, "POST", "/v1/http-consumers/c1/ack", {"ack_tokens": tokens[:1]},
            {"Authorization": "Bearer secret"})).start()
        t0 = time.monotonic()
        r2 = self.next(batch_size=10, wait_for=3000)
        self.assertLess(time.monotonic() - t0, 1.5)
        self.assertEqual(self.ids(r2), ["d"])

    def test_max_deliver(self):
        self.consumer(ack_wait_ms=100, max_deliver=2)
        self.publish(self.recs("a"))
        self.assertEqual(self.ids(self.next()), ["a"])
        self.assertEqual(self.ids(self.next(wait_for=2000)), ["a"])    # second delivery
        self.assertEqual(self.next(wait_for=400)["data"], [])          # then dropped
        s = self.stats()
        self.assertEqual((s["dropped"], s["delivered"], s["outstanding"]), (1, 2, 0))

    def test_nack_counts_toward_max_deliver(self):
        self.consumer(max_deliver=1)
        self.publish(self.recs("a"))
        self.nack([self.next()["data"][0]["ack_token"]])
        self.assertEqual(self.next()["data"], [])
        self.assertEqual(self.stats()["dropped"], 1)

    def test_info_can_be_omitted(self):
        self.consumer(send_info=False)
        r = self.next()
        self.assertEqual(r, {"data": []})

    def test_update_keeps_messages_purge_drops_them(self):
        self.consumer()
        self.publish(self.recs("a", "b"))
        self.consumer(token="new-token")
        status, _, _ = self.raw_next(token="secret")
        self.assertEqual(status, 401)
        self.assertEqual(self.ids(self.next(token="new-token")), ["a"])
        self.consumer(token="new-token", purge=True)
        self.assertEqual(self.stats()["outstanding"], 0)

    def test_concurrent_workers_share_the_stream(self):
        self.consumer(max_ack_pending=100000)
        self.publish(self.recs(*("r%d" % i for i in range(3000))))
        seen, lock = [], threading.Lock()

        def worker():
            c = Client(PORT)
            try:
                while True:
                    r = self.next(client=c, batch_size=97)
                    if not r["data"]:
                        return
                    with lock:
                        seen.extend(self.ids(r))
                    c.request("POST", "/v1/http-consumers/c1/ack",
                              {"ack_tokens": [d["ack_token"] for d in r["data"]]},
                              {"Authorization": "Bearer secret"})
            finally:
                c.close()
        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(len(seen), 3000)
        self.assertEqual(len(set(seen)), 3000)
        s = self.stats()
        self.assertEqual((s["acked"], s["outstanding"], s["bad_tokens"]), (3000, 0, 0))

    def test_fixture_records_round_trip(self):
        with open(FIXTURE, "rb") as f:
            raw = f.read()
        expected = json.loads(raw)
        self.consumer()
        self.admin("POST", "/admin/consumers/c1/publish", raw)
        status, _, data = self.raw_next(batch_size=100)
        self.assertEqual([d["record"] for d in json.loads(data)["data"]], expected)
        # Numbers travel as published, digit for digit.
        self.assertIn(b"12345678901234567890", data)
        self.assertIn(b"98.765", data)

    def test_stats_fields(self):
        self.consumer()
        s = self.stats()
        for k in ("published", "delivered", "redelivered", "acked", "nacked", "pending",
                  "ack_pending", "outstanding", "bad_tokens"):
            self.assertEqual(s[k], 0, k)
        status, _, _ = self.c.request("GET", "/admin/consumers/zz/stats")
        self.assertEqual(status, 404)


class LongPoll(FakeSequinCase):

    def test_eager_returns_on_publish(self):
        self.consumer()
        t = self.publish_later(self.recs("a"), 0.2)
        t0 = time.monotonic()
        r = self.next(batch_size=100, wait_for=5000)
        elapsed = time.monotonic() - t0
        t.join()
        self.assertEqual(self.ids(r), ["a"])
        self.assertGreater(elapsed, 0.15)
        self.assertLess(elapsed, 2.0)

    def test_not_eager_waits_for_full_batch_or_timeout(self):
        self.consumer(eager=False)
        t = self.publish_later(self.recs("a"), 0.1)
        t0 = time.monotonic()
        r = self.next(batch_size=5, wait_for=600)
        elapsed = time.monotonic() - t0
        t.join()
        self.assertEqual(self.ids(r), ["a"])
        self.assertGreater(elapsed, 0.55)
        # A full batch ends the wait early.
        t = self.publish_later(self.recs("b", "c", "d", "e", "f"), 0.1)
        t0 = time.monotonic()
        r = self.next(batch_size=5, wait_for=5000)
        elapsed = time.monotonic() - t0
        t.join()
        self.assertEqual(len(r["data"]), 5)
        self.assertLess(elapsed, 2.0)

    def test_empty_long_poll_times_out(self):
        self.consumer()
        t0 = time.monotonic()
        self.assertEqual(self.next(batch_size=10, wait_for=300)["data"], [])
        self.assertGreater(time.monotonic() - t0, 0.28)
        t0 = time.monotonic()
        self.assertEqual(self.next(batch_size=10)["data"], [])
        self.assertLess(time.monotonic() - t0, 0.2)


class Faults(FakeSequinCase):

    def test_status_500(self):
        self.consumer()
        self.publish(self.recs("a"))
        self.faults({"status_500": 1})
        status, _, data = self.raw_next()
        self.assertEqual(status, 500)
        self.assertIn("summary", json.loads(data))
        self.assertEqual(self.stats()["ack_pending"], 0)        # nothing was delivered
        self.faults({})
        self.assertEqual(self.ids(self.next()), ["a"])

    def test_status_429_retry_after(self):
        self.consumer()
        self.faults({"status_429": 1.0, "retry_after": 2})
        status, hdrs, data = self.raw_next()
        self.assertEqual(status, 429)
        self.assertEqual(hdrs["retry-after"], "2")
        self.assertIn("summary", json.loads(data))

    def test_status_for_next(self):
        self.consumer()
        for code in (401, 403, 502):
            self.faults({"status_for_next": code})
            status, _, data = self.raw_next()
            self.assertEqual(status, code)
            self.assertIn("summary", json.loads(data))
        self.faults({})
        self.assertEqual(self.raw_next()[0], 200)

    def test_drop_connection(self):
        self.consumer(ack_wait_ms=200)
        self.publish(self.recs("a"))
        self.faults({"drop_connection": 1})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.raw_next()
        self.faults({})
        # The message went in flight with the lost reply: it comes back after ack_wait_ms.
        self.assertEqual(self.stats()["ack_pending"], 1)
        self.assertEqual(self.ids(self.next(wait_for=2000)), ["a"])

    def test_truncate(self):
        self.consumer()
        self.publish(self.recs("a", "b"))
        self.faults({"truncate": 1})
        status, hdrs, data = self.raw_next(batch_size=2)
        self.assertEqual(status, 200)
        self.assertEqual(int(hdrs["content-length"]), len(data))
        self.assertGreater(len(data), 10)
        with self.assertRaises(ValueError):
            json.loads(data)
        self.assertEqual(self.raw_next()[0], 200)              # the connection still works

    def test_slow(self):
        self.consumer()
        self.faults({"slow_ms": 300})
        t0 = time.monotonic()
        self.next()
        self.assertGreater(time.monotonic() - t0, 0.28)

    def test_ack_slow(self):
        self.consumer()
        self.publish(self.recs("a"))
        toks = [d["ack_token"] for d in self.next()["data"]]
        self.faults({"ack_slow_ms": 300})
        t0 = time.monotonic()
        self.ack(toks)
        self.assertGreater(time.monotonic() - t0, 0.28)
        self.assertEqual(self.stats()["acked"], 1)

    def test_duplicate(self):
        self.consumer()
        self.publish(self.recs("a", "b", "c"))
        self.faults({"duplicate": 1, "seed": 1})
        r = self.next(batch_size=10)
        ids = self.ids(r)
        tokens = [d["ack_token"] for d in r["data"]]
        self.assertEqual(len(ids), 4)
        self.assertEqual(sorted(set(ids)), ["a", "b", "c"])
        self.assertEqual(len(set(tokens)), 4)
        self.ack(tokens)                                        # both copies: no bad token
        s = self.stats()
        self.assertEqual((s["acked"], s["bad_tokens"], s["outstanding"], s["duplicated"]),
                         (3, 0, 0, 1))
        # Never more than batch_size: with batch_size 2, one message twice.
        self.publish(self.recs("d", "e", "f"))
        r = self.next(batch_size=2)
        self.assertEqual(self.ids(r), ["d", "d"])

    def test_ack_drop(self):
        self.consumer()
        self.publish(self.recs("a"))
        self.faults({"ack_drop": 1})
        t = self.next()["data"][0]["ack_token"]
        self.ack([t])
        s = self.stats()
        self.assertEqual((s["acked"], s["ack_dropped"], s["ack_pending"]), (0, 1, 1))
        self.faults({})
        self.ack([t])
        self.assertEqual(self.stats()["acked"], 1)

    def test_seed_is_deterministic_and_limit(self):
        self.consumer()

        def run():
            self.faults({"status_500": 0.5, "seed": 42})
            return [self.raw_next()[0] for _ in range(30)]
        a, b = run(), run()
        self.assertEqual(a, b)
        self.assertEqual(set(a), {200, 500})
        self.faults({"status_500": 1, "limit": 2})
        self.assertEqual([self.raw_next()[0] for _ in range(4)], [500, 500, 200, 200])
        self.assertEqual(self.stats()["faults_injected"], 2)

    def test_bad_fault_settings(self):
        self.consumer()
        for cfg in ({"status_500": 2}, {"nonsense": 1}, {"status_for_next": "x"}):
            status, _, _ = self.c.request("POST", "/admin/consumers/c1/faults", cfg)
            self.assertEqual(status, 400, cfg)


class Scripted(FakeSequinCase):
    """publish_raw (byte-exact records) and scripted raw /next replies."""

    def raw_socket_next(self, cid="c1", token="secret"):
        """One /next on a fresh socket; returns every byte the server sent until it closed
        (or 5 s passed)."""
        import socket
        s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        body = b'{"batch_size":10,"wait_for":0}'
        s.sendall(b"POST /v1/http-consumers/%s/next HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                  % (cid.encode(), token.encode(), len(body), body))
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
        s.close()
        return out

    def script_log(self, n, cid="c1"):
        """The log of served steps, once it has n entries (a step is logged after the server
        has closed or finished the reply, so a client can see the reply first)."""
        deadline = time.monotonic() + 10
        while True:
            log = self.admin("GET", f"/admin/consumers/{cid}/script")["log"]
            if len(log) >= n or time.monotonic() > deadline:
                return log
            time.sleep(0.02)

    def script(self, *steps, cid="c1", append=False):
        return self.admin("POST", f"/admin/consumers/{cid}/script",
                          {"steps": list(steps), "append": append})

    def test_publish_raw_keeps_bytes(self):
        self.consumer()
        recs = [b'\xef\xbb\xbf{"id":"bom"}', b'{"id":"x","s":"\xff\xfe"}', b'{"a":1,"a":2}',
                b'{"n":NaN}', b"[" * 1000 + b"]" * 1000]
        out = self.admin("POST", "/admin/consumers/c1/publish_raw",
                         {"records": [{"b64": base64.b64encode(r).decode()} for r in recs[:4]]
                          + [{"text": recs[4].decode()}]})
        self.assertEqual(out, {"published": 5})
        raw = self.raw_socket_next()
        body = raw.split(b"\r\n\r\n", 1)[1]
        for r in recs:
            self.assertIn(b'","record":' + r + b"}", body)
        for bad in ({"records": [{"b64": "!!"}]}, {"records": "x"}, {"records": [{"reply": True}]}):
            status, _, _ = self.c.request("POST", "/admin/consumers/c1/publish_raw", bad)
            self.assertEqual(status, 400, bad)

    def test_fixed_body_status_headers_and_then_normal(self):
        self.consumer()
        self.publish(self.recs("a"))
        self.script({"status": 502, "content_type": "text/html", "headers": [["X-Proxy", "p"]],
                     "body": [{"text": "<html>bad gateway</html>"}]},
                    {"status": 302, "headers": [["Location", "ftp://elsewhere/"]],
                     "body": [{"text": ""}]})
        status, hdrs, data = self.raw_next(batch_size=10)
        self.assertEqual((status, hdrs["content-type"], hdrs["x-proxy"], data),
                         (502, "text/html", "p", b"<html>bad gateway</html>"))
        status, hdrs, data = self.raw_next(batch_size=10)
        self.assertEqual((status, hdrs["location"], data), (302, "ftp://elsewhere/", b""))
        self.assertEqual(self.ids(self.next(batch_size=10)), ["a"])   # script used up
        log = self.script_log(2)
        self.assertEqual([e["status"] for e in log], [502, 302])
        self.assertTrue(all(e["finished"] for e in log))

    def test_wrapping_the_real_reply_and_repeats(self):
        self.consumer()
        self.publish(self.recs("a", "b"))
        self.script({"body": [{"b64": base64.b64encode(b"\xef\xbb\xbf").decode()}, {"reply": True},
                              {"text": " ", "repeat": 200000}]})
        status, _, data = self.raw_next(batch_size=10)
        self.assertEqual(status, 200)
        self.assertTrue(data.startswith(b"\xef\xbb\xbf{\"data\":["))
        self.assertEqual(len(data) - len(data.rstrip(b" ")), 200000)
        self.assertEqual(self.ids(json.loads(data[3:])), ["a", "b"])   # real, ackable tokens
        self.assertEqual(self.stats()["ack_pending"], 2)
        self.assertEqual(self.script_log(1)[0]["messages"], 2)

    def test_times_and_sticky(self):
        self.consumer()
        self.script({"status": 500, "body": [{"text": "x"}], "times": 2},
                    {"status": 503, "body": [{"text": "y"}], "times": -1})
        self.assertEqual([self.raw_next()[0] for _ in range(5)], [500, 500, 503, 503, 503])
        self.assertEqual(len(self.script()["steps"]), 0)      # cleared
        self.assertEqual(self.raw_next()[0], 200)

    def test_chunked_close_framing_and_content_length_lie(self):
        self.consumer()
        self.script({"framing": "chunked", "body": [{"text": '{"data":[]}'}]})
        status, hdrs, data = self.raw_next()
        self.assertEqual((status, hdrs.get("transfer-encoding"), data), (200, "chunked", b'{"data":[]}'))
        self.script({"framing": "close", "body": [{"text": '{"data":[]}'}]})
        raw = self.raw_socket_next()
        self.assertNotIn(b"content-length", raw.lower())
        self.assertTrue(raw.endswith(b'\r\n\r\n{"data":[]}'))
        self.script({"content_length": 100, "close_after": 5, "body": [{"text": "0123456789"}]})
        raw = self.raw_socket_next()
        self.assertIn(b"Content-Length: 100\r\n", raw)
        self.assertTrue(raw.endswith(b"\r\n\r\n01234"))
        log = self.script_log(3)
        self.assertEqual((log[-1]["bytes_sent"], log[-1]["finished"]), (5, False))

    def test_raw_and_trickle_and_delay(self):
        self.consumer()
        self.script({"raw": {"text": "NOT HTTP AT ALL\n"}})
        self.assertEqual(self.raw_socket_next(), b"NOT HTTP AT ALL\n")
        self.script({"trickle_ms": 100, "delay_ms": 200, "body": [{"text": '{"data":[]}'}]})
        t0 = time.monotonic()
        status, _, data = self.raw_next()
        self.assertEqual((status, data), (200, b'{"data":[]}'))
        self.assertGreater(time.monotonic() - t0, 1.2)

    def test_client_hangup_is_logged(self):
        self.consumer()
        self.script({"framing": "chunked", "body": [{"text": "x" * 1000, "repeat": 200000}]})
        import socket
        s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        s.sendall(b"POST /v1/http-consumers/c1/next HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer secret\r\nContent-Length: 0\r\n\r\n")
        s.recv(65536)
        s.close()
        log = self.script_log(1)
        self.assertTrue(log[0]["client_closed"])
        self.assertLess(log[0]["bytes_sent"], log[0]["body_length"] // 10)

    def test_ack_tokens_are_logged(self):
        self.consumer()
        self.publish(self.recs("a", "b"))
        toks = [d["ack_token"] for d in self.next(batch_size=2)["data"]]
        self.ack(toks[:1])
        self.nack(toks[1:] + ["bogus"])
        self.assertEqual(self.script()["tokens"],
                         [{"kind": "ack", "tokens": toks[:1]}, {"kind": "nack", "tokens": [toks[1], "bogus"]}])

    def test_bad_steps(self):
        self.consumer()
        for st in ({"status": 42}, {"framing": "smoke"}, {"body": "x"}, {"body": [{"b64": "@@"}]},
                   {"times": 0}, {"nonsense": 1}, {"headers": [["a"]]}, {"close_after": -1}):
            status, _, _ = self.c.request("POST", "/admin/consumers/c1/script", {"steps": [st]})
            self.assertEqual(status, 400, st)


class Performance(FakeSequinCase):

    def test_1000_record_batch_is_fast(self):
        self.consumer(max_ack_pending=100000)
        records = gen_records.generate("stripe:customer", count=6000, seed=5)
        self.publish(records)
        times = []
        for _ in range(6):
            t0 = time.perf_counter()
            status, hdrs, data = self.raw_next(batch_size=1000)
            times.append((time.perf_counter() - t0) * 1000)
            self.assertEqual(status, 200)
        reply = json.loads(data)
        self.assertEqual(len(reply["data"]), 1000)
        self.assertEqual(len({d["ack_token"] for d in reply["data"]}), 1000)
        med = statistics.median(times)
        print(f"\n    1000-record batch ({len(data) / 1e6:.2f} MB): median {med:.1f} ms, "
              f"min {min(times):.1f} ms, max {max(times):.1f} ms (client round trip)",
              file=sys.stderr)
        self.assertLess(med, 250)

    def test_publish_100k(self):
        self.consumer()
        pad = "x" * 400
        body = ("[" + ",".join('{"id":"r%d","updated_idx":%d,"data":{"pad":"%s","n":%d}}'
                               % (i, i, pad, i) for i in range(100000)) + "]").encode()
        t0 = time.perf_counter()
        self.admin("POST", "/admin/consumers/c1/publish", body)
        elapsed = time.perf_counter() - t0
        print(f"\n    publish 100k records ({len(body) / 1e6:.0f} MB): {elapsed:.2f} s",
              file=sys.stderr)
        self.assertLess(elapsed, 30)
        self.assertEqual(self.stats()["pending"], 100000)
        r = self.next(batch_size=1000)
        self.assertEqual(r["data"][0]["record"]["id"], "r0")
        self.assertEqual(r["data"][-1]["record"]["id"], "r999")


class Shutdown(unittest.TestCase):

    def test_sigint_with_a_long_poll_in_progress(self):
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = start_server(tmp, "--consumer", "c1:t")
            outcome = []

            def poll():
                try:
                    one_shot(port, "POST", "/v1/http-consumers/c1/next", {"wait_for": 60000},
                             {"Authorization": "Bearer t"})
                    outcome.append("answered")
                except Exception:
                    outcome.append("cut off")     # expected: the server went away
            t = threading.Thread(target=poll)
            t.start()
            time.sleep(0.2)
            t0 = time.monotonic()
            self.assertEqual(stop_server(proc, signal.SIGINT), 0)
            self.assertLess(time.monotonic() - t0, 5)
            t.join(10)
            self.assertEqual(outcome, ["cut off"])

    def test_startup_publish(self):
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = start_server(tmp, "--consumer", "c1:t", "--publish", FIXTURE)
            try:
                status, _, data = one_shot(
                    port, "GET", "/v1/http-consumers/c1/next?batch_size=100", None,
                    {"Authorization": "Bearer t"})
                self.assertEqual(len(json.loads(data)["data"]), 8)
            finally:
                self.assertEqual(stop_server(proc), 0)


class GenRecords(unittest.TestCase):

    ALL = "stripe:customer,stripe:subscription,salesforce:contact,hubspot:deal"

    def test_deterministic(self):
        a = gen_records.generate(self.ALL, count=50, versions=3, seed=9, shuffle=True)
        b = gen_records.generate(self.ALL, count=50, versions=3, seed=9, shuffle=True)
        c = gen_records.generate(self.ALL, count=50, versions=3, seed=10, shuffle=True)
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)

    def test_versions_deletes_and_order(self):
        recs = gen_records.generate(self.ALL, count=200, versions=4, delete_fraction=0.25,
                                    seed=3)
        by_id = {}
        for r in recs:
            by_id.setdefault(r["id"], []).append(r)
        self.assertEqual(len(by_id), 200)
        self.assertTrue(all(1 <= len(v) <= 4 for v in by_id.values()))
        self.assertTrue(any(len(v) == 4 for v in by_id.values()))
        idx = [r["updated_idx"] for r in recs]
        self.assertEqual(idx, sorted(idx))                       # stream order
        for versions in by_id.values():
            vi = [r["updated_idx"] for r in versions]
            self.assertEqual(len(set(vi)), len(vi))              # strictly increasing per id
            self.assertTrue(all(not r["deleted"] for r in versions[:-1]))
        newest = gen_records.newest_by_id(recs)
        self.assertEqual(sum(r["deleted"] for r in newest.values()), 50)
        for rid, versions in by_id.items():
            self.assertIs(newest[rid], versions[-1])

    def test_shuffle(self):
        plain = gen_records.generate(count=100, versions=3, seed=4)
        shuffled = gen_records.generate(count=100, versions=3, seed=4, shuffle=True)
        key = lambda r: (r["id"], r["updated_idx"])  # noqa: E731
        self.assertNotEqual([key(r) for r in plain], [key(r) for r in shuffled])
        self.assertEqual(sorted(map(key, plain)), sorted(map(key, shuffled)))
        self.assertEqual(gen_records.newest_by_id(plain), gen_records.newest_by_id(shuffled))

    def test_shapes(self):
        recs = gen_records.generate(self.ALL, count=40, versions=2, seed=2, slug_fraction=0.25)
        seen = set()
        for r in recs:
            coll = gen_records.collection_of(r)
            seen.add(coll)
            self.assertEqual(len(r["id"]), 36)
            for k in ("upstream_id", "provider", "deleted", "updated_idx", "upstream_created_at",
                      "upstream_updated_at", "inserted_at", "data"):
                self.assertIn(k, r)
            if "collection_slug" in r:
                self.assertNotIn("collection_id", r)
                self.assertNotIn("sync", r)
                self.assertIn("sync_id", r)
            else:
                self.assertEqual(set(r["sync"]), {"id", "external_id", "metadata"})
            d = r["data"]
            if coll == "stripe:customer":
                self.assertIsInstance(d["created"], int)
                self.assertIsInstance(d["balance"], int)
                self.assertIsInstance(d["metadata"], dict)
                self.assertIsInstance(d["preferred_locales"], list)
            elif coll == "stripe:subscription":
                self.assertIsInstance(d["plan"]["amount"], int)
            elif coll == "salesforce:contact":
                self.assertEqual(len(str(d["AnnualRevenue__c"])), 20)
                self.assertIn("FirstName", d)
            elif coll == "hubspot:deal":
                self.assertIsInstance(d["properties"]["amount"], str)
        self.assertEqual(seen, set(self.ALL.split(",")))
        self.assertEqual(sum("collection_slug" in r for r in
                             gen_records.newest_by_id(recs).values()), 10)

    def test_nul_strings(self):
        recs = gen_records.generate(count=100, seed=1, nul_fraction=0.5)
        n = sum("\u0000" in (r["data"].get("description") or "") for r in recs)
        self.assertGreater(n, 20)
        self.assertNotIn("\u0000", json.dumps(gen_records.generate(count=100, seed=1)))

    def test_cli(self):
        out = subprocess.run([sys.executable, os.path.join(HERE, "gen_records.py"),
                              "--collection", "salesforce:contact", "--count", "5",
                              "--versions", "2", "--seed", "8", "--shuffle"],
                             check=True, capture_output=True).stdout
        recs = json.loads(out)
        self.assertEqual(recs, gen_records.generate("salesforce:contact", count=5, versions=2,
                                                    seed=8, shuffle=True))
        self.assertEqual(json.loads(subprocess.run(
            [sys.executable, os.path.join(HERE, "gen_records.py"), "--count", "0"],
            check=True, capture_output=True).stdout), [])


if __name__ == "__main__":
    unittest.main()
