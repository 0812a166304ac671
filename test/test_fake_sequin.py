#!/usr/bin/env python3
"""
test_fake_sequin.py - self-test of the fake Sequin server (test/fake_sequin.py) and of the record
generator (test/gen_records.py).

The fake stands in for Sequin in every integration test of sequin_sync, so it has to behave as
section 1 of the consumer API notes says: auth and error bodies, next/ack/nack, redelivery after
ack_wait_ms, the max_ack_pending cap, long polls, fault injection, and speed (a 1000-record batch
must cost a few milliseconds, or benchmarks would measure the fake).

Run (test/run_tests.sh runs it as the suite "python: test_fake_sequin"):
    /usr/bin/python3 -m pytest test/test_fake_sequin.py [-k NAME]

One server for the module runs in a subprocess on a free port (127.0.0.1), found through
--port-file; every test starts from an empty one (/admin/reset).  The startup and shutdown tests
start their own.
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

import pytest

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


@pytest.fixture(scope="module")
def server_port():
    """The module's server; it must exit 0 on SIGTERM."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(tmp)
        yield port
        rc = stop_server(proc)
        assert rc == 0, f"fake_sequin exited {rc} on SIGTERM"


class FakeSequinCase:
    """Shared helpers; every test starts from an empty server."""

    @pytest.fixture(autouse=True)
    def _empty_server(self, server_port):
        self.port = server_port
        self.c = Client(server_port)
        self.admin("POST", "/admin/reset")
        yield
        self.c.close()

    # -- helpers ------------------------------------------------------------------------------

    def admin(self, method, path, body=None, expect=200):
        status, _, data = self.c.request(method, path, body)
        assert status == expect, data
        return json.loads(data) if data else None

    def consumer(self, cid="c1", token="secret", **settings):
        doc = {"id": cid, "token": token}
        doc.update(settings)
        status, _, data = self.c.request("POST", "/admin/consumers", doc)
        assert status in (200, 201), data
        return cid

    def publish(self, records, cid="c1"):
        out = self.admin("POST", f"/admin/consumers/{cid}/publish", records)
        assert out == {"published": len(records)}

    def stats(self, cid="c1"):
        return self.admin("GET", f"/admin/consumers/{cid}/stats")

    def faults(self, cfg, cid="c1"):
        return self.admin("POST", f"/admin/consumers/{cid}/faults", cfg)

    def raw_next(self, cid="c1", token="secret", client=None, **params):
        return (client or self.c).request("POST", f"/v1/http-consumers/{cid}/next", params,
                                          {"Authorization": f"Bearer {token}"})

    def next(self, cid="c1", token="secret", client=None, **params):
        status, _, data = self.raw_next(cid, token, client, **params)
        assert status == 200, data
        return json.loads(data)

    def ack(self, tokens, cid="c1", token="secret", kind="ack"):
        status, hdrs, data = self.c.request("POST", f"/v1/http-consumers/{cid}/{kind}",
                                            {"ack_tokens": tokens},
                                            {"Authorization": f"Bearer {token}"})
        assert status == 204, data
        assert data == b""

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
            one_shot(self.port, "POST", f"/admin/consumers/{cid}/publish", records)
        t = threading.Thread(target=run)
        t.start()
        return t


class TestAuthAndErrors(FakeSequinCase):

    def test_health(self):
        assert self.admin("GET", "/admin/health") == {"ok": True}

    def test_missing_and_wrong_token_401(self):
        self.consumer()
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
            status, hdrs, data = self.c.request("POST", "/v1/http-consumers/c1/next", {},
                                                headers)
            assert status == 401, headers
            assert isinstance(json.loads(data)["summary"], str)
            assert int(hdrs["content-length"]) == len(data)
        status, _, data = self.c.request("POST", "/v1/http-consumers/c1/ack",
                                         {"ack_tokens": ["x"]}, {"Authorization": "Bearer no"})
        assert status == 401
        assert "summary" in json.loads(data)
        assert self.stats()["auth_failures"] == 2

    def test_unknown_consumer_404(self):
        self.consumer()
        status, _, data = self.raw_next(cid="nope")
        assert status == 404
        assert "summary" in json.loads(data)

    def test_bad_bodies_400_422(self):
        self.consumer()
        auth = {"Authorization": "Bearer secret"}
        for path, body in (("next", b"{not json"), ("next", b"[1]"), ("ack", b"{bad"),
                           ("ack", b'{"ack_tokens": []}'), ("ack", b"{}"),
                           ("nack", b'{"ack_tokens": "abc"}'), ("ack", b'{"ack_tokens": [1]}')):
            status, _, data = self.c.request("POST", f"/v1/http-consumers/c1/{path}", body, auth)
            assert status == 400, (path, body)
            assert "summary" in json.loads(data)
        status, _, data = self.raw_next(batch_size=0)
        assert status == 422
        assert "batch_size" in json.loads(data)["validation_errors"]

    def test_admin_validation(self):
        for doc in ({"id": "c1"}, {"token": "t"}, {"id": "c1", "token": "t", "bogus": 1},
                    {"id": "c1", "token": "t", "max_deliver": 0}):
            status, _, _ = self.c.request("POST", "/admin/consumers", doc)
            assert status == 400, doc
        self.consumer()
        status, _, data = self.c.request("POST", "/admin/consumers/c1/publish", b'{"a": 1}')
        assert status == 400
        status, _, _ = self.c.request("POST", "/admin/consumers/c1/publish", b"[1, NaN]")
        assert status == 400
        status, _, _ = self.c.request("POST", "/admin/consumers/zz/publish", b"[]")
        assert status == 404

    def test_keep_alive_and_content_length(self):
        self.consumer()
        self.publish(self.recs("a", "b", "c"))
        self.c.request("GET", "/admin/health")
        sock = self.c.conn.sock
        for _ in range(3):
            status, hdrs, data = self.raw_next()
            assert int(hdrs["content-length"]) == len(data)
            self.ack([json.loads(data)["data"][0]["ack_token"]])
        status, hdrs, data = self.raw_next(token="wrong")
        assert int(hdrs["content-length"]) == len(data)
        assert self.c.conn.sock is sock, "the connection was not kept alive"


class TestDelivery(FakeSequinCase):

    def test_next_ack_nack(self):
        self.consumer()
        self.publish(self.recs("a", "b", "c"))
        r = self.next(batch_size=2)
        assert self.ids(r) == ["a", "b"]
        assert r["info"] == {"num_pending": 1, "num_ack_pending": 2}
        ta, tb = (d["ack_token"] for d in r["data"])
        assert ta != tb
        self.ack([ta])
        self.nack([tb])
        # b is available again at once, after the newer c.
        r = self.next(batch_size=10)
        assert self.ids(r) == ["c", "b"]
        assert tb not in [d["ack_token"] for d in r["data"]]
        self.ack([d["ack_token"] for d in r["data"]])
        s = self.stats()
        assert (s["published"], s["delivered"], s["redelivered"], s["acked"],
                s["nacked"], s["pending"], s["ack_pending"], s["outstanding"],
                s["bad_tokens"]) == (3, 4, 1, 3, 1, 0, 0, 0, 0)
        assert self.next(batch_size=5)["data"] == []

    def test_defaults_and_get_with_query(self):
        self.consumer()
        self.publish(self.recs("a", "b", "c"))
        assert self.ids(self.next()) == ["a"]             # batch_size defaults to 1
        status, _, data = self.c.request("GET", "/v1/http-consumers/c1/next?batch_size=5",
                                         None, {"Authorization": "Bearer secret"})
        assert status == 200
        assert self.ids(json.loads(data)) == ["b", "c"]

    def test_unknown_tokens_are_ignored(self):
        self.consumer()
        self.publish(self.recs("a"))
        t = self.next()["data"][0]["ack_token"]
        self.ack(["no-such-token", t, t])
        self.nack(["nope"])
        s = self.stats()
        assert (s["acked"], s["bad_tokens"], s["outstanding"]) == (1, 3, 0)

    def test_redelivery_after_ack_wait(self):
        self.consumer(ack_wait_ms=200)
        self.publish(self.recs("a"))
        t1 = self.next()["data"][0]["ack_token"]
        assert self.next(batch_size=5)["data"] == []      # in flight
        # A long poll wakes up when the message times out, not at the end of wait_for.
        t0 = time.monotonic()
        r = self.next(batch_size=5, wait_for=3000)
        elapsed = time.monotonic() - t0
        assert self.ids(r) == ["a"]
        assert elapsed < 1.5
        t2 = r["data"][0]["ack_token"]
        assert t1 != t2
        self.ack([t1])                                              # expired token: ignored
        s = self.stats()
        assert (s["acked"], s["bad_tokens"], s["outstanding"], s["redelivered"],
                s["expired"]) == (0, 1, 1, 1, 1)
        self.ack([t2])
        assert self.stats()["outstanding"] == 0

    def test_redelivered_message_comes_after_newer_ones(self):
        self.consumer(ack_wait_ms=150)
        self.publish([{"id": "A", "updated_idx": 1}])
        self.next()                                                 # A in flight, never acked
        self.publish([{"id": "A", "updated_idx": 2}, {"id": "B", "updated_idx": 1}])
        time.sleep(0.3)
        r = self.next(batch_size=10)
        assert [(d["record"]["id"], d["record"]["updated_idx"]) for d in r["data"]] == [("A", 2), ("B", 1), ("A", 1)]

    def test_max_ack_pending(self):
        self.consumer(max_ack_pending=3)
        self.publish(self.recs("a", "b", "c", "d", "e"))
        r = self.next(batch_size=10)
        assert self.ids(r) == ["a", "b", "c"]
        assert r["info"] == {"num_pending": 2, "num_ack_pending": 3}
        assert self.next(batch_size=10)["data"] == []
        # A long poll blocked by the cap returns when an ack makes room.
        tokens = [d["ack_token"] for d in r["data"]]
        threading.Timer(0.2, lambda: one_shot(
            self.port, "POST", "/v1/http-consumers/c1/ack", {"ack_tokens": tokens[:1]},
            {"Authorization": "Bearer secret"})).start()
        t0 = time.monotonic()
        r2 = self.next(batch_size=10, wait_for=3000)
        assert (time.monotonic() - t0) < 1.5
        assert self.ids(r2) == ["d"]

    def test_max_deliver(self):
        self.consumer(ack_wait_ms=100, max_deliver=2)
        self.publish(self.recs("a"))
        assert self.ids(self.next()) == ["a"]
        assert self.ids(self.next(wait_for=2000)) == ["a"]    # second delivery
        assert self.next(wait_for=400)["data"] == []          # then dropped
        s = self.stats()
        assert (s["dropped"], s["delivered"], s["outstanding"]) == (1, 2, 0)

    def test_nack_counts_toward_max_deliver(self):
        self.consumer(max_deliver=1)
        self.publish(self.recs("a"))
        self.nack([self.next()["data"][0]["ack_token"]])
        assert self.next()["data"] == []
        assert self.stats()["dropped"] == 1

    def test_info_can_be_omitted(self):
        self.consumer(send_info=False)
        r = self.next()
        assert r == {"data": []}

    def test_update_keeps_messages_purge_drops_them(self):
        self.consumer()
        self.publish(self.recs("a", "b"))
        self.consumer(token="new-token")
        status, _, _ = self.raw_next(token="secret")
        assert status == 401
        assert self.ids(self.next(token="new-token")) == ["a"]
        self.consumer(token="new-token", purge=True)
        assert self.stats()["outstanding"] == 0

    def test_concurrent_workers_share_the_stream(self):
        self.consumer(max_ack_pending=100000)
        self.publish(self.recs(*("r%d" % i for i in range(3000))))
        seen, lock = [], threading.Lock()

        def worker():
            c = Client(self.port)
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
        assert len(seen) == 3000
        assert len(set(seen)) == 3000
        s = self.stats()
        assert (s["acked"], s["outstanding"], s["bad_tokens"]) == (3000, 0, 0)

    def test_fixture_records_round_trip(self):
        with open(FIXTURE, "rb") as f:
            raw = f.read()
        expected = json.loads(raw)
        self.consumer()
        self.admin("POST", "/admin/consumers/c1/publish", raw)
        status, _, data = self.raw_next(batch_size=100)
        assert [d["record"] for d in json.loads(data)["data"]] == expected
        # Numbers travel as published, digit for digit.
        assert b"12345678901234567890" in data
        assert b"98.765" in data

    def test_stats_fields(self):
        self.consumer()
        s = self.stats()
        for k in ("published", "delivered", "redelivered", "acked", "nacked", "pending",
                  "ack_pending", "outstanding", "bad_tokens"):
            assert s[k] == 0, k
        status, _, _ = self.c.request("GET", "/admin/consumers/zz/stats")
        assert status == 404


class TestLongPoll(FakeSequinCase):

    def test_eager_returns_on_publish(self):
        self.consumer()
        t = self.publish_later(self.recs("a"), 0.2)
        t0 = time.monotonic()
        r = self.next(batch_size=100, wait_for=5000)
        elapsed = time.monotonic() - t0
        t.join()
        assert self.ids(r) == ["a"]
        assert elapsed > 0.15
        assert elapsed < 2.0

    def test_not_eager_waits_for_full_batch_or_timeout(self):
        self.consumer(eager=False)
        t = self.publish_later(self.recs("a"), 0.1)
        t0 = time.monotonic()
        r = self.next(batch_size=5, wait_for=600)
        elapsed = time.monotonic() - t0
        t.join()
        assert self.ids(r) == ["a"]
        assert elapsed > 0.55
        # A full batch ends the wait early.
        t = self.publish_later(self.recs("b", "c", "d", "e", "f"), 0.1)
        t0 = time.monotonic()
        r = self.next(batch_size=5, wait_for=5000)
        elapsed = time.monotonic() - t0
        t.join()
        assert len(r["data"]) == 5
        assert elapsed < 2.0

    def test_empty_long_poll_times_out(self):
        self.consumer()
        t0 = time.monotonic()
        assert self.next(batch_size=10, wait_for=300)["data"] == []
        assert (time.monotonic() - t0) > 0.28
        t0 = time.monotonic()
        assert self.next(batch_size=10)["data"] == []
        assert (time.monotonic() - t0) < 0.2


class TestFaults(FakeSequinCase):

    def test_status_500(self):
        self.consumer()
        self.publish(self.recs("a"))
        self.faults({"status_500": 1})
        status, _, data = self.raw_next()
        assert status == 500
        assert "summary" in json.loads(data)
        assert self.stats()["ack_pending"] == 0        # nothing was delivered
        self.faults({})
        assert self.ids(self.next()) == ["a"]

    def test_status_429_retry_after(self):
        self.consumer()
        self.faults({"status_429": 1.0, "retry_after": 2})
        status, hdrs, data = self.raw_next()
        assert status == 429
        assert hdrs["retry-after"] == "2"
        assert "summary" in json.loads(data)

    def test_status_for_next(self):
        self.consumer()
        for code in (401, 403, 502):
            self.faults({"status_for_next": code})
            status, _, data = self.raw_next()
            assert status == code
            assert "summary" in json.loads(data)
        self.faults({})
        assert self.raw_next()[0] == 200

    def test_drop_connection(self):
        self.consumer(ack_wait_ms=200)
        self.publish(self.recs("a"))
        self.faults({"drop_connection": 1})
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            self.raw_next()
        self.faults({})
        # The message went in flight with the lost reply: it comes back after ack_wait_ms.
        assert self.stats()["ack_pending"] == 1
        assert self.ids(self.next(wait_for=2000)) == ["a"]

    def test_truncate(self):
        self.consumer()
        self.publish(self.recs("a", "b"))
        self.faults({"truncate": 1})
        status, hdrs, data = self.raw_next(batch_size=2)
        assert status == 200
        assert int(hdrs["content-length"]) == len(data)
        assert len(data) > 10
        with pytest.raises(ValueError):
            json.loads(data)
        assert self.raw_next()[0] == 200              # the connection still works

    def test_slow(self):
        self.consumer()
        self.faults({"slow_ms": 300})
        t0 = time.monotonic()
        self.next()
        assert (time.monotonic() - t0) > 0.28

    def test_ack_slow(self):
        self.consumer()
        self.publish(self.recs("a"))
        toks = [d["ack_token"] for d in self.next()["data"]]
        self.faults({"ack_slow_ms": 300})
        t0 = time.monotonic()
        self.ack(toks)
        assert (time.monotonic() - t0) > 0.28
        assert self.stats()["acked"] == 1

    def test_duplicate(self):
        self.consumer()
        self.publish(self.recs("a", "b", "c"))
        self.faults({"duplicate": 1, "seed": 1})
        r = self.next(batch_size=10)
        ids = self.ids(r)
        tokens = [d["ack_token"] for d in r["data"]]
        assert len(ids) == 4
        assert sorted(set(ids)) == ["a", "b", "c"]
        assert len(set(tokens)) == 4
        self.ack(tokens)                                        # both copies: no bad token
        s = self.stats()
        assert (s["acked"], s["bad_tokens"], s["outstanding"], s["duplicated"]) == (3, 0, 0, 1)
        # Never more than batch_size: with batch_size 2, one message twice.
        self.publish(self.recs("d", "e", "f"))
        r = self.next(batch_size=2)
        assert self.ids(r) == ["d", "d"]

    def test_ack_drop(self):
        self.consumer()
        self.publish(self.recs("a"))
        self.faults({"ack_drop": 1})
        t = self.next()["data"][0]["ack_token"]
        self.ack([t])
        s = self.stats()
        assert (s["acked"], s["ack_dropped"], s["ack_pending"]) == (0, 1, 1)
        self.faults({})
        self.ack([t])
        assert self.stats()["acked"] == 1

    def test_seed_is_deterministic_and_limit(self):
        self.consumer()

        def run():
            self.faults({"status_500": 0.5, "seed": 42})
            return [self.raw_next()[0] for _ in range(30)]
        a, b = run(), run()
        assert a == b
        assert set(a) == {200, 500}
        self.faults({"status_500": 1, "limit": 2})
        assert [self.raw_next()[0] for _ in range(4)] == [500, 500, 200, 200]
        assert self.stats()["faults_injected"] == 2

    def test_bad_fault_settings(self):
        self.consumer()
        for cfg in ({"status_500": 2}, {"nonsense": 1}, {"status_for_next": "x"}):
            status, _, _ = self.c.request("POST", "/admin/consumers/c1/faults", cfg)
            assert status == 400, cfg


class TestScripted(FakeSequinCase):
    """publish_raw (byte-exact records) and scripted raw /next replies."""

    def raw_socket_next(self, cid="c1", token="secret"):
        """One /next on a fresh socket; returns every byte the server sent until it closed
        (or 5 s passed)."""
        import socket
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
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
        assert out == {"published": 5}
        raw = self.raw_socket_next()
        body = raw.split(b"\r\n\r\n", 1)[1]
        for r in recs:
            assert (b'","record":' + r + b"}") in body
        for bad in ({"records": [{"b64": "!!"}]}, {"records": "x"}, {"records": [{"reply": True}]}):
            status, _, _ = self.c.request("POST", "/admin/consumers/c1/publish_raw", bad)
            assert status == 400, bad

    def test_fixed_body_status_headers_and_then_normal(self):
        self.consumer()
        self.publish(self.recs("a"))
        self.script({"status": 502, "content_type": "text/html", "headers": [["X-Proxy", "p"]],
                     "body": [{"text": "<html>bad gateway</html>"}]},
                    {"status": 302, "headers": [["Location", "ftp://elsewhere/"]],
                     "body": [{"text": ""}]})
        status, hdrs, data = self.raw_next(batch_size=10)
        assert (status, hdrs["content-type"], hdrs["x-proxy"], data) == \
            (502, "text/html", "p", b"<html>bad gateway</html>")
        status, hdrs, data = self.raw_next(batch_size=10)
        assert (status, hdrs["location"], data) == (302, "ftp://elsewhere/", b"")
        assert self.ids(self.next(batch_size=10)) == ["a"]   # script used up
        log = self.script_log(2)
        assert [e["status"] for e in log] == [502, 302]
        assert all(e["finished"] for e in log)

    def test_wrapping_the_real_reply_and_repeats(self):
        self.consumer()
        self.publish(self.recs("a", "b"))
        self.script({"body": [{"b64": base64.b64encode(b"\xef\xbb\xbf").decode()}, {"reply": True},
                              {"text": " ", "repeat": 200000}]})
        status, _, data = self.raw_next(batch_size=10)
        assert status == 200
        assert data.startswith(b"\xef\xbb\xbf{\"data\":[")
        assert (len(data) - len(data.rstrip(b" "))) == 200000
        assert self.ids(json.loads(data[3:])) == ["a", "b"]   # real, ackable tokens
        assert self.stats()["ack_pending"] == 2
        assert self.script_log(1)[0]["messages"] == 2

    def test_times_and_sticky(self):
        self.consumer()
        self.script({"status": 500, "body": [{"text": "x"}], "times": 2},
                    {"status": 503, "body": [{"text": "y"}], "times": -1})
        assert [self.raw_next()[0] for _ in range(5)] == [500, 500, 503, 503, 503]
        assert len(self.script()["steps"]) == 0      # cleared
        assert self.raw_next()[0] == 200

    def test_chunked_close_framing_and_content_length_lie(self):
        self.consumer()
        self.script({"framing": "chunked", "body": [{"text": '{"data":[]}'}]})
        status, hdrs, data = self.raw_next()
        assert (status, hdrs.get("transfer-encoding"), data) == (200, "chunked", b'{"data":[]}')
        self.script({"framing": "close", "body": [{"text": '{"data":[]}'}]})
        raw = self.raw_socket_next()
        assert b"content-length" not in raw.lower()
        assert raw.endswith(b'\r\n\r\n{"data":[]}')
        self.script({"content_length": 100, "close_after": 5, "body": [{"text": "0123456789"}]})
        raw = self.raw_socket_next()
        assert b"Content-Length: 100\r\n" in raw
        assert raw.endswith(b"\r\n\r\n01234")
        log = self.script_log(3)
        assert (log[-1]["bytes_sent"], log[-1]["finished"]) == (5, False)

    def test_raw_and_trickle_and_delay(self):
        self.consumer()
        self.script({"raw": {"text": "NOT HTTP AT ALL\n"}})
        assert self.raw_socket_next() == b"NOT HTTP AT ALL\n"
        self.script({"trickle_ms": 100, "delay_ms": 200, "body": [{"text": '{"data":[]}'}]})
        t0 = time.monotonic()
        status, _, data = self.raw_next()
        assert (status, data) == (200, b'{"data":[]}')
        assert (time.monotonic() - t0) > 1.2

    def test_client_hangup_is_logged(self):
        self.consumer()
        self.script({"framing": "chunked", "body": [{"text": "x" * 1000, "repeat": 200000}]})
        import socket
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(b"POST /v1/http-consumers/c1/next HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer secret\r\nContent-Length: 0\r\n\r\n")
        s.recv(65536)
        s.close()
        log = self.script_log(1)
        assert log[0]["client_closed"]
        assert log[0]["bytes_sent"] < (log[0]["body_length"] // 10)

    def test_ack_tokens_are_logged(self):
        self.consumer()
        self.publish(self.recs("a", "b"))
        toks = [d["ack_token"] for d in self.next(batch_size=2)["data"]]
        self.ack(toks[:1])
        self.nack(toks[1:] + ["bogus"])
        assert self.script()["tokens"] == [{"kind": "ack", "tokens": toks[:1]},
                                           {"kind": "nack", "tokens": [toks[1], "bogus"]}]

    def test_bad_steps(self):
        self.consumer()
        for st in ({"status": 42}, {"framing": "smoke"}, {"body": "x"}, {"body": [{"b64": "@@"}]},
                   {"times": 0}, {"nonsense": 1}, {"headers": [["a"]]}, {"close_after": -1},
                   {"op": "delete"}, {"gzip": 1}, {"template": "yes"}):
            status, _, _ = self.c.request("POST", "/admin/consumers/c1/script", {"steps": [st]})
            assert status == 400, st

    def test_steps_for_ack_and_nack(self):
        self.consumer()
        self.publish(self.recs("a"))
        self.script({"op": "ack", "status": 200, "body": [], "content_type": None},
                    {"op": "any", "status": 500, "body": [{"text": "down"}], "times": 2})
        # /next is not the first step's: served as usual, while the step waits for an /ack
        tok = self.next()["data"][0]["ack_token"]
        status, hdrs, data = self.c.request("POST", "/v1/http-consumers/c1/ack", {"ack_tokens": [tok]},
                                            {"Authorization": "Bearer secret"})
        assert (status, data, "content-type" in hdrs) == (200, b"", False)
        assert self.stats()["acked"] == 0            # a scripted ack acknowledges nothing
        status, _, data = self.c.request("POST", "/v1/http-consumers/c1/nack", {"ack_tokens": [tok]},
                                         {"Authorization": "Bearer secret"})
        assert (status, data) == (500, b"down")
        assert self.raw_next()[0] == 500             # "any" answers a /next too
        self.ack([tok])                              # the script is used up: a real ack
        assert self.stats()["acked"] == 1
        assert [(e["op"], e["status"]) for e in self.script_log(3)] == [("ack", 200), ("nack", 500), ("next", 500)]

    def test_gzip(self):
        import gzip
        self.consumer()
        self.script({"gzip": True, "body": [{"text": '{"data": [], "pad": "'}, {"text": "x", "repeat": 10000},
                                            {"text": '"}'}]})
        status, hdrs, data = self.raw_next()      # http.client does not decode: the raw bytes
        assert (status, hdrs["content-encoding"]) == (200, "gzip")
        assert int(hdrs["content-length"]) == len(data) < 1000
        assert json.loads(gzip.decompress(data))["pad"] == "x" * 10000

    def test_template(self):
        import email.utils
        self.consumer(token="tok-1")
        self.script({"template": True, "status": 429, "headers": [["Retry-After", "{date+120}"],
                                                                  ["Location", "/x?t={token}"]],
                     "body": [{"text": '{"summary": "token {token} {other}"}'}]},
                    {"status": 200, "headers": [["X-Plain", "{token}"]], "body": [{"text": "{token}"}]})
        status, hdrs, data = self.raw_next(token="tok-1")
        assert (status, hdrs["location"], data) == (429, "/x?t=tok-1", b'{"summary": "token tok-1 {other}"}')
        ahead = email.utils.parsedate_to_datetime(hdrs["retry-after"]).timestamp() - time.time()
        assert 115 < ahead <= 121, hdrs["retry-after"]
        status, hdrs, data = self.raw_next(token="tok-1")     # not a template: kept as is
        assert (hdrs["x-plain"], data) == ("{token}", b"{token}")

    def test_delay_ends_when_the_client_hangs_up(self):
        self.consumer()
        self.script({"delay_ms": 30000, "body": [{"text": '{"data":[]}'}], "times": -1})
        import socket
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(b"POST /v1/http-consumers/c1/next HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer secret\r\nContent-Length: 0\r\n\r\n")
        time.sleep(0.3)
        t0 = time.monotonic()
        s.close()
        log = self.script_log(1)
        assert time.monotonic() - t0 < 3
        assert (log[0]["client_closed"], log[0]["bytes_sent"]) == (True, 0)


class TestRecordedRequests(FakeSequinCase):
    """Every /v1 request is recorded (GET /admin/requests and /admin/requests.txt)."""

    def test_last_request_and_counts(self):
        self.consumer()
        self.admin("POST", "/admin/requests/reset")
        self.next(batch_size=3, wait_for=0)
        self.ack(["t1"])
        rec = self.admin("GET", "/admin/requests")
        assert (rec["connections"], rec["requests"]) == (1, 2)    # one keep-alive connection
        last = rec["last"]
        assert (last["method"], last["path"]) == ("POST", "/v1/http-consumers/c1/ack")
        assert last["headers"]["authorization"] == "Bearer secret"
        assert json.loads(last["body"]) == {"ack_tokens": ["t1"]}
        # admin requests are not recorded; unknown consumers are
        one_shot(self.port, "POST", "/v1/http-consumers/nobody/next", {}, {"Authorization": "Bearer x"})
        rec = self.admin("GET", "/admin/requests")
        assert (rec["connections"], rec["requests"], rec["last"]["path"]) == \
            (2, 3, "/v1/http-consumers/nobody/next")

    def test_text_form_and_reset(self):
        self.consumer()
        self.next()
        status, hdrs, data = self.c.request("GET", "/admin/requests.txt")
        assert status == 200 and hdrs["content-type"].startswith("text/plain")
        head, body = data.decode().split("\n\n", 1)
        lines = head.split("\n")
        assert lines[:4] == ["connections: 1", "requests: 1", "method: POST", "path: /v1/http-consumers/c1/next"]
        assert "h-authorization: Bearer secret" in lines
        assert json.loads(body) == {}
        self.admin("POST", "/admin/requests/reset")
        assert self.admin("GET", "/admin/requests") == {"connections": 0, "requests": 0, "last": None}
        assert self.c.request("GET", "/admin/requests.txt")[2] == b"connections: 0\nrequests: 0\n\n"
        # a connection counted before the reset is not counted again
        self.next()
        assert self.admin("GET", "/admin/requests")["connections"] == 0


class TestPerformance(FakeSequinCase):

    def test_1000_record_batch_is_fast(self):
        self.consumer(max_ack_pending=100000)
        records = gen_records.generate("stripe:customer", count=6000, seed=5)
        self.publish(records)
        times = []
        for _ in range(6):
            t0 = time.perf_counter()
            status, hdrs, data = self.raw_next(batch_size=1000)
            times.append((time.perf_counter() - t0) * 1000)
            assert status == 200
        reply = json.loads(data)
        assert len(reply["data"]) == 1000
        assert len({d["ack_token"] for d in reply["data"]}) == 1000
        med = statistics.median(times)
        print(f"\n    1000-record batch ({len(data) / 1e6:.2f} MB): median {med:.1f} ms, "
              f"min {min(times):.1f} ms, max {max(times):.1f} ms (client round trip)",
              file=sys.stderr)
        assert med < 250

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
        assert elapsed < 30
        assert self.stats()["pending"] == 100000
        r = self.next(batch_size=1000)
        assert r["data"][0]["record"]["id"] == "r0"
        assert r["data"][-1]["record"]["id"] == "r999"


class TestShutdown:

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
            assert stop_server(proc, signal.SIGINT) == 0
            assert (time.monotonic() - t0) < 5
            t.join(10)
            assert outcome == ["cut off"]

    def test_startup_setup_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            setup = os.path.join(tmp, "setup.json")
            with open(setup, "w") as f:
                json.dump({"consumers": [
                    {"id": "a", "token": "ta", "comment": "ignored", "max_deliver": 3,
                     "records": [{"id": "r1", "updated_idx": 12345678901234567890}],
                     "faults": {"slow_ms": 1}, "script": [{"status": 503, "body": [], "times": -1}]},
                    {"id": "b", "token": "tb"}]}, f)
            proc, port = start_server(tmp, "--setup", setup)
            try:
                status, _, data = one_shot(port, "GET", "/admin/consumers/a")
                a = json.loads(data)
                assert (a["max_deliver"], a["faults"]["slow_ms"], a["stats"]["published"]) == (3, 1, 1)
                assert one_shot(port, "POST", "/v1/http-consumers/a/next", {}, {"Authorization": "Bearer ta"})[0] == 503
                status, _, data = one_shot(port, "POST", "/v1/http-consumers/b/next", {},
                                           {"Authorization": "Bearer tb"})
                assert (status, json.loads(data)["data"]) == (200, [])
            finally:
                assert stop_server(proc) == 0
            with open(setup, "w") as f:
                json.dump({"consumers": [{"id": "a", "token": "t", "script": [{"op": "put"}]}]}, f)
            p = subprocess.run([sys.executable, FAKE, "--port", "0", "--setup", setup], capture_output=True,
                               text=True, timeout=30)
            assert p.returncode == 2 and "op must be one of" in p.stderr, p.stderr

    def test_startup_publish(self):
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = start_server(tmp, "--consumer", "c1:t", "--publish", FIXTURE)
            try:
                status, _, data = one_shot(
                    port, "GET", "/v1/http-consumers/c1/next?batch_size=100", None,
                    {"Authorization": "Bearer t"})
                assert len(json.loads(data)["data"]) == 8
            finally:
                assert stop_server(proc) == 0


class TestGenRecords:

    ALL = "stripe:customer,stripe:subscription,salesforce:contact,hubspot:deal"

    def test_deterministic(self):
        a = gen_records.generate(self.ALL, count=50, versions=3, seed=9, shuffle=True)
        b = gen_records.generate(self.ALL, count=50, versions=3, seed=9, shuffle=True)
        c = gen_records.generate(self.ALL, count=50, versions=3, seed=10, shuffle=True)
        assert a == b
        assert a != c

    def test_versions_deletes_and_order(self):
        recs = gen_records.generate(self.ALL, count=200, versions=4, delete_fraction=0.25,
                                    seed=3)
        by_id = {}
        for r in recs:
            by_id.setdefault(r["id"], []).append(r)
        assert len(by_id) == 200
        assert all(1 <= len(v) <= 4 for v in by_id.values())
        assert any(len(v) == 4 for v in by_id.values())
        idx = [r["updated_idx"] for r in recs]
        assert idx == sorted(idx)                       # stream order
        for versions in by_id.values():
            vi = [r["updated_idx"] for r in versions]
            assert len(set(vi)) == len(vi)              # strictly increasing per id
            assert all(not r["deleted"] for r in versions[:-1])
        newest = gen_records.newest_by_id(recs)
        assert sum(r["deleted"] for r in newest.values()) == 50
        for rid, versions in by_id.items():
            assert newest[rid] is versions[-1]

    def test_shuffle(self):
        plain = gen_records.generate(count=100, versions=3, seed=4)
        shuffled = gen_records.generate(count=100, versions=3, seed=4, shuffle=True)
        key = lambda r: (r["id"], r["updated_idx"])  # noqa: E731
        assert [key(r) for r in plain] != [key(r) for r in shuffled]
        assert sorted(map(key, plain)) == sorted(map(key, shuffled))
        assert gen_records.newest_by_id(plain) == gen_records.newest_by_id(shuffled)

    def test_shapes(self):
        recs = gen_records.generate(self.ALL, count=40, versions=2, seed=2, slug_fraction=0.25)
        seen = set()
        for r in recs:
            coll = gen_records.collection_of(r)
            seen.add(coll)
            assert len(r["id"]) == 36
            for k in ("upstream_id", "provider", "deleted", "updated_idx", "upstream_created_at",
                      "upstream_updated_at", "inserted_at", "data"):
                assert k in r
            if "collection_slug" in r:
                assert "collection_id" not in r
                assert "sync" not in r
                assert "sync_id" in r
            else:
                assert set(r["sync"]) == {"id", "external_id", "metadata"}
            d = r["data"]
            if coll == "stripe:customer":
                assert isinstance(d["created"], int)
                assert isinstance(d["balance"], int)
                assert isinstance(d["metadata"], dict)
                assert isinstance(d["preferred_locales"], list)
            elif coll == "stripe:subscription":
                assert isinstance(d["plan"]["amount"], int)
            elif coll == "salesforce:contact":
                assert len(str(d["AnnualRevenue__c"])) == 20
                assert "FirstName" in d
            elif coll == "hubspot:deal":
                assert isinstance(d["properties"]["amount"], str)
        assert seen == set(self.ALL.split(","))
        assert sum("collection_slug" in r for r in
                   gen_records.newest_by_id(recs).values()) == 10

    def test_nul_strings(self):
        recs = gen_records.generate(count=100, seed=1, nul_fraction=0.5)
        n = sum("\u0000" in (r["data"].get("description") or "") for r in recs)
        assert n > 20
        assert "\u0000" not in json.dumps(gen_records.generate(count=100, seed=1))

    def test_cli(self):
        out = subprocess.run([sys.executable, os.path.join(HERE, "gen_records.py"),
                              "--collection", "salesforce:contact", "--count", "5",
                              "--versions", "2", "--seed", "8", "--shuffle"],
                             check=True, capture_output=True).stdout
        recs = json.loads(out)
        assert recs == gen_records.generate("salesforce:contact", count=5, versions=2,
                                            seed=8, shuffle=True)
        assert json.loads(subprocess.run(
            [sys.executable, os.path.join(HERE, "gen_records.py"), "--count", "0"],
            check=True, capture_output=True).stdout) == []



# --------------------------------------------------------------------------------------------
# Sequin Stream (../shared/sequin-stream-api.md): the fake's stream consumers and gen_stream
# --------------------------------------------------------------------------------------------

import gen_stream  # noqa: E402
import re as _re  # noqa: E402

STREAM_FIXTURE = os.path.join(HERE, "fixtures", "stream_messages.json")
STREAM_EXPECTED = os.path.join(HERE, "fixtures", "stream_messages_expected.json")
UUID4 = _re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
AUTH = {"Authorization": "Bearer stok"}


def change(i, lsn, idx=0, action="insert", table="orders", **cols):
    """A minimal change data object for row id i (the fake fills in the other metadata)."""
    rec = {"id": i}
    rec.update(cols)
    return {"record": rec, "changes": None if action != "update" else {}, "action": action,
            "metadata": {"table_schema": "public", "table_name": table, "commit_lsn": lsn,
                         "commit_idx": idx, "record_pks": [str(i)]}}


def read(i, **cols):
    rec = {"id": i}
    rec.update(cols)
    return {"record": rec, "changes": None, "action": "read",
            "metadata": {"table_schema": "public", "table_name": "orders", "commit_lsn": None,
                         "commit_idx": None, "record_pks": [str(i)]}}


class StreamCase(FakeSequinCase):

    def stream(self, cid="s1", token="stok", **settings):
        doc = {"id": cid, "token": token, "protocol": "stream"}
        doc.update(settings)
        status, _, data = self.c.request("POST", "/admin/consumers", doc)
        assert status in (200, 201), data
        return json.loads(data)

    def spublish(self, msgs, cid="s1"):
        return self.admin("POST", f"/admin/consumers/{cid}/publish", msgs)

    def raw_receive(self, ref="s1", body=None, headers=None, method="POST", path=None,
                    client=None, query=""):
        hdrs = dict(AUTH)
        hdrs.update(headers or {})
        p = path or f"/api/sequin_streams/{ref}/receive"
        return (client or self.c).request(method, p + query, body, hdrs)

    def receive(self, ref="s1", client=None, **params):
        status, _, data = self.raw_receive(ref, params, client=client)
        assert status == 200, data
        return json.loads(data)["data"]

    def sack(self, ids, ref="s1", kind="ack", expect=200):
        status, _, data = self.c.request("POST", f"/api/sequin_streams/{ref}/{kind}",
                                         {"ack_ids": ids}, AUTH)
        assert status == expect, data
        return json.loads(data)

    @staticmethod
    def rids(items):
        return [it["data"]["record"]["id"] for it in items]


class TestStreamApi(StreamCase):

    def test_receive_shape_and_metadata(self):
        s = self.stream(name="orders_feed")
        assert self.spublish([change(1, 100, 3, total="1.50"), read(2)]) == \
            {"published": 2, "deduplicated": 0}
        items = self.receive("orders_feed", max_batch_size=10)
        assert self.rids(items) == [1, 2]
        for it in items:
            assert set(it) == {"ack_id", "data"}
            assert UUID4.match(it["ack_id"])
            assert set(it["data"]) == {"record", "changes", "action", "metadata"}
            md = it["data"]["metadata"]
            assert tuple(md) == fake_sequin_metadata_keys()
            assert _re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", md["commit_timestamp"])
            assert md["consumer"] == {"id": s["uuid"], "name": "orders_feed", "annotations": None}
            assert set(md["database"]) == {"id", "name", "annotations", "database", "hostname"}
            assert md["enrichment"] is None and md["transaction_annotations"] is None
        c, r = (it["data"] for it in items)
        assert c["metadata"]["commit_lsn"] == 100 and c["metadata"]["commit_idx"] == 3
        assert base64.b64decode(c["metadata"]["idempotency_key"]) == b"100:3"
        assert c["record"]["total"] == "1.50" and c["changes"] is None
        assert r["action"] == "read"
        assert r["metadata"]["commit_lsn"] is None and r["metadata"]["commit_idx"] is None
        # by sink id too, and through the legacy prefix; GET with query parameters
        assert self.receive(s["uuid"]) == []
        status, _, data = self.raw_receive(path="/api/http_pull_consumers/orders_feed/receive",
                                           method="GET", body=None, query="?max_batch_size=5")
        assert status == 200 and json.loads(data) == {"data": []}

    def test_complete_objects_keep_their_bytes(self):
        self.stream()
        g = gen_stream.generate(seed=5, rows=3, txns=5, lsn_start=(1 << 63) + 12345)
        raw = json.dumps(g["messages"][:1], ensure_ascii=False).encode()
        self.admin("POST", "/admin/consumers/s1/publish", raw)
        status, _, data = self.raw_receive(body={})
        assert status == 200
        assert json.dumps(g["messages"][0], ensure_ascii=False).encode() in data
        item = json.loads(data)["data"][0]["data"]
        assert item["metadata"]["commit_lsn"] == g["messages"][0]["metadata"]["commit_lsn"]
        assert item["metadata"]["commit_lsn"] > 1 << 63          # uint64, exact

    def test_auth_401_and_404(self):
        self.stream()
        self.consumer("v1c", "secret")                            # a v1 consumer
        for hdrs in ({"Authorization": ""}, {"Authorization": "bearer stok"},
                     {"Authorization": "Basic stok"}, {"Authorization": "Bearer nope"}):
            status, _, data = self.raw_receive(body={}, headers=hdrs)
            assert status == 401, (hdrs, data)
            assert set(json.loads(data)) == {"summary"}
        # no header at all
        status, _, data = self.c.request("POST", "/api/sequin_streams/s1/receive", {}, {})
        assert status == 401 and "summary" in json.loads(data)
        assert self.admin("GET", "/admin/consumers/s1/stats")["auth_failures"] == 5
        for ref in ("nope", "v1c", "3b241101-e2bb-4255-8caf-4136c566a962"):
            status, _, data = self.raw_receive(ref, {})
            assert status == 404
            assert json.loads(data) == {
                "summary": "Not found: No `consumer` found matching the provided ID or name"}
        # another account's sink: 404, not 401
        self.stream("s2", token="other")
        status, _, _ = self.raw_receive("s2", {})
        assert status == 404
        # and the v1 API does not serve stream consumers
        status, _, _ = self.raw_next("s1", "stok")
        assert status == 404

    def test_content_type_accept_and_bad_json(self):
        self.stream()
        for ctype in ("text/plain", None):
            hdrs = dict(AUTH)
            if ctype:
                hdrs["Content-Type"] = ctype
            status, _, data = self.c.request("POST", "/api/sequin_streams/s1/receive", None, hdrs)
            assert status == 400, data
            assert json.loads(data) == {"summary": "Content-Type: application/json is required"}
        status, _, data = self.c.request("POST", "/api/sequin_streams/s1/ack",
                                         json.dumps({"ack_ids": [str(_uuid4())]}),
                                         dict(AUTH, **{"Content-Type": "text/plain"}))
        assert status == 400
        # POST /receive with JSON content type and no body is fine; GET needs no content type
        status, _, _ = self.c.request("POST", "/api/sequin_streams/s1/receive", None,
                                      dict(AUTH, **{"Content-Type": "application/json"}))
        assert status == 200
        status, _, data = self.raw_receive(body="{not json")
        assert status == 400 and json.loads(data) == {"errors": {"detail": "Bad Request"}}
        status, _, data = self.raw_receive(body={}, headers={"Accept": "text/html"})
        assert status == 406
        status, _, _ = self.raw_receive(body={}, headers={"Accept": "application/json"})
        assert status == 200
        status, _, _ = self.c.request("GET", "/api/sequin_streams/s1/ack", None, AUTH)
        assert status == 404

    def test_batch_size_validation(self):
        self.stream()
        self.spublish([change(i, 100 + i) for i in range(5)])
        bad = "Invalid `max_batch_size`. `max_batch_size` must be an integer between 1 and 1000."
        for params in ({"max_batch_size": 0}, {"max_batch_size": -1}, {"max_batch_size": 1001},
                       {"max_batch_size": "abc"}, {"max_batch_size": 1.5},
                       {"batch_size": 0, "max_batch_size": 5}):
            status, _, data = self.raw_receive(body=params)
            assert status == 400, params
            assert json.loads(data) == {"summary": bad}
        status, _, _ = self.raw_receive(body={"max_batch_size": None})
        assert status == 500                      # Integer.parse(nil) crashes Sequin
        assert len(self.receive()) == 1           # default 1
        assert len(self.receive(max_batch_size="2")) == 2
        assert len(self.receive(batch_size=1, max_batch_size=1000)) == 1   # batch_size wins
        assert len(self.receive(max_batch_size=1000)) == 1

    def test_wait_for_validation(self):
        self.stream()
        bad = ("Invalid `wait_for`. Must be between 500 and 300,000 milliseconds, or use "
               "duration format like '60s', '5m', '1000ms'.")
        for w in (0, 499, 300001, "0", "1h", "5x", "-1", None, 1.5, "6m"):
            status, _, data = self.raw_receive(body={"wait_for": w})
            assert status == 400, w
            assert json.loads(data) == {"summary": bad}
        for w, secs in ((500, 0.5), ("600ms", 0.6), ("1s", 1.0)):
            t0 = time.monotonic()
            assert self.receive(wait_for=w) == []
            assert secs <= time.monotonic() - t0 < secs + 0.5, w
        t0 = time.monotonic()
        assert self.receive() == []               # omitted: no wait
        assert time.monotonic() - t0 < 0.3
        entries = self.admin("GET", "/admin/consumers/s1/requests")["requests"]
        assert [e["wait_for"] for e in entries if e["status"] == 200] == [500, 600, 1000, None]
        assert all(e["kind"] == "receive" for e in entries)

    def test_long_poll_returns_on_publish_and_while_in_flight(self):
        self.stream()
        t = threading.Thread(target=lambda: (time.sleep(0.3), one_shot(
            self.port, "POST", "/admin/consumers/s1/publish", [change(1, 100)])))
        t.start()
        t0 = time.monotonic()
        items = self.receive(wait_for=5000)
        t.join()
        assert self.rids(items) == [1]
        assert 0.25 < time.monotonic() - t0 < 2.0
        # the message is in flight: the store is not empty, so a long poll returns at once, empty
        t0 = time.monotonic()
        assert self.receive(wait_for=5000) == []
        assert time.monotonic() - t0 < 0.5
        st = self.admin("GET", "/admin/consumers/s1/stats")
        assert st["empty_replies"] == 1 and st["in_flight"] == 1 and st["pending"] == 0

    def test_ack_ids_validation_and_silent_unknown_acks(self):
        self.stream()
        bad = ("Invalid ack_ids. Must send a top-level `ack_ids` property that is a non-empty "
               "list of valid UUID strings")
        for body in ({"ack_ids": []}, {"ack_ids": ["MTYyeJ7abUjl1pO"]}, {"ack_ids": [""]},
                     {"ack_ids": [1]}, {"ack_ids": "x"}, {}, {"ack_tokens": [str(_uuid4())]}):
            for kind in ("ack", "nack"):
                status, _, data = self.c.request("POST", f"/api/sequin_streams/s1/{kind}",
                                                 body, AUTH)
                assert status == 400, (kind, body)
                assert json.loads(data) == {"summary": bad}
        self.spublish([change(1, 100)])
        [it] = self.receive()
        assert self.sack([it["ack_id"]]) == {"success": True}
        assert self.sack([it["ack_id"]]) == {"success": True}            # double ack
        assert self.sack([str(_uuid4())]) == {"success": True}           # unknown
        assert self.sack([it["ack_id"]], kind="nack") == {"success": True}
        assert self.sack([it["ack_id"].upper()]) == {"success": True}
        st = self.admin("GET", "/admin/consumers/s1/stats")
        assert st["acked"] == 1 and st["unknown_acks"] == 4 and st["outstanding"] == 0

    def test_group_order_one_in_flight_per_group(self):
        self.stream()
        msgs = [change(1, 100, 0), change(2, 100, 1), change(1, 200, 0), change(1, 200, 4),
                change(3, 300, 0), change(2, 300, 1), read(4)]
        self.spublish(msgs)
        # newest first in publish order for row 5: delivery is still by (lsn, idx)
        self.spublish([change(5, 900, 2), change(5, 900, 1)])
        b1 = self.receive(max_batch_size=100)
        assert self.rids(b1) == [1, 2, 3, 4, 5]
        assert [it["data"]["metadata"]["commit_idx"] for it in b1 if
                it["data"]["record"]["id"] == 5] == [1]
        assert self.receive(max_batch_size=100) == []     # every group is blocked
        self.sack([it["ack_id"] for it in b1 if it["data"]["record"]["id"] in (1, 5)])
        b2 = self.receive(max_batch_size=100)
        assert [(it["data"]["record"]["id"], it["data"]["metadata"]["commit_lsn"],
                 it["data"]["metadata"]["commit_idx"]) for it in b2] == [(1, 200, 0), (5, 900, 2)]
        self.sack([it["ack_id"] for it in b1 + b2])
        b3 = self.receive(max_batch_size=100)
        assert [(it["data"]["record"]["id"], it["data"]["metadata"]["commit_lsn"]) for it in b3] \
            == [(1, 200), (2, 300)]
        # message_grouping off: no per-row blocking
        self.stream("s3", message_grouping=False)
        self.spublish([change(7, 10), change(7, 11)], cid="s3")
        assert len(self.receive("s3", max_batch_size=10)) == 2

    def test_reads_follow_earlier_changes(self):
        self.stream()
        self.spublish([change(1, 100), read(1, v="read"), change(1, 200, v="after")])
        seen = []
        for _ in range(3):
            [it] = self.receive(max_batch_size=10)
            seen.append(it["data"]["action"])
            self.sack([it["ack_id"]])
        assert seen == ["insert", "read", "insert"]

    def test_dedup_by_cursor(self):
        self.stream()
        assert self.spublish([change(1, 100), change(1, 100, v="again")]) == \
            {"published": 1, "deduplicated": 1}
        [it] = self.receive()
        self.sack([it["ack_id"]])
        assert self.spublish([change(1, 100)]) == {"published": 1, "deduplicated": 0}

    def test_visibility_timeout_lazy_expiry_same_ack_id(self):
        self.stream(ack_wait_ms=300)
        self.spublish([change(1, 100), change(1, 200)])
        [first] = self.receive(max_batch_size=10)
        time.sleep(0.4)
        st = self.admin("GET", "/admin/consumers/s1/stats")
        assert st["expired"] == 0 and st["in_flight"] == 1      # lazy: nothing released yet
        [again] = self.receive(max_batch_size=10)
        assert again["ack_id"] == first["ack_id"]                # the message's own id
        assert again["data"]["metadata"]["commit_lsn"] == 100    # still first in its group
        st = self.admin("GET", "/admin/consumers/s1/stats")
        assert st["expired"] == 1 and st["redelivered"] == 1
        # a late ack (from a worker whose visibility expired) still acks the message
        time.sleep(0.4)
        self.sack([first["ack_id"]])
        [nxt] = self.receive()
        assert nxt["data"]["metadata"]["commit_lsn"] == 200

    def test_nack_is_immediate(self):
        self.stream()
        self.spublish([change(1, 100), change(2, 100, 1)])
        items = self.receive(max_batch_size=10)
        self.sack([items[0]["ack_id"]], kind="nack")
        again = self.receive(max_batch_size=10)
        assert [it["ack_id"] for it in again] == [items[0]["ack_id"]]
        st = self.admin("GET", "/admin/consumers/s1/stats")
        assert st["nacked"] == 1 and st["redelivered"] == 1

    def test_restart_new_ack_ids_and_replay(self):
        self.stream()
        self.spublish([change(1, 100), change(2, 100, 1), change(3, 100, 2)])
        items = self.receive(max_batch_size=10)
        self.sack([items[0]["ack_id"]])
        out = self.admin("POST", "/admin/consumers/s1/restart", {"replay_acked": 1})
        assert out == {"replayed": 1, "messages": 3}
        again = self.receive(max_batch_size=10)
        assert self.rids(again) == [1, 2, 3]                     # nothing in flight any more
        assert not {it["ack_id"] for it in again} & {it["ack_id"] for it in items}
        self.sack([it["ack_id"] for it in items])                 # old ids: silent no-ops
        st = self.admin("GET", "/admin/consumers/s1/stats")
        assert st["outstanding"] == 3 and st["unknown_acks"] == 3 and st["restarts"] == 1
        self.admin("POST", "/admin/consumers/s1/restart", {"keep_ack_ids": True})
        kept = self.receive(max_batch_size=10)
        assert [it["ack_id"] for it in kept] == [it["ack_id"] for it in again]
        self.admin("POST", "/admin/consumers/s1/restart", {"bogus": 1}, expect=400)

    def test_paused_and_no_429(self):
        self.stream(paused=True)
        self.spublish([change(1, 100)])
        assert self.receive() == []
        self.stream(paused=False)
        assert len(self.receive()) == 1
        for _ in range(50):
            status, _, _ = self.raw_receive(body={})
            assert status == 200

    def test_messages_listing_and_stats(self):
        self.stream()
        self.spublish([change(1, 100), read(2)])
        self.receive()
        ms = self.admin("GET", "/admin/consumers/s1/messages")["messages"]
        assert [(m["group"], m["cursor"], m["in_flight"], m["deliveries"]) for m in ms] == [
            ("public.orders:1", [100, 0], True, 1), ("public.orders:2", None, False, 0)]
        st = self.admin("GET", "/admin/consumers/s1/stats")
        assert (st["published"], st["in_flight"], st["pending"], st["outstanding"],
                st["acked"]) == (2, 1, 1, 2, 0)

    def test_admin_validation(self):
        self.admin("POST", "/admin/consumers", {"id": "s1", "token": "t", "protocol": "x"},
                   expect=400)
        self.admin("POST", "/admin/consumers", {"id": "s1", "token": "t", "protocol": "stream",
                                                "max_deliver": 3}, expect=400)
        self.admin("POST", "/admin/consumers", {"id": "s1", "token": "t", "protocol": "stream",
                                                "uuid": "not-a-uuid"}, expect=400)
        s = self.stream()
        assert self.stream(token="stok")["uuid"] == s["uuid"]    # an update keeps the sink id
        # changing protocol needs purge
        self.admin("POST", "/admin/consumers", {"id": "s1", "token": "t"}, expect=400)
        self.admin("POST", "/admin/consumers", {"id": "s1", "token": "t", "purge": True},
                   expect=201)
        self.stream(purge=True)
        self.admin("POST", "/admin/consumers/s1/publish", [{"record": {}}], expect=400)
        self.admin("POST", "/admin/consumers/s1/publish",
                   [{"record": {"id": 1}, "action": "insert", "metadata": {}}], expect=400)

    def test_publish_raw_stream(self):
        self.stream()
        out = self.admin("POST", "/admin/consumers/s1/publish_raw", {"messages": [
            {"text": '{"id": 1, "bare": "record_only transform"}', "group": "g", "cursor": [5, 0]},
            {"text": '{"x": 1e400}', "group": "g", "cursor": [6, 0]}]})
        assert out == {"published": 2, "deduplicated": 0}
        status, _, data = self.raw_receive(body={"max_batch_size": 10})
        assert data.startswith(b'{"data":[{"ack_id":"')
        assert b'"data":{"id": 1, "bare": "record_only transform"}}]}' in data  # one of group g

    def test_request_log(self):
        self.stream()
        self.raw_receive(body={"max_batch_size": 5, "wait_for": "1s"})
        self.raw_receive(body={"max_batch_size": 0})
        self.sack([str(_uuid4())])
        log = self.admin("GET", "/admin/consumers/s1/requests")
        reqs = log["requests"]
        assert [(r["kind"], r["status"]) for r in reqs] == [("receive", 200), ("receive", 400),
                                                            ("ack", 200)]
        assert reqs[0]["max_batch_size"] == 5 and reqs[0]["wait_for"] == 1000
        assert reqs[1]["params"] == {"max_batch_size": 0}
        assert log["connections"] == 1
        assert self.admin("GET", "/admin/requests")["last"]["path"] == "/api/sequin_streams/s1/ack"


class TestStreamFaults(StreamCase):

    def test_status_500_and_forced(self):
        self.stream()
        self.faults({"status_500": 1.0, "limit": 1}, cid="s1")
        status, _, data = self.raw_receive(body={})
        assert status == 500 and "SlotMessageStore" in json.loads(data)["summary"]
        assert self.raw_receive(body={})[0] == 200
        self.faults({"status_for_next": 503, "limit": 2}, cid="s1")
        assert [self.raw_receive(body={})[0] for _ in range(3)] == [503, 503, 200]

    def test_drop_truncate_slow(self):
        self.stream()
        self.spublish([change(1, 100)])
        self.faults({"drop_connection": 1.0, "limit": 1}, cid="s1")
        with pytest.raises(Exception):
            self.raw_receive(body={})
        self.faults({"truncate": 1.0, "limit": 1}, cid="s1")
        self.admin("POST", "/admin/consumers/s1/restart", {})
        status, _, data = self.raw_receive(body={})
        assert status == 200
        with pytest.raises(ValueError):
            json.loads(data)
        self.faults({"slow_ms": 300, "ack_slow_ms": 200}, cid="s1")
        t0 = time.monotonic()
        self.raw_receive(body={})
        self.sack([str(_uuid4())])
        assert time.monotonic() - t0 >= 0.5

    def test_duplicate_same_ack_id(self):
        self.stream()
        self.spublish([change(i, 100 + i) for i in range(5)])
        self.faults({"duplicate": 1.0, "seed": 3, "limit": 1}, cid="s1")
        items = self.receive(max_batch_size=5)
        assert len(items) == 5
        ids = [it["ack_id"] for it in items]
        assert len(set(ids)) == 4
        st = self.admin("GET", "/admin/consumers/s1/stats")
        assert st["duplicated"] == 1 and st["in_flight"] == 4

    def test_replay_of_acked(self):
        self.stream()
        self.spublish([change(1, 100), change(2, 200)])
        [a] = self.receive()
        self.sack([a["ack_id"]])
        self.faults({"replay": 1.0, "limit": 1}, cid="s1")
        items = self.receive(max_batch_size=10)
        assert sorted(self.rids(items)) == [1, 2]
        again = [it for it in items if it["data"]["record"]["id"] == 1][0]
        assert again["ack_id"] != a["ack_id"] and again["data"] == a["data"]
        assert self.admin("GET", "/admin/consumers/s1/stats")["replayed"] == 1

    def test_ack_drop_and_bad_settings(self):
        self.stream()
        self.spublish([change(1, 100)])
        [it] = self.receive()
        self.faults({"ack_drop": 1.0, "limit": 1}, cid="s1")
        assert self.sack([it["ack_id"]]) == {"success": True}
        assert self.admin("GET", "/admin/consumers/s1/stats")["outstanding"] == 1
        self.admin("POST", "/admin/consumers/s1/faults", {"replay": 2}, expect=400)
        self.admin("POST", "/admin/consumers/c9/faults", {}, expect=404)
        self.consumer("v1")
        self.admin("POST", "/admin/consumers/v1/faults", {"replay": 0.5}, expect=400)

    def test_script_receive(self):
        self.stream()
        self.spublish([change(1, 100)])
        self.admin("POST", "/admin/consumers/s1/script", {"steps": [
            {"op": "receive", "status": 502, "body": [{"text": "<html>bad gateway</html>"}],
             "content_type": "text/html"},
            {"op": "receive", "body": [{"text": "["}, {"reply": True}, {"text": "]"}]}]})
        assert self.raw_receive(body={})[0] == 502
        status, _, data = self.raw_receive(body={})
        assert status == 200 and data.startswith(b'[{"data":[{"ack_id"')
        log = self.admin("GET", "/admin/consumers/s1/script")["log"]
        assert [e["messages"] for e in log] == [0, 1]

    def test_abandoned_long_poll(self):
        self.stream()
        s = __import__("socket").create_connection(("127.0.0.1", self.port))
        body = b'{"wait_for": 3000}'
        s.sendall(b"POST /api/sequin_streams/s1/receive HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer stok\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.3)
        s.close()
        time.sleep(0.3)
        self.spublish([change(1, 100)])
        assert len(self.receive()) == 1
        assert self.admin("GET", "/admin/consumers/s1/stats")["abandoned"] == 1


class TestStreamConcurrency(StreamCase):

    def test_workers_never_share_a_group_and_see_every_change(self):
        self.stream(ack_wait_ms=2000)
        g = gen_stream.generate(seed=11, rows=30, txns=120)
        self.spublish(g["messages"])
        seen, lock, in_hand = [], threading.Lock(), {}
        errors = []

        def worker():
            cl = Client(self.port)
            try:
                idle = 0
                while idle < 5:
                    items = self.receive(client=cl, max_batch_size=7)
                    if not items:
                        idle += 1
                        time.sleep(0.05)
                        continue
                    idle = 0
                    groups = [gen_stream.group_of(it["data"]) for it in items]
                    with lock:
                        if len(set(groups)) != len(groups) or set(groups) & set(in_hand):
                            errors.append(groups)
                        for gr in groups:
                            in_hand[gr] = True
                        seen.extend(it["data"] for it in items)
                    time.sleep(0.01)
                    with lock:
                        for gr in groups:
                            in_hand.pop(gr, None)
                    cl.request("POST", "/api/sequin_streams/s1/ack",
                               {"ack_ids": [it["ack_id"] for it in items]}, AUTH)
            finally:
                cl.close()

        ts = [threading.Thread(target=worker) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errors
        assert len(seen) == len(g["messages"])
        rows, versions, parked = gen_stream.replay(seen, tuple(g["key"]))
        exp = {tuple(str(r[c]) for c in g["key"]): r for r in g["expected"]}
        assert {k: dict(v, sequin_version=None if versions[k] is None else str(versions[k]))
                for k, v in rows.items()} == exp


def fake_sequin_metadata_keys():
    sys.path.insert(0, HERE)
    import fake_sequin
    return fake_sequin.METADATA_KEYS


def _uuid4():
    import uuid
    return uuid.uuid4()


class TestGenStream:

    CONFIGS = [dict(), dict(composite=True), dict(full=True), dict(interleave=True),
               dict(composite=True, interleave=True, full=True), dict(backfill=False),
               dict(toast_on_key_change=True)]

    def test_deterministic(self):
        a = gen_stream.generate(seed=4, rows=10, txns=40, composite=True)
        assert a == gen_stream.generate(seed=4, rows=10, txns=40, composite=True)
        assert a["messages"] != gen_stream.generate(seed=5, rows=10, txns=40,
                                                    composite=True)["messages"]

    @pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(c) or "default")
    def test_invariants(self, cfg):
        for seed in range(8):
            g = gen_stream.generate(seed=seed, rows=12, txns=60, **cfg)
            key = tuple(g["key"])
            msgs, trace = g["messages"], g["trace"]
            # final state: replaying the messages rebuilds the source
            rows, versions, _ = gen_stream.replay(msgs, key)
            src = {tuple(str(r[c]) for c in key): r for r in g["source"]}
            assert rows == src
            assert [dict(r, sequin_version=None) for r in g["expected"]] == \
                [dict(r, sequin_version=None) for r in g["source"]]
            # the history (trace effects in cursor order) also ends in the source
            hist = sorted(range(len(msgs)), key=lambda i: (trace[i]["cursor"][0],
                          -1 if trace[i]["cursor"][1] is None else 0, trace[i]["cursor"][1] or 0))
            state = {}
            for i in hist:
                for k, row in trace[i]["effects"].items():
                    if row is None:
                        state.pop(k, None)
                    else:
                        state[k] = row
            assert {tuple(k.split(":")): v for k, v in state.items()} == src
            # per group: cursors strictly increase in delivery order; a read is never older
            # than a change delivered before it (it carries the row's state at its watermark)
            last = {}
            for m, t in zip(msgs, trace):
                gr = gen_stream.group_of(m)
                cur = (t["cursor"][0], (1 << 40) if t["cursor"][1] is None else t["cursor"][1])
                assert gr not in last or last[gr] < cur, gr
                last[gr] = cur
                if m["action"] == "read":
                    assert m["metadata"]["commit_lsn"] is None
                    assert m["metadata"]["commit_idx"] is None
                    assert m["changes"] is None
                    k = ":".join(m["metadata"]["record_pks"])
                    before = [j for j in hist if trace[j]["cursor"][0] <= t["cursor"][0]
                              and trace[j]["cursor"][1] is not None and k in trace[j]["effects"]]
                    if before:
                        assert trace[before[-1]]["effects"][k] == m["record"]

    def test_message_shapes(self):
        seen = set()
        for cfg in self.CONFIGS[:3]:
            g = gen_stream.generate(seed=2, rows=15, txns=80, **cfg)
            key = g["key"]
            prev = None
            for m in g["messages"]:
                md = m["metadata"]
                assert tuple(md) == fake_sequin_metadata_keys()
                assert md["record_pks"] == [str(m["record"][c]) for c in key]
                assert all(isinstance(p, str) for p in md["record_pks"])
                a = m["action"]
                seen.add((a, cfg.get("full", False)))
                if a != "read":
                    assert base64.b64decode(md["idempotency_key"]) == \
                        b"%d:%d" % (md["commit_lsn"], md["commit_idx"])
                    assert md["commit_lsn"] >= gen_stream.LSN_START
                    if prev:
                        assert (md["commit_lsn"], md["commit_idx"]) > prev
                    prev = (md["commit_lsn"], md["commit_idx"])
                rec = m["record"]
                if a == "delete" and not cfg.get("full"):
                    assert all(v is None for c, v in rec.items() if c not in key)
                if a in ("insert", "read", "update") and rec["total"] is not None:
                    assert isinstance(rec["total"], str)
                assert isinstance(rec["tags"], list) or a == "delete"
                if a == "update" and not cfg.get("full"):
                    keych = any(c in (m["changes"] or {}) for c in key)
                    assert keych or m["changes"] == {}
                if cfg.get("full"):
                    assert rec.get("note") != "unchanged_toast"
                if a in ("insert", "delete", "read"):
                    assert m["changes"] is None
        g = gen_stream.generate(seed=2, rows=15, txns=80)
        notes = [m["record"]["note"] for m in g["messages"] if m["action"] == "update"]
        assert "unchanged_toast" in notes and any(len(n) > 2000 for n in notes)
        assert any(m["action"] == "update" and "id" in m["changes"] for m in g["messages"])
        idx = [m["metadata"]["commit_idx"] for m in g["messages"] if m["action"] != "read"]
        assert max(idx) > 3                                   # gaps inside transactions

    def test_lsn_beyond_2_53_and_cli(self, tmp_path):
        g = gen_stream.generate(seed=1, rows=3, txns=5, lsn_start=(1 << 60) + 1)
        assert all(m["metadata"]["commit_lsn"] > 1 << 60 for m in g["messages"]
                   if m["action"] != "read")
        out = subprocess.run([sys.executable, os.path.join(HERE, "gen_stream.py"), "--seed", "3",
                              "--rows", "4", "--txns", "9", "--composite"],
                             check=True, capture_output=True).stdout
        doc = json.loads(out)
        g = gen_stream.generate(seed=3, rows=4, txns=9, composite=True)
        assert doc["messages"] == g["messages"] and doc["expected"] == g["expected"]
        assert "sequin_version numeric" in doc["ddl"]
        subprocess.run([sys.executable, os.path.join(HERE, "gen_stream.py"), "--seed", "3",
                        "--jsonl", str(tmp_path / "m.jsonl"), "--expected",
                        str(tmp_path / "e.json")], check=True)
        lines = (tmp_path / "m.jsonl").read_text().splitlines()
        assert [json.loads(x) for x in lines] == gen_stream.generate(seed=3)["messages"]
        with pytest.raises(ValueError):
            gen_stream.generate(toast_on_key_change=True, interleave=True)

    def test_fixture(self):
        with open(STREAM_FIXTURE) as f:
            msgs = json.load(f)
        with open(STREAM_EXPECTED) as f:
            expected = json.load(f)
        assert len(msgs) == 20
        assert {m["action"] for m in msgs} == {"insert", "update", "delete", "read"}
        rows, versions, parked = gen_stream.replay(msgs, ("id",))
        assert not parked
        got = [dict(rows[k], sequin_version=None if versions[k] is None else str(versions[k]))
               for k in sorted(rows, key=lambda k: int(k[0]))]
        assert got == expected
        assert [r["id"] for r in expected] == [1, 2, 5, 40]
        assert any(m["record"].get("note") == "unchanged_toast" for m in msgs)
        assert any(m["action"] == "update" and m["changes"].get("id") == 4 for m in msgs)


class TestPgclusterWrapper:

    def test_stream_helpers(self, tmp_path):
        import pgcluster
        f = pgcluster.FakeSequin(FAKE, str(tmp_path))
        f.start()
        try:
            d = f.stream_consumer("feed", "tok", ack_wait_ms=1000)
            assert UUID4.match(d["uuid"])
            assert f.stream_endpoint("feed").endswith("/api/sequin_streams/feed")
            assert f.stream_endpoint("feed", legacy=True).endswith("/api/http_pull_consumers/feed")
            assert f.publish_stream("feed", [change(1, 100), read(2)]) == \
                {"published": 2, "deduplicated": 0}
            assert f.stream_stats("feed")["outstanding"] == 2
            assert f.restart_stream("feed") == {"replayed": 0, "messages": 2}
        finally:
            f.stop()
