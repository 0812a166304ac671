#!/usr/bin/env python3
"""
citus_trial.py - sequin_sync on a running Citus cluster, by hand (README, Citus).  Not a test
suite: Citus is not packaged for Debian, so nothing runs this automatically, and it never starts
or stops a cluster itself.  Start a cluster whose coordinator preloads citus,sequin_sync for the
database it connects to (e.g. the development script ../shared/citus/citus-cluster.sh), then:

    /usr/bin/python3 test/citus_trial.py [--host /tmp/citus-dev/sock] [--port 56301] [--db app]
        [--ids 2000] [--throughput-records 20000] [--phases refusals,apply,worker,throughput,stream]

On the coordinator it creates the extension, first as Citus propagates it to the worker nodes,
then with citus.enable_ddl_propagation off (the worker nodes need nothing of sequin_sync), at the
previous version, and updates it likewise; then:

  1. refusals: map_collection on a table distributed by another column, and on an
     append-distributed one;
  2. apply(): the shuffled history of test_fault.py (stale versions, duplicates, soft and hard
     deletes, poison records) plus records that a worker node refuses (a CHECK constraint on
     the shards), then soft deletes without data, with their stale copies, into hash-distributed
     tables (distributed by id), reference, single-shard and Citus local tables; each table must
     equal the newest version of every record, the tombstones the hard deletes, the dead letters
     the poison;
  3. the worker: the same through test/fake_sequin.py, two consumers of two workers each, one
     into distributed tables and one into reference tables, until every message is
     acknowledged; the same checks, and the fake's books must balance;
  5. stream: Sequin Stream histories of test/gen_stream.py (reads, unchanged TOAST values, key
     changes, hard deletes, interleaved delivery), single key into a table distributed by id and
     a reference table, composite key (tenant, id) into a table distributed by tenant, through
     apply() and through the worker (two workers, the fake's Sequin Stream); each table must
     equal the source's final state;
  4. throughput: the same narrow records (stripe:customer, two versions of each id) through one
     consumer with two workers, into a local table of the coordinator, then a distributed table
     with citus.max_cached_conns_per_worker at Citus' default (1) and at 16; records/s and the
     connections the worker nodes accepted per batch.

It prints every step and figure, and exits non-zero when a check fails.  The tables it creates
(citus_trial_*) and the extension are dropped first, so it can run again on the same cluster.
"""

import argparse
import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pgcluster  # noqa: E402
import test_fault as tf  # noqa: E402
from gen_records import generate, newest_by_id  # noqa: E402
import gen_stream  # noqa: E402

TOKEN = "citus-trial-token"
FAILED = []


def log(msg):
    print(msg, flush=True)


def check(name, ok, detail=""):
    log(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")
    if not ok:
        FAILED.append(name)


class Coordinator:
    def __init__(self, host, port, db):
        self.host, self.port, self.db = host, port, db

    def psql(self, sql, check=True, port=None):
        p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.host,
                            "-p", str(port or self.port), "-U", "postgres", "-d", self.db],
                           input=sql.encode("utf-8"), capture_output=True, timeout=600,
                           env=dict(os.environ, PGCLIENTENCODING="UTF8",
                                    PGOPTIONS="-c client_min_messages=warning"))
        if check and p.returncode != 0:
            raise RuntimeError(f"psql failed: {p.stderr.decode('utf-8', 'replace').strip()}\nSQL: {sql[:300]}")
        return p.stdout.decode("utf-8"), p.stderr.decode("utf-8"), p.returncode

    def scalar(self, sql, port=None):
        return self.psql(sql, port=port)[0].strip()

    def query_json(self, sql):
        return json.loads(self.scalar(f"SELECT COALESCE(json_agg(q), '[]') FROM ({sql}) q"))


SOFT_COLS = """id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text,
    name text CHECK (name IS DISTINCT FROM 'refused by a worker'), balance integer,
    created timestamptz, metadata jsonb, address_city text"""
HARD_COLS = """id text PRIMARY KEY, updated_idx bigint,
    first_name text CHECK (first_name IS DISTINCT FROM 'refused by a worker'), last_name text,
    email text, score numeric, annual_revenue numeric"""
SOFT_OVERRIDES = '{"address_city": "data.address.city"}'
HARD_OVERRIDES = '{"score": "data.Score__c", "annual_revenue": "data.AnnualRevenue__c"}'


def make_tables(co, prefix, kind):
    """citus_trial_<prefix>_soft and _hard, hash-distributed by id or reference tables."""
    soft, hard = f"citus_trial_{prefix}_soft", f"citus_trial_{prefix}_hard"
    how = {"distributed": "create_distributed_table('{t}', 'id')", "reference": "create_reference_table('{t}')",
           "single-shard": "create_distributed_table('{t}', null)",
           "citus local": "citus_add_local_table_to_metadata('{t}')"}[kind]
    co.psql(f"CREATE TABLE {soft} ({SOFT_COLS}); CREATE TABLE {hard} ({HARD_COLS});"
            f"SELECT {how.format(t=soft)}; SELECT {how.format(t=hard)};")
    return soft, hard


def map_tables(co, consumer, soft, hard):
    co.psql(f"SELECT sequin_sync.map_collection('{consumer}', '{tf.SOFT_COLL}', '{soft}', "
            f"columns => '{SOFT_OVERRIDES}');"
            f"SELECT sequin_sync.map_collection('{consumer}', '{tf.HARD_COLL}', '{hard}', "
            f"delete_mode => 'hard', columns => '{HARD_OVERRIDES}');")


def data_set(ids, seed):
    """test_fault's history plus records a worker node refuses (CHECK on the shards), and the
    soft deletes without data that follow it (with stale copies), which must come after the rest
    for the expected rows to be known.  Returns (messages, late, soft_newest, expected soft rows,
    hard_newest, poison)."""
    messages, soft_newest, hard_newest, poison = tf.build_records(ids, seed)
    rng = random.Random(seed + 5)
    for coll, field, base in ((tf.SOFT_COLL, "name", generate(tf.SOFT_COLL, count=2, seed=seed + 200)),
                              (tf.HARD_COLL, "FirstName", generate(tf.HARD_COLL, count=2, seed=seed + 201))):
        for r in base:
            r = copy.deepcopy(r)
            r["id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            r["data"][field] = "refused by a worker"
            poison[r["id"]] = (coll, "23514", "a CHECK constraint on the worker's shard")
            messages.insert(rng.randrange(len(messages) + 1), r)
    expected_soft = {i: tf.expected_soft_row(r) for i, r in soft_newest.items()}
    late = []
    for i in rng.sample(sorted(soft_newest), max(1, len(soft_newest) // 20)):
        newest = soft_newest[i]
        d = {k: v for k, v in newest.items() if k != "data"}
        d.update(updated_idx=newest["updated_idx"] + 1, deleted=True)
        late.append(d)
        late.append(copy.deepcopy(newest))      # a stale copy after the delete
        expected_soft[i] = dict(expected_soft[i], updated_idx=d["updated_idx"], deleted=True)
        soft_newest[i] = d
    rng.shuffle(late)
    return messages, late, expected_soft, hard_newest, poison


def rows(co, table, columns):
    """The table's rows as dicts.  json_build_object names the keys itself: json_agg over a
    subquery of a distributed table gets Citus' internal column names (worker_column_1 ...)."""
    pairs = ", ".join(f"'{c.split(' AS ')[-1]}', {c.split(' AS ')[0]}" for c in columns)
    return json.loads(co.scalar(f"SELECT COALESCE(json_agg(json_build_object({pairs})), '[]') FROM {table}"))


def snapshot(co, soft, hard, consumer):
    return SimpleNamespace(
        soft_rows=rows(co, soft, ["id", "updated_idx", "deleted", "email", "name", "balance",
                                  "EXTRACT(epoch FROM created)::bigint AS created", "metadata", "address_city"]),
        hard_rows=rows(co, hard, ["id", "updated_idx", "first_name", "last_name", "email", "score",
                                  "annual_revenue"]),
        tombstones={r["id"]: r["updated_idx"] for r in co.query_json(
            f"SELECT id, updated_idx FROM sequin_sync.tombstones WHERE target = '{hard}'::regclass")},
        other_tombstones=int(co.scalar(f"SELECT count(*) FROM sequin_sync.tombstones WHERE target = '{soft}'::regclass")),
        dead_letters=co.query_json("SELECT collection, COALESCE(record->>'id', substring(record_text from "
                                   "'\"id\": *\"([^\"]*)\"')) AS id, sqlstate, error, attempts "
                                   f"FROM sequin_sync.dead_letters WHERE consumer = '{consumer}'"))


def verify(co, what, soft, hard, consumer, expected_soft, hard_newest, poison):
    snap = snapshot(co, soft, hard, consumer)
    actual = {r["id"]: r for r in snap.soft_rows}
    check(f"{what}: {soft} equals the newest version of every record ({len(expected_soft)} ids)",
          *tf.compare_rows("soft", actual, expected_soft))
    results, wrong = tf.table_checks(snap, {}, hard_newest)
    check(f"{what}: {hard} equals the newest version of every record "
          f"({sum(1 for r in hard_newest.values() if not r['deleted'])} rows)", *results["hard"])
    check(f"{what}: a tombstone for every hard delete "
          f"({sum(1 for r in hard_newest.values() if r['deleted'])})", *results["tombstones"])
    check(f"{what}: no tombstone for soft deletes", *results["soft tombstones"])
    parked = {d["id"]: d["sqlstate"] for d in snap.dead_letters}
    want = {i: p[1] for i, p in poison.items()}
    check(f"{what}: the dead letters are the {len(want)} poison records, each with its SQLSTATE",
          parked == want, f"unexpected {sorted(set(parked) - set(want))[:3]}, missing "
          f"{sorted(set(want) - set(parked))[:3]}, wrong {[(i, parked[i], want[i]) for i in want if i in parked and parked[i] != want[i]][:3]}")
    for d in snap.dead_letters:
        if d["sqlstate"] == "23514":
            log(f"    parked by a worker node: {d['error'][:160]}")
            break


def apply_chunks(co, consumer, messages, size=200):
    totals = [0] * 5
    sql = "".join("SELECT inserted, updated, deleted, skipped, dead_lettered FROM sequin_sync.apply("
                  f"'{consumer}', $json${json.dumps(messages[i:i + size], ensure_ascii=False)}$json$);\n"
                  for i in range(0, len(messages), size))
    t0 = time.monotonic()
    out = co.psql(sql)[0]
    elapsed = time.monotonic() - t0
    for line in out.split():
        for k, v in enumerate(line.split("|")):
            totals[k] += int(v)
    return totals, elapsed


def apply_phase(co, ids, seed):
    log("2. apply(): shuffled history into distributed, reference, single-shard and Citus local tables")
    for kind, prefix in (("distributed", "ad"), ("reference", "ar"), ("single-shard", "as"), ("citus local", "al")):
        messages, late, expected_soft, hard_newest, poison = data_set(ids, seed)
        # apply() takes jsonb, which cannot hold "\u0000": that poison record is the worker's.
        nul = {i for i, p in poison.items() if p[1] == "22P05"}
        messages = [m for m in messages if m.get("id") not in nul]
        poison = {i: p for i, p in poison.items() if i not in nul}
        soft, hard = make_tables(co, prefix, kind)
        consumer = f"trial_{prefix}"
        co.psql(f"SELECT sequin_sync.create_consumer('{consumer}', 'http://127.0.0.1:9/v1/http-consumers/x', "
                f"'{TOKEN}'); SELECT sequin_sync.pause('{consumer}');")
        map_tables(co, consumer, soft, hard)
        totals, elapsed = apply_chunks(co, consumer, messages)
        totals2, elapsed2 = apply_chunks(co, consumer, late)
        n = len(messages) + len(late)
        log(f"  {kind}: {n} records in {(n + 199) // 200 + (len(late) + 199) // 200} apply() calls, "
            f"{elapsed + elapsed2:.1f} s; inserted/updated/deleted/skipped/dead_lettered "
            f"{[a + b for a, b in zip(totals, totals2)]}")
        verify(co, f"apply() {kind}", soft, hard, consumer, expected_soft, hard_newest, poison)


def wait_acked(fake, consumers, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = [fake.http("GET", f"/admin/consumers/{c}/stats") for c in consumers]
        if all(s["outstanding"] == 0 and s["acked"] == s["published"] for s in stats):
            return stats
        time.sleep(0.1)
    return [fake.http("GET", f"/admin/consumers/{c}/stats") for c in consumers]


def wait_settled(co, consumers, timeout=60):
    """The consumers' counters stop moving (a redelivered batch may still be applying)."""
    last, since = None, time.monotonic()
    deadline = time.monotonic() + timeout
    names = ",".join(f"'{c}'" for c in consumers)
    while time.monotonic() < deadline:
        now = co.scalar(f"SELECT json_agg(json_build_object('consumer', consumer, 'received', received, 'inserted', "
                        f"inserted, 'updated', updated, 'deleted', deleted, 'skipped', skipped, 'dead_lettered', "
                        f"dead_lettered, 'acked', acked, 'last_error', last_error) ORDER BY consumer) "
                        f"FROM sequin_sync.status WHERE consumer IN ({names})")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 1.5:
            return json.loads(now)
        time.sleep(0.2)
    return json.loads(last)


def worker_phase(co, fake, ids, seed):
    log("3. the worker: two consumers of two workers each, the fake Sequin consumer")
    runs = []
    for kind, prefix in (("distributed", "wd"), ("reference", "wr")):
        messages, late, expected_soft, hard_newest, poison = data_set(ids, seed + 1)
        soft, hard = make_tables(co, prefix, kind)
        consumer = f"trial_{prefix}"
        fake.http("POST", "/admin/consumers", {"id": consumer, "token": TOKEN, "ack_wait_ms": 30000,
                                               "max_ack_pending": 4000})
        fake.http("POST", f"/admin/consumers/{consumer}/publish", messages)
        runs.append(SimpleNamespace(kind=kind, soft=soft, hard=hard, consumer=consumer, late=late,
                                    expected_soft=expected_soft, hard_newest=hard_newest, poison=poison,
                                    published=len(messages) + len(late)))
    # Each consumer and its mappings in one transaction: no worker pulls before both exist.
    t0 = time.monotonic()
    for r in runs:
        co.psql(f"BEGIN; SELECT sequin_sync.create_consumer('{r.consumer}', "
                f"'{fake.url('/v1/http-consumers/' + r.consumer)}', '{TOKEN}', batch_size => 200, "
                f"wait_for => '1 second', workers => 2);"
                f"SELECT sequin_sync.map_collection('{r.consumer}', '{tf.SOFT_COLL}', '{r.soft}', columns => '{SOFT_OVERRIDES}');"
                f"SELECT sequin_sync.map_collection('{r.consumer}', '{tf.HARD_COLL}', '{r.hard}', delete_mode => 'hard', "
                f"columns => '{HARD_OVERRIDES}'); COMMIT;")
    stats = wait_acked(fake, [r.consumer for r in runs], 300)
    t_main = time.monotonic() - t0
    for r in runs:
        fake.http("POST", f"/admin/consumers/{r.consumer}/publish", r.late)
    stats = wait_acked(fake, [r.consumer for r in runs], 120)
    status = wait_settled(co, [r.consumer for r in runs])
    log(f"  both consumers drained in {t_main:.1f} s, then the soft deletes without data")
    for r, st, s in zip(runs, stats, status):
        log(f"  {r.kind}: fake published {st['published']}, delivered {st['delivered']}, acked {st['acked']}, "
            f"nacked {st['nacked']}, outstanding {st['outstanding']}; status {s}")
        check(f"worker {r.kind}: every message acknowledged ({r.published})",
              st["acked"] == st["published"] == r.published and st["outstanding"] == 0, json.dumps(st))
        verify(co, f"worker {r.kind}", r.soft, r.hard, r.consumer, r.expected_soft, r.hard_newest, r.poison)
        co.psql(f"SELECT sequin_sync.pause('{r.consumer}');")


def sessions_on_workers(co, worker_ports):
    """Sessions the worker nodes accepted so far (pg_stat_database.sessions).  A look's own
    session is counted by the next look (the local-table run shows it: no other connection)."""
    return sum(int(co.scalar(f"SELECT sessions FROM pg_stat_database WHERE datname = '{co.db}'", port=p))
               for p in worker_ports)


def throughput_phase(co, fake, n_records, worker_ports):
    log(f"4. throughput: about {n_records} narrow records, batch_size 1000")
    recs = generate(tf.SOFT_COLL, count=n_records // 2, versions=2, seed=77, shuffle=False)
    log(f"  {len(recs)} records of {len(newest_by_id(recs))} ids")
    results = []
    for label, kind, conns, workers in (
            ("local table on the coordinator, 2 workers", "local", None, 2),
            ("distributed, max_cached_conns_per_worker = 1 (default), 2 workers", "distributed", 1, 2),
            ("distributed, max_cached_conns_per_worker = 16, 2 workers", "distributed", 16, 2),
            ("distributed, max_cached_conns_per_worker = 16, 1 worker", "distributed", 16, 1)):
        prefix = f"tp{len(results)}"
        table = f"citus_trial_{prefix}"
        co.psql(f"CREATE TABLE {table} ({SOFT_COLS});")
        if kind == "distributed":
            co.psql(f"SELECT create_distributed_table('{table}', 'id');")
        if conns is not None:
            co.psql(f"ALTER SYSTEM SET citus.max_cached_conns_per_worker = {conns}; SELECT pg_reload_conf();")
            time.sleep(1)
        consumer = f"trial_{prefix}"
        fake.http("POST", "/admin/consumers", {"id": consumer, "token": TOKEN, "max_ack_pending": 4000})
        fake.http("POST", f"/admin/consumers/{consumer}/publish", recs)
        before = sessions_on_workers(co, worker_ports)
        t0 = time.monotonic()
        co.psql(f"BEGIN; SELECT sequin_sync.create_consumer('{consumer}', '{fake.url('/v1/http-consumers/' + consumer)}', "
                f"'{TOKEN}', batch_size => 1000, wait_for => '1 second', workers => {workers});"
                f"SELECT sequin_sync.map_collection('{consumer}', '{tf.SOFT_COLL}', '{table}', columns => '{SOFT_OVERRIDES}'); COMMIT;")
        st = wait_acked(fake, [consumer], 600)[0]
        elapsed = time.monotonic() - t0
        co.psql(f"SELECT sequin_sync.pause('{consumer}');")
        new_sessions = sessions_on_workers(co, worker_ports) - before - len(worker_ports)
        rows = int(co.scalar(f"SELECT count(*) FROM {table}"))
        ok = st["acked"] == len(recs) and rows == len(newest_by_id(recs))
        check(f"throughput {label}: every record acked and applied", ok, json.dumps(st))
        rate = len(recs) / elapsed
        log(f"  {label}: {len(recs)} records in {elapsed:.1f} s = {rate:,.0f} records/s; "
            f"{new_sessions} new connections on the worker nodes"
            + (f" ({new_sessions / max(1, len(recs) / 1000):.1f} per batch of 1000)" if kind == "distributed" else ""))
        results.append((label, rate, new_sessions))
    co.psql("ALTER SYSTEM RESET citus.max_cached_conns_per_worker; SELECT pg_reload_conf();")
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="/tmp/citus-dev/sock")
    ap.add_argument("--port", type=int, default=56301)
    ap.add_argument("--db", default="app")
    ap.add_argument("--ids", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20241110)
    ap.add_argument("--throughput-records", type=int, default=20000)
    ap.add_argument("--phases", default="refusals,apply,worker,throughput,stream",
                    help="which of refusals, apply, worker, throughput, stream to run (comma-separated)")
    args = ap.parse_args()
    co = Coordinator(args.host, args.port, args.db)

    log("0. the cluster")
    log("  " + co.scalar("SELECT 'Citus ' || (SELECT extversion FROM pg_extension WHERE extname = 'citus') "
                         "|| ', ' || version()"))
    nodes = co.query_json("SELECT nodename, nodeport, shouldhaveshards FROM pg_dist_node ORDER BY nodeport")
    log(f"  nodes: {nodes}")
    worker_ports = [n["nodeport"] for n in nodes if n["nodeport"] != args.port]
    log("  " + co.scalar("SELECT 'shared_preload_libraries = ' || current_setting('shared_preload_libraries') "
                         "|| ', citus.max_cached_conns_per_worker = ' || current_setting('citus.max_cached_conns_per_worker')"))
    # Again on the same cluster: start clean.
    co.psql("SELECT sequin_sync.pause(name) FROM sequin_sync.consumers", check=False)
    co.psql("SET citus.enable_ddl_propagation = off; DROP EXTENSION IF EXISTS sequin_sync CASCADE;")
    for t in co.scalar("SELECT string_agg(relname, ' ') FROM pg_class WHERE relname LIKE 'citus\\_trial\\_%' "
                       "AND relkind IN ('r', 'p')").split():
        co.psql(f"DROP TABLE IF EXISTS {t} CASCADE;")
    out, err, rc = co.psql("CREATE EXTENSION sequin_sync;", check=False)
    log(f"  CREATE EXTENSION sequin_sync, propagated to the workers: "
        f"{'ok' if rc == 0 else 'failed: ' + err.strip().replace(chr(10), ' / ')}")
    if rc == 0:
        co.psql("DROP EXTENSION sequin_sync;")
    # An update too: Citus sends ALTER EXTENSION ... UPDATE to the worker nodes.
    co.psql("SET citus.enable_ddl_propagation = off; CREATE EXTENSION sequin_sync VERSION '0.2.0';")
    out, err, rc = co.psql("ALTER EXTENSION sequin_sync UPDATE;", check=False)
    log(f"  ALTER EXTENSION sequin_sync UPDATE, propagated: "
        f"{'ok' if rc == 0 else 'failed: ' + err.strip().replace(chr(10), ' / ')}")
    if rc != 0:
        co.psql("SET citus.enable_ddl_propagation = off; ALTER EXTENSION sequin_sync UPDATE;")
    log("  CREATE EXTENSION sequin_sync VERSION '0.2.0' and ALTER EXTENSION sequin_sync UPDATE with "
        "citus.enable_ddl_propagation = off: ok (coordinator only), version "
        + co.scalar("SELECT extversion FROM pg_extension WHERE extname = 'sequin_sync'"))

    phases = set(args.phases.split(","))
    if "refusals" in phases:
        refusals(co)
    if "apply" in phases:
        apply_phase(co, args.ids, args.seed)
    if phases & {"worker", "throughput", "stream"}:
        with tempfile.TemporaryDirectory(prefix="citus_trial_fake_") as d:
            fake = pgcluster.FakeSequin(os.path.join(HERE, "fake_sequin.py"), d)
            fake.start()
            try:
                if "worker" in phases:
                    worker_phase(co, fake, args.ids, args.seed)
                if "throughput" in phases:
                    throughput_phase(co, fake, args.throughput_records, worker_ports)
                if "stream" in phases:
                    stream_phase(co, fake, args.seed)
            finally:
                co.psql("SELECT sequin_sync.pause(name) FROM sequin_sync.consumers", check=False)
                fake.stop()
    log("")
    log("all checks passed" if not FAILED else f"FAILED: {FAILED}")
    return 1 if FAILED else 0


STREAM_COLUMNS = ["customer", "total::text AS total", "qty", "placed_at", "active", "tags", "attrs",
                  "md5(note) AS note", "sequin_version::text AS sequin_version"]


def stream_rows(co, table, key):
    return {tuple(str(r[k]) for k in key): r for r in rows(co, table, list(key) + STREAM_COLUMNS)}


def stream_expected(co, g):
    """gen_stream's expected rows as the target's columns print them (through Postgres)."""
    vals = json.dumps(g["expected"])
    cols = ", ".join(c for c in ["tenant text", "id bigint"] if c.split()[0] in g["key"])
    co.psql("DROP TABLE IF EXISTS citus_trial_stream_expected;"
            f"CREATE TABLE citus_trial_stream_expected AS SELECT * FROM jsonb_to_recordset($j${vals}$j$) AS x("
            f"{cols}, customer text, total numeric(20,6), qty integer, placed_at timestamptz, active boolean, "
            "tags text[], attrs jsonb, note text, sequin_version numeric);")
    return stream_rows(co, "citus_trial_stream_expected", g["key"])


def stream_phase(co, fake, seed):
    log("5. Sequin Stream: histories with reads, unchanged TOAST, key changes and hard deletes")
    cases = (("distributed", "sd", False, "create_distributed_table('{t}', 'id')"),
             ("reference", "sr", False, "create_reference_table('{t}')"),
             ("distributed by tenant, composite key", "sc", True, "create_distributed_table('{t}', 'tenant')"))
    for way in ("apply", "worker"):
        for kind, prefix, composite, how in cases:
            g = gen_stream.generate(seed=seed % 1000 + len(prefix) + (way == "worker"), rows=60, txns=400,
                                    composite=composite, interleave=(way == "apply"))
            table = f"citus_trial_{prefix}_{way}"
            consumer = f"trial_{prefix}_{way}"
            co.psql(gen_stream.ddl(composite, table) + f"SELECT {how.format(t=table)};")
            parked_by_model = len(gen_stream.replay(g["messages"], g["key"])[2])
            t0 = time.monotonic()
            if way == "apply":
                co.psql(f"SELECT sequin_sync.create_consumer('{consumer}', 'http://127.0.0.1:9/api/sequin_streams/x', "
                        f"'{TOKEN}'); SELECT sequin_sync.pause('{consumer}');"
                        f"SELECT sequin_sync.map_collection('{consumer}', '{g['table']}', '{table}');")
                totals = [0] * 5
                for i in range(0, len(g["messages"]), 200):
                    out = co.psql("SELECT inserted, updated, deleted, skipped, dead_lettered FROM sequin_sync.apply("
                                  f"'{consumer}', $json${json.dumps(g['messages'][i:i + 200])}$json$);")[0]
                    totals = [a + int(b) for a, b in zip(totals, out.strip().split("|"))]
                detail = f"inserted/updated/deleted/skipped/dead_lettered {totals}"
            else:
                fake.stream_consumer(consumer, TOKEN, ack_wait_ms=30000)
                fake.publish_stream(consumer, g["messages"])
                co.psql(f"BEGIN; SELECT sequin_sync.create_consumer('{consumer}', '{fake.stream_endpoint(consumer)}', "
                        f"'{TOKEN}', batch_size => 200, wait_for => '1 second', workers => 2);"
                        f"SELECT sequin_sync.map_collection('{consumer}', '{g['table']}', '{table}'); COMMIT;")
                deadline = time.monotonic() + 300
                st = fake.stream_stats(consumer)
                while time.monotonic() < deadline and not (st["pending"] == 0 and st["in_flight"] == 0):
                    time.sleep(0.2)
                    st = fake.stream_stats(consumer)
                wait_settled(co, [consumer])
                co.psql(f"SELECT sequin_sync.pause('{consumer}');")
                detail = f"fake stats {json.dumps(st)}"
                check(f"stream worker {kind}: every message acknowledged", st["pending"] == 0 and st["in_flight"] == 0,
                      json.dumps(st))
            elapsed = time.monotonic() - t0
            log(f"  {way} {kind}: {len(g['messages'])} messages in {elapsed:.1f} s; {detail}")
            actual = stream_rows(co, table, g["key"])
            expected = stream_expected(co, g)
            diff = [k for k in set(actual) | set(expected) if actual.get(k) != expected.get(k)]
            check(f"stream {way} {kind}: {table} equals the source's final state ({len(expected)} rows)",
                  not diff, f"{len(diff)} keys differ, e.g. {[(k, actual.get(k), expected.get(k)) for k in diff[:2]]}")
            parked = int(co.scalar(f"SELECT count(*) FROM sequin_sync.dead_letters WHERE consumer = '{consumer}'"))
            check(f"stream {way} {kind}: parked only what the model parks ({parked_by_model})",
                  parked <= parked_by_model, f"{parked} dead letters")


def refusals(co):
    log("1. refusals")
    co.psql("CREATE TABLE citus_trial_by_org (org text, id text, updated_idx bigint, deleted boolean, PRIMARY KEY (org, id));"
            "SELECT create_distributed_table('citus_trial_by_org', 'org');"
            "CREATE TABLE citus_trial_append (id text, updated_idx bigint, deleted boolean);"
            "SELECT create_distributed_table('citus_trial_append', 'id', 'append');"
            f"SELECT sequin_sync.create_consumer('trial_refusals', 'http://127.0.0.1:9/v1/http-consumers/x', '{TOKEN}');"
            "SELECT sequin_sync.pause('trial_refusals');")
    for t in ("citus_trial_by_org", "citus_trial_append"):
        out, err, rc = co.psql(f"\\set VERBOSITY verbose\nSELECT sequin_sync.map_collection('trial_refusals', 'x', '{t}');",
                               check=False)
        log("  " + err.strip().replace("\n", "\n  "))
        check(f"map_collection refuses {t}", rc != 0)


if __name__ == "__main__":
    sys.exit(main())
