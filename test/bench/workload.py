"""
workload.py - the benchmark's records: Stripe customers, every id in exactly two versions.

N records = N/2 ids x 2 versions.  The first half of the stream is version 1 of every id (in a
random order): inserts.  The second half is version 2 of every id, in another random order:
updates of rows that exist.  updated_idx grows along the stream.  The objects come from
test/gen_records.py's Stripe customer generator (unicode names, nested address and metadata,
arrays, nulls), so a record is about 1 KB of JSON.  Same seed, same bytes.
"""

import datetime as dt
import json
import random
import re
import uuid

import gen_records

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


class Record:
    __slots__ = ("id", "idx", "line")

    def __init__(self, rid, idx, line):
        self.id = rid
        self.idx = idx
        self.line = line          # compact JSON, UTF-8 bytes


def generate(n_records, seed=42):
    """The workload: a list of Records in stream order."""
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

    out = []
    order1 = list(range(n_ids))
    rng.shuffle(order1)
    seq = 0
    for i in order1:
        out.append(record(i, base_idx + seq, t0 + dt.timedelta(seconds=seq)))
        seq += 1
    order2 = list(range(n_ids))
    rng.shuffle(order2)
    for i in order2:
        if len(out) >= n_records:
            break
        gen_records.update_stripe_customer(rng, datas[i], 1)
        out.append(record(i, base_idx + seq, t0 + dt.timedelta(seconds=seq)))
        seq += 1
    return out


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
