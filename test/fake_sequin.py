#!/usr/bin/env python3
"""
fake_sequin.py - a test double of Sequin's Generation-1 record consumer API and of Sequin Stream.

sequin_sync pulls records from `<endpoint>/next`, applies them, then calls `<endpoint>/ack` (or
`/nack`), where the endpoint is `<base>/v1/http-consumers/<consumer-id>`.  This server plays
Sequin's side of that conversation, faithfully to section 1 of the consumer API notes
(summarised below), so that the extension can be tested and benchmarked without the network:

  * POST (or GET with query parameters) /v1/http-consumers/<cid>/next
        {"batch_size": N, "wait_for": ms}  (defaults 1 and 0)
        -> 200 {"data": [{"ack_token": "...", "record": {...}}, ...],
                "info": {"num_pending": P, "num_ack_pending": A}}
  * POST /v1/http-consumers/<cid>/ack and /nack   {"ack_tokens": [...]} -> 204
  * at-least-once delivery: a message not acknowledged within ack_wait_ms is delivered again with
    a new token (the old one stops working); max_ack_pending caps what is in flight; max_deliver
    drops a message after that many deliveries (-1 = never).
  * `Authorization: Bearer <token>` per consumer; errors are {"summary": "..."}.
  * a long poll whose client hangs up ends there, without taking messages (stat "abandoned").

An unauthenticated admin API (JSON in and out) drives it from tests:

  POST   /admin/consumers                 {"id", "token", "ack_wait_ms": 30000,
                                           "max_ack_pending": 1000, "max_deliver": -1,
                                           "eager": true, "send_info": true, "purge": false}
                                          creates a consumer (201) or changes its settings (200)
  GET    /admin/consumers                 list;  GET/DELETE /admin/consumers/<cid>
  POST   /admin/consumers/<cid>/publish   a JSON array of records, one message each
                                          -> {"published": n}
  GET    /admin/consumers/<cid>/stats     counters: published, delivered, redelivered, acked,
                                          nacked, pending, ack_pending, outstanding, bad_tokens..;
                                          first_delivery_at: time.monotonic() (CLOCK_MONOTONIC,
                                          so comparable across processes) of the first message
                                          delivered, null before
  POST   /admin/consumers/<cid>/faults    fault injection on /next (and ack_drop on /ack), see
                                          FAULT_DEFAULTS; {} clears them.  GET reads them.
  POST   /admin/consumers/<cid>/publish_raw  {"records": [{"text": "..."} | {"b64": "..."}, ...]}
                                          stores each record byte for byte, unvalidated (invalid
                                          UTF-8, BOMs, duplicate keys, NaN, deep nesting ...)
  POST   /admin/consumers/<cid>/script    {"steps": [step, ...], "append": false}: scripted raw
                                          replies for the next /next (or /ack, /nack) requests
                                          (see SCRIPT_STEP below); {"steps": []} clears.  GET: the
                                          steps left and a log of the steps served (bytes sent,
                                          client hang-ups)
  GET    /admin/requests                  every /v1 request is recorded: {"connections": the
                                          connections that carried one, "requests": how many,
                                          "last": {"method", "path", "headers" (names lower-case),
                                          "body"} or null}
  GET    /admin/requests.txt              the same as text, for a client without a JSON parser
                                          (the C++ HTTP client test): "connections: N",
                                          "requests: M", "method: ...", "path: ...", one
                                          "h-<name>: <value>" line per header, an empty line, then
                                          the last request's body verbatim
  POST   /admin/requests/reset            zero those counters (a connection already counted is
                                          not counted again) and forget the last request
  GET    /admin/consumers/<cid>/requests  one consumer's request log: {"connections": n (TCP
                                          connections that reached this consumer), "requests":
                                          [{"kind": "next", "t", "conn", "batch_size", "wait_for"},
                                          ...]} (see RequestLog)
  POST   /admin/reset                     forget every consumer and the recorded requests
  GET    /admin/health                    200 {"ok": true}

Sequin Stream ("Generation 3", ../shared/sequin-stream-api.md; see StreamConsumer): a consumer
created with "protocol": "stream" is served on

  GET|POST /api/sequin_streams/<uuid-or-name>/receive   (and /api/http_pull_consumers/...)
        {"max_batch_size": 1..1000 (default 1; deprecated "batch_size" wins),
         "wait_for": 500..300000 ms or "60s"/"5m"/"1000ms" (omitted: no wait)}
        -> 200 {"data": [{"ack_id": UUIDv4, "data": {record, changes, action, metadata}}]}
  POST .../ack and .../nack   {"ack_ids": [UUID, ...]} -> 200 {"success": true}, unknown or
        double ids included
  with Sequin's checks and bodies, in its order: malformed JSON 400 {"errors": ...}, a non-JSON
  Accept 406, 401 {"summary"} (exactly one "Bearer <token>" header; a token no stream consumer
  has), POST without application/json 400, 404 {"summary": "Not found: ..."} for a name/uuid
  the token's consumers lack, then the 400s for max_batch_size, wait_for, ack_ids.  Never 429
  unless injected.  Admin API for stream consumers:

  POST   /admin/consumers                 {"id", "token", "protocol": "stream", "name": id,
                                           "uuid": random v4, "ack_wait_ms": 30000,
                                           "paused": false, "message_grouping": true,
                                           "consumer_annotations": null, "database": {...},
                                           "backfill_id", "purge": false}; an update keeps the
                                           settings it does not name (uuid included); changing
                                           a consumer's protocol needs "purge": true
  POST   /admin/consumers/<cid>/publish   a JSON array of data objects; missing metadata keys
                                          are filled in (consumer, database, idempotency_key,
                                          commit_timestamp, null otherwise), complete ones are
                                          stored byte for byte; a change needs integer
                                          commit_lsn/commit_idx, a read none.  A change already
                                          in the store (same cursor) is dropped.
                                          -> {"published": n, "deduplicated": k}
  POST   /admin/consumers/<cid>/publish_raw  {"messages": [{"text"|"b64", "group": str|null,
                                          "cursor": [lsn, idx]|null}]}: anything, byte for byte
  GET    /admin/consumers/<cid>/stats     published, delivered, redelivered, acked, nacked,
                                          expired, unknown_acks, replayed, empty_replies,
                                          in_flight, pending, outstanding, groups, ...,
                                          first_delivery_at (as for v1)
  GET    /admin/consumers/<cid>/messages  the store in cursor order: ack_id, group, cursor,
                                          in_flight, deliveries, data
  POST   /admin/consumers/<cid>/restart   {"replay_acked": 0, "keep_ack_ids": false}: a Sequin
                                          restart: nothing in flight, new ack_ids (old ones are
                                          silent no-ops), the last n acked messages come back
  POST   /admin/consumers/<cid>/faults    v1's faults (status_for_next and slow_ms act on
                                          /receive; "duplicate" = one message twice under its one
                                          ack_id) plus "replay": per receive, the probability
                                          that a recently acked message returns, new ack_id
  .../script, GET /admin/consumers/<cid>/requests: as v1 (op "receive" = "next"); request log
                                          entries are {"kind": "receive"|"ack"|"nack", "t",
                                          "conn", "method", "prefix", "params", "status",
                                          "max_batch_size", "wait_for", "messages"|"ack_ids"}

Standard library only.  Run:

    python3 test/fake_sequin.py --port 0 --port-file /tmp/fake.port [--quiet]
        [--consumer c1:secret ...] [--publish test/fixtures/sample_records.json]
        [--setup test/fixtures/http_client_consumers.json]

--setup creates the consumers a JSON file describes, each with its settings, script, faults and
records: {"consumers": [{"id": ..., "token": ..., "script": [step, ...], "faults": {...},
"records": [...]}]}, through the same checks as the admin API.

The first line on stdout is the port it listens on (127.0.0.1 only); --port-file gets the same
number, written atomically, so a script can wait for the file and read it.  SIGTERM or SIGINT
shut it down cleanly (exit status 0).

Performance notes: each record is kept as the exact bytes it was published with (sliced out of
the publish body, never re-serialised, so big integers and decimals keep every digit), and a
/next reply is one b"".join over the batch.  Every operation is O(batch) or O(tokens): queues are
deques, in-flight messages are a dict keyed by token, and visibility timeouts are a heap with one
entry per delivered batch.  Nothing ever scans the queue.
"""

import argparse
import base64
import binascii
import email.utils
import gzip
import heapq
import itertools
import json
import os
import random
import re
import secrets
import select
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# --------------------------------------------------------------------------------------------
# Consumers and messages
# --------------------------------------------------------------------------------------------

AVAILABLE, IN_FLIGHT, ACKED, DROPPED = range(4)

DEFAULTS = {
    "ack_wait_ms": 30000,
    "max_ack_pending": 1000,
    "max_deliver": -1,
    # Long-poll behaviour.  The doc says a /next with wait_for > 0 is held "until batch_size
    # messages are available or the time is up".  With eager=true (the default) the request is
    # answered as soon as at least ONE message is available instead: real Sequin answers early in
    # practice, and latency tests (publish one record, see it in Postgres quickly) need it; a
    # worker asking for batch_size=1000 would otherwise sit out the whole wait_for on a quiet
    # stream.  eager=false gives the literal documented behaviour, for throughput/batching tests.
    "eager": True,
    # The doc marks "info" as optional (older copies omit it); send_info=false leaves it out so
    # the client's handling of its absence can be tested.
    "send_info": True,
}

FAULT_DEFAULTS = {
    "status_500": 0.0,        # probability of a 500 on /next
    "status_429": 0.0,        # probability of a 429 on /next
    "retry_after": None,      # seconds, sent as Retry-After with the 429 when set
    "drop_connection": 0.0,   # probability of closing the socket without a reply
    "truncate": 0.0,          # probability of a 200 whose JSON body is cut in half
    "slow_ms": 0,             # delay before every /next reply
    "ack_slow_ms": 0,         # delay before every /ack and /nack is processed and answered
    "duplicate": 0.0,         # probability that a batch carries one message twice (two tokens)
    "ack_drop": 0.0,          # probability that an /ack answers 204 but is ignored
    "status_for_next": None,  # force this status (e.g. 401, 403) on every /next
    "seed": None,             # seed for the fault dice (deterministic fault sequences)
    "limit": None,            # stop injecting after this many faults (slow_ms excepted)
}
PROBABILITY_FAULTS = ("status_500", "status_429", "drop_connection", "truncate", "duplicate",
                      "ack_drop")

STAT_KEYS = ("published", "delivered", "redelivered", "duplicated", "acked", "nacked",
             "expired", "dropped", "bad_tokens", "ack_dropped", "next_requests",
             "ack_requests", "nack_requests", "auth_failures", "missing_content_type",
             "faults_injected", "abandoned")

# Ack tokens: a random per-process prefix plus a process-wide counter.  Unique across consumers
# and, thanks to the prefix, across restarts of the fake (a token from an earlier run is
# unknown to a new one, as it would be to Sequin).  Only [A-Za-z0-9] characters, so a token never
# needs JSON escaping when the reply is assembled from bytes.
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN_PREFIX = "MTYy" + "".join(secrets.choice(_LETTERS) for _ in range(6))
_token_seq = itertools.count(1)


class Message:
    """One published record and its delivery state."""
    __slots__ = ("body", "state", "deliveries", "tokens")

    def __init__(self, body):
        self.body = body          # the record's JSON, as bytes, exactly as published
        self.state = AVAILABLE
        self.deliveries = 0
        self.tokens = ()          # live ack tokens of the current delivery (2 with "duplicate")


class ApiError(Exception):
    """An error reply: status, {"summary": ...} plus optional extra members and headers."""

    def __init__(self, status, summary, extra=None, headers=(), doc=None):
        super().__init__(summary)
        self.status = status
        self.summary = summary
        self.extra = extra or {}
        self.headers = headers
        self.doc = doc            # a whole body other than {"summary"} (Phoenix's "errors" form)

    def body(self):
        if self.doc is not None:
            return json.dumps(self.doc).encode()
        doc = {"summary": self.summary}
        doc.update(self.extra)
        return json.dumps(doc).encode()


class Faults:
    """Fault-injection settings of one consumer and the dice that decide them."""

    DEFAULTS = FAULT_DEFAULTS
    PROBABILITIES = PROBABILITY_FAULTS

    def __init__(self, cfg=None):
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(self.DEFAULTS)
        if unknown:
            raise ApiError(400, "unknown fault setting(s): " + ", ".join(sorted(unknown)))
        self.cfg = dict(self.DEFAULTS)
        self.cfg.update(cfg)
        for k in self.PROBABILITIES:
            v = self.cfg[k]
            if not _is_number(v) or not 0.0 <= v <= 1.0:
                raise ApiError(400, f"{k} must be a probability between 0 and 1")
        for k in ("slow_ms", "ack_slow_ms", "retry_after"):
            v = self.cfg[k]
            if v is not None and (not _is_number(v) or v < 0):
                raise ApiError(400, f"{k} must be a non-negative number")
        for k in ("status_for_next", "seed", "limit"):
            v = self.cfg[k]
            if v is not None and not _is_int(v):
                raise ApiError(400, f"{k} must be an integer")
        s = self.cfg["status_for_next"]
        if s is not None and not 100 <= s <= 599:
            raise ApiError(400, "status_for_next must be an HTTP status code")
        self.rng = random.Random(self.cfg["seed"])
        self.injected = 0
        self.by_kind = {}

    def roll(self, kind):
        """True when fault `kind` fires on this request.  Called with the consumer lock held."""
        p = self.cfg[kind]
        if not p:
            return False
        limit = self.cfg["limit"]
        if limit is not None and self.injected >= limit:
            return False
        if self.rng.random() >= p:
            return False
        self.count(kind)
        return True

    def forced_status(self):
        s = self.cfg["status_for_next"]
        limit = self.cfg["limit"]
        if s is None or (limit is not None and self.injected >= limit):
            return None
        self.count("status_for_next")
        return s

    def count(self, kind):
        self.injected += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


class Consumer:
    """
    One consumer: a queue of available messages plus the messages in flight.

    Threading: every field is guarded by self.cond's lock.  Long-polling /next requests wait on
    self.cond; anything that can make messages deliverable (publish, nack, ack - which frees room
    under max_ack_pending -, a settings change, reset) calls notify_all().  Visibility timeouts
    need no timer thread: expiry is evaluated lazily (_expire) at the start of every operation,
    and a waiting /next bounds its wait by the earliest deadline in the heap, so it wakes up
    exactly when a timed-out message becomes available again.
    """

    protocol = "v1"
    fault_class = Faults
    REPLY_MARK = b'{"ack_token":"'   # one per message in a reply body (script logs count them)

    def __init__(self, cid, settings):
        self.id = cid
        self.cond = threading.Condition(threading.Lock())
        self.available = deque()     # Messages ready for delivery, in delivery order
        self.in_flight = {}          # ack token (str) -> Message
        self.expiry = []             # heap of (deadline, seq, [tokens]): one entry per batch
        self.expiry_seq = itertools.count()
        self.n_in_flight = 0         # Messages (not tokens) delivered and not yet acked
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self.first_delivery_at = None   # time.monotonic() of the first message delivered
        self.faults = self.fault_class()
        self.closed = False
        self.script = deque()        # scripted /next replies (dicts, see check_step)
        self.script_log = deque(maxlen=200)   # what each served step did
        self.token_log = deque(maxlen=200)    # ("ack"|"nack", [tokens]) of recent requests
        self.request_log = RequestLog()
        self.configure(settings)

    # -- settings ---------------------------------------------------------------------------

    def configure(self, s):
        """Apply settings (token, ack_wait_ms, ...).  Messages and stats are kept."""
        self.token = s["token"]
        self.ack_wait = s["ack_wait_ms"] / 1000.0
        self.max_ack_pending = s["max_ack_pending"]
        self.max_deliver = s["max_deliver"]
        self.eager = s["eager"]
        self.send_info = s["send_info"]
        self.settings = dict(s)

    def describe(self):
        d = {"id": self.id}
        d.update(self.settings)
        return d

    # -- internal helpers (lock held) ---------------------------------------------------------

    def _expire(self, now):
        """Return timed-out in-flight messages to the queue (or drop them, see max_deliver).

        Heap entries are never removed when a message is acked or nacked; they are skipped here
        when their tokens are no longer in flight.  A redelivered message goes to the BACK of the
        queue, so it can arrive after newer versions of the same record - the race the client's
        updated_idx guard exists for."""
        heap = self.expiry
        while heap and heap[0][0] <= now:
            tokens = heapq.heappop(heap)[2]
            for tok in tokens:
                m = self.in_flight.pop(tok, None)
                if m is not None and m.state == IN_FLIGHT:
                    self.stats["expired"] += 1
                    self._release(m)

    def _release(self, m):
        """An in-flight message becomes available again (expiry or nack), unless it has used up
        max_deliver deliveries.  All of its tokens stop working."""
        for t in m.tokens:
            self.in_flight.pop(t, None)
        m.tokens = ()
        self.n_in_flight -= 1
        if 0 < self.max_deliver <= m.deliveries:
            m.state = DROPPED
            self.stats["dropped"] += 1
        else:
            m.state = AVAILABLE
            self.available.append(m)
        self.cond.notify_all()

    def _deliverable(self):
        room = self.max_ack_pending - self.n_in_flight
        n = len(self.available)
        return n if n < room else max(room, 0)

    def _take(self, batch_size, now):
        """Move up to batch_size messages into flight; return [(token, Message), ...]."""
        n = min(batch_size, self._deliverable())
        if n <= 0:
            return []
        # The "duplicate" fault never makes a batch longer than batch_size (the doc calls it the
        # "most messages to return"), so it needs batch_size >= 2 and takes one message fewer.
        duplicate = batch_size >= 2 and self.faults.roll("duplicate")
        if duplicate and n == batch_size:
            n -= 1
        popleft = self.available.popleft
        in_flight = self.in_flight
        prefix = _TOKEN_PREFIX
        seq = _token_seq
        items = []
        tokens = []
        redelivered = 0
        for _ in range(n):
            m = popleft()
            tok = prefix + format(next(seq), "x")
            m.state = IN_FLIGHT
            m.tokens = (tok,)
            if m.deliveries:
                redelivered += 1
            m.deliveries += 1
            in_flight[tok] = m
            tokens.append(tok)
            items.append((tok, m))
        if duplicate:
            # The same message twice in one batch, under two tokens; the copy lands after the
            # original.  Acking either token acks the message; the other is then accepted and
            # ignored.
            i = self.faults.rng.randrange(len(items))
            m = items[i][1]
            tok = prefix + format(next(seq), "x")
            m.tokens = m.tokens + (tok,)
            in_flight[tok] = m
            tokens.append(tok)
            items.insert(self.faults.rng.randint(i + 1, len(items)), (tok, m))
            self.stats["duplicated"] += 1
        self.n_in_flight += n
        if items and self.first_delivery_at is None:
            self.first_delivery_at = time.monotonic()
        self.stats["delivered"] += len(items)
        self.stats["redelivered"] += redelivered
        # One heap entry for the whole batch: they share the deadline.
        heapq.heappush(self.expiry, (now + self.ack_wait, next(self.expiry_seq), tokens))
        return items

    def _info(self):
        return {"num_pending": len(self.available), "num_ack_pending": self.n_in_flight}

    # -- operations ---------------------------------------------------------------------------

    def publish(self, bodies):
        messages = [Message(b) for b in bodies]      # built outside the lock
        with self.cond:
            self.available.extend(messages)
            self.stats["published"] += len(bodies)
            self.cond.notify_all()
        return len(bodies)

    def next(self, batch_size, wait_for_ms, client_gone=None):
        """Serve one /next.  Returns ("reply", status, body, headers) or ("drop",).

        client_gone(): whether the client hung up.  A long poll it gave up on (a worker that
        stops or changes its configuration closes the connection) ends without taking
        messages ("abandoned"), as a real server's request handler ends with its connection:
        otherwise the next message published would go to a request nobody reads and wait for
        ack_wait_ms before anyone sees it."""
        with self.cond:
            self.stats["next_requests"] += 1
            f = self.faults
            injected = _injected_error(f, _forced_error, b'{"summary":"Internal server error (injected)"}')
            if injected is not None:
                return injected

            now = time.monotonic()
            deadline = now + wait_for_ms / 1000.0
            while True:
                self._expire(now)
                if wait_for_ms <= 0 or self.closed:
                    break
                if client_gone is not None and client_gone():
                    self.stats["abandoned"] += 1
                    return ("drop",)
                need = 1 if self.eager else batch_size
                if self._deliverable() >= need:
                    break
                remaining = deadline - now
                if remaining <= 0:
                    break
                # Wake at the end of the long poll, or when the earliest in-flight batch times
                # out (its messages may become deliverable), whichever comes first; publish/nack/
                # ack wake us earlier through notify_all().
                if self.expiry:
                    remaining = min(remaining, self.expiry[0][0] - now)
                if client_gone is not None:
                    remaining = min(remaining, 0.05)   # look at the connection now and then
                self.cond.wait(remaining)
                now = time.monotonic()

            # A deleted/replaced consumer delivers nothing more; faults may have been changed
            # while we waited, so read them again.
            items = [] if self.closed else self._take(batch_size, now)
            f = self.faults
            drop = f.roll("drop_connection")
            truncate = not drop and f.roll("truncate")
            info = self._info() if self.send_info else None

        # Assemble the reply outside the lock: the Messages' bodies never change.
        parts = [b'{"data":[']
        first = True
        for tok, m in items:
            parts.append(b'{"ack_token":"' if first else b',{"ack_token":"')
            parts.append(tok.encode())
            parts.append(b'","record":')
            parts.append(m.body)
            parts.append(b'}')
            first = False
        if info is None:
            parts.append(b']}')
        else:
            parts.append(b'],"info":{"num_pending":%d,"num_ack_pending":%d}}'
                         % (info["num_pending"], info["num_ack_pending"]))
        if drop:
            return ("drop",)
        body = b"".join(parts)
        if truncate:
            body = body[:len(body) // 2]
        return ("reply", 200, body, ())

    def ack(self, tokens):
        with self.cond:
            self.stats["ack_requests"] += 1
            self.token_log.append(("ack", list(tokens)))
            if self.faults.roll("ack_drop"):
                self.stats["ack_dropped"] += len(tokens)
                return
            self._expire(time.monotonic())
            freed = False
            for tok in tokens:
                m = self.in_flight.pop(tok, None)
                if m is None:
                    self.stats["bad_tokens"] += 1        # unknown or expired: ignored
                elif m.state == IN_FLIGHT:
                    m.state = ACKED
                    m.tokens = ()   # a duplicate's other token stays in in_flight, as a no-op
                    self.n_in_flight -= 1
                    self.stats["acked"] += 1
                    freed = True
                # else: the other token of an already acked duplicate: accepted, no effect
            if freed:
                self.cond.notify_all()  # room under max_ack_pending

    def nack(self, tokens):
        with self.cond:
            self.stats["nack_requests"] += 1
            self.token_log.append(("nack", list(tokens)))
            self._expire(time.monotonic())
            for tok in tokens:
                m = self.in_flight.pop(tok, None)
                if m is None:
                    self.stats["bad_tokens"] += 1
                elif m.state == IN_FLIGHT:
                    self.stats["nacked"] += 1
                    self._release(m)

    def snapshot(self):
        with self.cond:
            self._expire(time.monotonic())
            s = dict(self.stats)
            s["pending"] = len(self.available)
            s["ack_pending"] = self.n_in_flight
            s["outstanding"] = len(self.available) + self.n_in_flight
            s["first_delivery_at"] = self.first_delivery_at
            s["faults_by_kind"] = dict(self.faults.by_kind)
            s["faults_injected"] = self.faults.injected
            return s

    def set_script(self, steps, append):
        steps = [check_step(st) for st in steps]
        with self.cond:
            if not append:
                self.script.clear()
            self.script.extend(steps)
            return len(self.script)

    def next_step(self, op="next"):
        """The scripted step that answers this request (op: "next", "ack" or "nack"), or None.
        Steps are served in order; the first one answers only the requests its "op" names, others
        are served as usual.  A step with "times": n answers n requests; "times": -1 answers
        every request until the script is changed."""
        with self.cond:
            if not self.script:
                return None
            st = self.script[0]
            if st["op"] not in (op, "any"):
                return None
            if st["times"] > 0:
                st["times"] -= 1
                if st["times"] == 0:
                    self.script.popleft()
            return dict(st)

    def log_step(self, entry):
        with self.cond:
            self.script_log.append(entry)

    def script_state(self):
        with self.cond:
            return {"steps": [dict(st) for st in self.script], "log": list(self.script_log),
                    "tokens": [{"kind": k, "tokens": t} for k, t in self.token_log]}

    def set_faults(self, cfg):
        faults = self.fault_class(cfg)
        with self.cond:
            self.faults = faults

    def close(self):
        """Wake any long poll on a consumer that is being deleted or replaced."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()


_SUMMARIES = {
    400: "Bad request",
    401: "Unauthorized: the API token is missing or invalid",
    403: "Forbidden: the API token cannot use this consumer",
    404: "Not found: no such consumer",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal server error",
    501: "Not implemented",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def _injected_error(faults, forced_error, body_500):
    """The reply of an injected fault for a long poll, or None: a forced status (forced_error
    builds its body as the protocol words it), else a random 500 (body_500) or 429 (with the
    configured Retry-After)."""
    forced = faults.forced_status()
    if forced is not None:
        err = forced_error(forced)
        return ("reply", err.status, err.body(), err.headers)
    if faults.roll("status_500"):
        return ("reply", 500, body_500, ())
    if faults.roll("status_429"):
        hdrs = ()
        ra = faults.cfg["retry_after"]
        if ra is not None:
            hdrs = (("Retry-After", str(int(ra)) if float(ra).is_integer() else str(ra)),)
        return ("reply", 429, b'{"summary":"Too many requests (injected)"}', hdrs)
    return None


def _forced_error(status):
    summary = _SUMMARIES.get(status, f"HTTP {status}") + " (injected)"
    extra = {"validation_errors": {"batch_size": ["is invalid"]}} if status == 422 else None
    return ApiError(status, summary, extra)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------
# Scripted replies
# --------------------------------------------------------------------------------------------

# One step of a script.  Everything is optional; {} is an ordinary reply to a /next.
SCRIPT_STEP = {
    "op": "next",           # the requests it answers: "next", "ack", "nack" or "any"; a scripted
                            # /ack or /nack acknowledges nothing, it only sends the reply
    "status": 200,          # HTTP status
    "reason": None,         # reason phrase (default: the standard one)
    "headers": [],          # extra [name, value] pairs, sent as given
    "content_type": "application/json; charset=utf-8",   # null: no Content-Type header
    "body": None,           # list of parts, each {"text": s} | {"b64": s} | {"reply": true},
                            # with an optional "repeat": n; null = [{"reply": true}], the
                            # ordinary reply (takes messages from the queue, long-polls; on an
                            # /ack or /nack, a "reply" part is empty).
                            # Repeats are generated while sending, never built whole.
    "framing": "length",    # "length" (Content-Length of the whole body), "chunked", or "close"
                            # (no length: the end of the body is the closed connection)
    "content_length": None, # announce this Content-Length instead of the real one
    "raw": None,            # {"text"|"b64"}: send these bytes verbatim instead of a response
    "close_after": None,    # send only the first K body bytes, then close the connection
    "trickle_ms": 0,        # send the body one byte at a time, one every trickle_ms
    "delay_ms": 0,          # wait before the status line (delay and trickle end early when the
                            # client hangs up)
    "gzip": False,          # send the body gzip-compressed, with Content-Encoding: gzip
    "template": False,      # in text parts and header values, "{token}" becomes the request's
                            # bearer token and "{date+N}" the HTTP date N seconds from now
    "times": 1,             # how many requests this step answers; -1 = until cleared
}
FRAMINGS = ("length", "chunked", "close")
SCRIPT_OPS = ("next", "ack", "nack", "any", "receive")   # "receive" = "next" (Sequin Stream)
_TEMPLATE = re.compile(r"\{(token|date\+(\d+))\}")


def _fill_template(text, token):
    """A template's "{token}" and "{date+N}" filled in (see SCRIPT_STEP)."""
    def one(m):
        if m.group(1) == "token":
            return token
        return email.utils.formatdate(time.time() + int(m.group(2)), usegmt=True)
    return _TEMPLATE.sub(one, text)


def check_step(st):
    if not isinstance(st, dict):
        raise ApiError(400, "a script step must be a JSON object")
    unknown = set(st) - set(SCRIPT_STEP)
    if unknown:
        raise ApiError(400, "unknown script step field(s): " + ", ".join(sorted(unknown)))
    out = dict(SCRIPT_STEP)
    out.update(st)
    out["headers"] = [list(h) for h in out["headers"] or []]
    if not _is_int(out["status"]) or not 100 <= out["status"] <= 999:
        raise ApiError(400, "status must be an integer between 100 and 999")
    if out["framing"] not in FRAMINGS:
        raise ApiError(400, "framing must be one of " + ", ".join(FRAMINGS))
    if out["op"] not in SCRIPT_OPS:
        raise ApiError(400, "op must be one of " + ", ".join(SCRIPT_OPS))
    if out["op"] == "receive":
        out["op"] = "next"
    for k in ("gzip", "template"):
        if not isinstance(out[k], bool):
            raise ApiError(400, f"{k} must be a boolean")
    for h in out["headers"]:
        if len(h) != 2 or not all(isinstance(x, str) for x in h):
            raise ApiError(400, "headers must be [name, value] string pairs")
    for k in ("close_after", "content_length"):
        if out[k] is not None and (not _is_int(out[k]) or out[k] < 0):
            raise ApiError(400, f"{k} must be a non-negative integer")
    for k in ("trickle_ms", "delay_ms"):
        if not _is_number(out[k]) or out[k] < 0:
            raise ApiError(400, f"{k} must be a non-negative number")
    if not _is_int(out["times"]) or (out["times"] < 1 and out["times"] != -1):
        raise ApiError(400, "times must be a positive integer or -1")
    if out["body"] is not None:
        if not isinstance(out["body"], list):
            raise ApiError(400, "body must be a list of parts")
        for part in out["body"]:
            _part_bytes(part, check_only=True)
    if out["raw"] is not None:
        _part_bytes(out["raw"], check_only=True)
    return out


def _part_bytes(part, check_only=False, token=None):
    """The bytes of one {"text"|"b64"} part (one repetition); with a token, a text part is a
    template (see SCRIPT_STEP)."""
    if not isinstance(part, dict):
        raise ApiError(400, "a body part must be a JSON object")
    kinds = [k for k in ("text", "b64", "reply") if k in part]
    if len(kinds) != 1 or set(part) - {"text", "b64", "reply", "repeat"}:
        raise ApiError(400, 'a body part is {"text": s} or {"b64": s} or {"reply": true}, '
                            'with an optional "repeat"')
    rep = part.get("repeat", 1)
    if not _is_int(rep) or rep < 0:
        raise ApiError(400, "repeat must be a non-negative integer")
    if "reply" in part:
        return None
    try:
        if "text" in part:
            if not isinstance(part["text"], str):
                raise ValueError("text must be a string")
            # surrogatepass: a lone surrogate ("\ud800") becomes its 3-byte (invalid) UTF-8 form
            text = part["text"] if token is None else _fill_template(part["text"], token)
            data = text.encode("utf-8", "surrogatepass")
        else:
            data = base64.b64decode(part["b64"], validate=True)
    except (ValueError, TypeError, binascii.Error) as e:
        raise ApiError(400, f"bad body part: {e}")
    return None if check_only else data


class _Body:
    """A scripted body as [(bytes, repeat)], generated in slices while it is sent."""

    SLICE = 64 * 1024

    def __init__(self, parts):
        self.parts = parts
        self.length = sum(len(b) * n for b, n in parts)

    def slices(self):
        for data, n in self.parts:
            if not data or not n:
                continue
            if n == 1:
                for i in range(0, len(data), self.SLICE):
                    yield data[i:i + self.SLICE]
                continue
            per = max(1, self.SLICE // len(data))
            block = data * per
            full, rest = divmod(n, per)
            for _ in range(full):
                yield block
            if rest:
                yield data * rest


# --------------------------------------------------------------------------------------------
# Sequin Stream ("Generation 3"): /api/sequin_streams/<id-or-name>/{receive,ack,nack}
# (../shared/sequin-stream-api.md; where Sequin's docs and its source disagree, the source)
# --------------------------------------------------------------------------------------------

STREAM_DEFAULTS = {
    "name": None,               # the sink name used in paths (default: the admin id)
    "uuid": None,               # the sink id, a v4 UUID, also usable in paths (default: random)
    "ack_wait_ms": 30000,       # the visibility timeout (Sequin's default; its minimum is 500,
                                # the fake takes any positive value so tests can be quick)
    "paused": False,            # a paused sink returns {"data": []} to every receive
    "message_grouping": True,   # false: every message is its own group (no per-row order)
    "consumer_annotations": None,
    "database": None,           # metadata.database; default STREAM_DATABASE
    "backfill_id": "8c4a2d1e-5b6f-4c7d-9e8f-0a1b2c3d4e5f",   # in filled-in read idempotency keys
}
STREAM_DATABASE = {"id": "2f1c0e7a-9b3d-4e5f-8a6b-7c8d9e0f1a2b", "name": "source",
                   "annotations": {}, "database": "source", "hostname": "localhost"}
# metadata's keys, every one always present (Map.from_struct), in the order pull_json has them
METADATA_KEYS = ("table_schema", "table_name", "commit_timestamp", "commit_lsn", "commit_idx",
                 "idempotency_key", "record_pks", "database_name", "transaction_annotations",
                 "enrichment", "consumer", "database")
ACTIONS = ("insert", "update", "delete", "read")

STREAM_FAULT_DEFAULTS = dict(FAULT_DEFAULTS)
STREAM_FAULT_DEFAULTS.update({
    # probability, per receive, that one recently acked message is put back into the store under
    # a new ack_id before the batch is taken: a replay of the replication slot after a restart
    # (the slot had not advanced past it), the normal source of duplicates of acked changes
    "replay": 0.0,
})


class StreamFaults(Faults):
    """v1's faults on /receive (status_for_next and slow_ms too), plus "replay".  "duplicate"
    puts one message of the batch in it twice under its one ack_id (an ack_id belongs to the
    message); status_500 answers as a store that is restarting does."""
    DEFAULTS = STREAM_FAULT_DEFAULTS
    PROBABILITIES = PROBABILITY_FAULTS + ("replay",)


STREAM_STAT_KEYS = ("published", "deduplicated", "delivered", "redelivered", "duplicated",
                    "replayed", "acked", "nacked", "expired", "unknown_acks", "ack_dropped",
                    "receive_requests", "empty_replies", "ack_requests", "nack_requests",
                    "auth_failures", "faults_injected", "abandoned", "restarts")

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                      r"[0-9a-fA-F]{12}$")
_UUID4_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-"
                       r"[0-9a-fA-F]{12}$")
_WAIT_FOR_RE = re.compile(r"^(\d+)(ms|s|m)?$")
READ_IDX_BASE = 1 << 32     # reads sort after every change of the watermark's LSN


def _now_iso():
    """Now as Sequin writes a read's commit_timestamp: ISO-8601, microseconds, Z."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % (int(t * 1e6) % 1000000)


class StreamMessage:
    """One message in a stream consumer's store.  The ack_id is the message's own, given when
    it enters the store; a redelivery carries the same one.  cursor = (commit_lsn, commit_idx),
    or for a read the watermark's (see StreamConsumer._store)."""
    __slots__ = ("ack_id", "body", "group", "cursor", "seq", "in_flight", "deliveries", "gen",
                 "grp")

    def __init__(self, body, group, cursor):
        self.ack_id = None
        self.body = body          # the data object's JSON bytes
        self.group = group        # group key (str), or None = ungrouped
        self.cursor = cursor      # (lsn, idx), or None for a read (the watermark assigns it)
        self.seq = 0
        self.in_flight = False
        self.deliveries = 0
        self.gen = 0              # delivery number; expiry entries of older ones are stale
        self.grp = None           # its StreamGroup while it is in the store


class StreamGroup:
    """The messages of one group (row) in cursor order and the one of them in flight, if any."""
    __slots__ = ("msgs", "in_flight")

    def __init__(self):
        self.msgs = []
        self.in_flight = None


class StreamConsumer(Consumer):
    """
    A Sequin Stream sink, as SlotMessageStore serves it:

      * messages are walked in cursor order; a group (table + record_pks) with a message in
        flight is skipped, so a batch never holds two messages of a group and a row's next
        change goes out only after the previous one is acked, nacked or has timed out;
      * visibility timeout (ack_wait_ms) with lazy expiry: in-flight messages whose time is up
        are released at the start of the next receive, nowhere else;
      * nack = visible again at once; ack pops the message whatever its state (a late ack from
        a worker whose visibility expired still acks it); unknown ack_ids are ignored;
      * a long poll returns as soon as the store holds any message, in flight ones included, so
        it comes back at once, empty, while everything is in flight;
      * a change already in the store is not stored twice (same (commit_lsn, commit_idx)).

    Reads (backfill) have no cursor in their payload; each gets the internal cursor
    (greatest commit_lsn published so far, 2^32 + n): after every change published before it,
    before every later change of a larger LSN - what the watermark gives them in Sequin.  (Sequin
    also serves changes of other rows before pending reads; the fake serves strictly by cursor,
    which orders each row the same way.)
    """

    protocol = "stream"
    fault_class = StreamFaults
    REPLY_MARK = b'{"ack_id":"'

    def __init__(self, cid, settings):
        super().__init__(cid, settings)
        self.stats = dict.fromkeys(STREAM_STAT_KEYS, 0)
        self.first_delivery_at = None   # time.monotonic() of the first message delivered
        self.groups = {}
        self.by_ack = {}            # ack_id -> StreamMessage, every message in the store
        self.cursors = set()        # cursors of the changes in the store (de-duplication)
        self.ready = []             # heap of (cursor, seq, message): candidate group heads
        self.expiry = []            # heap of (deadline, seq, [(message, gen), ...])
        self.seq = itertools.count(1)
        self.n_store = 0
        self.n_in_flight = 0
        self.max_lsn = 0            # the next read's watermark
        self.acked_recent = deque(maxlen=10000)   # (body, group, cursor) of acked messages

    # -- settings ---------------------------------------------------------------------------

    def configure(self, s):
        self.token = s["token"]
        self.ack_wait = s["ack_wait_ms"] / 1000.0
        self.name = s["name"]
        self.uuid = s["uuid"]
        self.paused = s["paused"]
        self.grouping = s["message_grouping"]
        self.database = s["database"]
        self.settings = dict(s)

    def describe(self):
        d = {"id": self.id, "protocol": "stream"}
        d.update(self.settings)
        return d

    # -- publishing -------------------------------------------------------------------------

    def prepare(self, raw, doc):
        """A published data object -> StreamMessage (outside the lock).  Missing metadata keys
        are filled in as Sequin would have them (consumer and database from the sink's
        settings, idempotency_key from the cursor, null otherwise); a complete object keeps its
        exact bytes."""
        if not isinstance(doc, dict):
            raise ApiError(400, "each message is a data object {record, changes, action, metadata}")
        action = doc.get("action")
        md = doc.get("metadata")
        if action not in ACTIONS or not isinstance(md, dict) or not isinstance(doc.get("record"), dict):
            raise ApiError(400, "each message needs record (object), action (one of insert, update, "
                                "delete, read) and metadata (object); publish_raw stores anything")
        if action == "read":
            cursor = None
        else:
            lsn, idx = md.get("commit_lsn"), md.get("commit_idx")
            if not (_is_int(lsn) and 0 <= lsn < 1 << 64 and _is_int(idx) and 0 <= idx < 1 << 32):
                raise ApiError(400, "a change needs integer metadata.commit_lsn (uint64) and "
                                    "commit_idx (uint32); publish_raw stores anything")
            cursor = (lsn, idx)
        missing = [k for k in METADATA_KEYS if k not in md] or "changes" not in doc
        if missing or raw is None:
            rest = {k: v for k, v in doc.items() if k not in ("record", "changes", "action", "metadata")}
            doc = {"record": doc["record"], "changes": doc.get("changes"), "action": action,
                   "metadata": None}
            doc.update(rest)
            md = dict(md)
            for k in METADATA_KEYS:
                if k in md:
                    continue
                if k == "consumer":
                    v = {"id": self.uuid, "name": self.name,
                         "annotations": self.settings["consumer_annotations"]}
                elif k == "database":
                    v = dict(self.database)
                elif k == "idempotency_key":
                    if cursor is not None:
                        v = base64.b64encode(b"%d:%d" % cursor).decode()
                    elif isinstance(md.get("record_pks"), list):
                        v = base64.b64encode(":".join(
                            [self.settings["backfill_id"]] + [str(p) for p in md["record_pks"]]
                        ).encode()).decode()
                    else:
                        v = None
                elif k == "commit_timestamp":
                    v = _now_iso()
                else:
                    v = None
                md[k] = v
            doc["metadata"] = {k: md[k] for k in METADATA_KEYS}
            for k in md:
                if k not in doc["metadata"]:
                    doc["metadata"][k] = md[k]
            raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        pks = md.get("record_pks")
        group = None
        if self.grouping and isinstance(pks, list):
            group = "%s.%s:%s" % (md.get("table_schema"), md.get("table_name"),
                                  ":".join(str(p) for p in pks))
        return StreamMessage(raw, group, cursor)

    def publish(self, messages):
        """Put prepared messages into the store; returns (stored, deduplicated)."""
        with self.cond:
            stored = dup = 0
            for m in messages:
                if self._store(m):
                    stored += 1
                else:
                    dup += 1
            self.stats["published"] += stored
            self.stats["deduplicated"] += dup
            self.cond.notify_all()
        return stored, dup

    # -- store internals (lock held) ----------------------------------------------------------

    def _store(self, m):
        """Put m into the store under a fresh ack_id; False if its change is already there.
        A read (cursor None) gets the watermark cursor here."""
        if m.cursor is None:
            m.cursor = (self.max_lsn, READ_IDX_BASE + next(self.seq))
        elif m.cursor[1] < READ_IDX_BASE:
            if m.cursor in self.cursors:
                return False
            self.cursors.add(m.cursor)
            if m.cursor[0] > self.max_lsn:
                self.max_lsn = m.cursor[0]
        m.seq = next(self.seq)
        m.ack_id = str(uuid.uuid4())
        m.in_flight = False
        key = m.group if m.group is not None else ("#", m.seq)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = StreamGroup()
        m.grp = g
        msgs = g.msgs
        sk = (m.cursor, m.seq)
        i = len(msgs)
        while i > 0 and (msgs[i - 1].cursor, msgs[i - 1].seq) > sk:
            i -= 1
        msgs.insert(i, m)
        self.by_ack[m.ack_id] = m
        self.n_store += 1
        if g.in_flight is None and i == 0:
            heapq.heappush(self.ready, (m.cursor, m.seq, m))
        return True

    def _release(self, m):
        """An in-flight message becomes visible again (expiry, nack, restart); its group's head
        (m, or an older replayed message) is deliverable again."""
        g = m.grp
        m.in_flight = False
        g.in_flight = None
        self.n_in_flight -= 1
        h = g.msgs[0]
        heapq.heappush(self.ready, (h.cursor, h.seq, h))

    def _remove(self, m):
        """Ack: m leaves the store, in flight or not."""
        del self.by_ack[m.ack_id]
        g = m.grp
        g.msgs.remove(m)
        self.n_store -= 1
        if m.cursor[1] < READ_IDX_BASE:
            self.cursors.discard(m.cursor)
        if m.in_flight:
            m.in_flight = False
            g.in_flight = None
            self.n_in_flight -= 1
        m.grp = None
        if not g.msgs:
            del self.groups[m.group if m.group is not None else ("#", m.seq)]
        elif g.in_flight is None:
            h = g.msgs[0]
            heapq.heappush(self.ready, (h.cursor, h.seq, h))
        self.acked_recent.append((m.body, m.group, m.cursor))

    def _expire(self, now):
        """nack_stale_produced_messages: release what has been in flight for ack_wait_ms."""
        heap = self.expiry
        while heap and heap[0][0] <= now:
            for m, gen in heapq.heappop(heap)[2]:
                if m.in_flight and m.gen == gen:
                    self.stats["expired"] += 1
                    self._release(m)

    def _produce(self, n, now):
        """Up to n deliverable messages, in cursor order, at most one per group."""
        duplicate = n >= 2 and self.faults.roll("duplicate")
        if duplicate:
            n -= 1
        items = []
        heap = self.ready
        pop = heapq.heappop
        while heap and len(items) < n:
            m = pop(heap)[2]
            g = m.grp
            # stale entries: acked, in flight, or no longer the group's head
            if g is None or g.in_flight is not None or g.msgs[0] is not m:
                continue
            g.in_flight = m
            m.in_flight = True
            if m.deliveries:
                self.stats["redelivered"] += 1
            m.deliveries += 1
            m.gen += 1
            items.append(m)
        if not items:
            return items
        self.n_in_flight += len(items)
        heapq.heappush(self.expiry, (now + self.ack_wait, next(self.seq),
                                     [(m, m.gen) for m in items]))
        if duplicate:
            i = self.faults.rng.randrange(len(items))
            items.insert(self.faults.rng.randint(i + 1, len(items)), items[i])
            self.stats["duplicated"] += 1
        if items and self.first_delivery_at is None:
            self.first_delivery_at = time.monotonic()
        self.stats["delivered"] += len(items)
        return items

    def _replay(self):
        """The "replay" fault: one recently acked message comes back under a new ack_id."""
        if not self.acked_recent:
            return
        body, group, cursor = self.acked_recent[self.faults.rng.randrange(len(self.acked_recent))]
        m = StreamMessage(body, group, cursor)
        if self._store(m):
            self.stats["replayed"] += 1

    # -- operations ---------------------------------------------------------------------------

    def next(self, batch_size, wait_for_ms, client_gone=None):
        """Serve one /receive (wait_for_ms None: no wait).  Returns ("reply", status, body,
        headers) or ("drop",), as Consumer.next."""
        with self.cond:
            self.stats["receive_requests"] += 1
            f = self.faults
            injected = _injected_error(f, _stream_forced_error,
                                       b'{"summary":"Call to SlotMessageStore failed with :noproc"}')
            if injected is not None:
                return injected
            now = time.monotonic()
            if wait_for_ms:
                # maybe_wait: poll count_messages (every message in the store, in flight ones
                # too) until it is > 0 or the time is up
                deadline = now + wait_for_ms / 1000.0
                while self.n_store == 0 and not self.closed:
                    if client_gone is not None and client_gone():
                        self.stats["abandoned"] += 1
                        return ("drop",)
                    remaining = deadline - now
                    if remaining <= 0:
                        break
                    self.cond.wait(min(remaining, 0.05))
                    now = time.monotonic()
            self._expire(now)
            if f.roll("replay"):
                self._replay()
            items = [] if (self.closed or self.paused) else self._produce(batch_size, now)
            if not items:
                self.stats["empty_replies"] += 1
            f = self.faults
            drop = f.roll("drop_connection")
            truncate = not drop and f.roll("truncate")
            pieces = [(m.ack_id, m.body) for m in items]
        if drop:
            return ("drop",)
        parts = [b'{"data":[']
        first = True
        for ack_id, data in pieces:
            parts.append(b'{"ack_id":"' if first else b',{"ack_id":"')
            parts.append(ack_id.encode())
            parts.append(b'","data":')
            parts.append(data)
            parts.append(b'}')
            first = False
        parts.append(b']}')
        body = b"".join(parts)
        if truncate:
            body = body[:len(body) // 2]
        return ("reply", 200, body, ())

    def ack(self, ack_ids):
        with self.cond:
            self.stats["ack_requests"] += 1
            self.token_log.append(("ack", list(ack_ids)))
            if self.faults.roll("ack_drop"):
                self.stats["ack_dropped"] += len(ack_ids)
                return
            for a in ack_ids:
                m = self.by_ack.get(a.lower())
                if m is None:
                    self.stats["unknown_acks"] += 1      # unknown, expired or double: no-op
                else:
                    self._remove(m)
                    self.stats["acked"] += 1

    def nack(self, ack_ids):
        with self.cond:
            self.stats["nack_requests"] += 1
            self.token_log.append(("nack", list(ack_ids)))
            for a in ack_ids:
                m = self.by_ack.get(a.lower())
                if m is None:
                    self.stats["unknown_acks"] += 1
                elif m.in_flight:
                    self.stats["nacked"] += 1
                    self._release(m)
            self.cond.notify_all()

    def restart(self, replay_acked=0, keep_ack_ids=False):
        """A simulated Sequin restart (or sink edit): nothing is in flight any more, and every
        message is re-read from the slot under a new ack_id (keep_ack_ids: they had all been
        persisted); replay_acked of the most recently acked messages come back too (the slot had
        not advanced past them)."""
        with self.cond:
            self.stats["restarts"] += 1
            self.expiry = []
            for m in list(self.by_ack.values()):
                if m.in_flight:
                    self._release(m)
            if not keep_ack_ids:
                old = list(self.by_ack.values())
                self.by_ack = {}
                for m in old:
                    m.ack_id = str(uuid.uuid4())
                    self.by_ack[m.ack_id] = m
            replayed = 0
            tail = list(self.acked_recent)[-replay_acked:] if replay_acked > 0 else []
            for body, group, cursor in tail:
                if self._store(StreamMessage(body, group, cursor)):
                    replayed += 1
            self.stats["replayed"] += replayed
            self.cond.notify_all()
            return {"replayed": replayed, "messages": self.n_store}

    def messages(self):
        """The store in cursor order (GET /admin/consumers/<cid>/messages)."""
        with self.cond:
            ms = sorted(self.by_ack.values(), key=lambda m: (m.cursor, m.seq))
            return [{"ack_id": m.ack_id, "group": m.group,
                     "cursor": None if m.cursor[1] >= READ_IDX_BASE else list(m.cursor),
                     "in_flight": m.in_flight, "deliveries": m.deliveries,
                     "data": json.loads(m.body)} for m in ms]

    def snapshot(self):
        with self.cond:
            s = dict(self.stats)
            s["pending"] = self.n_store - self.n_in_flight    # visible (or expired, not yet
            s["in_flight"] = self.n_in_flight                  # released: expiry is lazy)
            s["outstanding"] = self.n_store
            s["groups"] = len(self.groups)
            s["first_delivery_at"] = self.first_delivery_at
            s["faults_by_kind"] = dict(self.faults.by_kind)
            s["faults_injected"] = self.faults.injected
            return s


def _stream_forced_error(status):
    if status == 500:
        return ApiError(500, "Call to SlotMessageStore failed with :noproc (injected)")
    if status == 404:
        return ApiError(404, STREAM_NOT_FOUND)
    return _forced_error(status)


# Reply texts (pull_controller.ex, verify_api_token.ex, verify_content_type.ex, error.ex).  The
# 401 texts are paraphrases of Sequin's heredocs; the others are Sequin's own.
STREAM_NOT_FOUND = "Not found: No `consumer` found matching the provided ID or name"
STREAM_BAD_BATCH = ("Invalid `max_batch_size`. `max_batch_size` must be an integer between 1 "
                    "and 1000.")
STREAM_BAD_WAIT = ("Invalid `wait_for`. Must be between 500 and 300,000 milliseconds, or use "
                   "duration format like '60s', '5m', '1000ms'.")
STREAM_BAD_ACK_IDS = ("Invalid ack_ids. Must send a top-level `ack_ids` property that is a "
                      "non-empty list of valid UUID strings")
STREAM_NEED_JSON = "Content-Type: application/json is required"
STREAM_AUTH_MISSING = ("Please provide an API token in the `authorization` header, "
                       "as in `Authorization: Bearer <token>`.")
STREAM_AUTH_FORMAT = ("The `authorization` header must use the Bearer scheme: "
                      "`Authorization: Bearer <token>`.")
STREAM_AUTH_INVALID = "The API token you provided is invalid or has expired."
STREAM_AUTH_MANY = "Please provide exactly one `authorization` header."


def parse_stream_batch_size(params):
    """parse_batch_size: `batch_size` (deprecated) wins over `max_batch_size`; a JSON integer
    or a string of digits, 1..1000; default 1.  null crashes Sequin's Integer.parse (500)."""
    key = "batch_size" if "batch_size" in params else "max_batch_size"
    if key not in params:
        return 1
    v = params[key]
    if v is None:
        raise ApiError(500, "", doc={"errors": {"detail": "Internal Server Error"}})
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v):
        v = int(v)
    if not _is_int(v) or not 0 < v <= 1000:
        raise ApiError(400, STREAM_BAD_BATCH)
    return v


def parse_stream_wait_for(params):
    """maybe_wait: omitted = no wait (None); a number is ms, a string matches
    ^(\\d+)(ms|s|m)?$; the result must be 500..300000 ms (so 0 is a 400)."""
    if "wait_for" not in params:
        return None
    v = params["wait_for"]
    if isinstance(v, str):
        m = _WAIT_FOR_RE.match(v)
        if not m:
            raise ApiError(400, STREAM_BAD_WAIT)
        v = int(m.group(1)) * {None: 1, "ms": 1, "s": 1000, "m": 60000}[m.group(2)]
    if not _is_int(v) or not 500 <= v <= 300000:
        raise ApiError(400, STREAM_BAD_WAIT)
    return v


def parse_stream_ack_ids(params):
    ids = params.get("ack_ids")
    if (not isinstance(ids, list) or not ids
            or not all(isinstance(a, str) and _UUID_RE.match(a) for a in ids)):
        raise ApiError(400, STREAM_BAD_ACK_IDS)
    return ids


def _accepts_json(accept):
    """Phoenix's `plug :accepts, ["json"]`: no Accept header, or one that admits JSON."""
    if accept is None or not accept.strip():
        return True
    for part in accept.split(","):
        mt = part.split(";", 1)[0].strip().lower()
        if mt in ("application/json", "*/*", "application/*"):
            return True
    return False


# --------------------------------------------------------------------------------------------
# Publish-body splitting: keep each record's exact bytes
# --------------------------------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def split_json_array(raw):
    """Split a JSON array (bytes) into the UTF-8 bytes of each element, validating every element.

    The elements are sliced out of the input rather than re-serialised: numbers keep their exact
    text (12345678901234567890, 1.000000000000000000001) and key order is preserved."""
    text = raw.decode("utf-8")
    # For pure-ASCII input, character offsets are byte offsets: slice the bytes directly.
    src = raw if text.isascii() else None
    ws = _WS.match
    i = ws(text, 0).end()
    if text[i:i + 1] != "[":
        raise ValueError("expected a JSON array of records")
    i = ws(text, i + 1).end()
    out = []
    if text[i:i + 1] == "]":
        i += 1
    else:
        decode = _DECODER.raw_decode
        while True:
            _, end = decode(text, i)
            out.append(src[i:end] if src is not None else text[i:end].encode("utf-8"))
            i = ws(text, end).end()
            c = text[i:i + 1]
            if c == ",":
                i = ws(text, i + 1).end()
            elif c == "]":
                i += 1
                break
            else:
                raise ValueError(f"expected ',' or ']' at offset {i}")
    if ws(text, i).end() != len(text):
        raise ValueError("trailing data after the array")
    return out


# --------------------------------------------------------------------------------------------
# Request log: what the worker asked, when, and over which connection (for the worker lifecycle
# suites, test/test_lifecycle.py and test/test_reload_stress.py)
# --------------------------------------------------------------------------------------------

class RequestLog:
    """Per consumer: the TCP connections that reached it, and its last /next requests with their
    parameters and arrival time (the server's time.time(), so a test on the same machine can
    compare it with its own clock)."""

    connection_numbers = itertools.count(1)   # Handler.setup numbers every accepted connection

    def __init__(self):
        self.lock = threading.Lock()
        self.connections = set()
        self.requests = deque(maxlen=2000)

    def connection(self, conn):
        with self.lock:
            self.connections.add(conn)

    def next(self, conn, batch_size, wait_for):
        entry = {"kind": "next", "t": time.time(), "conn": conn, "batch_size": batch_size,
                 "wait_for": wait_for}
        with self.lock:
            self.connections.add(conn)
            self.requests.append(entry)

    def add(self, conn, entry):
        """A Sequin Stream request: entry is {"kind": "receive"|"ack"|"nack", ...}; the caller
        fills in "status" when it has answered."""
        entry["t"] = time.time()
        entry["conn"] = conn
        with self.lock:
            self.connections.add(conn)
            self.requests.append(entry)

    def state(self):
        with self.lock:
            return {"connections": len(self.connections),
                    "requests": [dict(r) for r in self.requests]}


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.consumers = {}
        self.requests = {"connections": 0, "requests": 0, "last": None}

    def record(self, handler, method, body):
        """Note one /v1 request (see GET /admin/requests): the connection it came on is counted
        once, the first time it carries one."""
        last = {"method": method, "path": handler.path,
                "headers": {k.lower(): v for k, v in handler.headers.items()},
                "body": body.decode("utf-8", "replace")}
        with self.lock:
            if not handler.recorded:
                handler.recorded = True
                self.requests["connections"] += 1
            self.requests["requests"] += 1
            self.requests["last"] = last

    def recorded(self):
        with self.lock:
            return dict(self.requests)

    def reset_requests(self):
        with self.lock:
            self.requests = {"connections": 0, "requests": 0, "last": None}

    def get(self, cid):
        with self.lock:
            return self.consumers.get(cid)

    def upsert(self, doc):
        """Create a consumer, or change an existing one's settings (messages, stats and faults
        are kept, so a test can e.g. change the token and watch the client recover); with
        "purge": true an existing consumer is replaced by an empty one."""
        if not isinstance(doc, dict):
            raise ApiError(400, "expected a JSON object")
        protocol = doc.get("protocol", "v1")
        if protocol not in ("v1", "stream"):
            raise ApiError(400, 'protocol must be "v1" or "stream"')
        if protocol == "stream":
            return self._upsert_stream(doc)
        doc = {k: v for k, v in doc.items() if k != "protocol"}
        allowed = set(DEFAULTS) | {"id", "token", "purge"}
        unknown = set(doc) - allowed
        if unknown:
            raise ApiError(400, "unknown consumer setting(s): " + ", ".join(sorted(unknown)))
        cid, token = doc.get("id"), doc.get("token")
        if not isinstance(cid, str) or not cid or "/" in cid:
            raise ApiError(400, "id must be a non-empty string without '/'")
        if not isinstance(token, str) or not token:
            raise ApiError(400, "token must be a non-empty string")
        s = {"token": token}
        for k, default in DEFAULTS.items():
            s[k] = doc.get(k, default)
        if not _is_int(s["ack_wait_ms"]) or s["ack_wait_ms"] <= 0:
            raise ApiError(400, "ack_wait_ms must be a positive integer")
        if not _is_int(s["max_ack_pending"]) or s["max_ack_pending"] <= 0:
            raise ApiError(400, "max_ack_pending must be a positive integer")
        if not _is_int(s["max_deliver"]) or s["max_deliver"] == 0 or s["max_deliver"] < -1:
            raise ApiError(400, "max_deliver must be -1 or a positive integer")
        for k in ("eager", "send_info"):
            if not isinstance(s[k], bool):
                raise ApiError(400, f"{k} must be a boolean")
        purge = doc.get("purge", False)
        return self._install(cid, s, purge, Consumer)

    def _install(self, cid, s, purge, cls):
        """Create consumer cid of class cls with settings s, or reconfigure the existing one (a
        change of protocol needs "purge": true)."""
        with self.lock:
            old = self.consumers.get(cid)
            if old is not None and not purge and type(old) is not cls:
                raise ApiError(400, f"consumer {cid} speaks {old.protocol}: changing its "
                                    "protocol needs \"purge\": true")
            if old is not None and not purge:
                with old.cond:
                    old.configure(s)
                    old.cond.notify_all()   # eager / max_ack_pending may release a long poll
                return old, False
            c = self.consumers[cid] = cls(cid, s)
        if old is not None:
            old.close()
        return c, True

    def _upsert_stream(self, doc):
        allowed = set(STREAM_DEFAULTS) | {"id", "token", "purge", "protocol"}
        unknown = set(doc) - allowed
        if unknown:
            raise ApiError(400, "unknown stream consumer setting(s): " + ", ".join(sorted(unknown)))
        cid, token = doc.get("id"), doc.get("token")
        if not isinstance(cid, str) or not cid or "/" in cid:
            raise ApiError(400, "id must be a non-empty string without '/'")
        if not isinstance(token, str) or not token:
            raise ApiError(400, "token must be a non-empty string")
        old = self.get(cid)
        s = {"token": token}
        for k, default in STREAM_DEFAULTS.items():
            keep = old.settings.get(k) if isinstance(old, StreamConsumer) else None
            s[k] = doc.get(k, keep if keep is not None else default)
        if s["name"] is None:
            s["name"] = cid
        if s["uuid"] is None:
            s["uuid"] = str(uuid.uuid4())
        if s["database"] is None:
            s["database"] = dict(STREAM_DATABASE)
        if not isinstance(s["name"], str) or not s["name"] or "/" in s["name"] \
                or _UUID4_RE.match(s["name"]):
            raise ApiError(400, "name must be a non-empty string without '/' that is not a UUID")
        if not isinstance(s["uuid"], str) or not _UUID4_RE.match(s["uuid"]):
            raise ApiError(400, "uuid must be a v4 UUID")
        s["uuid"] = s["uuid"].lower()
        if not _is_int(s["ack_wait_ms"]) or s["ack_wait_ms"] <= 0:
            raise ApiError(400, "ack_wait_ms must be a positive integer")
        for k in ("paused", "message_grouping"):
            if not isinstance(s[k], bool):
                raise ApiError(400, f"{k} must be a boolean")
        if s["consumer_annotations"] is not None and not isinstance(s["consumer_annotations"], dict):
            raise ApiError(400, "consumer_annotations must be an object or null")
        if not isinstance(s["database"], dict) or set(s["database"]) != set(STREAM_DATABASE):
            raise ApiError(400, "database must be an object with the keys "
                                + ", ".join(sorted(STREAM_DATABASE)))
        if not isinstance(s["backfill_id"], str):
            raise ApiError(400, "backfill_id must be a string")
        return self._install(cid, s, doc.get("purge", False), StreamConsumer)

    def find_stream(self, ref, token=None):
        """SinkConsumer.where_id_or_name: a v4 UUID is the sink's id, anything else its name;
        only stream consumers, and (with a token) only those of the token's "account"."""
        by_id = bool(_UUID4_RE.match(ref))
        with self.lock:
            for c in self.consumers.values():
                if not isinstance(c, StreamConsumer) or (token is not None and c.token != token):
                    continue
                if (c.uuid == ref.lower()) if by_id else (c.name == ref):
                    return c
        return None

    def stream_token_known(self, token):
        with self.lock:
            return any(isinstance(c, StreamConsumer) and
                       secrets.compare_digest(c.token.encode(), token.encode())
                       for c in self.consumers.values())

    def delete(self, cid):
        with self.lock:
            c = self.consumers.pop(cid, None)
        if c is not None:
            c.close()
        return c is not None

    def reset(self):
        with self.lock:
            old = list(self.consumers.values())
            self.consumers = {}
            self.requests = {"connections": 0, "requests": 0, "last": None}
        for c in old:
            c.close()

    def list(self):
        with self.lock:
            return [c.describe() for c in self.consumers.values()]


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

_CID = r"([^/]+)"
ROUTES = [
    # (method set, regex, handler method name)
    ({"GET", "POST"}, re.compile(r"^/v1/http-consumers/%s/next$" % _CID), "api_next"),
    ({"POST"}, re.compile(r"^/v1/http-consumers/%s/ack$" % _CID), "api_ack"),
    ({"POST"}, re.compile(r"^/v1/http-consumers/%s/nack$" % _CID), "api_nack"),
    ({"GET"}, re.compile(r"^/admin/health$"), "admin_health"),
    ({"POST"}, re.compile(r"^/admin/reset$"), "admin_reset"),
    ({"GET", "POST"}, re.compile(r"^/admin/consumers$"), "admin_consumers"),
    ({"GET", "DELETE"}, re.compile(r"^/admin/consumers/%s$" % _CID), "admin_consumer"),
    ({"POST"}, re.compile(r"^/admin/consumers/%s/publish$" % _CID), "admin_publish"),
    ({"GET"}, re.compile(r"^/admin/consumers/%s/stats$" % _CID), "admin_stats"),
    ({"GET", "POST"}, re.compile(r"^/admin/consumers/%s/faults$" % _CID), "admin_faults"),
    ({"POST"}, re.compile(r"^/admin/consumers/%s/publish_raw$" % _CID), "admin_publish_raw"),
    ({"GET", "POST"}, re.compile(r"^/admin/consumers/%s/script$" % _CID), "admin_script"),
    ({"GET"}, re.compile(r"^/admin/requests$"), "admin_requests"),
    ({"GET"}, re.compile(r"^/admin/requests\.txt$"), "admin_requests_text"),
    ({"POST"}, re.compile(r"^/admin/requests/reset$"), "admin_requests_reset"),
    ({"GET"}, re.compile(r"^/admin/consumers/%s/requests$" % _CID), "admin_consumer_requests"),
    ({"POST"}, re.compile(r"^/admin/consumers/%s/restart$" % _CID), "admin_restart"),
    ({"GET"}, re.compile(r"^/admin/consumers/%s/messages$" % _CID), "admin_messages"),
    # Sequin Stream; every method reaches api_stream, which answers as Phoenix's router does
    ({"GET", "POST", "PUT", "DELETE"},
     re.compile(r"^/api/(sequin_streams|http_pull_consumers)/%s/(receive|ack|nack)$" % _CID),
     "api_stream"),
]


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1: connections stay open between requests (keep-alive) unless the client says
    # "Connection: close"; hence every reply with a body carries Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "fake-sequin/1"
    disable_nagle_algorithm = True   # replies are one write each anyway; no 40 ms Nagle stalls
    registry = None                  # set by make_server
    quiet = False

    # -- plumbing -----------------------------------------------------------------------------

    def setup(self):
        super().setup()
        self.recorded = False        # this connection carried a recorded /v1 request
        self.conn_no = next(RequestLog.connection_numbers)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("fake_sequin: %s - %s\n" % (self.address_string(), fmt % args))

    def _read_body(self):
        """Read the whole request body (Content-Length or chunked), so that the next request on
        a keep-alive connection starts at the right byte."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass   # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(n) if n else b""

    def _send(self, status, body=b"", headers=(), content_type="application/json; charset=utf-8"):
        """Write the whole reply with a single write (status line, headers, body)."""
        reason = self.responses.get(status, ("",))[0]
        head = ["HTTP/1.1 %d %s" % (status, reason), "Server: " + self.server_version]
        if status != 204:
            # RFC 9110: a 204 carries neither a body nor Content-Length.
            head.append("Content-Type: " + content_type)
            head.append("Content-Length: %d" % len(body))
        else:
            body = b""
        if status == 401:
            head.append('WWW-Authenticate: Bearer realm="sequin"')
        for k, v in headers:
            head.append("%s: %s" % (k, v))
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.log_request(status, len(body))

    def _send_json(self, status, doc):
        self._send(status, json.dumps(doc).encode())

    def _dispatch(self, method):
        try:
            try:
                body = self._read_body()
            except ValueError:
                self.close_connection = True
                raise ApiError(400, "malformed request body framing")
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            if path.startswith(("/v1/", "/api/")):
                self.registry.record(self, method, body)
            for methods, rx, name in ROUTES:
                m = rx.match(path)
                if m:
                    if method not in methods:
                        raise ApiError(405, f"{method} is not allowed on {path}")
                    args = [unquote(g) for g in m.groups()]
                    getattr(self, name)(method, body, parse_qs(url.query), *args)
                    return
            raise ApiError(404, f"no route for {path}")
        except ApiError as e:
            self._send(e.status, e.body(), e.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug in the fake: say so, keep serving
            self.close_connection = True
            self._send(500, json.dumps({"summary": f"fake_sequin internal error: {e!r}"}).encode())

    @staticmethod
    def _json(body, default=None):
        if not body.strip():
            return default
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"request body is not valid JSON: {e}")

    def _consumer_for_api(self, cid, method):
        """Consumer lookup and bearer auth for /v1 calls (401 without a bearer token, 404 for an
        unknown consumer, 401 for a token that does not match)."""
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Unauthorized: missing bearer token")
        c = self.registry.get(cid)
        if c is None or isinstance(c, StreamConsumer):
            raise ApiError(404, f"Not found: no consumer with id {cid}")
        if not secrets.compare_digest(token.encode(), c.token.encode()):
            with c.cond:
                c.stats["auth_failures"] += 1
            raise ApiError(401, "Unauthorized: the API token is invalid")
        if method == "POST" and not self.headers.get("Content-Type", "").lower().startswith(
                "application/json"):
            with c.cond:
                c.stats["missing_content_type"] += 1   # counted, not refused (doc: silent)
        c.request_log.connection(self.conn_no)
        return c

    def _admin_consumer(self, cid):
        c = self.registry.get(cid)
        if c is None:
            raise ApiError(404, f"no consumer with id {cid}")
        return c

    # -- the Sequin API -----------------------------------------------------------------------

    def api_next(self, method, body, query, cid):
        c = self._consumer_for_api(cid, method)
        params = {}
        for k in ("batch_size", "wait_for"):
            if k in query:
                params[k] = query[k][-1]
        doc = self._json(body, {})
        if not isinstance(doc, dict):
            raise ApiError(400, "request body must be a JSON object")
        params.update(doc)
        batch_size = _int_param(params, "batch_size", 1, 1)
        wait_for = _int_param(params, "wait_for", 0, 0)
        c.request_log.next(self.conn_no, batch_size, wait_for)

        step = c.next_step("next")
        if step is not None:
            self._scripted_reply(c, step, batch_size, wait_for, "next")
            return

        slow = c.faults.cfg["slow_ms"]
        if slow:
            time.sleep(slow / 1000.0)
        result = c.next(batch_size, wait_for, self._client_hung_up)
        if result[0] == "drop":
            # Close the socket without a single byte of reply.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.log_request("000-dropped")
            return
        _, status, out, headers = result
        self._send(status, out, headers)

    def api_stream(self, method, body, query, prefix, ref, op):
        """Sequin Stream: the checks in the order Sequin makes them - Plug.Parsers (malformed
        JSON), accepts, the API token, VerifyContentType (every POST), the consumer lookup - then
        the controller's parameter checks."""
        if method not in (("GET", "POST") if op == "receive" else ("POST",)):
            raise ApiError(404, "", doc={"errors": {"detail": "Not Found"}})
        ctype = self.headers.get("Content-Type", "")
        params = {k: v[-1] for k, v in query.items()}
        if body.strip() and "json" in ctype.lower():
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise ApiError(400, "", doc={"errors": {"detail": "Bad Request"}})
            if isinstance(doc, dict):
                params.update(doc)
            else:
                params["_json"] = doc
        if not _accepts_json(self.headers.get("Accept")):
            raise ApiError(406, "", doc={"errors": {"detail": "Not Acceptable"}})
        values = self.headers.get_all("Authorization") or []
        summary = None
        if not values:
            summary = STREAM_AUTH_MISSING
        elif len(values) > 1:
            summary = STREAM_AUTH_MANY
        elif not values[0].startswith("Bearer "):
            summary = STREAM_AUTH_FORMAT
        else:
            token = values[0][len("Bearer "):]
            if not token or not self.registry.stream_token_known(token):
                summary = STREAM_AUTH_INVALID
        if summary is not None:
            c = self.registry.find_stream(ref)
            if c is not None:
                with c.cond:
                    c.stats["auth_failures"] += 1
            raise ApiError(401, summary)
        if method == "POST" and "application/json" not in ctype.lower():
            raise ApiError(400, STREAM_NEED_JSON)
        c = self.registry.find_stream(ref, token)
        if c is None:
            raise ApiError(404, STREAM_NOT_FOUND)
        entry = {"kind": op, "method": method, "prefix": prefix,
                 "params": {k: v for k, v in params.items() if k != "ack_ids"}, "status": None}
        c.request_log.add(self.conn_no, entry)
        try:
            getattr(self, "_stream_" + op)(c, params, entry)
        except ApiError as e:
            entry["status"] = e.status
            raise

    def _stream_receive(self, c, params, entry):
        n = parse_stream_batch_size(params)
        wait_for = parse_stream_wait_for(params)
        entry["max_batch_size"], entry["wait_for"] = n, wait_for
        step = c.next_step("next")
        if step is not None:
            entry["status"] = step["status"]
            self._scripted_reply(c, step, n, wait_for, "next")
            return
        slow = c.faults.cfg["slow_ms"]
        if slow:
            time.sleep(slow / 1000.0)
        result = c.next(n, wait_for, self._client_hung_up)
        if result[0] == "drop":
            entry["status"] = "dropped"
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.log_request("000-dropped")
            return
        _, status, out, headers = result
        entry["status"] = status
        entry["messages"] = out.count(c.REPLY_MARK) if status == 200 else 0
        self._send(status, out, headers)

    def _stream_ack(self, c, params, entry, kind="ack"):
        ids = parse_stream_ack_ids(params)
        entry["ack_ids"] = len(ids)
        step = c.next_step(kind)
        if step is not None:
            entry["status"] = step["status"]
            self._scripted_reply(c, step, 0, 0, kind)
            return
        if c.faults.cfg["ack_slow_ms"]:
            time.sleep(c.faults.cfg["ack_slow_ms"] / 1000.0)
        (c.ack if kind == "ack" else c.nack)(ids)
        entry["status"] = 200
        self._send_json(200, {"success": True})

    def _stream_nack(self, c, params, entry):
        self._stream_ack(c, params, entry, "nack")

    def _bearer_token(self):
        return self.headers.get("Authorization", "").partition(" ")[2].strip()

    def _client_gone(self, seconds):
        """Waits `seconds`; True as soon as the client closes the connection (then the rest of a
        delay or a trickle is not worth waiting for)."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([self.connection], [], [], remaining)
            if not readable:
                return False
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
            time.sleep(remaining)   # the client sent more (a pipelined request): just wait
            return False

    def _scripted_reply(self, c, st, batch_size, wait_for, op):
        """Answer one request (op: "next", "ack" or "nack") as the script step says, logging what
        was actually sent."""
        entry = {"op": op, "status": st["status"], "bytes_sent": 0, "body_length": None,
                 "finished": False, "client_closed": False, "messages": 0}
        token = self._bearer_token() if st["template"] else None
        try:
            if st["delay_ms"] and self._client_gone(st["delay_ms"] / 1000.0):
                raise ConnectionResetError("the client hung up during the delay")
            if st["raw"] is not None:
                raw = _part_bytes(st["raw"], token=token)
                entry["body_length"] = len(raw)
                self.close_connection = True
                self._write_body(_Body([(raw, 1)]), st, entry, chunked=False, raw=True)
                return
            parts = []
            for part in st["body"] if st["body"] is not None else [{"reply": True}]:
                if "reply" in part:
                    data = b""
                    if op == "next":
                        result = c.next(batch_size, wait_for)
                        data = result[2] if result[0] == "reply" else b""
                    entry["messages"] += data.count(c.REPLY_MARK)
                else:
                    data = _part_bytes(part, token=token)
                parts.append((data, part.get("repeat", 1)))
            body = _Body(parts)
            if st["gzip"]:
                body = _Body([(gzip.compress(b"".join(body.slices()), mtime=0), 1)])
            entry["body_length"] = body.length
            status = st["status"]
            reason = st["reason"]
            if reason is None:
                reason = self.responses.get(status, ("",))[0]
            head = ["HTTP/1.1 %d %s" % (status, reason), "Server: " + self.server_version]
            if st["content_type"] is not None:
                head.append("Content-Type: " + st["content_type"])
            if st["gzip"]:
                head.append("Content-Encoding: gzip")
            chunked = st["framing"] == "chunked"
            if st["framing"] == "length":
                n = st["content_length"] if st["content_length"] is not None else body.length
                head.append("Content-Length: %d" % n)
            elif chunked:
                head.append("Transfer-Encoding: chunked")
            else:
                self.close_connection = True
            if st["close_after"] is not None:
                self.close_connection = True
            for k, v in st["headers"]:
                head.append("%s: %s" % (k, v if token is None else _fill_template(v, token)))
            if self.close_connection:
                head.append("Connection: close")
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            self._write_body(body, st, entry, chunked)
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            entry["client_closed"] = True
            self.close_connection = True
        finally:
            c.log_step(entry)
            self.log_request(st["status"], entry["bytes_sent"])

    def _write_body(self, body, st, entry, chunked, raw=False):
        limit = st["close_after"]
        trickle = st["trickle_ms"] / 1000.0
        write = self.wfile.write
        for piece in body.slices():
            if limit is not None and entry["bytes_sent"] + len(piece) > limit:
                piece = piece[:limit - entry["bytes_sent"]]
            if trickle:
                for i in range(len(piece)):
                    write(piece[i:i + 1] if not chunked else b"1\r\n" + piece[i:i + 1] + b"\r\n")
                    self.wfile.flush()
                    entry["bytes_sent"] += 1
                    if self._client_gone(trickle):
                        raise ConnectionResetError("the client hung up during the trickle")
            elif piece:
                write(piece if not chunked else b"%x\r\n%s\r\n" % (len(piece), piece))
                entry["bytes_sent"] += len(piece)
            if limit is not None and entry["bytes_sent"] >= limit:
                break
        if limit is not None or raw:
            # Cut off (or a verbatim response): close the connection, no end of body.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            entry["finished"] = limit is None or entry["bytes_sent"] >= body.length
            return
        if chunked:
            write(b"0\r\n\r\n")
        entry["finished"] = True

    def _client_hung_up(self):
        """Whether the client closed this connection by now (readable with nothing to read);
        _client_gone() waits for it."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    def _tokens(self, body):
        doc = self._json(body)
        if not isinstance(doc, dict):
            raise ApiError(400, 'body must be {"ack_tokens": [...]}')
        tokens = doc.get("ack_tokens")
        if not isinstance(tokens, list) or not tokens:
            raise ApiError(400, "ack_tokens must be a non-empty array")
        if not all(isinstance(t, str) for t in tokens):
            raise ApiError(400, "ack_tokens must be strings")
        return tokens

    def api_ack(self, method, body, query, cid):
        c = self._consumer_for_api(cid, method)
        step = c.next_step("ack")
        if step is not None:
            self._scripted_reply(c, step, 0, 0, "ack")
            return
        tokens = self._tokens(body)
        if c.faults.cfg["ack_slow_ms"]:
            time.sleep(c.faults.cfg["ack_slow_ms"] / 1000.0)
        c.ack(tokens)
        self._send(204)

    def api_nack(self, method, body, query, cid):
        c = self._consumer_for_api(cid, method)
        step = c.next_step("nack")
        if step is not None:
            self._scripted_reply(c, step, 0, 0, "nack")
            return
        tokens = self._tokens(body)
        if c.faults.cfg["ack_slow_ms"]:
            time.sleep(c.faults.cfg["ack_slow_ms"] / 1000.0)
        c.nack(tokens)
        self._send(204)

    # -- admin --------------------------------------------------------------------------------

    def admin_health(self, method, body, query):
        self._send_json(200, {"ok": True})

    def admin_reset(self, method, body, query):
        self.registry.reset()
        self._send_json(200, {"ok": True})

    def admin_consumers(self, method, body, query):
        if method == "GET":
            self._send_json(200, {"consumers": self.registry.list()})
            return
        c, created = self.registry.upsert(self._json(body))
        self._send_json(201 if created else 200, c.describe())

    def admin_consumer(self, method, body, query, cid):
        if method == "DELETE":
            if not self.registry.delete(cid):
                raise ApiError(404, f"no consumer with id {cid}")
            self._send_json(200, {"deleted": cid})
            return
        c = self._admin_consumer(cid)
        d = c.describe()
        d["stats"] = c.snapshot()
        d["faults"] = dict(c.faults.cfg)
        self._send_json(200, d)

    def admin_publish(self, method, body, query, cid):
        c = self._admin_consumer(cid)
        try:
            bodies = split_json_array(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"publish body must be a JSON array of records: {e}")
        if isinstance(c, StreamConsumer):
            msgs = [c.prepare(b, json.loads(b)) for b in bodies]
            stored, dup = c.publish(msgs)
            self._send_json(200, {"published": stored, "deduplicated": dup})
            return
        self._send_json(200, {"published": c.publish(bodies)})

    def admin_publish_raw(self, method, body, query, cid):
        c = self._admin_consumer(cid)
        doc = self._json(body)
        if isinstance(c, StreamConsumer):
            self._publish_raw_stream(c, doc)
            return
        if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
            raise ApiError(400, 'publish_raw takes {"records": [{"text": ...} | {"b64": ...}]}')
        bodies = []
        for part in doc["records"]:
            if not isinstance(part, dict) or "reply" in part or "repeat" in part:
                raise ApiError(400, 'each record is {"text": ...} or {"b64": ...}')
            bodies.append(_part_bytes(part))
        self._send_json(200, {"published": c.publish(bodies)})

    def _publish_raw_stream(self, c, doc):
        """{"messages": [{"text"|"b64": data bytes, "group": str|null, "cursor": [lsn, idx] |
        null}]}: each data object stored byte for byte under a fresh ack_id; cursor null = a
        read's (the watermark's), group null = ungrouped."""
        if not isinstance(doc, dict) or not isinstance(doc.get("messages"), list):
            raise ApiError(400, 'publish_raw takes {"messages": [{"text"|"b64", "group", "cursor"}]}')
        msgs = []
        for part in doc["messages"]:
            if not isinstance(part, dict):
                raise ApiError(400, "each message is a JSON object")
            part = dict(part)
            group, cursor = part.pop("group", None), part.pop("cursor", None)
            if group is not None and not isinstance(group, str):
                raise ApiError(400, "group must be a string or null")
            if cursor is not None:
                if not (isinstance(cursor, list) and len(cursor) == 2 and _is_int(cursor[0])
                        and _is_int(cursor[1]) and 0 <= cursor[0] < 1 << 64
                        and 0 <= cursor[1] < 1 << 32):
                    raise ApiError(400, "cursor must be [commit_lsn, commit_idx] or null")
                cursor = tuple(cursor)
            if "reply" in part or "repeat" in part:
                raise ApiError(400, 'each message is {"text": ...} or {"b64": ...}')
            msgs.append(StreamMessage(_part_bytes(part), group, cursor))
        stored, dup = c.publish(msgs)
        self._send_json(200, {"published": stored, "deduplicated": dup})

    def _admin_stream(self, cid):
        c = self._admin_consumer(cid)
        if not isinstance(c, StreamConsumer):
            raise ApiError(400, f"consumer {cid} is not a stream consumer")
        return c

    def admin_restart(self, method, body, query, cid):
        c = self._admin_stream(cid)
        doc = self._json(body, {})
        if not isinstance(doc, dict) or set(doc) - {"replay_acked", "keep_ack_ids"}:
            raise ApiError(400, 'restart takes {"replay_acked": n, "keep_ack_ids": false}')
        n = doc.get("replay_acked", 0)
        keep = doc.get("keep_ack_ids", False)
        if not _is_int(n) or n < 0 or not isinstance(keep, bool):
            raise ApiError(400, "replay_acked is a non-negative integer, keep_ack_ids a boolean")
        self._send_json(200, c.restart(n, keep))

    def admin_messages(self, method, body, query, cid):
        self._send_json(200, {"messages": self._admin_stream(cid).messages()})

    def admin_script(self, method, body, query, cid):
        c = self._admin_consumer(cid)
        if method == "POST":
            doc = self._json(body)
            if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
                raise ApiError(400, 'script takes {"steps": [...], "append": false}')
            c.set_script(doc["steps"], bool(doc.get("append", False)))
        self._send_json(200, c.script_state())

    def admin_requests(self, method, body, query):
        self._send_json(200, self.registry.recorded())

    def admin_requests_text(self, method, body, query):
        rec = self.registry.recorded()
        lines = ["connections: %d" % rec["connections"], "requests: %d" % rec["requests"]]
        last = rec["last"]
        if last is not None:
            lines += ["method: " + last["method"], "path: " + last["path"]]
            lines += ["h-%s: %s" % kv for kv in last["headers"].items()]
        text = "\n".join(lines) + "\n\n" + (last["body"] if last is not None else "")
        self._send(200, text.encode("utf-8"), content_type="text/plain; charset=utf-8")

    def admin_requests_reset(self, method, body, query):
        self.registry.reset_requests()
        self._send_json(200, {"ok": True})

    def admin_consumer_requests(self, method, body, query, cid):
        self._send_json(200, self._admin_consumer(cid).request_log.state())

    def admin_stats(self, method, body, query, cid):
        self._send_json(200, self._admin_consumer(cid).snapshot())

    def admin_faults(self, method, body, query, cid):
        c = self._admin_consumer(cid)
        if method == "POST":
            cfg = self._json(body, {})
            if not isinstance(cfg, dict):
                raise ApiError(400, "faults must be a JSON object")
            c.set_faults(cfg)
        self._send_json(200, dict(c.faults.cfg))


def _int_param(params, name, default, minimum):
    v = params.get(name, default)
    if isinstance(v, str):
        try:
            v = int(v)
        except ValueError:
            pass
    if not _is_int(v) or v < minimum:
        raise ApiError(422, "Validation failed",
                       {"validation_errors": {name: [f"must be an integer >= {minimum}"]}})
    return v


class Server(ThreadingHTTPServer):
    daemon_threads = True        # long polls and idle keep-alive connections never block exit
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS look-up: skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def make_server(port=0, quiet=False, registry=None):
    """Build (but do not start) a server on 127.0.0.1:port; port 0 picks a free port."""
    registry = registry or Registry()
    handler = type("BoundHandler", (Handler,), {"registry": registry, "quiet": quiet})
    server = Server(("127.0.0.1", port), handler)
    server.registry = registry
    return server


def apply_setup(registry, doc):
    """--setup: create the consumers doc describes, each with its settings, script, faults and
    records ({"consumers": [...]}, see the module doc; a "comment" member is ignored), through
    the checks the admin API makes.  Raises ApiError or ValueError on a bad document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("consumers"), list):
        raise ValueError('a setup file is {"consumers": [...]}')
    for spec in doc["consumers"]:
        if not isinstance(spec, dict):
            raise ValueError("each consumer is a JSON object")
        spec = dict(spec)
        spec.pop("comment", None)
        script = spec.pop("script", [])
        faults = spec.pop("faults", None)
        records = spec.pop("records", [])
        if not isinstance(script, list) or not isinstance(records, list):
            raise ValueError("script and records are arrays")
        c, _ = registry.upsert(spec)
        c.set_script(script, append=False)
        if faults is not None:
            c.set_faults(faults)
        if isinstance(c, StreamConsumer):
            c.publish([c.prepare(None, r) for r in records])
        else:
            c.publish([json.dumps(r, ensure_ascii=False).encode("utf-8") for r in records])


def _write_port_file(path, port):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)   # atomic: a reader never sees an empty file


def _keep_freed_memory():
    """Ask glibc to keep freed memory instead of handing it back to the kernel.

    A 1000-record reply is a ~1 MB bytes object; by default glibc mmap()s every such block and
    munmap()s it on free, so each reply pays for ~250 fresh page faults (several ms on a VM).
    A fixed, higher mmap threshold and trim threshold let the next reply reuse the same pages.
    Best effort: a no-op where libc has no mallopt (non-glibc)."""
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024)
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Sequin Generation-1 record consumer server.")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    ap.add_argument("--port-file", help="write the chosen port to this file (atomically)")
    ap.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    ap.add_argument("--consumer", action="append", default=[], metavar="ID:TOKEN",
                    help="create this consumer at start-up (repeatable)")
    ap.add_argument("--publish", metavar="FILE",
                    help="publish this JSON array of records to every --consumer at start-up")
    ap.add_argument("--setup", metavar="FILE",
                    help="create the consumers (settings, scripts, faults, records) this JSON file "
                         "describes")
    args = ap.parse_args(argv)

    _keep_freed_memory()
    server = make_server(args.port, args.quiet)
    for spec in args.consumer:
        cid, sep, token = spec.partition(":")
        if not sep:
            ap.error("--consumer takes ID:TOKEN")
        c, _ = server.registry.upsert({"id": cid, "token": token})
        if args.publish:
            with open(args.publish, "rb") as f:
                c.publish(split_json_array(f.read()))
    if args.setup:
        try:
            with open(args.setup, "rb") as f:
                apply_setup(server.registry, json.load(f))
        except (OSError, ValueError, ApiError) as e:
            ap.error(f"--setup {args.setup}: {e}")

    port = server.server_address[1]
    if args.port_file:
        _write_port_file(args.port_file, port)
    print(port, flush=True)
    if not args.quiet:
        print(f"fake_sequin: listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return, and serve_forever() runs in this very
        # (main) thread: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    if not args.quiet:
        print("fake_sequin: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
