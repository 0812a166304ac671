"""
test_hostile.py - sequin_sync against hostile input: what a broken, compromised or merely odd
consumer (or a proxy in front of it) can send a worker (pytest; the suite "python: test_hostile").

A throwaway cluster (conftest.py's `cluster`) with sequin_sync preloaded, and the fake consumer
(conftest.py's `fake`) on 127.0.0.1.  Each case gets its own consumer, both in the fake and in
sequin_sync, and feeds the worker one kind of hostile input:

  * records published byte for byte (publish_raw): invalid UTF-8, \\u0000, deep nesting, huge
    strings and numbers, NaN, duplicate keys, BOMs, standard fields of the wrong type ...;
  * scripted raw replies (script): bodies without `data`, HTML pages, redirects, replies over
    sequin_sync.max_response_size, a byte a second, connections closed mid-body ...

and the same for a Sequin Stream consumer (the stream-* cases, Case.stream): /receive replies that
must be refused whole (not JSON, cut off, no data array, an item without a UUID ack_id: nothing of
them applied or acked), items and change messages that cost only themselves (no "data", unknown
actions, metadata and versions of the wrong type or range, reads with versions, bad keys, text
that is not Unicode, \u0000, deep nesting: parked with the exact error, acked with the rest),
several messages of one key or one ack_id in one batch, and messages near and over the size limit.

Every case writes down its expected outcome (the CASES table below): the rows in the target
table, the dead letters (error text, exact or a stable prefix), what the fake saw acked / nacked
/ delivered again, and sequin_sync.status (state, last_error).  After every case the test also
checks that

  * the postmaster is the same process (pid and pg_postmaster_start_time unchanged) and the server
    log has no crash ("terminated by signal", PANIC, TRAP, a worker that exited with an error);
  * the case's consumer ran one worker process throughout (a worker that dies and is restarted
    counts as a failure);
  * nothing is lost: good records of the same batch are applied, bad ones parked and acked;
    replies that are not usable are neither acked nor nacked, and their messages come back;
  * the worker keeps working: once the hostile input stops, a probe record goes through.

Each case is one pytest test, test_case[<name>], so a failure names its case.  The cases run
--hostile-jobs (4) at a time, each with its own consumer, in the background as soon as the first
test starts; the heavy ones (bodies of tens of MB, timed requests, configuration changes) one by
one afterwards.  Each test waits for its own case.

Cases that fail because of a known bug of the extension are listed in KNOWN_FAILURES with the
observed behaviour; they are marked xfail (reported without failing the suite), and a known
failure that passes shows as XPASS so that the list is kept honest.

    /usr/bin/python3 -m pytest test/test_hostile.py [-k utf8] [--hostile-jobs N] [--keep]
    /usr/bin/python3 -m pytest test/test_hostile.py --collect-only -q      (the cases)
"""

import base64
import concurrent.futures
import json
import os
import re
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pgcluster  # noqa: E402

TOKEN = "hostile-token"
COLLECTION = "stripe:customer"
TABLE = "public.hostile"
CLUSTER_SETTINGS = dict(pgcluster.PRELOAD_SETTINGS, **{
    # fast cases: a /next may take wait_for + 2 s; retries wait at most 0.5 s
    "sequin_sync.poll_margin": "'2s'",
    "sequin_sync.backoff_max": "'500ms'",
    "sequin_sync.connect_timeout": "'2s'",
    "sequin_sync.max_response_size": "'16MB'",
})
CLUSTER_PREFIX = "sequin_hostile_"
MAX_RESPONSE = 16 * 1024 * 1024
WAIT_FOR = "200 milliseconds"
ACK_WAIT_MS = 1000          # the fake delivers an unacknowledged message again after this
CASE_TIMEOUT = 30

SCHEMA = f"""
CREATE EXTENSION sequin_sync;
CREATE TABLE {TABLE} (
    id          text PRIMARY KEY,
    updated_idx bigint,
    deleted     boolean,
    email       text,
    note        text,
    amount      numeric,
    data        jsonb
);
CREATE TABLE public.hostile_stream (
    id             text PRIMARY KEY,
    updated_idx    bigint,
    deleted        boolean,
    email          text,
    note           text,
    amount         numeric,
    data           jsonb,
    sequin_version numeric
);
"""

# A known failure: case name -> what is wrong (observed vs expected).  Filled from real runs.
KNOWN_FAILURES = {
    # Fixed, and kept as ordinary cases: ack-during-other-create and ack-during-reload (a
    # configuration change or reload aborted every worker's ack in flight), header-200kb (an
    # oversized header showed as "out of memory").
}


# --------------------------------------------------------------------------------------------
# Building records and replies
# --------------------------------------------------------------------------------------------

def j(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def rec(rid, data=b'{"email":"x"}', idx=b"1", extra=b"", coll=COLLECTION):
    """A record's exact bytes; every argument is raw JSON text (bytes) except rid and coll."""
    return (b'{"id":' + (j(rid) if isinstance(rid, str) else rid) + b',"collection_id":' + j(coll)
            + b',"updated_idx":' + idx + b',"deleted":false' + extra + b',"data":' + data + b"}")


def good(case, n):
    return rec(f"{case}/g{n}", j({"email": f"g{n}@example.com"}))


def text(s):
    return {"text": s}


def b64(b):
    return {"b64": base64.b64encode(b).decode()}


REPLY = {"reply": True}


class Case:
    """One hostile input and its expected outcome.

    records: raw record bytes published to the fake, in order (all in one batch);
    script:  scripted /next replies (fake_sequin SCRIPT_STEP dicts);
    expect:  "applied"  - the reply is used: every published message acked, nothing nacked;
             "refused"  - the reply is not used: nothing applied, no ack or nack, the messages
                          are delivered again (redelivered > 0) and stay outstanding;
             "retried"  - a transient failure: the scripted replies fail, then the messages are
                          applied and acked (after being delivered again if they were sent);
             "ignored"  - the reply is an empty/odd but valid one: nothing happens, no error.
    rows:    {id: {column: value}} that must be in the table (columns: updated_idx, deleted,
             email, note_len, note_head, amount, data_len, data_head); rows_absent: ids that
             must not be;
    parked:  [(id or record_text prefix, error (exact, or prefix when it ends in "..."))];
    state:   the states status may show while the case runs (one of them must be seen);
    error:   last_error: exact, prefix "...", or re.Pattern; None: last_error must stay NULL.
    check:   extra check(ctx) -> (ok, detail).
    """

    def __init__(self, name, what, records=(), script=(), expect="applied", rows=None,
                 rows_absent=(), parked=(), state=None, error=None, check=None, batch_size=100,
                 probe=True, alone=False, during=None, faults=None, ack_wait_ms=ACK_WAIT_MS,
                 timeout=CASE_TIMEOUT, stream=False):
        self.name = name
        # a Sequin Stream consumer: records are raw data objects (messages), the rows go to
        # STREAM_TABLE, a dead letter is named by its message's record id
        self.stream = stream
        self.table = STREAM_TABLE if stream else TABLE
        self.what = what
        self.records = list(records)
        self.script = list(script)
        self.expect = expect
        self.rows = rows or {}
        self.rows_absent = list(rows_absent)
        self.parked = list(parked)
        self.state = state
        self.error = error
        self.check = check
        self.batch_size = batch_size
        self.probe = probe
        self.faults = faults
        self.ack_wait_ms = ack_wait_ms
        self.timeout = timeout
        # during(ctx): runs while the case runs (in its own thread), e.g. to change other consumers
        self.during = during
        # Run alone (after the concurrent ones): cases with tens of MB on the wire, cases that
        # time requests, and cases that change configuration themselves.  A configuration change
        # of any consumer (create/alter/drop) ends every worker's request in flight (see
        # KNOWN_FAILURES), which would cut a timed request short.
        self.alone = alone or during is not None or sum(len(r) for r in self.records) > 5_000_000 or any(
            p.get("repeat", 1) > 5_000_000 for st in self.script for p in (st.get("body") or []))


def rc(name, what, bad, outcome, value=None, **kw):
    """A record case: [good 1, bad, good 2] in one batch.

    outcome "park": the bad record is parked with error `value`, the good ones applied, all acked.
    outcome "store": the bad record is applied; `value` is its expected row.
    outcome "refuse": the whole reply is refused with last_error `value`: nothing applied or acked,
    all three delivered again."""
    bad_id = f"{name}/bad"
    records = [good(name, 1), bad(bad_id) if callable(bad) else bad, good(name, 2)]
    goods = {f"{name}/g1": {"email": "g1@example.com"}, f"{name}/g2": {"email": "g2@example.com"}}
    if outcome == "park":
        pid = kw.pop("parked_as", bad_id)
        return Case(name, what, records, expect="applied", rows=goods, rows_absent=[bad_id],
                    parked=[(pid, value)], state=kw.pop("state", {"running", "idle"}), **kw)
    if outcome == "store":
        rows = dict(goods)
        rows[kw.pop("stored_as", bad_id)] = value
        return Case(name, what, records, expect="applied", rows=rows, state={"running", "idle"}, **kw)
    if outcome == "refuse":
        return Case(name, what, records, expect="refused", rows_absent=list(goods) + [bad_id],
                    state={"error"}, error=value, **kw)
    raise ValueError(outcome)


def sticky(*steps):
    """Scripted steps that answer every /next until the case is over."""
    out = [dict(s) for s in steps]
    out[-1]["times"] = -1
    return out


def fixed(body, status=200, **kw):
    """A step with a fixed body (bytes or str)."""
    step = {"status": status, "body": [b64(body) if isinstance(body, bytes) else text(body)]}
    step.update(kw)
    return step


def bad_reply(name, what, body, error, **kw):
    """A reply that is not a usable /next reply, sent until the case ends: status must say so
    (state error); nothing is acked or nacked; the published records stay outstanding."""
    return Case(name, what, [good(name, 1)], script=sticky(fixed(body, **kw)), expect="refused",
                rows_absent=[f"{name}/g1"], state={"error"}, error=error)


def transient(name, what, steps, error, state=("backoff",), times=-1, **kw):
    """Failing replies, then ordinary ones: the records get through.  The failing steps are
    served until status has shown the expected state and error (times=-1), then the script is
    cleared; with times=1 a failure is served once, too briefly for its state to be observed
    reliably: only last_error is checked then."""
    if times == 1:
        state = None
    steps = [dict(s, times=times) for s in steps]
    return Case(name, what, [good(name, 1), good(name, 2)], script=steps, expect="retried",
                rows={f"{name}/g1": {"email": "g1@example.com"}, f"{name}/g2": {"email": "g2@example.com"}},
                state=set(state) if state else None, error=error, **kw)


HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad "
            b"Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
HTML_LOGIN = (b"<!DOCTYPE html><html><head><title>Sign in to the corporate proxy</title></head><body>"
              b"<form action=/login><input name=user></form></body></html>")
DEEP = 100_000
TEN_MB = 10_000_000


def deep_array(n):
    return b"[" * n + b"]" * n


def deep_object(n):
    return b'{"a":' * n + b"1" + b"}" * n


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------

OVER_MAX = f"receive failed: the response is larger than the limit of {MAX_RESPONSE} bytes"
NUL_ERR = 'column "email": unsupported Unicode escape sequence (\\u0000 cannot be converted to text.)'
IDX_ERR = 'record field "updated_idx" must be an integer between -9223372036854775808 and 9223372036854775807'
UTF8_ERR = "record cannot be decoded: invalid UTF-8 in string"
SURROGATE_ERR = "record cannot be decoded: invalid unicode surrogate pair in string"


def big_response_check(limit_factor=2):
    def check(ctx):
        log = ctx.script_log()
        big = [e for e in log if (e.get("body_length") or 0) > MAX_RESPONSE]
        if not big:
            return False, f"no oversized reply was served: {log}"
        worst = max(e["bytes_sent"] for e in big)
        ok = all(e["client_closed"] or not e["finished"] for e in big) and worst < limit_factor * MAX_RESPONSE
        return ok, (f"the fake sent at most {worst} of {big[0]['body_length']} bytes before the worker "
                    f"hung up" + ("" if ok else f": {big}"))
    return check


def parked_text(expected):
    """The one dead letter keeps the record as received, in record_text (bytes that are not UTF-8
    as \\udcXX escapes)."""
    def check(ctx):
        got = ctx.cluster.query_json(
            f"SELECT record_text, record IS NULL AS no_jsonb FROM sequin_sync.dead_letters WHERE consumer = '{ctx.cid}'")
        return got == [{"record_text": expected, "no_jsonb": True}], f"dead letter {got}"
    return check


def hung_up_check(max_bytes):
    def check(ctx):
        # a step is logged when the fake notices the hang-up: at its next write
        deadline = time.monotonic() + 6
        log = ctx.script_log()
        while not log and time.monotonic() < deadline:
            time.sleep(0.2)
            log = ctx.script_log()
        if not log:
            return False, "nothing served"
        e = log[0]
        ok = (e["client_closed"] or not e["finished"]) and e["bytes_sent"] <= max_bytes
        return ok, f"bytes sent {e['bytes_sent']} of {e['body_length']}, client closed {e['client_closed']}"
    return check


def trap_untouched(ctx):
    st = ctx.fake.http("GET", "/admin/consumers/trap/stats")
    return st["next_requests"] == 0, f"requests at the redirect target: {st['next_requests']}"


def tokens_check(expected_acked):
    """The acks the fake received carry exactly these (fabricated) tokens."""
    def check(ctx):
        toks = ctx.fake.http("GET", f"/admin/consumers/{ctx.cid}/script")["tokens"]
        acked = sorted(t for e in toks if e["kind"] == "ack" for t in e["tokens"] if not t.startswith("MTYy"))
        nacked = [t for e in toks if e["kind"] == "nack" for t in e["tokens"]]
        ok = acked == sorted(expected_acked) and not nacked
        return ok, f"acked fabricated tokens {acked}, nacked {nacked}"
    return check


# --------------------------------------------------------------------------------------------
# Sequin Stream: change messages and /receive replies
# --------------------------------------------------------------------------------------------

STREAM_TABLE = "public.hostile_stream"
STREAM_SOURCE = "public.src"
STREAM_WAIT_FOR = "500 milliseconds"     # Sequin's smallest wait but 0
EMBED_ID = "0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11"    # a good message inside a scripted reply
EMBED_ID2 = "6f9619ff-8b86-4011-b42d-00c04fc964ff"
KEY_ERR = 'message record has no value for key column "id" of table ...'
BAD_VERSION = ('message metadata "commit_lsn" must be an integer between 0 and 18446744073709551615 and '
               '"commit_idx" one between 0 and 4294967295')


def smeta(lsn=b"100", idx=b"0", schema=b'"public"', table=b'"src"', extra=b""):
    """A message's metadata object, every value raw JSON text (None leaves it out)."""
    parts = []
    for k, v in ((b"table_schema", schema), (b"table_name", table), (b"commit_lsn", lsn), (b"commit_idx", idx)):
        if v is not None:
            parts.append(b'"' + k + b'":' + v)
    parts.append(b'"commit_timestamp":"2026-11-01T10:00:00.000000Z","idempotency_key":"k","record_pks":[]')
    return b"{" + b",".join(parts) + extra + b"}"


def smsg(rid=None, record=None, action=b'"insert"', changes=b"null", metadata=None, **md):
    """A change message's exact bytes: record (raw) defaults to {"id": rid, "email": "x"}."""
    if record is None:
        record = b'{"id":' + j(rid) + b',"email":"x"}'
    parts = [b'"record":' + record]
    if changes is not None:
        parts.append(b'"changes":' + changes)
    if action is not None:
        parts.append(b'"action":' + action)
    if metadata is None:
        metadata = smeta(**md)
    if metadata is not False:
        parts.append(b'"metadata":' + metadata)
    return b"{" + b",".join(parts) + b"}"


def sgood(case, n, lsn=None):
    rid = f"{case}/g{n}"
    return smsg(rid, j({"id": rid, "email": f"g{n}@example.com"}), lsn=str(lsn or 1000 + n).encode())


def sitem(ack_id, data):
    """One /receive item's bytes: data is raw JSON text, or None for an item without "data"."""
    return b'{"ack_id":' + j(ack_id) + (b',"data":' + data if data is not None else b"") + b"}"


def sreply(*items):
    return b'{"data":[' + b",".join(items) + b"]}"


def src_case(name, what, bad, outcome, value=None, **kw):
    """A stream message case: [good 1, bad, good 2] published in one batch, as rc() does for
    records.  outcome "park": the bad message is parked with error `value` (parked_as: the
    dead letter's record id, or "{" for one kept as text), the good ones applied, all acked."""
    bad_id = f"{name}/bad"
    records = [sgood(name, 1), bad(bad_id) if callable(bad) else bad, sgood(name, 2)]
    goods = {f"{name}/g1": {"email": "g1@example.com"}, f"{name}/g2": {"email": "g2@example.com"}}
    if outcome == "park":
        pid = kw.pop("parked_as", bad_id)
        return Case(name, what, records, expect="applied", rows=goods, rows_absent=[bad_id],
                    parked=[(pid, value)], state=kw.pop("state", {"running", "idle"}), stream=True, **kw)
    if outcome == "store":
        rows = dict(goods)
        rows[kw.pop("stored_as", bad_id)] = value
        return Case(name, what, records, expect="applied", rows=rows, state={"running", "idle"}, stream=True, **kw)
    raise ValueError(outcome)


def nothing_acked(ctx):
    """No ack or nack carried the ids of a refused scripted reply."""
    toks = ctx.fake.http("GET", f"/admin/consumers/{ctx.cid}/script")["tokens"]
    bad = [e for e in toks if any(t.lower() in (EMBED_ID, EMBED_ID2) for t in e["tokens"])]
    return not bad, f"acks/nacks of the refused reply's ids: {bad}"


def sbad_reply(name, what, body, error, truncate=None, **kw):
    """A /receive reply the worker must refuse whole, sent until the case ends; it holds a good
    message (EMBED_ID, id <name>/embedded) that must be neither applied nor acked.  One good
    message is published: it stays outstanding, and arrives (with the probe) once the script
    stops."""
    body = body.replace(b"@EMBED@", sitem(EMBED_ID, smsg(f"{name}/embedded", lsn=b"900")))
    if truncate is not None:
        body = body[:truncate]
    return Case(name, what, [sgood(name, 1)], script=sticky(dict(fixed(body, **kw), op="receive")),
                expect="refused", rows_absent=[f"{name}/g1", f"{name}/embedded"], state={"error"}, error=error,
                check=nothing_acked, stream=True)


def acked_ids_check(expected, once=False):
    """The acks the fake received carry exactly these scripted ids (besides its own), no nack;
    once: each at least once (an id sent twice may be acked twice: Sequin takes that)."""
    def check(ctx):
        toks = ctx.fake.http("GET", f"/admin/consumers/{ctx.cid}/script")["tokens"]
        mine = {EMBED_ID, EMBED_ID2}
        acked = sorted(t.lower() for e in toks if e["kind"] == "ack" for t in e["tokens"] if t.lower() in mine)
        if once:
            acked = sorted(set(acked))
        nacked = [t for e in toks if e["kind"] == "nack" for t in e["tokens"]]
        ok = acked == sorted(expected) and not nacked
        return ok, f"acked scripted ids {acked}, nacked {nacked}"
    return check


def sitem_case(name, what, items, parked, rows, acked, once=False, **kw):
    """A scripted reply (served once) whose items are usable one by one: the good ones applied,
    the bad ones parked, every id acked; then one published good message still goes through."""
    body = sreply(*items)
    allrows = {f"{name}/g1": {"email": "g1@example.com"}}
    allrows.update(rows)
    return Case(name, what, [sgood(name, 1)], script=[{"op": "receive", "body": [b64(body)]}], expect="applied",
                rows=allrows, parked=parked, state={"running", "idle"}, check=acked_ids_check(acked, once),
                stream=True, **kw)


def good_meanwhile(rid):
    """A good message published now is applied and acked although the poison one stays."""
    def check(ctx):
        ctx.fake.http("POST", f"/admin/consumers/{ctx.cid}/publish_raw",
                      {"messages": [b64(smsg(rid, j({"id": rid, "email": "meanwhile"}), lsn=b"1600"))]})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            s = ctx.stats()
            n = ctx.cluster.scalar(f"SELECT count(*) FROM {STREAM_TABLE} WHERE id = '{rid}'")
            if n == "1" and s["acked"] == 1:
                return True, "the good message went through; the oversized one was never acked"
            time.sleep(0.2)
        return False, f"the good message was not applied and acked: {describe(ctx.status(), ctx.stats())}"
    return check


def build_stream_cases():
    C = []
    add = C.append

    # -- replies that cannot be trusted: refused whole, nothing acked or applied ---------------
    add(sbad_reply("stream-reply-html", "a proxy's HTML page instead of a /receive reply", HTML_LOGIN,
                   "bad reply: invalid JSON at byte ..."))
    add(sbad_reply("stream-reply-truncated", "a reply cut off in the middle of its first message",
                   sreply(b"@EMBED@"), "bad reply: invalid JSON at byte ...", truncate=120))
    add(sbad_reply("stream-reply-array", "the reply is an array of items", b"[@EMBED@]",
                   "bad reply: reply is not a JSON object"))
    add(sbad_reply("stream-reply-string", "the reply is a JSON string", b'"@EMBED@"'.replace(b"@EMBED@", b"x"),
                   "bad reply: reply is not a JSON object"))
    add(sbad_reply("stream-reply-no-data", "no data array (messages under another name)", b'{"messages":[@EMBED@]}',
                   'bad reply: reply has no "data" array'))
    add(sbad_reply("stream-reply-data-object", "data is one item, not an array", b'{"data":@EMBED@}',
                   'bad reply: reply has no "data" array'))
    add(sbad_reply("stream-reply-data-null", "data is null", b'{"data":null}', 'bad reply: reply has no "data" array'))
    add(sbad_reply("stream-item-no-ack-id", "an item without ack_id, after a good one",
                   sreply(b"@EMBED@", b'{"data":' + smsg("stream-item-no-ack-id/x", lsn=b"901") + b"}"),
                   'bad reply: item 1 has no "ack_id" string'))
    add(sbad_reply("stream-item-ack-id-not-uuid", "a v1 ack token where a UUID belongs",
                   sreply(b"@EMBED@", sitem("MTYyeJ7abUjl1pO", smsg("stream-item-ack-id-not-uuid/x", lsn=b"901"))),
                   "bad reply: item 1 ..."))
    add(sbad_reply("stream-item-ack-id-number", "ack_id is a number",
                   sreply(b"@EMBED@", b'{"ack_id":12345,"data":' + smsg("stream-item-ack-id-number/x", lsn=b"901") + b"}"),
                   'bad reply: item 1 has no "ack_id" string'))
    add(sbad_reply("stream-item-ack-id-braces", "a UUID in braces",
                   sreply(b"@EMBED@", sitem("{" + EMBED_ID2 + "}", smsg("stream-item-ack-id-braces/x", lsn=b"901"))),
                   "bad reply: item 1 ..."))
    add(sbad_reply("stream-item-ack-id-utf8", "invalid UTF-8 in an ack_id",
                   sreply(b"@EMBED@", b'{"ack_id":"' + EMBED_ID2[:-1].encode() + b'\xff","data":{}}'),
                   "bad reply: ..."))
    add(sbad_reply("stream-item-number", "an item that is not an object", sreply(b"@EMBED@", b"7"),
                   "bad reply: item 1 ..."))
    add(sbad_reply("stream-reply-v1-shape", "a Generation 1 /next reply (ack_token, record)",
                   b'{"data":[{"ack_token":"MTYy","record":{"id":"x"}}]}', 'bad reply: item 0 has no "ack_id" string'))
    add(sbad_reply("stream-reply-deep", f"a reply nested {DEEP:,} levels deep", b'{"data":' + deep_array(DEEP) + b"}",
                   "bad reply: ..."))

    # -- items that cost only themselves: parked and acked with the rest -------------------
    emb = "stream-item-no-data/embedded"
    add(sitem_case("stream-item-no-data", "an item without \"data\", next to a good one",
                   [sitem(EMBED_ID, smsg(emb, lsn=b"900")), sitem(EMBED_ID2, None)],
                   parked=[(None, 'item has no "data"')], rows={emb: {"email": "x"}}, acked=[EMBED_ID, EMBED_ID2]))
    emb = "stream-item-data-null/embedded"
    add(sitem_case("stream-item-data-null", '"data": null',
                   [sitem(EMBED_ID, smsg(emb, lsn=b"900")), sitem(EMBED_ID2, b"null")],
                   parked=[(None, "message is not a JSON object")], rows={emb: {"email": "x"}},
                   acked=[EMBED_ID, EMBED_ID2]))
    emb = "stream-same-ack-id-twice/embedded"
    add(sitem_case("stream-same-ack-id-twice", "one ack_id on two different messages in one reply",
                   [sitem(EMBED_ID, smsg(emb, lsn=b"900")),
                    sitem(EMBED_ID, smsg("stream-same-ack-id-twice/other", lsn=b"901"))],
                   parked=[], rows={emb: {"email": "x"}, "stream-same-ack-id-twice/other": {"email": "x"}},
                   acked=[EMBED_ID], once=True))
    add(Case("stream-duplicate-delivery", "the same message twice in one batch under its one ack_id (fault "
             "\"duplicate\"): applied once, acked", [sgood("stream-duplicate-delivery", n) for n in (1, 2, 3)],
             faults={"duplicate": 1.0}, rows={f"stream-duplicate-delivery/g{n}": {"email": f"g{n}@example.com"}
                                              for n in (1, 2, 3)},
             state={"running", "idle"}, stream=True))

    add(src_case("stream-data-string", 'the item\'s data is a string', b'"insert"', "park",
                 "message is not a JSON object", parked_as=None))
    add(src_case("stream-data-array", "the item's data is an array of messages",
                 lambda i: b"[" + smsg(i) + b"]", "park", "message is not a JSON object", parked_as=None))
    add(src_case("stream-transformed", "a transform's output: the record alone",
                 lambda i: j({"id": i, "email": "t"}), "park",
                 'message has no "action" and no "metadata": the Sequin Stream sink has a transform, and '
                 'sequin_sync needs the messages as Sequin sends them without one'))
    add(src_case("stream-action-unknown", '"action": "upsert"', lambda i: smsg(i, action=b'"upsert"'), "park",
                 'message field "action" must be "insert", "update", "delete" or "read"'))
    add(src_case("stream-action-upper", '"action": "INSERT"', lambda i: smsg(i, action=b'"INSERT"'), "park",
                 'message field "action" must be "insert", "update", "delete" or "read"'))
    add(src_case("stream-action-number", '"action": 1', lambda i: smsg(i, action=b"1"), "park",
                 'message field "action" must be "insert", "update", "delete" or "read"'))
    add(src_case("stream-action-missing", "no action", lambda i: smsg(i, action=None), "park",
                 'message has no "action"'))
    add(src_case("stream-metadata-missing", "no metadata", lambda i: smsg(i, metadata=False), "park",
                 'message has no "metadata" object'))
    add(src_case("stream-metadata-string", '"metadata": "public.src"', lambda i: smsg(i, metadata=b'"public.src"'),
                 "park", 'message has no "metadata" object'))
    add(src_case("stream-table-number", '"table_name": 5', lambda i: smsg(i, table=b"5"), "park",
                 'message metadata must have "table_schema" and "table_name" strings'))
    add(src_case("stream-schema-missing", "no table_schema", lambda i: smsg(i, schema=None), "park",
                 'message metadata must have "table_schema" and "table_name" strings'))
    add(src_case("stream-table-nul", '"table_name": "src\\u0000x" (the message is kept as text: jsonb has no \\u0000)',
                 lambda i: smsg(i, table=b'"src\\u0000x"'), "park",
                 'message metadata must have "table_schema" and "table_name" strings', parked_as="{"))
    add(src_case("stream-table-unmapped", "a table of the source that is not mapped",
                 lambda i: smsg(i, table=b'"other"'), "park",
                 re.compile(r'^collection "public\.other" is not mapped for consumer "h\d+"$')))
    add(src_case("stream-lsn-string", '"commit_lsn": "1000" (a number as a string)',
                 lambda i: smsg(i, lsn=b'"1000"'), "park", BAD_VERSION))
    add(src_case("stream-lsn-negative", '"commit_lsn": -1', lambda i: smsg(i, lsn=b"-1"), "park", BAD_VERSION))
    add(src_case("stream-lsn-over-uint64", '"commit_lsn": 2^64', lambda i: smsg(i, lsn=b"18446744073709551616"),
                 "park", BAD_VERSION))
    add(src_case("stream-lsn-fraction", '"commit_lsn": 1000.5', lambda i: smsg(i, lsn=b"1000.5"), "park", BAD_VERSION))
    add(src_case("stream-lsn-exponent", '"commit_lsn": 1e3', lambda i: smsg(i, lsn=b"1e3"), "park", BAD_VERSION))
    add(src_case("stream-idx-over-uint32", '"commit_idx": 2^32', lambda i: smsg(i, idx=b"4294967296"), "park",
                 BAD_VERSION))
    add(src_case("stream-version-null", "a change with commit_lsn null", lambda i: smsg(i, lsn=b"null"), "park",
                 'message has no version: metadata.commit_lsn and metadata.commit_idx are null in a change '
                 '(Sequin 0.9 or later sends them)'))
    add(src_case("stream-read-with-version", "a read with a commit_lsn",
                 lambda i: smsg(i, action=b'"read"', lsn=b"5", idx=b"null"), "park",
                 "read message has a commit_lsn or commit_idx: Sequin sends backfill reads without a version"))
    add(src_case("stream-version-max", "commit_lsn 2^64-1 and commit_idx 2^32-1: stored exactly",
                 lambda i: smsg(i, lsn=b"18446744073709551615", idx=b"4294967295"), "store",
                 {"sequin_version": "79228162514264337593543950335"}))
    add(src_case("stream-record-array", '"record": []', lambda i: smsg(record=b"[]"), "park",
                 'message has no "record" object', parked_as=None))
    add(src_case("stream-changes-string", '"changes": "x" in an update',
                 lambda i: smsg(i, action=b'"update"', changes=b'"x"'), "park",
                 'message field "changes" must be an object or null'))
    add(src_case("stream-key-missing", "a record without its key field",
                 lambda i: smsg(record=b'{"email":"nokey"}'), "park",
                 KEY_ERR, parked_as=None))
    add(src_case("stream-key-null", "a record whose key is null",
                 lambda i: smsg(record=b'{"id":null,"email":"nokey"}'), "park",
                 KEY_ERR, parked_as=None))
    add(src_case("stream-key-object", "a record whose key is an object",
                 lambda i: smsg(record=b'{"id":{"v":1},"email":"nokey"}'), "park", KEY_ERR,
                 parked_as='{"v": 1}'))
    add(src_case("stream-utf8-ff", "invalid UTF-8 in a record value",
                 lambda i: smsg(i, record=b'{"id":' + j(i) + b',"email":"a\xffb"}'), "park",
                 "message cannot be decoded: invalid UTF-8 in string", parked_as="{"))
    add(src_case("stream-utf8-in-metadata", "invalid UTF-8 in the table name",
                 lambda i: smsg(i, table=b'"sr\xffc"'), "park",
                 "message cannot be decoded: invalid UTF-8 in string", parked_as="{"))
    add(src_case("stream-nul-in-value", "\\u0000 in a text value", lambda i: smsg(i, record=b'{"id":' + j(i)
                                                                           + b',"email":"a\\u0000b"}'),
                 "park", NUL_ERR, parked_as="{"))
    add(src_case("stream-nul-in-key", "\\u0000 in the key", lambda i: smsg(record=b'{"id":"a\\u0000b","email":"k"}'),
                 "park", NUL_ERR.replace('"email"', '"id"'), parked_as="{"))
    add(src_case("stream-deep-record", f"a record value nested {DEEP:,} levels deep",
                 lambda i: smsg(i, record=b'{"id":' + j(i) + b',"data":' + deep_array(DEEP) + b"}"),
                 "park", 'column "data": stack depth limit exceeded', parked_as="{"))
    # -- several messages of one key in one batch ----------------------------------------------
    add(Case("stream-dup-keys-batch", "three changes of one key in one batch, newest in the middle: the newest wins",
             [smsg("stream-dup-keys-batch/k", j({"id": "stream-dup-keys-batch/k", "email": e}), lsn=lsn)
              for e, lsn in (("old", b"10"), ("new", b"30"), ("mid", b"20"))],
             rows={"stream-dup-keys-batch/k": {"email": "new", "sequin_version": str(30 << 32)}},
             state={"running", "idle"}, stream=True))
    add(Case("stream-dup-keys-same-version", "two messages of one key with one version in one batch: one is "
             "applied, both acked",
             [smsg("stream-dup-keys-same-version/k", j({"id": "stream-dup-keys-same-version/k", "email": e}), lsn=b"10")
              for e in ("first", "second")],
             rows={"stream-dup-keys-same-version/k": {"sequin_version": str(10 << 32)}},
             state={"running", "idle"}, stream=True))
    add(Case("stream-insert-then-delete", "an insert and a delete of one key in one batch: no row",
             [smsg("stream-insert-then-delete/k", lsn=b"10"),
              smsg("stream-insert-then-delete/k", action=b'"delete"', lsn=b"11")],
             rows_absent=["stream-insert-then-delete/k"], state={"running", "idle"}, stream=True))
    # -- size ----------------------------------------------------------------------------------
    big = MAX_RESPONSE - 200_000
    add(src_case("stream-huge-message", f"a message of {big:,} bytes, just under the reply limit, with two good ones",
                 lambda i: smsg(i, record=b'{"id":' + j(i) + b',"note":"' + b"n" * big + b'"}'), "store",
                 {"note_len": big}, batch_size=1))
    add(Case("stream-over-limit", "a message over max_response_size: every reply holding it is cut off and "
             "refused, nothing acked; a good message published meanwhile is applied while it is in flight",
             [smsg("stream-over-limit/bad", record=b'{"id":"stream-over-limit/bad","note":"'
                   + b"n" * (MAX_RESPONSE + 1000) + b'"}', lsn=b"1500")],
             expect="refused", rows_absent=["stream-over-limit/bad"], state={"error", "backoff"}, error=OVER_MAX,
             stream=True, batch_size=1, check=good_meanwhile("stream-over-limit/g1")))
    return C


def build_cases():
    C = []
    add = C.append

    # -- invalid UTF-8 and control characters inside records ------------------------------------
    # one record that is not Unicode text costs only itself: parked as received, acked with the rest
    add(rc("utf8-ff", "invalid UTF-8 (byte 0xff) in a string value",
           lambda i: rec(i, b'{"email":"a\xffb"}'), "park", UTF8_ERR, parked_as="{",
           check=parked_text(rec("utf8-ff/bad", b'{"email":"a\\udcffb"}').decode())))
    add(rc("utf8-overlong", "overlong UTF-8 encoding of '/' (0xc0 0xaf) in a string",
           lambda i: rec(i, b'{"email":"\xc0\xaf"}'), "park", UTF8_ERR, parked_as="{"))
    add(rc("utf8-surrogate", "a UTF-16 surrogate encoded as UTF-8 (0xed 0xa0 0x80)",
           lambda i: rec(i, b'{"email":"\xed\xa0\x80"}'), "park", UTF8_ERR, parked_as="{"))
    add(rc("utf8-truncated", "a multi-byte sequence cut short at the end of a string",
           lambda i: rec(i, b'{"email":"\xe2\x82"}'), "park", UTF8_ERR, parked_as="{"))
    add(rc("utf8-in-key", "invalid UTF-8 in an object key",
           lambda i: rec(i, b'{"em\xfeail":"x"}'), "park", UTF8_ERR, parked_as="{"))
    add(rc("utf8-beyond-10ffff", "a 4-byte sequence beyond U+10FFFF (0xf4 0x90 0x80 0x80)",
           lambda i: rec(i, b'{"email":"\xf4\x90\x80\x80"}'), "park", UTF8_ERR, parked_as="{"))
    add(rc("lone-surrogate-escape", "a lone surrogate escape \\ud800 (JSON syntax, but no Unicode character)",
           lambda i: rec(i, b'{"email":"x\\ud800y"}'), "park", SURROGATE_ERR, parked_as="{",
           check=parked_text(rec("lone-surrogate-escape/bad", b'{"email":"x\\ud800y"}').decode())))
    add(rc("lone-low-surrogate-escape", "a lone low surrogate escape \\udc00 (RapidJSON 1.1 made it invalid UTF-8)",
           lambda i: rec(i, b'{"email":"x\\udc00"}'), "park", SURROGATE_ERR, parked_as="{"))
    add(rc("utf8-in-collection", "invalid UTF-8 in the collection_id: parked without a collection",
           lambda i: rec(i).replace(b'"stripe:customer"', b'"stripe:\xffcustomer"'), "park", UTF8_ERR, parked_as="{"))
    add(Case("undecodable-mix", "invalid UTF-8, a lone surrogate and a null record among good ones in one "
             "batch: each bad one parked, the good ones applied, all acked",
             [good("undecodable-mix", 1), rec("undecodable-mix/b1", b'{"email":"\xff"}'), good("undecodable-mix", 2),
              rec("undecodable-mix/b2", b'{"email":"\\udfff"}'), b"null", good("undecodable-mix", 3)],
             rows={f"undecodable-mix/g{n}": {"email": f"g{n}@example.com"} for n in (1, 2, 3)},
             rows_absent=["undecodable-mix/b1", "undecodable-mix/b2"],
             parked=[("{", UTF8_ERR), ("{", SURROGATE_ERR), (None, "record is not a JSON object")],
             state={"running", "idle"}))
    add(Case("record-missing", "an item with its ack_token but no record: parked and acked with the batch",
             script=[fixed(b'{"data":[{"ack_token":"rm-a","record":' + rec("record-missing/a") + b'},'
                           b'{"ack_token":"rm-b"}]}')],
             expect="ignored", state={"running", "idle"}, error=None,
             rows={"record-missing/a": {"email": "x"}}, parked=[(None, 'item has no "record"')],
             check=tokens_check(["rm-a", "rm-b"])))
    add(Case("deleted-no-data", "a soft delete without data changes only the standard columns",
             [rec("deleted-no-data/r", j({"email": "kept"})),
              b'{"id":"deleted-no-data/r","collection_id":"stripe:customer","updated_idx":2,"deleted":true}'],
             rows={"deleted-no-data/r": {"email": "kept", "deleted": True, "updated_idx": 2}},
             state={"running", "idle"}, batch_size=1))
    add(rc("nul-escape-text", "\\u0000 in a string going to a text column",
           lambda i: rec(i, b'{"email":"a\\u0000b"}'), "park", NUL_ERR, parked_as="{"))
    add(rc("nul-escape-jsonb", "\\u0000 in a string kept in the jsonb data column",
           lambda i: rec(i, b'{"email":"ok","other":"x\\u0000y"}'), "park",
           'column "data": unsupported Unicode escape sequence (\\u0000 cannot be converted to text.)',
           parked_as="{"))
    add(rc("nul-escape-id", "\\u0000 in the record id",
           rec(b'"nul-escape-id/bad\\u0000"'),
           "park", "...", parked_as="{"))
    add(rc("nul-escape-key", "\\u0000 in an object key",
           lambda i: rec(i, b'{"email":"ok","k\\u0000":1}'), "park", 'column "data": ...', parked_as="{"))
    add(rc("raw-nul-byte", "a raw NUL byte inside a string (a control character: not JSON)",
           lambda i: rec(i, b'{"email":"a\x00b"}'), "refuse", "bad reply: invalid JSON at byte ..."))
    add(rc("raw-control-char", "a raw 0x01 inside a string",
           lambda i: rec(i, b'{"email":"a\x01b"}'), "refuse", "bad reply: invalid JSON at byte ..."))
    add(rc("bom-in-string", "U+FEFF (a BOM character) inside a string is just a character",
           lambda i: rec(i, '{"email":"\ufeffx"}'.encode()), "store", {"email": "\ufeffx"}))
    add(rc("bom-before-record", "a UTF-8 BOM right before a record object",
           lambda i: b"\xef\xbb\xbf" + rec(i), "refuse", "bad reply: invalid JSON at byte ..."))

    # -- nesting and size ---------------------------------------------------------------------
    add(rc("deep-array-100k", f"data holding arrays nested {DEEP:,} levels deep (too deep for jsonb)",
           lambda i: rec(i, b'{"email":"d","deep":' + deep_array(DEEP) + b"}"), "park",
           'column "data": stack depth limit exceeded', parked_as="{"))
    add(rc("deep-object-100k", f"data holding objects nested {DEEP:,} levels deep (too deep for jsonb)",
           lambda i: rec(i, b'{"email":"d","deep":' + deep_object(DEEP) + b"}"), "park",
           'column "data": stack depth limit exceeded', parked_as="{"))
    add(rc("deep-array-1000", "data nested 1,000 levels deep (deep, but not absurd)",
           lambda i: rec(i, b'{"email":"d","deep":' + deep_array(1000) + b"}"), "store",
           {"email": "d"}))
    add(rc("string-10mb", "a 10 MB string value into a text column",
           lambda i: rec(i, b'{"email":"big","note":"' + b"x" * TEN_MB + b'"}'), "store",
           {"email": "big", "note_len": TEN_MB, "note_head": "x" * 20}))
    add(rc("key-1mb", "a 1 MB object key", lambda i: rec(i, b'{"email":"k","' + b"k" * 1_000_000 + b'":1}'),
           "store", {"email": "k"}))
    add(rc("id-1mb", "a 1 MB record id (beyond a btree entry's limit)",
           lambda i: b'{"id":"id-1mb/' + os.urandom(375_000).hex().encode() + b'","collection_id":"stripe:customer",'
           b'"updated_idx":1,"deleted":false,"data":{"email":"x"}}', "park", "...", parked_as="id-1mb/"))
    add(Case("many-keys", "a record with 100,000 keys in data",
             [rec("many-keys/r", b'{"email":"m",' + b",".join(b'"k%d":%d' % (n, n) for n in range(100_000)) + b"}")],
             rows={"many-keys/r": {"email": "m", "data_len": None}}, state={"running", "idle"}))

    # -- numbers --------------------------------------------------------------------------------
    add(rc("idx-beyond-int64", "updated_idx 9223372036854775808 (int64 max + 1)",
           lambda i: rec(i, idx=b"9223372036854775808"), "park", IDX_ERR))
    add(rc("idx-below-int64", "updated_idx -9223372036854775809",
           lambda i: rec(i, idx=b"-9223372036854775809"), "park", IDX_ERR))
    add(rc("idx-beyond-double", "updated_idx 1e400", lambda i: rec(i, idx=b"1e400"), "park", IDX_ERR))
    add(rc("idx-fraction", "updated_idx 1.5", lambda i: rec(i, idx=b"1.5"), "park", IDX_ERR))
    add(rc("idx-max", "updated_idx 9223372036854775807 (int64 max) is fine",
           lambda i: rec(i, idx=b"9223372036854775807"), "store", {"updated_idx": 9223372036854775807}))
    add(rc("amount-beyond-int64", "a number beyond int64 into numeric stays exact",
           lambda i: rec(i, b'{"email":"n","amount":123456789012345678901234567890}'), "store",
           {"amount": "123456789012345678901234567890"}))
    add(rc("amount-beyond-double", "1e400 into numeric stays exact",
           lambda i: rec(i, b'{"email":"n","amount":1e400}'), "store", {"amount": "1" + "0" * 400}))
    add(rc("amount-beyond-numeric", "1e999999: beyond even numeric's range",
           lambda i: rec(i, b'{"email":"n","amount":1e999999}'), "park", "column ...", parked_as="{"))
    add(rc("nan-literal", "a NaN literal (not JSON)",
           lambda i: rec(i, b'{"email":"n","amount":NaN}'), "refuse", "bad reply: invalid JSON at byte ..."))
    add(rc("infinity-literal", "an Infinity literal (not JSON)",
           lambda i: rec(i, b'{"email":"n","amount":Infinity}'), "refuse", "bad reply: invalid JSON at byte ..."))
    add(rc("minus-infinity-literal", "a -Infinity literal (not JSON)",
           lambda i: rec(i, b'{"email":"n","amount":-Infinity}'), "refuse", "bad reply: invalid JSON at byte ..."))
    add(rc("nan-string", 'the string "NaN" into numeric: numeric\'s own input accepts it',
           lambda i: rec(i, b'{"email":"n","amount":"NaN"}'), "store", {"amount": "NaN"}))

    # -- duplicate keys ---------------------------------------------------------------------------
    add(rc("dup-data-key", "a key twice in data: the last one wins, as in jsonb",
           lambda i: rec(i, b'{"email":"first","email":"second"}'), "store", {"email": "second"}))
    add(Case("dup-id-key", "the record id twice: {\"id\":\"A\",\"id\":\"B\"}",
             [b'{"id":"dup-id-key/A","id":"dup-id-key/B","collection_id":"stripe:customer","updated_idx":1,'
              b'"deleted":false,"data":{"email":"dup"}}'],
             rows={"dup-id-key/B": {"email": "dup"}}, rows_absent=["dup-id-key/A"], state={"running", "idle"}))
    add(Case("dup-idx-key", "updated_idx twice (1, then 5): the last one wins",
             [b'{"id":"dup-idx-key/r","collection_id":"stripe:customer","updated_idx":1,"updated_idx":5,'
              b'"deleted":false,"data":{"email":"dup"}}'],
             rows={"dup-idx-key/r": {"updated_idx": 5}}, state={"running", "idle"}))

    # -- record shapes and standard fields of the wrong type -----------------------------------
    add(rc("data-string", '"data": "nope"', lambda i: rec(i, b'"nope"'), "park",
           'record field "data" must be an object'))
    add(rc("data-array", '"data": []', lambda i: rec(i, b"[]"), "park", 'record field "data" must be an object'))
    add(rc("data-null", '"data": null in a version that is not deleted: parked, it would blank the row',
           lambda i: rec(i, b"null"), "park", 'record has no "data"'))
    add(rc("data-missing", "no data at all in a version that is not deleted: parked",
           lambda i: b'{"id":' + j(i) + b',"collection_id":"stripe:customer","updated_idx":1,"deleted":false}',
           "park", 'record has no "data"'))
    add(rc("record-null", '"record": null: parked, the rest applied and acked', b"null", "park",
           "record is not a JSON object", parked_as=None))
    add(rc("record-array", '"record": [] (an array)', b"[]", "park", "record is not a JSON object", parked_as=None))
    add(rc("record-string", '"record": "x" (a string)', b'"x"', "park", "record is not a JSON object",
           parked_as=None))
    add(rc("idx-string", '"updated_idx": "7"', lambda i: rec(i, idx=b'"7"'), "park", IDX_ERR))
    add(rc("idx-null", '"updated_idx": null', lambda i: rec(i, idx=b"null"), "park", 'record has no "updated_idx"'))
    add(rc("deleted-string", '"deleted": "yes"',
           lambda i: rec(i).replace(b'"deleted":false', b'"deleted":"yes"'), "park",
           'record field "deleted" must be a boolean'))
    add(rc("deleted-number", '"deleted": 1',
           lambda i: rec(i).replace(b'"deleted":false', b'"deleted":1'), "park",
           'record field "deleted" must be a boolean'))
    add(rc("id-number", '"id": 5', rec(b"5"), "park", 'record field "id" must be a non-empty string',
           parked_as="5"))
    add(rc("id-empty", '"id": ""', rec(b'""'), "park", 'record field "id" must be a non-empty string',
           parked_as=""))
    add(rc("id-null", '"id": null', rec(b"null"), "park", 'record has no "id"', parked_as=None))
    add(rc("id-object", '"id": {"a": 1}', rec(b'{"a":1}'), "park",
           'record field "id" must be a non-empty string', parked_as='{"a": 1}'))
    add(rc("collection-missing", "no collection_id",
           lambda i: rec(i).replace(b'"collection_id":"stripe:customer",', b""), "park",
           'record has no "collection_id" or "collection_slug"'))
    add(rc("collection-unmapped", "a collection nobody mapped",
           lambda i: rec(i, coll="stripe:invoice"), "park", "..."))

    # -- the reply's shape ----------------------------------------------------------------------
    add(bad_reply("reply-no-data", "a reply without data", b'{"info":{"num_pending":0}}',
                  'bad reply: reply has no "data" array'))
    add(bad_reply("reply-data-object", "data is an object", b'{"data":{}}', 'bad reply: reply has no "data" array'))
    add(bad_reply("reply-data-null", "data is null", b'{"data":null}', 'bad reply: reply has no "data" array'))
    add(bad_reply("reply-data-string", 'data is the string "[]"', b'{"data":"[]"}',
                  'bad reply: reply has no "data" array'))
    add(bad_reply("reply-array", "the reply is an array", b"[]", "bad reply: reply is not a JSON object"))
    add(bad_reply("reply-null", "the reply is null", b"null", "bad reply: reply is not a JSON object"))
    add(bad_reply("reply-no-ack-token", "an item without ack_token",
                  b'{"data":[{"record":' + rec("reply-no-ack-token/x") + b"}]}",
                  'bad reply: item 0 has no "ack_token" string'))
    add(bad_reply("reply-ack-token-number", "ack_token is a number",
                  b'{"data":[{"ack_token":5,"record":' + rec("reply-ack-token-number/x") + b"}]}",
                  'bad reply: item 0 has no "ack_token" string'))
    add(bad_reply("reply-ack-token-empty", "ack_token is empty",
                  b'{"data":[{"ack_token":"","record":' + rec("reply-ack-token-empty/x") + b"}]}",
                  'bad reply: item 0 has an empty "ack_token"'))
    add(bad_reply("reply-item-number", "an item that is not an object", b'{"data":[1]}',
                  "bad reply: item 0 is not an object"))
    add(bad_reply("reply-event-consumer", "an event consumer's item (event, not record)",
                  b'{"data":[{"ack_token":"t","event":{}}]}',
                  'bad reply: item 0 has an "event" instead of a "record": the consumer is an event '
                  'consumer, not a record consumer'))
    add(bad_reply("reply-empty-200", "an empty body with 200", b"", "bad reply: the body is empty"))
    add(bad_reply("reply-whitespace", "a body of whitespace", b" \r\n\t ", "bad reply: invalid JSON at byte ..."))
    add(bad_reply("reply-trailing-garbage", "a valid reply followed by garbage", b'{"data":[]} <html>',
                  "bad reply: invalid JSON at byte ..."))
    add(bad_reply("reply-two-documents", "two JSON documents", b'{"data":[]}{"data":[]}',
                  "bad reply: invalid JSON at byte ..."))
    add(Case("reply-bom", "a UTF-8 BOM before the reply is skipped (RFC 8259 allows it)",
             [good("reply-bom", 1)], script=[{"body": [b64(b"\xef\xbb\xbf"), REPLY]}], expect="applied",
             rows={"reply-bom/g1": {"email": "g1@example.com"}}, state={"running", "idle"}))
    add(bad_reply("reply-deep-100k", f"a reply nested {DEEP:,} levels deep", deep_array(DEEP),
                  "bad reply: ..."))
    add(bad_reply("reply-deep-data-100k", f"data holding arrays nested {DEEP:,} levels deep",
                  b'{"data":' + deep_array(DEEP) + b"}", "bad reply: ..."))
    add(bad_reply("reply-nan-info", "NaN in info", b'{"data":[],"info":{"num_pending":NaN}}',
                  "bad reply: invalid JSON at byte ..."))
    add(bad_reply("reply-utf8-key", "invalid UTF-8 in a key outside the records", b'{"data":[],"\xff":1}',
                  "bad reply: invalid JSON at byte ..."))
    add(bad_reply("reply-utf8-ack-token", "invalid UTF-8 in an ack_token: the item cannot be acked as sent",
                  b'{"data":[{"ack_token":"t\xff","record":' + rec("reply-utf8-ack-token/x") + b"}]}",
                  "bad reply: invalid JSON at byte 24: invalid UTF-8 in string"))
    add(bad_reply("reply-surrogate-outside", "a lone surrogate in an item, outside its record",
                  b'{"data":[{"ack_token":"t","note":"\\ud800","record":' + rec("reply-surrogate-outside/x") + b"}]}",
                  "bad reply: invalid JSON at byte ..."))
    add(bad_reply("reply-html-200", "a proxy's sign-in page with 200", HTML_LOGIN,
                  "bad reply: invalid JSON at byte ...", content_type="text/html"))
    add(Case("reply-junk-10mb", "a valid empty reply with a 10 MB string beside data",
             script=sticky({"body": [text('{"data":[],"junk":"'), {"text": "j", "repeat": TEN_MB}, text('"}')]}),
             expect="ignored", state={"idle"}, error=None))
    add(Case("reply-pending-beyond-int64", "info.num_pending beyond int64 is ignored, not wrapped",
             script=sticky(fixed(b'{"data":[],"info":{"num_pending":99999999999999999999,"num_ack_pending":1e400}}')),
             expect="ignored", state={"idle"}, error=None,
             check=lambda ctx: (ctx.status()["pending"] in (None, 0), f"pending = {ctx.status()['pending']}")))
    add(Case("reply-dup-data", 'data twice: {"data":[A],"data":[B]}: what is applied is what is acked',
             script=[fixed(b'{"data":[{"ack_token":"dupA","record":' + rec("reply-dup-data/A") + b'}],'
                           b'"data":[{"ack_token":"dupB","record":' + rec("reply-dup-data/B") + b"}]}")],
             expect="ignored", state={"running", "idle"}, error=None,
             rows={"reply-dup-data/B": {"email": "x"}}, rows_absent=["reply-dup-data/A"],
             check=tokens_check(["dupB"])))

    # -- HTTP: status codes, proxies, framing ------------------------------------------------
    add(transient("http-502-html", "a proxy's HTML 502 page", [fixed(HTML_502, 502, content_type="text/html")],
                  "receive failed: HTTP 502..."))
    add(transient("http-503-retry-after-huge", "503 with Retry-After: 99999999999 (capped by backoff_max)",
                  [fixed(b"<html>down</html>", 503, content_type="text/html",
                         headers=[["Retry-After", "99999999999"]])], "receive failed: HTTP 503..."))
    add(transient("http-429-retry-after-garbage", "429 with Retry-After: garbage",
                  [fixed(b'{"summary":"slow down"}', 429, headers=[["Retry-After", "soon\x7f"]])],
                  "receive failed: HTTP 429: slow down"))
    add(transient("http-500-huge-summary", "500 with a 1 MB summary: last_error stays bounded",
                  [{"status": 500, "body": [text('{"summary":"'), {"text": "s", "repeat": 1_000_000}, text('"}')]}],
                  "receive failed: HTTP 500...",
                  check=lambda ctx: (len(ctx.status()["last_error"] or "") <= 2048,
                                     f"last_error is {len(ctx.status()['last_error'] or '')} characters")))
    add(transient("http-500-utf8-summary", "500 whose summary has invalid UTF-8 and \\u0000",
                  [fixed(b'{"summary":"bad \xff\xfe \\u0000 end"}', 500)], "receive failed: HTTP 500..."))
    add(transient("http-500-html-utf8", "500 HTML page with invalid UTF-8 bytes",
                  [fixed(b"<html>\xff\xfe\x00 broken</html>", 500, content_type="text/html")],
                  "receive failed: HTTP 500..."))
    add(Case("http-401-html", "a proxy's HTML 401 page: a configuration error",
             [good("http-401-html", 1)], script=[fixed(b"<html>401 Authorization Required</html>", 401,
                                                      content_type="text/html", times=-1)],
             expect="retried", rows={"http-401-html/g1": {"email": "g1@example.com"}}, state={"error"},
             error="receive failed: HTTP 401..."))
    add(transient("http-407-proxy-auth", "407 Proxy Authentication Required",
                  [fixed(b"<html>proxy auth</html>", 407, content_type="text/html")],
                  "receive failed: HTTP 407..."))
    add(transient("http-204", "204 No Content on /next", [{"status": 204, "framing": "close", "body": []}],
                  "bad reply: the body is empty", state=("error",)))
    for code, loc in ((301, "ftp://127.0.0.1/next"), (302, "file:///etc/passwd"),
                      (307, "http://localhost:{port}/v1/http-consumers/trap/next"),
                      (308, "https://127.0.0.1:{port}/v1/http-consumers/trap/next"),
                      (303, "http://127.0.0.1:{port}/v1/http-consumers/trap/next")):
        add(transient(f"redirect-{code}", f"{code} to {loc.split(':')[0]}://{'another host' if 'localhost' in loc else '...'} (not followed)",
                      [fixed(b"", code, headers=[["Location", loc]])], f"receive failed: HTTP {code}...",
                      check=trap_untouched))
    add(Case("over-max-length", "a reply announcing 64 MB (Content-Length) is refused",
             [good("over-max-length", 1)],
             script=sticky({"body": [REPLY, {"text": " ", "repeat": 64 * 1024 * 1024}]}),
             expect="refused", rows_absent=["over-max-length/g1"], state={"error", "backoff"},
             error=OVER_MAX,
             check=big_response_check()))
    add(Case("over-max-chunked", "a 64 MB chunked reply (no length) is cut off while streaming",
             [good("over-max-chunked", 1)],
             script=sticky({"framing": "chunked", "body": [REPLY, {"text": " ", "repeat": 64 * 1024 * 1024}]}),
             expect="refused", rows_absent=["over-max-chunked/g1"], state={"error", "backoff"},
             error=OVER_MAX,
             check=big_response_check()))
    add(Case("over-max-close", "a 64 MB reply delimited by closing the connection",
             [good("over-max-close", 1)],
             script=sticky({"framing": "close", "body": [REPLY, {"text": " ", "repeat": 64 * 1024 * 1024}]}),
             expect="refused", rows_absent=["over-max-close/g1"], state={"error", "backoff"},
             error=OVER_MAX,
             check=big_response_check()))
    add(transient("trickle-1-byte-per-s", "a server that sends one byte a second (the total timeout ends it)",
                  [{"body": [text('{"data":[]}' + " " * 100)], "trickle_ms": 1000}],
                  re.compile(r"receive failed: .*(time|Timeout)", re.I), times=1,
                  check=hung_up_check(5), alone=True))
    add(transient("no-headers-ever", "a server that accepts and never answers",
                  [{"delay_ms": 4000, "body": [text('{"data":[]}')]}],
                  re.compile(r"receive failed: .*(time|Timeout)", re.I), times=1, alone=True))
    add(transient("closed-mid-body", "the connection closes mid-body (Content-Length promises more)",
                  [{"body": [REPLY], "content_length": 100000, "close_after": 30}],
                  "receive failed: ...", times=1))
    add(transient("closed-mid-chunked", "a chunked reply whose connection closes before the last chunk",
                  [{"body": [REPLY], "framing": "chunked", "close_after": 40}], "receive failed: ...", times=1))
    add(transient("closed-no-reply", "the connection closes before a single byte",
                  [{"raw": text("")}], "receive failed: ..."))
    add(transient("close-framed-truncated", "no length, the connection closes mid-JSON",
                  [{"body": [REPLY], "framing": "close", "close_after": 25}], "bad reply: invalid JSON at byte ...",
                  state=("error",), times=1))
    add(transient("not-http", "a reply that is not HTTP at all", [{"raw": text("SSH-2.0-OpenSSH_9.2\r\n")}],
                  "receive failed: ..."))
    add(transient("bad-chunk-size", "a chunked reply with a malformed chunk size",
                  [{"raw": text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")}],
                  "receive failed: ..."))
    add(transient("header-200kb", "a 200 KB header line (libcurl's limit is 100 KB)",
                  [{"body": [text('{"data":[]}')], "headers": [["X-Big", "h" * 200_000]]}],
                  re.compile(r"^receive failed: .*header"), timeout=8))
    add(transient("headers-64kb", "2000 header lines of 40 bytes: over the worker's 64 KB for all headers",
                  [{"body": [text('{"data":[]}')], "headers": [[f"X-H{i}", "h" * 32] for i in range(2000)]}],
                  "receive failed: the response headers are larger than the limit of 65536 bytes", timeout=8))
    add(Case("content-length-short", "Content-Length shorter than the body: the leftover bytes on the "
             "keep-alive connection fail the next request, which is retried",
             [good("content-length-short", 1)], expect="retried",
             script=[{"body": [text('{"data":[]}  HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}')],
                      "content_length": 11, "times": -1}],
             rows={"content-length-short/g1": {"email": "g1@example.com"}},
             error="receive failed: received HTTP/0.9 when not allowed"))
    # -- configuration changes while an ack is in flight -------------------------------------------
    add(Case("ack-during-other-create", "another consumer is created while this worker's ack is "
             "in flight: the committed batch is still acked once",
             [good("ack-during-other-create", 1)], rows={"ack-during-other-create/g1": {"email": "g1@example.com"}},
             state={"running", "idle"}, error=None, faults={"ack_slow_ms": 1000}, ack_wait_ms=8000, timeout=12,
             during=lambda ctx: change_during_ack(ctx, "ack-during-other-create/g1", "create"),
             check=no_redelivery))
    add(Case("ack-during-reload", "pg_reload_conf() while the ack is in flight: still acked once",
             [good("ack-during-reload", 1)], rows={"ack-during-reload/g1": {"email": "g1@example.com"}},
             state={"running", "idle"}, error=None, faults={"ack_slow_ms": 1000}, ack_wait_ms=8000, timeout=12,
             during=lambda ctx: change_during_ack(ctx, "ack-during-reload/g1", "reload"),
             check=no_redelivery))
    return C


def change_during_ack(ctx, rid, how):
    """Once rid is committed (the worker is now acking, slowly), change the configuration."""
    pgcluster.wait_until("the row", lambda: ctx.cluster.scalar(
        f"SELECT count(*) FROM {TABLE} WHERE id = '{rid}'") == "1", 20, 0.05)
    time.sleep(0.3)
    if how == "create":
        other = ctx.cid + "_other"
        ctx.cluster.psql(f"SELECT sequin_sync.create_consumer('{other}', '{ctx.fake.url('/v1/http-consumers/trap')}', "
                         f"'{TOKEN}', wait_for => '{WAIT_FOR}'); SELECT sequin_sync.drop_consumer('{other}');")
    else:
        ctx.cluster.psql("SELECT pg_reload_conf();")


def no_redelivery(ctx):
    s = ctx.stats()
    return s["redelivered"] == 0 and s["acked"] == 1, (f"delivered {s['delivered']}, redelivered "
                                                       f"{s['redelivered']}, acked {s['acked']}")


# --------------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------------

CRASH = re.compile(r"terminated by signal|\bPANIC:|TRAP:|(?i:segmentation fault)|server process .* was terminated|"
                   r"exited with exit code [1-9]|terminating any other active server processes|"
                   r"database system was interrupted|all server processes terminated")


class Ctx:
    def __init__(self, cluster, fake, cid):
        self.cluster = cluster
        self.fake = fake
        self.cid = cid

    def stats(self):
        return self.fake.http("GET", f"/admin/consumers/{self.cid}/stats")

    def script_log(self):
        return self.fake.http("GET", f"/admin/consumers/{self.cid}/script")["log"]

    def status(self):
        rows = self.cluster.query_json(
            "SELECT state, workers, received, inserted, updated, dead_lettered, acked, pending, last_error, "
            f"last_error_at IS NOT NULL AS has_error FROM sequin_sync.status WHERE consumer = '{self.cid}'")
        return rows[0] if rows else {}


def matches(actual, expected):
    if isinstance(expected, re.Pattern):
        return actual is not None and expected.search(actual) is not None
    if expected is None:
        return actual is None
    if actual is None:
        return False
    if expected.endswith("..."):
        return actual.startswith(expected[:-3])
    return actual == expected


class Runner:
    def __init__(self, cluster, fake):
        self.cluster = cluster
        self.fake = fake
        self.pm_pid = cluster.postmaster_pid()
        self.pm_start = cluster.scalar("SELECT pg_postmaster_start_time()")
        self.concurrent = True

    def wait(self, cond, timeout, interval=0.1):
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v or time.monotonic() > deadline:
                return v
            time.sleep(interval)

    def run(self, case, n):
        """Returns a list of failure strings (empty: passed) and notes."""
        cid = "h%02d" % n
        ctx = Ctx(self.cluster, self.fake, cid)
        fails = []
        notes = []
        log_pos = len(self.cluster.server_log())
        fk = self.fake
        self.fake_consumer(case, cid, case.ack_wait_ms)
        if case.records:
            self.publish(case, cid, case.records)
        if case.faults:
            fk.http("POST", f"/admin/consumers/{cid}/faults", case.faults)
        if case.script:
            steps = json.loads(json.dumps(case.script).replace("{port}", str(fk.port)))
            fk.http("POST", f"/admin/consumers/{cid}/script", {"steps": steps})
        if case.stream:
            endpoint, wait_for, collection = fk.stream_endpoint(cid), STREAM_WAIT_FOR, STREAM_SOURCE
        else:
            endpoint, wait_for, collection = fk.url(f"/v1/http-consumers/{cid}"), WAIT_FOR, COLLECTION
        self.cluster.psql(f"""
BEGIN;
SELECT sequin_sync.create_consumer('{cid}', '{endpoint}', '{TOKEN}', batch_size => {case.batch_size},
    wait_for => '{wait_for}');
SELECT sequin_sync.map_collection('{cid}', '{collection}', '{case.table}');
COMMIT;""")
        published = len(case.records)
        states, pids, errors = set(), set(), set()
        during = None
        if case.during:
            during = concurrent.futures.ThreadPoolExecutor(1)
            during_result = during.submit(case.during, ctx)

        def observe():
            st = ctx.status()
            if st:
                states.add(st["state"])
                if st["last_error"] is not None:
                    errors.add(st["last_error"])
            for line in self.cluster.psql(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'sequin_sync worker' AND "
                    f"application_name LIKE 'sequin_sync {cid}/%'").split():
                pids.add(int(line))
            return st

        def error_seen():
            if case.error is None:
                return True
            return any(matches(e, case.error) for e in errors)

        def state_seen():
            return case.state is None or bool(states & case.state)

        # 1. the hostile part
        if case.expect == "refused":
            def done():
                observe()
                s = fk.http("GET", f"/admin/consumers/{cid}/stats")
                # messages that were sent in a refused reply must come again; a fixed body
                # never takes them from the queue (delivered stays 0)
                redelivered = s["redelivered"] > 0 or s["delivered"] == 0
                return error_seen() and state_seen() and redelivered
        elif case.expect == "retried":
            # until status showed the failure; then the failing replies stop, and every record
            # must get through
            def failure_shown():
                observe()
                return error_seen() and state_seen()

            def done():
                if not failure_shown():
                    return False
                fk.http("POST", f"/admin/consumers/{cid}/script", {"steps": []})
                s = fk.http("GET", f"/admin/consumers/{cid}/stats")
                return s["acked"] >= published and s["outstanding"] == 0
        else:   # applied / ignored
            def done():
                st = observe()
                s = fk.http("GET", f"/admin/consumers/{cid}/stats")
                served = not case.script or len(ctx.script_log()) > 0
                return (served and s["acked"] >= published and s["outstanding"] == 0 and state_seen()
                        and st.get("state") in ("idle", "running") and (st.get("acked") or 0) >= published)
        finished = self.wait(done, case.timeout)
        if during is not None:
            try:
                during_result.result(CASE_TIMEOUT)
            except Exception as e:  # noqa: BLE001
                fails.append(f"the case's action failed: {e!r}")
            during.shutdown()
            finished = finished or self.wait(done, case.timeout)
        time.sleep(0.3)   # let a mistaken ack or a late status change show up
        observe()
        st = ctx.status()
        s = ctx.stats()
        if not finished:
            fails.append(f"timed out after {case.timeout} s waiting for the expected outcome")

        # 2. what status said
        if case.error is None:
            if errors or st.get("last_error") is not None:
                fails.append(f"last_error should stay NULL, saw {sorted(errors)}")
        elif not error_seen():
            fails.append(f"last_error: expected {case.error!r}, saw {sorted(errors)}")
        if not state_seen():
            fails.append(f"state: expected one of {sorted(case.state)}, saw {sorted(states)}")

        # 3. acks, nacks, deliveries
        if case.expect == "refused":
            if s["ack_requests"] or s["nack_requests"]:
                fails.append(f"the refused reply was acked/nacked: {s['ack_requests']} acks, "
                             f"{s['nack_requests']} nacks ({s['acked']} acked)")
            if published and s["outstanding"] != published:
                fails.append(f"outstanding {s['outstanding']}, expected all {published} (nothing acked)")
            if s["delivered"] and not s["redelivered"]:
                fails.append("the messages were not delivered again")
        elif published:
            if s["acked"] != published or s["outstanding"] != 0:
                fails.append(f"acked {s['acked']} of {published}, outstanding {s['outstanding']}")
            if s["nacked"]:
                fails.append(f"{s['nacked']} nacked")
        if case.expect == "retried" and published and case.script and any(
                "reply" in p for st_ in case.script for p in (st_.get("body") or [])) and not s["redelivered"]:
            fails.append("the records of the failed reply were acked (never delivered again)")

        # 4. rows and dead letters
        fails += self.check_rows(case)
        fails += self.check_parked(case, cid)
        if case.check:
            try:
                ok, detail = case.check(ctx)
            except Exception as e:  # noqa: BLE001
                ok, detail = False, repr(e)
            (notes if ok else fails).append(detail)

        # 5. the worker survived, the server too
        if len(pids) != 1:
            fails.append(f"worker processes seen: {sorted(pids)} (expected one, never restarted)")
        fails += self.check_server(log_pos)

        # 6. recovery: the hostile input stops; a probe record gets through.  Messages that a
        # scripted reply kept back are still there and come through too (nothing lost); poison
        # records that make every reply unusable would block the queue forever (as they would at
        # Sequin until max_deliver): they are purged first.
        if case.probe and not fails:
            fk.http("POST", f"/admin/consumers/{cid}/script", {"steps": []})
            poison = case.expect == "refused" and s["delivered"] > 0
            if poison:
                self.fake_consumer(case, cid, ACK_WAIT_MS)
            probe = f"{case.name}/probe"
            if case.stream:
                self.publish(case, cid, [smsg(probe, j({"id": probe, "email": "probe"}), lsn=b"5000")])
            else:
                self.publish(case, cid, [rec(probe, j({"email": "probe"}))])
            want_acked = 1 if poison else published + 1
            ok = self.wait(lambda: ctx.stats()["acked"] >= want_acked and ctx.stats()["outstanding"] == 0
                           and self.cluster.scalar(f"SELECT count(*) FROM {case.table} WHERE id = '{probe}'") == "1", 15)
            if not ok:
                fails.append(f"after the hostile input stopped, the probe record (and the {published} kept "
                             f"back) were not applied and acked within 15 s: {describe(ctx.status(), ctx.stats())}")
            else:
                if not poison and case.expect == "refused":
                    # the records the refused replies kept back arrived now
                    kept = [r for r in case.rows_absent if not r.endswith("/embedded")]
                    fails += self.check_rows(Case(case.name, "", rows={r: {} for r in kept}, stream=case.stream))
                observe()
                if len(pids) != 1:
                    fails.append(f"worker processes seen: {sorted(pids)}")
        # clean up
        self.cluster.psql(f"SELECT sequin_sync.drop_consumer('{cid}');")
        self.wait(lambda: self.cluster.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'sequin_sync worker' AND "
            f"application_name LIKE 'sequin_sync {cid}/%'") == "0", 10)
        fk.http("DELETE", f"/admin/consumers/{cid}")
        return fails, notes, st, s

    def fake_consumer(self, case, cid, ack_wait_ms):
        """The case's consumer in the fake, created empty (or emptied)."""
        doc = {"id": cid, "token": TOKEN, "ack_wait_ms": ack_wait_ms, "purge": True}
        if case.stream:
            doc["protocol"] = "stream"
        self.fake.http("POST", "/admin/consumers", doc)

    def publish(self, case, cid, raws):
        """Records (v1) or data objects (Sequin Stream), byte for byte."""
        key = "messages" if case.stream else "records"
        self.fake.http("POST", f"/admin/consumers/{cid}/publish_raw", {key: [b64(r) for r in raws]})

    def check_rows(self, case):
        ids = list(case.rows) + list(case.rows_absent)
        if not ids:
            return []
        lit = ",".join("'" + i.replace("'", "''") + "'" for i in ids)
        rows = {r["id"]: r for r in self.cluster.query_json(
            "SELECT id, updated_idx, deleted, email, length(note) AS note_len, left(note, 20) AS note_head, "
            "amount::text AS amount, length(data::text) AS data_len, left(data::text, 60) AS data_head"
            + (", sequin_version::text AS sequin_version" if case.stream else "")
            + f" FROM {case.table} WHERE id IN ({lit})")}
        fails = []
        for rid, want in case.rows.items():
            got = rows.get(rid)
            if got is None:
                fails.append(f"row {rid!r} missing")
                continue
            for k, v in want.items():
                if v is None:
                    continue   # just present
                if got[k] != v:
                    g = got[k] if not isinstance(got[k], str) or len(got[k]) < 80 else got[k][:80] + "..."
                    fails.append(f"row {rid!r}: {k} = {g!r}, expected {v!r}")
        for rid in case.rows_absent:
            if rid in rows:
                fails.append(f"row {rid!r} should not be in the table")
        return fails

    def check_parked(self, case, cid):
        # a stream dead letter holds the message: named by its record's id
        name = ("COALESCE(CASE jsonb_typeof(record -> 'record') WHEN 'object' THEN record #>> '{record,id}' END, "
                "CASE jsonb_typeof(record) WHEN 'object' THEN record ->> 'id' END, left(record_text, 60))"
                if case.stream else "COALESCE(record ->> 'id', left(record_text, 60))")
        got = self.cluster.query_json(
            f"SELECT {name} AS id, record IS NULL AS as_text, error, "
            f"sqlstate, attempts FROM sequin_sync.dead_letters WHERE consumer = '{cid}' ORDER BY id")
        fails = []
        want = list(case.parked)
        if len(got) != len(want):
            fails.append(f"dead letters: expected {len(want)}, got {len(got)}: "
                         + "; ".join(f"{g['id'][:60] if g['id'] else g['id']!r}: {g['error']} ({g['sqlstate']})"
                                     for g in got))
            return fails
        for (wid, werr), g in zip(want, got):
            gid = g["id"]
            id_ok = (wid is None and gid is None) or (wid is not None and gid is not None and
                                                     (gid == wid or (wid.endswith("/") or wid == "{") and gid.startswith(wid)))
            if not id_ok:
                fails.append(f"dead letter id {gid!r:.80}, expected {wid!r}")
            if not matches(g["error"], werr):
                fails.append(f"dead letter error {g['error']!r}, expected {werr!r}")
        return fails

    def check_server(self, log_pos):
        fails = []
        try:
            pid = self.cluster.postmaster_pid()
            start = self.cluster.scalar("SELECT pg_postmaster_start_time()")
        except Exception as e:  # noqa: BLE001
            return [f"the server does not answer: {e}"]
        if pid != self.pm_pid or start != self.pm_start:
            fails.append(f"the postmaster restarted (pid {self.pm_pid} -> {pid}, started {self.pm_start} -> {start})")
        new = self.cluster.server_log()[log_pos:]
        hits = [ln for ln in new.splitlines() if CRASH.search(ln)]
        if hits:
            fails.append("server log: " + " | ".join(h[:200] for h in hits[:3]))
        return fails


def describe(st, s):
    return (f"status: state={st.get('state')} last_error={(st.get('last_error') or '')[:160]!r}; "
            f"fake: delivered {s.get('delivered')}, redelivered {s.get('redelivered')}, acked {s.get('acked')}, "
            f"nacked {s.get('nacked')}, outstanding {s.get('outstanding')}")


# --------------------------------------------------------------------------------------------
# The cases as tests
# --------------------------------------------------------------------------------------------

CASES = build_cases() + build_stream_cases()


class Schedule:
    """Runs the selected cases in the background: the light ones `jobs` at a time, then the heavy
    ones (Case.alone) one by one; result(case) waits for one case's outcome."""

    def __init__(self, runner, cases, jobs):
        self.runner = runner
        self.light = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
        self.heavy = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.futures = {}
        light = [(n, c) for n, c in cases if not c.alone]
        for n, c in light:
            self.futures[c.name] = self.light.submit(self.run_one, n, c)
        light_futures = list(self.futures.values())
        for n, c in cases:
            if c.alone:
                self.futures[c.name] = self.heavy.submit(self.run_alone, light_futures, n, c)

    def run_one(self, n, case):
        t = time.monotonic()
        try:
            out = self.runner.run(case, n)
        except Exception as e:  # noqa: BLE001 - a broken case must not stop the others
            out = [f"the case crashed: {e!r}"], [], {}, {}
            self.runner.cluster.psql("SELECT sequin_sync.drop_consumer('h%02d')" % n, check=False)
        return out + (time.monotonic() - t,)

    def run_alone(self, light_futures, n, case):
        concurrent.futures.wait(light_futures)
        self.runner.concurrent = False
        return self.run_one(n, case)

    def result(self, case):
        return self.futures[case.name].result()

    def shutdown(self):
        for f in self.futures.values():
            f.cancel()
        self.light.shutdown(wait=True)
        self.heavy.shutdown(wait=True)


@pytest.fixture(scope="module")
def schedule(cluster, fake, request, say):
    """The cluster's schema, the redirect trap, and the cases this run selected, started."""
    cluster.psql(SCHEMA)
    fake.http("POST", "/admin/consumers", {"id": "trap", "token": TOKEN})
    wanted = {item.callspec.params["case"].name for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")
              and "case" in item.callspec.params}
    numbered = [(n, c) for n, c in enumerate(CASES, 1) if c.name in wanted]
    say(f"hostile: cluster in {cluster.dir} (port {cluster.port}); fake consumer on 127.0.0.1:{fake.port}; "
        f"{len(numbered)} cases")
    sched = Schedule(Runner(cluster, fake), numbered, request.config.getoption("--hostile-jobs"))
    yield sched
    sched.shutdown()


def test_case_table_is_consistent():
    names = [c.name for c in CASES]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names: {dup}"
    unknown = set(KNOWN_FAILURES) - set(names)
    assert not unknown, f"KNOWN_FAILURES names no case: {unknown}"


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=KNOWN_FAILURES[c.name], strict=False)]
                 if c.name in KNOWN_FAILURES else []) for c in CASES])
def test_case(schedule, case):
    fails, notes, st, s, secs = schedule.result(case)
    assert not fails, "\n".join([f"{case.what} ({secs:.1f} s)"] + fails + [describe(st, s)]
                                 + [f"note: {n}" for n in notes])
