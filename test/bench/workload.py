"""
workload.py - the benchmark's records and the two workloads that use them.

  narrow   Stripe customers from test/gen_records.py's generator (unicode names, nested address
           and metadata, arrays, nulls), about 1 KB of JSON each, into a 13-column table;
  wide     Salesforce-like accounts of 120 fields, 4-8 KB each (wide.py), into a 65-column table:
           60 columns filled from data fields of six types, plus the standard columns and `data`.

In both, N records = N/2 ids x 2 versions: every id inserted, then every id updated
(stream.py).  Same seed, same bytes.

A Spec holds what every system needs to know about a workload: the target table, the SQL
expressions that turn a record (jsonb `r`) into its row (the ceiling's statement and the limit's
staging table use them), and the row the external Python worker builds.
"""

import datetime as dt
import json
import random
import re
import uuid

import gen_records
import wide
from stream import Record, two_versions

COLLECTION = "stripe:customer"

# The 13-column table of the benchmark.
TABLE_DDL = """
CREATE TABLE {name} (
    id text PRIMARY KEY,
    upstream_id text,
    deleted boolean,
    updated_idx bigint,
    sync_id text,
    sync_external_id text,
    email text,
    name text,
    balance integer,
    created timestamptz,
    currency text,
    metadata jsonb,
    data jsonb
)"""

COLUMNS = ["id", "upstream_id", "deleted", "updated_idx", "sync_id", "sync_external_id", "email", "name",
           "balance", "created", "currency", "metadata", "data"]


def generate(n_records, seed=42):
    """The narrow workload: a list of Records in stream order."""
    rng = random.Random(seed)
    n_ids = (n_records + 1) // 2
    stream_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    syncs = [{"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "external_id": "org_%d" % rng.randint(1, 999),
              "metadata": {"plan": rng.choice(["pro", "free"]), "region": rng.choice(["eu", "us"])}}
             for _ in range(3)]
    dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    base_idx = gen_records.BASE_IDX
    t0 = gen_records.BASE_TIME

    ids, ups, datas, sync_of = [], [], [], []
    for i in range(n_ids):
        created = int((t0 - dt.timedelta(seconds=rng.randint(60, 86400 * 365))).timestamp())
        upstream_id, data = gen_records.new_stripe_customer(rng, created)
        ids.append(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        ups.append(upstream_id)
        datas.append(data)
        sync_of.append(rng.choice(syncs))

    def record(i, idx, when):
        iso = gen_records._iso(when)
        rec = {"id": ids[i], "upstream_id": ups[i], "collection_id": COLLECTION, "provider": "stripe",
               "stream_id": stream_id, "sync": sync_of[i], "deleted": False, "updated_idx": idx,
               "upstream_created_at": gen_records._iso(dt.datetime.fromtimestamp(datas[i]["created"], dt.timezone.utc)),
               "upstream_updated_at": iso, "inserted_at": iso, "data": datas[i]}
        return Record(ids[i], idx, dump(rec).encode())

    return two_versions(rng, n_ids, n_records, record,
                        lambda i, when: gen_records.update_stripe_customer(rng, datas[i], 1), base_idx, t0)


# The narrow table's row, from a record r (as the ceiling's INSERT ... SELECT computes it).
SELECT_EXPRS = ["r->>'id'", "r->>'upstream_id'", "(r->>'deleted')::boolean", "(r->>'updated_idx')::bigint",
                "r->'sync'->>'id'", "r->'sync'->>'external_id'", "r->'data'->>'email'", "r->'data'->>'name'",
                "(r->'data'->>'balance')::integer", "to_timestamp((r->'data'->>'created')::float8)",
                "r->'data'->>'currency'", "r->'data'->'metadata'", "r->'data'"]
EXT_TEMPLATE = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s), %s, %s::jsonb, %s::jsonb)"


def ext_row(rec, Json):
    """The external worker's row of a record (parsed with json.loads)."""
    d = rec.get("data") or {}
    s = rec.get("sync") or {}
    meta = d.get("metadata")
    return (rec["id"], rec.get("upstream_id"), rec.get("deleted", False), rec["updated_idx"], s.get("id"),
            s.get("external_id"), d.get("email"), d.get("name"), d.get("balance"), d.get("created"),
            d.get("currency"), None if meta is None else Json(meta), Json(d))


class Spec:
    """One workload: its records' generator and how each system writes them."""

    def __init__(self, name, collection, table, columns, ddl, select_exprs, from_clause, ext_template, ext_row,
                 generate, table_note):
        self.name = name
        self.collection = collection
        self.table = table
        self.columns = columns
        self.ddl = ddl
        self.select_exprs = select_exprs
        self.from_clause = from_clause      # one %s: the batch as a JSON array
        self.ext_template = ext_template
        self.ext_row = ext_row
        self.generate = generate
        self.table_note = table_note
        assert len(columns) == len(select_exprs)


SPECS = {
    "narrow": Spec("narrow", COLLECTION, "bench_customers", COLUMNS, TABLE_DDL, SELECT_EXPRS,
                   "jsonb_array_elements(%s::jsonb) AS r", EXT_TEMPLATE, ext_row, generate,
                   "13-column table"),
    "wide": Spec("wide", wide.COLLECTION, "bench_accounts", wide.COLUMNS, wide.TABLE_DDL, wide.SELECT_EXPRS,
                 wide.FROM_CLAUSE, wide.EXT_TEMPLATE, wide.ext_row,
                 wide.generate,
                 "120 fields, %d-column table (%d columns filled from data fields of six types, "
                 "id, upstream_id, deleted, updated_idx, data)" % (len(wide.COLUMNS), len(wide.MAPPED))),
}


def expected_state(records):
    """(number of ids, sum of their newest updated_idx): what the table must hold at the end."""
    newest = {}
    for r in records:
        if r.idx > newest.get(r.id, -1):
            newest[r.id] = r.idx
    return len(newest), sum(newest.values())


def batches(records, size):
    return [records[i:i + size] for i in range(0, len(records), size)]


def reduce_newest(batch):
    """The newest version of each id of a batch (ties: the first), in batch order."""
    best = {}
    for pos, r in enumerate(batch):
        cur = best.get(r.id)
        if cur is None or r.idx > cur[1].idx:
            best[r.id] = (pos, r)
    return [r for _, r in sorted(best.values(), key=lambda t: t[0])]


_IDX_RX = re.compile(rb'"updated_idx":(\d+)')


def bumped_lines(records, total, step=10 ** 10):
    """`total` record texts: the workload repeated, each round's updated_idx raised by `step`, so
    every round updates every row again (the memory phase's long stream).  A generator."""
    n = len(records)
    for k in range(total):
        rnd, i = divmod(k, n)
        line = records[i].line
        if rnd:
            line = _IDX_RX.sub(lambda m: b'"updated_idx":%d' % (int(m.group(1)) + rnd * step), line, count=1)
        yield line
