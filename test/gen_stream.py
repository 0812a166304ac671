#!/usr/bin/env python3
"""
gen_stream.py - deterministic Sequin Stream histories: a simulated source table's changes and
backfill reads, as the messages Sequin would deliver for them, plus the target table's expected
final state.  Standard library only; same arguments, same bytes.

What it simulates (../shared/sequin-stream-api.md §2):
  * a source table that holds `rows` rows before the sink exists (they reach the stream only
    through the backfill), then `txns` transactions of inserts, updates, deletes and key changes;
  * every change is a data object {record, changes, action, metadata}, metadata with every key
    (null where unset); commit_lsn grows from 0x16B3748 (uint64; --lsn-start moves it, e.g. past
    2^53), commit_idx counts inside its transaction with gaps (other tables' messages);
  * default replica identity: updates carry `changes: {}`, unchanged TOASTed `note` values are
    the string "unchanged_toast", deletes carry only the key columns (the rest null), a key
    change is one update whose record has the new key and whose changes have the old key values
    (and null old values for the non-key columns that have values);
    --full (REPLICA IDENTITY FULL): updates' changes hold the old values of changed columns,
    deletes the whole old row, never "unchanged_toast";
  * (without a backfill, --no-backfill, the table starts empty);
  * a backfill that starts after `backfill_after` transactions and reads `page_size` rows per
    page in key order, one page every `page_every` transactions (DBLog watermarks): a read is the
    row's state at its page, action "read", commit_lsn/commit_idx null, commit_timestamp the
    read's wall clock, idempotency_key Base64("<backfill_id>:<pk>...");
  * delivery order: the history's cursor order (reads at their watermark), or with --interleave
    a random merge that keeps each group's (row's) order, as Sequin may serve it.

Source table (single key, the default) and the TARGET TABLE the lead creates for it:

    CREATE TABLE orders_mirror (        -- source: public.orders
        id             bigint PRIMARY KEY,
        customer       text,
        total          numeric(20,6),    -- JSON string, e.g. "1234.50"
        qty            integer,
        placed_at      timestamptz,      -- "2025-03-01T12:34:56.123456Z"
        active         boolean,
        tags           text[],           -- JSON array of strings
        attrs          jsonb,            -- JSON object
        note           text,             -- large (~2.5 kB, TOASTed): "unchanged_toast" in updates
        sequin_version numeric           -- commit_lsn * 4294967296 + commit_idx
    );

With --composite (source public.tenant_orders) the key is (tenant text, id integer) instead of
id bigint: `tenant text, id integer, ..., PRIMARY KEY (tenant, id)`, same other columns.  Tenant
names never contain ':'.

Expected final state: the source's rows after the whole history, each with "sequin_version" (an
exact integer as a string) as sequin_sync's rules leave it: the version of the last change that
wrote the row, or null for a row only a backfill read wrote (a read never carries a version; a
read that supersedes parked changes of its row takes their newest version, see replay()).
`replay()` is a reference model of those rules (issue 11 §2: strict version guard, tombstones,
reads that only fill absent or version-less rows, unchanged_toast kept from the stored row or
parked, key changes that move the row); applying `messages` with it gives `expected`.

CLI:
    python3 test/gen_stream.py --seed 7 --rows 50 --txns 200 [--composite] [--full]
        [--interleave] [--no-backfill] [--lsn-start N] [--out FILE | --jsonl FILE --expected FILE]
    default output: one JSON document {"table", "key", "messages": [...], "expected": [...]}

Library:
    from gen_stream import generate, replay
    g = generate(seed=1, rows=20, txns=50, composite=True)
    g["messages"]   # data objects in delivery order (publish them to the fake's stream consumer)
    g["expected"]   # rows sorted by key, with sequin_version
    g["trace"]      # per message: {"cursor": [lsn, idx] (reads: the watermark's, [lsn, null]),
                    #  "effects": {keystr: source row after it, or null when gone}}
"""

import argparse
import base64
import datetime as dt
import json
import random
import sys

LSN_START = 0x16B3748
BASE_TIME = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
TOAST = "unchanged_toast"
SHIFT = 4294967296                          # version = commit_lsn * 2^32 + commit_idx
NOTE_LEN = 2500                             # above Postgres' ~2 kB TOAST threshold

CONSUMER = {"id": "6d1c9a52-3f4e-4b7a-8c2d-1e0f9a8b7c6d", "name": "orders_feed",
            "annotations": None}
DATABASE = {"id": "2f1c0e7a-9b3d-4e5f-8a6b-7c8d9e0f1a2b", "name": "source",
            "annotations": {}, "database": "source", "hostname": "localhost"}
BACKFILL_ID = "8c4a2d1e-5b6f-4c7d-9e8f-0a1b2c3d4e5f"

VALUE_COLUMNS = ("customer", "total", "qty", "placed_at", "active", "tags", "attrs", "note")
CUSTOMERS = ["Paul Atreides", "Chani Kynes", "José Núñez", "Zoë Müller", "李 王", "O'Brien",
             "Ілля Коваленко", "🙂 Emoji", "d'Arcy, Ana María", 'Quote "q" Back\\slash']
TAGS = ["rush", "gift", "b2b", "fragile", "vip", "eu", "late", "ünï"]
TENANTS = ["acme", "globex", "initech", "umbrella", "wayne co"]


def ddl(composite=False, target="orders_mirror"):
    """The target table's CREATE TABLE (see the module doc)."""
    key = ("tenant text,\n    id integer,\n" if composite else "id bigint PRIMARY KEY,\n")
    pk = ",\n    PRIMARY KEY (tenant, id)" if composite else ""
    return ("CREATE TABLE %s (\n    %s    customer text,\n    total numeric(20,6),\n"
            "    qty integer,\n    placed_at timestamptz,\n    active boolean,\n    tags text[],\n"
            "    attrs jsonb,\n    note text,\n    sequin_version numeric%s\n);"
            % (target, key, pk))


def _iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _keystr(pks):
    return ":".join(pks)


class _History:
    """The simulated source: rows, the clock, the LSN, and the messages in cursor order."""

    def __init__(self, rng, composite, full, lsn_start):
        self.rng = rng
        self.composite = composite
        self.full = full
        self.key_cols = ("tenant", "id") if composite else ("id",)
        self.table = "tenant_orders" if composite else "orders"
        self.rows = {}                  # key tuple -> row (JSON-form values)
        self.lsn = lsn_start
        self.time = BASE_TIME
        self.next_id = 1
        self.out = []                   # (cursor, message, effects)
        self.deleted = []               # keys deleted at the source (re-inserted now and then)
        self.txn = None

    # -- values ---------------------------------------------------------------------------

    def new_key(self):
        i = self.next_id
        self.next_id += self.rng.choice((1, 1, 1, 2, 7))       # gaps in the key sequence
        if self.composite:
            return (self.rng.choice(TENANTS), i)
        return (i,)

    def note(self):
        r = self.rng
        word = r.choice(["lorem", "ipsum", "Grüße", "δοκιμή", "テスト", "tab\there", "line\nbreak"])
        body = (word + " ") * (NOTE_LEN // (len(word) + 1) + 1)
        return ("%08x " % r.getrandbits(32)) + body[:NOTE_LEN]

    def values(self, row=None):
        r = self.rng
        out = dict(row or {})
        out["customer"] = r.choice(CUSTOMERS + [None])
        cents = r.randrange(0, 10**9)
        out["total"] = r.choice(["%d.%02d" % divmod(cents, 100), "0.000001",
                                 "12345678901234.123456", "%d" % (cents // 100)])
        out["qty"] = r.randrange(-5, 10**6)
        out["placed_at"] = _iso(self.time - dt.timedelta(seconds=r.randrange(0, 10**6),
                                                          microseconds=r.randrange(10**6)))
        out["active"] = r.choice([True, False, None])
        out["tags"] = r.sample(TAGS, r.randrange(0, 4))
        out["attrs"] = {"source": r.choice(["web", "pos", "api"]), "n": r.randrange(100),
                        "nested": {"ok": r.random() < 0.5, "list": [1, "two", None]}}
        if row is None:
            out["note"] = self.note()
        return out

    def record(self, key, vals):
        rec = {c: v for c, v in zip(self.key_cols, key)}
        for c in VALUE_COLUMNS:
            rec[c] = vals.get(c)
        return rec

    def pks(self, key):
        return [str(k) for k in key]

    # -- messages ---------------------------------------------------------------------------

    def metadata(self, key, lsn, idx, ts, annotations, idem):
        return {"table_schema": "public", "table_name": self.table, "commit_timestamp": _iso(ts),
                "commit_lsn": lsn, "commit_idx": idx, "idempotency_key": idem,
                "record_pks": self.pks(key), "database_name": DATABASE["database"],
                "transaction_annotations": annotations, "enrichment": None,
                "consumer": dict(CONSUMER), "database": dict(DATABASE)}

    def begin(self):
        r = self.rng
        self.time += dt.timedelta(seconds=r.randrange(0, 30), microseconds=r.randrange(10**6))
        ann = {"username": r.choice(["paul", "chani"]), "request_id": "%08x" % r.getrandbits(32)} \
            if r.random() < 0.2 else None
        self.txn = {"idx": r.randrange(0, 3), "annotations": ann, "msgs": []}

    def commit(self):
        r = self.rng
        self.lsn += r.randrange(0x28, 0x4000) + 0x80 * len(self.txn["msgs"])
        # Every message of the transaction carries the commit record's LSN.
        for idx, action, key, rec, changes, effects in self.txn["msgs"]:
            md = self.metadata(key, self.lsn, idx, self.time, self.txn["annotations"],
                               base64.b64encode(b"%d:%d" % (self.lsn, idx)).decode())
            msg = {"record": rec, "changes": changes, "action": action, "metadata": md}
            self.out.append(((self.lsn, idx), msg, effects))
        self.txn = None

    def emit(self, action, key, rec, changes, effects):
        t = self.txn
        t["msgs"].append((t["idx"], action, key, rec, changes, effects))
        t["idx"] += 1 + (self.rng.randrange(1, 4) if self.rng.random() < 0.25 else 0)

    def _changes(self, old_visible, new_rec):
        """Sequin's changes: the old value of every column whose old and new values differ, over
        the old tuple pgoutput sent (key columns only under the default identity)."""
        return {c: v for c, v in old_visible.items() if new_rec.get(c) != v}

    def insert(self):
        if self.deleted and self.rng.random() < 0.3:
            key = self.deleted.pop(self.rng.randrange(len(self.deleted)))   # over a tombstone
        else:
            key = self.new_key()
        vals = self.values()
        self.rows[key] = self.record(key, vals)
        self.emit("insert", key, dict(self.rows[key]), None, {_keystr(self.pks(key)): dict(self.rows[key])})

    def update(self, key, key_change, toast_on_key_change):
        r = self.rng
        old = self.rows[key]
        new = self.values(old)
        note_changes = r.random() < 0.3
        if note_changes:
            new["note"] = self.note()
        new_key = key
        if key_change:
            new_key = self.new_key()
            while new_key in self.rows:
                new_key = self.new_key()
        row = self.record(new_key, new)
        del self.rows[key]
        self.rows[new_key] = row
        rec = dict(row)
        toast_ok = not key_change or toast_on_key_change
        if not self.full and not note_changes and toast_ok:
            rec["note"] = TOAST
        if self.full:
            changes = self._changes(old, row)
        elif key_change:
            old_visible = {c: old[c] for c in self.key_cols}
            old_visible.update({c: None for c in VALUE_COLUMNS})
            changes = self._changes(old_visible, rec)
        else:
            changes = {}
        effects = {_keystr(self.pks(new_key)): dict(row)}
        if key_change:
            effects[_keystr(self.pks(key))] = None
            self.deleted.append(key)
        self.emit("update", new_key, rec, changes, effects)

    def delete(self, key):
        old = self.rows.pop(key)
        self.deleted.append(key)
        if self.full:
            rec = dict(old)
        else:
            rec = {c: (old[c] if c in self.key_cols else None) for c in old}
        self.emit("delete", key, rec, None, {_keystr(self.pks(key)): None})

    def read_page(self, after, page_size):
        """One backfill page: the next page_size keys after `after`, in key order, as they are
        now; their watermark is a transaction of its own.  Returns the last key read or None."""
        keys = sorted(k for k in self.rows if after is None or k > after)[:page_size]
        if not keys:
            return None
        self.lsn += self.rng.randrange(0x28, 0x400)
        self.time += dt.timedelta(microseconds=self.rng.randrange(10**6))
        for n, key in enumerate(keys):
            row = self.rows[key]
            idem = base64.b64encode(":".join([BACKFILL_ID] + self.pks(key)).encode()).decode()
            md = self.metadata(key, None, None, self.time + dt.timedelta(microseconds=n), None,
                               idem)
            msg = {"record": dict(row), "changes": None, "action": "read", "metadata": md}
            self.out.append(((self.lsn, None), msg, {_keystr(self.pks(key)): dict(row)}))
        return keys[-1]


def generate(seed=1, rows=20, txns=50, composite=False, full=False, backfill=True,
             backfill_after=3, page_size=5, page_every=2, ops_per_txn=3, delete_rate=0.12,
             key_change_rate=0.06, toast_on_key_change=False, interleave=False,
             lsn_start=LSN_START):
    """A history (see the module doc).  Returns {"table", "key", "ddl", "messages", "expected",
    "trace", "source"}; source is the source table's final rows (without versions)."""
    if toast_on_key_change and interleave:
        # A key change's unchanged_toast comes from the old key's row, and across two keys the
        # order is not guaranteed: the target may keep an older note.  Not a history whose
        # final state anyone can promise.
        raise ValueError("toast_on_key_change and interleave cannot be combined")
    rng = random.Random(seed)
    h = _History(rng, composite, full, lsn_start)
    # Rows from before the sink reach it only through the backfill: without one, none.
    for _ in range(rows if backfill else 0):     # before the sink: no messages for these
        key = h.new_key()
        h.rows[key] = h.record(key, h.values())
    cursor = None
    backfilling = backfill
    for t in range(txns):
        if backfilling and t >= backfill_after and (t - backfill_after) % page_every == 0:
            last = h.read_page(cursor, page_size)
            if last is None:
                backfilling = False
            cursor = last
        h.begin()
        for _ in range(rng.randrange(1, ops_per_txn + 1)):
            p = rng.random()
            live = sorted(h.rows)
            if not live or p < 0.3:
                h.insert()
            elif p < 0.3 + delete_rate:
                h.delete(rng.choice(live))
            else:
                h.update(rng.choice(live), rng.random() < key_change_rate, toast_on_key_change)
        h.commit()
    while backfilling:                           # the backfill runs to its end
        cursor = h.read_page(cursor, page_size)
        backfilling = cursor is not None

    order = list(range(len(h.out)))
    if interleave:
        order = _interleave(rng, [h.out[i][1] for i in order])
    messages = [h.out[i][1] for i in order]
    trace = [{"cursor": [h.out[i][0][0], h.out[i][0][1]], "effects": h.out[i][2]} for i in order]
    final, versions, _ = replay(messages, h.key_cols)
    source = [h.rows[k] for k in sorted(h.rows)]
    expected = []
    for row in source:
        key = tuple(str(row[c]) for c in h.key_cols)
        if final.get(key) != row:   # the rules of issue 11 must rebuild the source exactly
            raise AssertionError("gen_stream: replay gives %r for %r, the source has %r"
                                 % (final.get(key), key, row))
        v = versions[key]
        expected.append(dict(row, sequin_version=None if v is None else str(v)))
    if len(final) != len(source):
        raise AssertionError("gen_stream: replay keeps rows the source deleted")
    return {"table": "public." + h.table, "key": list(h.key_cols), "ddl": ddl(composite),
            "messages": messages, "expected": expected, "trace": trace, "source": source}


def group_of(msg):
    md = msg["metadata"]
    return "%s.%s:%s" % (md["table_schema"], md["table_name"], ":".join(md["record_pks"]))


def _interleave(rng, messages):
    """A random merge of the groups' message sequences: each group keeps its order."""
    queues = {}
    for i, m in enumerate(messages):
        queues.setdefault(group_of(m), []).append(i)
    heads = {g: 0 for g in queues}
    live = sorted(queues)
    out = []
    while live:
        g = rng.choice(live)
        out.append(queues[g][heads[g]])
        heads[g] += 1
        if heads[g] == len(queues[g]):
            live.remove(g)
    return out


def version_of(msg):
    md = msg["metadata"]
    if md["commit_lsn"] is None:
        return None
    return md["commit_lsn"] * SHIFT + md["commit_idx"]


def replay(messages, key_cols):
    """Apply messages in order under sequin_sync's stream rules (issue 11 §2), one at a time.
    Returns (rows, versions, parked): rows {key tuple of strings: row}, versions {key: int or
    None (written by a read)}, parked [(index, reason)]."""
    rows, versions, tombstones, parked = {}, {}, {}, []
    superseded = {}     # key -> newest version of its parked changes (a read supersedes them)

    def key_of(rec):
        return tuple(str(rec[c]) for c in key_cols)

    def newer(key, v):
        cur = versions.get(key) if key in rows else tombstones.get(key)
        return cur is None or v > cur

    for i, m in enumerate(messages):
        rec, action, v = m["record"], m["action"], version_of(m)
        key = key_of(rec)
        if action == "read":
            if key in tombstones:
                continue
            # the read supersedes the changes of its row parked before it: their dead letters
            # go, and a row the read writes takes their newest version (so a replay of one of
            # them is a duplicate, not an overwrite of the read's newer state)
            floor = superseded.pop(key, None)
            if key in rows and versions.get(key) is not None:
                continue
            rows[key] = dict(rec)
            versions[key] = floor
            continue
        if action == "delete":
            if newer(key, v):
                rows.pop(key, None)
                versions.pop(key, None)
                tombstones[key] = v
            continue
        old_key = None
        ch = m.get("changes") or {}
        if action == "update" and any(c in ch for c in key_cols):
            old = dict(rec)
            old.update({c: ch[c] for c in key_cols if c in ch})
            old_key = key_of(old)
        # A key change is two writes, each under its own guard: the new key's upsert may be
        # stale (a later change of that key, e.g. a second key change N -> X, came first: the
        # order across two keys is not guaranteed) while the old key's delete is not.
        new_ok = newer(key, v)
        new = dict(rec)
        toast = [c for c, val in rec.items() if val == TOAST]
        if toast and new_ok:
            base = rows.get(key) if key in rows else (rows.get(old_key) if old_key else None)
            if base is None:
                parked.append((i, "unchanged_toast without a stored row"))
                superseded[key] = max(v, superseded.get(key, v))
                continue
            for c in toast:
                new[c] = base[c]
        if old_key is not None and old_key != key and newer(old_key, v):
            rows.pop(old_key, None)
            versions.pop(old_key, None)
            tombstones[old_key] = v
        if new_ok:
            rows[key] = new
            versions[key] = v
            tombstones.pop(key, None)
    return rows, versions, parked


def main(argv=None):
    ap = argparse.ArgumentParser(description="Deterministic Sequin Stream histories.")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rows", type=int, default=20, help="rows before the sink (backfilled)")
    ap.add_argument("--txns", type=int, default=50)
    ap.add_argument("--composite", action="store_true", help="key (tenant text, id integer)")
    ap.add_argument("--full", action="store_true", help="REPLICA IDENTITY FULL at the source")
    ap.add_argument("--no-backfill", action="store_true")
    ap.add_argument("--page-size", type=int, default=5)
    ap.add_argument("--interleave", action="store_true",
                    help="merge the rows' sequences at random (each row keeps its order)")
    ap.add_argument("--toast-on-key-change", action="store_true",
                    help="key changes may carry unchanged_toast too")
    ap.add_argument("--lsn-start", type=lambda s: int(s, 0), default=LSN_START)
    ap.add_argument("--out", help="write the JSON document here (default stdout)")
    ap.add_argument("--jsonl", help="write the messages as JSON lines here")
    ap.add_argument("--expected", help="with --jsonl: write the expected rows (JSON) here")
    a = ap.parse_args(argv)
    g = generate(seed=a.seed, rows=a.rows, txns=a.txns, composite=a.composite, full=a.full,
                 backfill=not a.no_backfill, page_size=a.page_size, interleave=a.interleave,
                 toast_on_key_change=a.toast_on_key_change, lsn_start=a.lsn_start)
    if a.jsonl:
        with open(a.jsonl, "w", encoding="utf-8") as f:
            for m in g["messages"]:
                f.write(json.dumps(m, ensure_ascii=False) + "\n")
        if a.expected:
            with open(a.expected, "w", encoding="utf-8") as f:
                json.dump(g["expected"], f, ensure_ascii=False, indent=1)
        return 0
    doc = {k: g[k] for k in ("table", "key", "ddl", "messages", "expected")}
    text = json.dumps(doc, ensure_ascii=False)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
