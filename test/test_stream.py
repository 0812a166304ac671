"""
test_stream.py - a Sequin Stream consumer through the real worker, against the fake's Sequin
Stream (test/fake_sequin.py, StreamConsumer), with histories from test/gen_stream.py (issue 11,
section 4).

  * mirror: gen_stream histories (single and composite keys; backfill reads, unchanged_toast,
    key changes, key-only deletes; in cursor order and --interleave'd) end in target tables equal
    to gen_stream's `expected`, every column compared (sequin_version included) in the target's
    own types; every message is acknowledged at the fake; the only dead letters are changes
    gen_stream's reference model parks (an unchanged_toast update of a row the backfill has not
    read yet; a later read of the row supersedes them); retry_dead_letters() afterwards removes
    what is left and changes no row (test_a_read_supersedes_... shows the superseding alone);
  * status of a stream consumer: protocol 'stream', pending NULL, source_commit_at the newest
    applied change's commit_timestamp, source_lag its age;
  * a soft-delete stream mapping: deleted rows stay, deleted = true, the rest of the row as it
    was before the delete;
  * no hot loop: while a message is in flight at another client, Sequin's long poll returns at
    once, empty; the worker pauses after such a reply instead of asking again (counted at the
    fake);
  * 401 and 404 are configuration errors (state error, last_error with Sequin's summary) until
    the consumer is fixed; 500s and dropped connections back off and recover.

Histories are delivered with the fake's publish (reads take the watermark's place), or for
--interleave with publish_raw and a cursor per message in delivery order, so that the fake
serves them in exactly the interleaved order (each row keeps its order).  The helpers are used
by test_fault.py's stream fault test too.

    /usr/bin/python3 -m pytest test/test_stream.py [--keep] [-k NAME]
"""

import json
import os
import random
import sys
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pgcluster  # noqa: E402
import gen_stream  # noqa: E402

TOKEN = "stream-e2e-token"
CLUSTER_SETTINGS = dict(pgcluster.PRELOAD_SETTINGS, **{"sequin_sync.backoff_max": "'2s'"})
CLUSTER_PREFIX = "sequin_stream_"
DRAIN_TIMEOUT_S = 60
SYNTHETIC_LSN = 1 << 40         # publish_raw cursors: [SYNTHETIC_LSN + position, 0]


# --------------------------------------------------------------------------------------------
# Helpers (test_fault.py uses them too)
# --------------------------------------------------------------------------------------------

def lit(s):
    return "'" + str(s).replace("'", "''") + "'"


def stream_consumer(cluster, fake, name, mappings, workers=1, batch_size=50, wait_for="1 second",
                    ack_wait_ms=3000, token=TOKEN, endpoint=None):
    """A stream consumer at the fake (its id and name: name) and in sequin_sync, with its
    mappings [(collection, target, map_collection's extra arguments as SQL)], in one transaction
    (no worker pulls before every mapping exists)."""
    fake.stream_consumer(name, TOKEN, ack_wait_ms=ack_wait_ms)
    sql = ["BEGIN;",
           f"SELECT sequin_sync.create_consumer({lit(name)}, {lit(endpoint or fake.stream_endpoint(name))}, "
           f"{lit(token)}, batch_size => {batch_size}, wait_for => {lit(wait_for)}, workers => {workers});"]
    for coll, target, extra in mappings:
        sql.append(f"SELECT sequin_sync.map_collection({lit(name)}, {lit(coll)}, {lit(target)}"
                   f"{', ' + extra if extra else ''});")
    sql.append("COMMIT;")
    cluster.psql("\n".join(sql))


def publish_ordered(fake, cid, messages, start=0):
    """Publishes data objects so that the fake serves them in exactly this order (each group
    keeps its order): publish_raw with the cursor [SYNTHETIC_LSN + start + i, 0] and the group
    Sequin would give (table + record_pks).  The payloads keep their own commit_lsn/commit_idx,
    which is what sequin_sync's version guard reads."""
    parts = [{"text": json.dumps(m, ensure_ascii=False, separators=(",", ":")),
              "group": gen_stream.group_of(m), "cursor": [SYNTHETIC_LSN + start + i, 0]}
             for i, m in enumerate(messages)]
    r = fake.http("POST", f"/admin/consumers/{cid}/publish_raw", {"messages": parts})
    assert r["published"] == len(messages), r
    return r["published"]


def status(cluster, name):
    rows = cluster.query_json(
        "SELECT consumer, state, workers, received, inserted, updated, deleted, skipped, "
        "dead_lettered, acked, pending, last_error, protocol, source_commit_at, "
        "source_lag IS NOT NULL AS has_lag, source_lag > interval '0' AS lag_positive, "
        "(source_commit_at - source_lag) IS NOT NULL AS lag_ok "
        f"FROM sequin_sync.status WHERE consumer = {lit(name)}")
    assert len(rows) == 1, rows
    return rows[0]


def drain(cluster, fake, name, timeout=DRAIN_TIMEOUT_S, log=None):
    """Waits until the fake has nothing outstanding for name, then until its workers are idle
    and sequin_sync.status stops moving for a second.  Returns the fake's stats."""
    t0 = time.monotonic()
    last = [t0]

    def drained():
        st = fake.stream_stats(name)
        if log and time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            log(f"  [{time.monotonic() - t0:5.1f}s] outstanding {st['outstanding']}, "
                f"acked {st['acked']}/{st['published']}")
        return st["outstanding"] == 0
    pgcluster.wait_until(f"every message of {name} to be acknowledged", drained, timeout, 0.2)
    stable = {"key": None, "since": time.monotonic()}

    def settled():
        s = status(cluster, name)
        key = json.dumps({k: v for k, v in s.items() if k not in ("has_lag", "lag_positive")},
                         sort_keys=True)
        now = time.monotonic()
        if key != stable["key"]:
            stable["key"], stable["since"] = key, now
            return False
        return s["state"] == "idle" and now - stable["since"] >= 1.0
    pgcluster.wait_until(f"the workers of {name} to go idle and settle", settled, 30, 0.2)
    return fake.stream_stats(name)


def compare_table(cluster, target, expected, extra_cols=None):
    """The target against expected rows (JSON form, as gen_stream gives them), every column in
    the target's own types (numeric, timestamptz, text[], jsonb ...): {"missing": rows expected
    but not found, "extra": rows found but not expected} (None when none)."""
    doc = json.dumps(expected, ensure_ascii=False)
    tag = "$exp%d$" % random.getrandbits(32)
    assert tag not in doc
    sql = (f"WITH e AS (SELECT * FROM jsonb_populate_recordset(NULL::{target}, {tag}{doc}{tag}::jsonb)) "
           f"SELECT json_build_object("
           f"'missing', (SELECT json_agg(x) FROM (SELECT * FROM e EXCEPT ALL SELECT * FROM {target}) x), "
           f"'extra', (SELECT json_agg(x) FROM (SELECT * FROM {target} EXCEPT ALL SELECT * FROM e) x), "
           f"'rows', (SELECT count(*) FROM {target}))")
    return json.loads(cluster.scalar(sql))


def assert_table_equals(cluster, target, expected, key):
    d = compare_table(cluster, target, expected)
    if d["missing"] or d["extra"]:
        def short(rows):
            out = []
            for r in (rows or [])[:3]:
                out.append({k: (v[:40] + "..." if isinstance(v, str) and len(v) > 40 else v)
                            for k, v in r.items()})
            return out
        missing_keys = {tuple(str(r[c]) for c in key) for r in d["missing"] or []}
        extra_keys = {tuple(str(r[c]) for c in key) for r in d["extra"] or []}
        raise AssertionError(
            f"{target}: {len(d['missing'] or [])} expected rows not found, {len(d['extra'] or [])} "
            f"rows not expected ({d['rows']} rows, {len(expected)} expected); keys only missing "
            f"{sorted(missing_keys - extra_keys)[:5]}, only extra {sorted(extra_keys - missing_keys)[:5]}, "
            f"different {sorted(missing_keys & extra_keys)[:5]}\n  missing e.g. {short(d['missing'])}"
            f"\n  extra e.g. {short(d['extra'])}")
    assert d["rows"] == len(expected)


def model_parks(messages, key_cols):
    """gen_stream's reference model: the indexes of the messages it parks, and of those the ones
    that stay parked (no later read of the same row supersedes them)."""
    _, _, parked = gen_stream.replay(messages, key_cols)
    idx = [i for i, _ in parked]
    stay = []
    for i in idx:
        g = gen_stream.group_of(messages[i])
        if not any(m["action"] == "read" and gen_stream.group_of(m) == g for m in messages[i + 1:]):
            stay.append(i)
    return idx, stay


def dead_letters(cluster, name):
    return cluster.query_json("SELECT collection, record, record_text, error, sqlstate, attempts "
                              f"FROM sequin_sync.dead_letters WHERE consumer = {lit(name)} ORDER BY id")


def cursor_of(data):
    md = data["metadata"]
    return (md["commit_lsn"], md["commit_idx"], md["table_name"], tuple(md["record_pks"]))


def newest_commit_timestamp(messages):
    """The newest commit_timestamp of the changes (reads carry Sequin's clock, not the
    source's), as sequin_sync.status shows it."""
    return max(m["metadata"]["commit_timestamp"] for m in messages if m["action"] != "read")


def same_instant(cluster, a, b):
    return cluster.scalar(f"SELECT {lit(a)}::timestamptz = {lit(b)}::timestamptz") == "t"


def worker_pids(cluster):
    out = cluster.psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'sequin_sync worker'",
                       check=False)
    return {int(x) for x in (out or "").split()}


def stream_requests(fake, cid, kind="receive"):
    return [r for r in fake.http("GET", f"/admin/consumers/{cid}/requests")["requests"]
            if r["kind"] == kind]


def receive_as_client(fake, cid, n=1):
    """One /receive as another client would do it (the messages stay in flight there)."""
    req = urllib.request.Request(fake.stream_endpoint(cid) + "/receive",
                                 data=json.dumps({"max_batch_size": n}).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Accept": "application/json",
                                          "Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["data"]


def ack_as_client(fake, cid, ack_ids, verb="ack"):
    req = urllib.request.Request(fake.stream_endpoint(cid) + "/" + verb,
                                 data=json.dumps({"ack_ids": ack_ids}).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module", autouse=True)
def extension(cluster):
    cluster.psql("CREATE EXTENSION IF NOT EXISTS sequin_sync;")


# --------------------------------------------------------------------------------------------
# Mirroring gen_stream histories
# --------------------------------------------------------------------------------------------

MIRROR_CASES = {
    # id: (composite, interleave, seed, workers)
    "single": (False, False, 11, 1),
    "composite": (True, False, 12, 2),
    "single-interleave": (False, True, 13, 1),
    "composite-interleave": (True, True, 14, 2),
}


@pytest.mark.parametrize("case", list(MIRROR_CASES))
def test_mirror_gen_stream_history(cluster, fake, say, case):
    composite, interleave, seed, workers = MIRROR_CASES[case]
    name = "mirror_" + case.replace("-", "_")
    target = name + "_t"
    g = gen_stream.generate(seed=seed, rows=30, txns=150, composite=composite, interleave=interleave)
    msgs = g["messages"]
    parked_idx, stay_idx = model_parks(msgs, g["key"])
    kinds = {}
    for m in msgs:
        kinds[m["action"]] = kinds.get(m["action"], 0) + 1
    toast = sum(1 for m in msgs if gen_stream.TOAST in m["record"].values())
    keych = sum(1 for m in msgs if m["action"] == "update" and
                any(c in (m["changes"] or {}) for c in g["key"]))
    # the history has what this test is about
    assert kinds.get("read") and kinds.get("delete") and toast and keych and parked_idx, kinds

    cluster.psql(gen_stream.ddl(composite, target))
    stream_consumer(cluster, fake, name, [(g["table"], target, None)], workers=workers, batch_size=40)
    if interleave:
        published = publish_ordered(fake, name, msgs)
    else:
        published = fake.publish_stream(name, msgs)["published"]
    assert published == len(msgs)
    st = drain(cluster, fake, name)
    say(f"  {case}: {len(msgs)} messages {kinds}, {toast} unchanged_toast, {keych} key changes; "
        f"model parks {len(parked_idx)} ({len(stay_idx)} not superseded by a read); fake: "
        f"delivered {st['delivered']}, acked {st['acked']}, receives {st['receive_requests']} "
        f"({st['empty_replies']} empty)")

    # every message acknowledged
    assert st["acked"] == st["published"] == len(msgs) and st["outstanding"] == 0, st

    # the target equals the source's final state, every column
    assert_table_equals(cluster, target, g["expected"], g["key"])

    # dead letters: only messages the model parks.  Not necessarily all of them: Sequin holds
    # back only a row's next message, while other rows' messages go on (a batch skips a row
    # that has a message in flight or earlier in the batch), so the rows' messages are applied
    # in another merge than the model's.  A later key change away from a row, delivered first,
    # leaves a tombstone that makes a change the model parks be skipped instead, or makes the
    # read that would have superseded a dead letter be skipped, keeping it.  Either way
    # retry_dead_letters() below must clear them without changing a row.
    dl = dead_letters(cluster, name)
    got = [cursor_of(d["record"]) for d in dl]
    may = {cursor_of(msgs[i]) for i in parked_idx}
    assert len(set(got)) == len(got) and set(got) <= may, \
        f"dead letters {sorted(got)}; the model parks {sorted(may)}: {[d['error'] for d in dl][:3]}"
    for d in dl:
        assert d["sqlstate"] and "unchanged_toast" in d["error"], d["error"]

    # status of a stream consumer
    s = status(cluster, name)
    assert s["protocol"] == "stream" and s["pending"] is None, s
    assert s["state"] == "idle" and s["workers"] == workers and s["last_error"] is None, s
    assert s["has_lag"] and s["lag_positive"], s
    newest = newest_commit_timestamp(msgs)
    assert same_instant(cluster, s["source_commit_at"], newest), \
        f"source_commit_at {s['source_commit_at']}, newest applied change {newest}"
    # each message is received once per delivery; a key change counts two outcomes (the old
    # key's delete, the new key's upsert)
    outcomes = s["inserted"] + s["updated"] + s["deleted"] + s["skipped"] + s["dead_lettered"]
    assert len(msgs) <= s["received"] <= st["delivered"], (s, st)
    assert s["received"] <= outcomes <= s["received"] + keych, (s, keych)

    # retry_dead_letters: what is still parked is older than the row's stored state (the
    # change that deleted or moved the row): removed, and no row changes
    removed = int(cluster.scalar(f"SELECT sequin_sync.retry_dead_letters({lit(name)})"))
    left = dead_letters(cluster, name)
    assert_table_equals(cluster, target, g["expected"], g["key"])
    assert removed == len(dl) and not left, \
        f"retry removed {removed} of {len(dl)}; left: {[(d['error'], d['attempts']) for d in left]}"
    cluster.psql(f"SELECT sequin_sync.drop_consumer({lit(name)}); DROP TABLE {target};")


def toast_update_before_backfill():
    """A backfill of four rows (only reads), and an update of the first row that comes before
    its read and sends note as unchanged_toast: it is parked (no stored row to keep the note
    from), and the read supersedes it.  Returns (reads, the update, the expected rows): the
    read's row takes the superseded change's version (a replay of it is then a duplicate)."""
    g = gen_stream.generate(seed=3, rows=4, txns=0, backfill=True)    # the backfill only
    reads = [m for m in g["messages"] if m["action"] == "read"]
    assert reads
    row = dict(reads[0]["record"])
    upd = {"record": dict(row, customer="before the read", note=gen_stream.TOAST), "changes": {},
           "action": "update",
           "metadata": dict(reads[0]["metadata"], commit_lsn=gen_stream.LSN_START - 0x1000,
                            commit_idx=0, commit_timestamp="2025-03-01T11:00:00.000000Z")}
    expected = [dict(r, sequin_version=str(gen_stream.version_of(upd))) if r["id"] == row["id"] else r
                for r in g["expected"]]
    return reads, upd, expected


def test_a_read_supersedes_a_parked_change_and_retry_never_brings_it_back(cluster, fake):
    """The parked unchanged_toast case of gen_stream in small: an update of a row the backfill
    has not read yet is parked; the read that follows writes the row (newer than the parked
    change) and removes the dead letter; retry_dead_letters() then has nothing to put over it."""
    name = "toast_before_read"
    target = name + "_t"
    reads, upd, expected = toast_update_before_backfill()
    cluster.psql(gen_stream.ddl(False, target))
    stream_consumer(cluster, fake, name, [("public.orders", target, None)])
    fake.publish_stream(name, [upd] + reads)
    drain(cluster, fake, name)
    assert_table_equals(cluster, target, expected, ["id"])
    assert dead_letters(cluster, name) == []
    assert cluster.scalar(f"SELECT sequin_sync.retry_dead_letters({lit(name)})") == "0"
    assert_table_equals(cluster, target, expected, ["id"])
    cluster.psql(f"SELECT sequin_sync.drop_consumer({lit(name)}); DROP TABLE {target};")


def test_a_sequin_restart_replaying_a_superseded_change_keeps_the_read(cluster, fake):
    """As above, then Sequin restarts and delivers the last acked messages again (its slot had
    not advanced past them): the parked update comes back before the read.  The read's row took
    the superseded change's version, so the replay is a duplicate; the row keeps the read's
    state."""
    name = "toast_replayed"
    target = name + "_t"
    reads, upd, expected = toast_update_before_backfill()
    cluster.psql(gen_stream.ddl(False, target))
    stream_consumer(cluster, fake, name, [("public.orders", target, None)])
    try:
        fake.publish_stream(name, [upd] + reads)
        drain(cluster, fake, name)
        assert_table_equals(cluster, target, expected, ["id"])
        fake.restart_stream(name, replay_acked=len(reads) + 1)
        drain(cluster, fake, name)
        assert_table_equals(cluster, target, expected, ["id"])
    finally:
        cluster.psql(f"SELECT sequin_sync.drop_consumer({lit(name)}); DROP TABLE {target};")


# --------------------------------------------------------------------------------------------
# Soft deletes
# --------------------------------------------------------------------------------------------

def soft_replay(messages, key_cols):
    """gen_stream.replay's rules with delete_mode 'soft': a delete (and a key change's old key)
    keeps the row with deleted = true and the delete's version (a stub with the key when the row
    is not there yet); nothing is tombstoned.  For a history whose backfill reads every row
    before any change (nothing parks)."""
    rows = {}                               # key -> row (JSON form) with deleted, sequin_version

    def key_of(rec):
        return tuple(str(rec[c]) for c in key_cols)

    def newer(key, v):
        cur = rows.get(key, {}).get("sequin_version")
        return cur is None or v > int(cur)

    def mark_deleted(key, rec, v):
        """The row stays with deleted = true; a row the target does not have yet (its insert
        comes later: two keys' messages have no order) becomes a stub, key and version only,
        which keeps an older change out as a tombstone would."""
        if key in rows:
            rows[key].update(deleted=True, sequin_version=str(v))
        else:
            stub = {c: None for c in rec}
            stub.update({c: rec[c] for c in key_cols})
            rows[key] = dict(stub, deleted=True, sequin_version=str(v))

    for m in messages:
        rec, action, v = m["record"], m["action"], gen_stream.version_of(m)
        key = key_of(rec)
        if action == "read":
            if key not in rows or rows[key]["sequin_version"] is None:
                rows[key] = dict(rec, deleted=False, sequin_version=None)
            continue
        if action == "delete":
            if newer(key, v):
                mark_deleted(key, rec, v)
            continue
        ch = m.get("changes") or {}
        old_key = None
        if action == "update" and any(c in ch for c in key_cols):
            old = dict(rec)
            old.update({c: ch[c] for c in key_cols if c in ch})
            old_key = key_of(old)
        new_ok = newer(key, v)
        new = dict(rec, deleted=False, sequin_version=str(v))
        toast = [c for c, val in rec.items() if val == gen_stream.TOAST]
        if toast and new_ok:
            base = rows.get(key) or rows.get(old_key)
            assert base is not None, "soft_replay: unchanged_toast without a stored row"
            for c in toast:
                new[c] = base[c]
        if old_key is not None and old_key != key and newer(old_key, v):
            mark_deleted(old_key, dict(rec, **{c: ch[c] for c in key_cols}), v)
        if new_ok:
            rows[key] = new
    return [rows[k] for k in sorted(rows)]


def test_soft_delete_stream_mapping_keeps_deleted_rows(cluster, fake, say):
    name = "soft"
    target = name + "_t"
    g = gen_stream.generate(seed=21, rows=15, txns=120, backfill_after=0, page_size=1000,
                            interleave=True)
    msgs = g["messages"]
    expected = soft_replay(msgs, g["key"])
    n_deleted = sum(1 for r in expected if r["deleted"])
    assert n_deleted and len(expected) > len(g["expected"])
    live = [dict(r) for r in expected if not r["deleted"]]
    for r in live:
        del r["deleted"]
    assert sorted(live, key=lambda r: r["id"]) == g["expected"]   # the model agrees with gen_stream
    cluster.psql(gen_stream.ddl(False, target) + f"\nALTER TABLE {target} ADD COLUMN deleted boolean;")
    stream_consumer(cluster, fake, name, [(g["table"], target, "delete_mode => 'soft'")], workers=2)
    publish_ordered(fake, name, msgs)
    st = drain(cluster, fake, name)
    say(f"  soft: {len(msgs)} messages, {len(expected)} rows expected, {n_deleted} soft-deleted")
    assert st["acked"] == len(msgs) and st["outstanding"] == 0, st
    assert_table_equals(cluster, target, expected, g["key"])
    assert dead_letters(cluster, name) == []
    assert cluster.scalar("SELECT count(*) FROM sequin_sync.tombstones "
                          f"WHERE target = {lit(target)}::regclass") == "0"
    cluster.psql(f"SELECT sequin_sync.drop_consumer({lit(name)}); DROP TABLE {target};")


# --------------------------------------------------------------------------------------------
# Empty replies while a message is in flight
# --------------------------------------------------------------------------------------------

def test_no_hot_loop_while_a_message_is_in_flight_elsewhere(cluster, fake, say):
    """Sequin's long poll returns at once, empty, while any message of the sink is in flight.
    With one message held by another client, the workers must pause between such replies."""
    name = "inflight"
    target = name + "_t"
    workers = 2
    window_s = 4.0
    g = gen_stream.generate(seed=5, rows=0, txns=3, backfill=False)
    cluster.psql(gen_stream.ddl(False, target))
    fake.stream_consumer(name, TOKEN, ack_wait_ms=120000)
    fake.publish_stream(name, g["messages"][:1])
    held = receive_as_client(fake, name)
    assert len(held) == 1
    stream_consumer(cluster, fake, name, [(g["table"], target, None)], workers=workers,
                    wait_for="5 seconds", ack_wait_ms=120000)
    pgcluster.wait_until("the workers' first receives",
                         lambda: len(stream_requests(fake, name)) >= workers, 20)
    time.sleep(1.0)
    n0 = len(stream_requests(fake, name))
    time.sleep(window_s)
    reqs = stream_requests(fake, name)
    rate = (len(reqs) - n0) / window_s / workers
    st = fake.stream_stats(name)
    say(f"  in flight elsewhere: {len(reqs) - n0} receives in {window_s:.0f} s from {workers} "
        f"workers ({rate:.1f}/s per worker); empty replies {st['empty_replies']}")
    assert rate < 4, f"{rate:.1f} receives per second per worker: a hot loop"
    assert rate > 0.5, f"{rate:.1f} receives per second per worker: the workers stopped asking"
    s = status(cluster, name)
    assert s["state"] == "idle" and s["last_error"] is None, s

    # the other client lets go: the rest arrives, and the held message too
    fake.publish_stream(name, g["messages"][1:])
    ack_as_client(fake, name, [held[0]["ack_id"]], verb="nack")
    drain(cluster, fake, name)
    expected_ids = {r["id"] for r in g["expected"]}
    got = {int(x) for x in cluster.psql(f"SELECT id FROM {target}").split()}
    assert got == expected_ids
    cluster.psql(f"SELECT sequin_sync.drop_consumer({lit(name)}); DROP TABLE {target};")


# --------------------------------------------------------------------------------------------
# HTTP errors
# --------------------------------------------------------------------------------------------

def wait_status(cluster, name, what, cond, timeout=20):
    got = {}

    def ok():
        got["s"] = status(cluster, name)
        return cond(got["s"])
    try:
        return pgcluster.wait_until(f"{name}: {what}", ok, timeout, 0.2) and got["s"]
    except TimeoutError as e:
        raise AssertionError(f"{e}; status {got.get('s')}")


def one_change(i):
    g = gen_stream.generate(seed=100 + i, rows=0, txns=1, backfill=False)
    return g["messages"][:1], g


@pytest.mark.parametrize("kind", ["401", "404"])
def test_auth_and_not_found_are_configuration_errors(cluster, fake, kind):
    name = "cfg_" + kind
    target = name + "_t"
    msgs, g = one_change(int(kind))
    cluster.psql(gen_stream.ddl(False, target))
    if kind == "401":
        stream_consumer(cluster, fake, name, [(g["table"], target, None)], token="wrong-token")
        summary = "The API token you provided is invalid or has expired."
        fix = f"token => {lit(TOKEN)}"
    else:
        stream_consumer(cluster, fake, name, [(g["table"], target, None)],
                        endpoint=fake.stream_endpoint("no_such_sink"))
        summary = "Not found: No `consumer` found matching the provided ID or name"
        fix = f"endpoint => {lit(fake.stream_endpoint(name))}"
    fake.publish_stream(name, msgs)
    s = wait_status(cluster, name, "state error", lambda s: s["state"] == "error")
    assert s["last_error"] and summary in s["last_error"] and kind in s["last_error"], s
    # it stays an error (no retry storm turns it into something else), and nothing is applied
    time.sleep(1.5)
    s = status(cluster, name)
    assert s["state"] == "error" and summary in (s["last_error"] or ""), s
    assert cluster.scalar(f"SELECT count(*) FROM {target}") == "0"
    cluster.psql(f"SELECT sequin_sync.alter_consumer({lit(name)}, {fix});")
    drain(cluster, fake, name)
    assert cluster.scalar(f"SELECT count(*) FROM {target}") == "1"
    s = status(cluster, name)
    assert s["state"] == "idle", s     # last_error keeps the most recent error
    cluster.psql(f"SELECT sequin_sync.drop_consumer({lit(name)}); DROP TABLE {target};")


@pytest.mark.parametrize("fault", ["500", "dropped connection"])
def test_server_errors_and_dropped_connections_back_off_and_recover(cluster, fake, fault):
    name = "transient_" + fault.split()[0]
    target = name + "_t"
    msgs, g = one_change(7 if fault == "500" else 8)
    cluster.psql(gen_stream.ddl(False, target))
    fake.stream_consumer(name, TOKEN, ack_wait_ms=3000)
    cfg = {"status_for_next": 500} if fault == "500" else {"drop_connection": 1.0}
    fake.http("POST", f"/admin/consumers/{name}/faults", cfg)
    fake.publish_stream(name, msgs)
    stream_consumer(cluster, fake, name, [(g["table"], target, None)])
    s = wait_status(cluster, name, "state backoff", lambda s: s["state"] == "backoff")
    if fault == "500":
        assert "500" in s["last_error"] and "SlotMessageStore failed" in s["last_error"], s
    else:
        assert s["last_error"], s
    # backing off: a few attempts in 3 s, not a storm (backoff_max is 2 s here)
    n0 = len(stream_requests(fake, name))
    time.sleep(3)
    n = len(stream_requests(fake, name)) - n0
    assert 1 <= n <= 8, f"{n} receives in 3 s while failing"
    assert cluster.scalar(f"SELECT count(*) FROM {target}") == "0"
    fake.http("POST", f"/admin/consumers/{name}/faults", {})
    st = drain(cluster, fake, name)
    assert st["acked"] == 1
    assert cluster.scalar(f"SELECT count(*) FROM {target}") == "1"
    s = status(cluster, name)
    assert s["state"] == "idle", s     # last_error keeps the most recent error
    cluster.psql(f"SELECT sequin_sync.drop_consumer({lit(name)}); DROP TABLE {target};")
