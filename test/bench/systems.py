"""
systems.py - the measured systems and phases of the benchmark:

  ceiling        Postgres' own set-based upsert of the same (pre-reduced) batches, JSON literal in
                 the statement, one statement (= one transaction) per batch, via psycopg2;
  limit          what Postgres itself must do to write those rows: the extension's own statement
                 shape (INSERT ... SELECT ... ON CONFLICT (id) DO UPDATE ... WHERE stored
                 updated_idx < incoming, RETURNING inserted-or-updated) fed from rows already in
                 the server, typed and reduced (an unlogged staging table loaded before the clock
                 starts), one statement (= one transaction) per batch;
  sequin_sync    the extension's worker pulling from the fake consumer;
  stream         the same worker as a Sequin Stream consumer: the same records as change
                 messages (sequin_stream.py) into the same table plus sequin_version;
  external       a Python worker as users write it from Sequin's upsert guide (psycopg2), per
                 record or batched with execute_values;
  fake probe     how long the fake consumer takes to serve and ack a batch;
  latency        one record published to an idle consumer until it is visible (LISTEN/NOTIFY);
  memory         the worker's resident memory over a long stream.

Every throughput run starts from an empty table (TRUNCATE, then CHECKPOINT so each run starts
with the same WAL/full-page-write state) and checks the result: row count, sum of updated_idx,
no column left empty, and a content fingerprint that must be equal for every system.  Each
function takes the workload's Spec (workload.py): its table, collection and row expressions.
"""

import json
import random
import re
import select
import signal
import statistics
import subprocess
import time

import procstat
import sequin_stream
import workload
from fakeclient import ConsumerClient, StreamClient

TOKEN = "bench-secret-token"
STREAM_TOKEN = "bench-stream-token"
LATENCY_TABLE = "bench_latency"
# The worker raises work_mem to 64MB (src/pg/worker.cpp); the ceiling and the limit run with it.
WORKER_WORK_MEM = "SET work_mem = '64MB'"
WAIT_FOR = "1 second"
WAIT_FOR_MS = 1000
POLL_S = 0.05
STALL_S = 90


class BenchError(RuntimeError):
    pass


class Context:
    def __init__(self, cluster, fake, admin, conn, ncpu, log):
        self.cluster = cluster
        self.fake = fake
        self.admin = admin
        self.conn = conn
        self.ncpu = ncpu
        self.log = log
        self.perf_file = None
        self.seq = 0
        self.stages = {}          # workload name -> the limit's staging table (see build_stage)

    def sql(self, query, params=None):
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            if cur.description is not None:
                return cur.fetchall()
        return None

    def endpoint(self, cid, protocol="v1"):
        if protocol == "stream":
            return "http://127.0.0.1:%d/api/sequin_streams/%s" % (self.fake.port, cid)
        return "http://127.0.0.1:%d/v1/http-consumers/%s" % (self.fake.port, cid)

    def snapshot(self):
        return procstat.CpuSnapshot(self.cluster.postmaster_pid(), self.fake.pid)

    def unique(self, prefix):
        self.seq += 1
        return "%s%d" % (prefix, self.seq)


# ------------------------------------------------------------------------------------------
# setup and checks
# ------------------------------------------------------------------------------------------

def setup_database(ctx, specs):
    ctx.sql("CREATE EXTENSION sequin_sync")
    for spec in specs:
        ctx.sql(spec.ddl.format(name=spec.table))
        ctx.sql(sequin_stream.target_ddl(spec))
    ctx.sql(workload.TABLE_DDL.format(name=LATENCY_TABLE))
    ctx.sql("""
        CREATE FUNCTION public.bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_catalog.pg_notify('bench_seen', NEW.id);
            RETURN NULL;
        END $$""")
    ctx.sql("CREATE TRIGGER bench_notify AFTER INSERT OR UPDATE ON public.bench_latency "
            "FOR EACH ROW EXECUTE FUNCTION public.bench_notify()")


def reset_table(ctx, table):
    ctx.sql("TRUNCATE %s" % table)
    ctx.sql("CHECKPOINT")


def check_table(ctx, spec, expected, table=None):
    """Row count and sum(updated_idx) against the expected state, every column filled in at
    least one row (a column the mapping misses would stay NULL everywhere), plus a fingerprint
    of the whole content of the workload's columns (order-independent; the stream target's
    sequin_version is not one of them), which must be the same for every system."""
    cols = ", ".join(spec.columns)
    row = ctx.sql(
        "SELECT count(*), COALESCE(sum(updated_idx), 0), "
        "COALESCE(sum(pg_catalog.hashtextextended(ROW(%s)::text, 0)::numeric), 0)::text, %s FROM %s t"
        % (cols, ", ".join("count(%s)" % c for c in spec.columns), table or spec.table))[0]
    rows, total, fp = row[:3]
    empty = [c for c, n in zip(spec.columns, row[3:]) if n == 0]
    ok = rows == expected[0] and int(total) == expected[1] and not empty
    return {"rows": rows, "ok": ok, "fingerprint": fp, "empty_columns": empty}


def wal_lsn(ctx):
    return ctx.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0]


def wal_bytes_since(ctx, lsn):
    return int(ctx.sql("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)", (lsn,))[0][0])


def temp_usage(ctx):
    """(temp files, temp bytes) of the database so far.  Backends report these when they end a
    transaction (at most once a second) or exit: read after the run's processes are gone."""
    time.sleep(0.3)
    ctx.sql("SELECT pg_stat_clear_snapshot()")
    return tuple(int(x) for x in ctx.sql("SELECT temp_files, temp_bytes FROM pg_stat_database "
                                         "WHERE datname = current_database()")[0])


def _io(ctx, lsn, temp0):
    temp1 = temp_usage(ctx)
    return {"temp_files": temp1[0] - temp0[0], "temp_bytes": temp1[1] - temp0[1]}


def _rate(n, seconds):
    return round(n / seconds, 1) if seconds > 0 else None


def _result(name, system, records, seconds, batch, workers, cpu, check, **extra):
    r = {"name": name, "system": system, "records": records, "seconds": round(seconds, 3),
         "records_per_s": _rate(records, seconds), "batch_size": batch, "workers": workers,
         "cpu": cpu, "check": check}
    r.update(extra)
    return r


# ------------------------------------------------------------------------------------------
# ceiling: INSERT ... SELECT FROM jsonb_array_elements(<literal>) ON CONFLICT ... per batch
# ------------------------------------------------------------------------------------------

def _set_list(spec, alias):
    return ", ".join("%s = %s.%s" % (c, alias, c) for c in spec.columns if c != "id")


def ceiling_sql(spec):
    """INSERT ... SELECT <row expressions> FROM jsonb_array_elements(<batch>) ON CONFLICT ...;
    one %s: the batch as a JSON array."""
    return ("INSERT INTO %s AS x (%s)\nSELECT %s\nFROM %s\nON CONFLICT (id) DO UPDATE SET %s\n"
            "WHERE x.updated_idx < excluded.updated_idx" % (
                spec.table, ", ".join(spec.columns), ",\n       ".join(spec.select_exprs), spec.from_clause,
                _set_list(spec, "excluded")))


def reduced_batch_json(batch):
    """A batch reduced to the newest version of each id, as one JSON array (text)."""
    return (b"[" + b",".join(r.line for r in workload.reduce_newest(batch)) + b"]").decode("utf-8")


def run_ceiling(ctx, spec, records, expected, batch_size=1000):
    reset_table(ctx, spec.table)
    conn = ctx.cluster.connect(autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute(WORKER_WORK_MEM)     # the wide batches' jsonb_array_elements rows would spill at 4MB
        sql = ceiling_sql(spec)
        # Reduction and statement text are built before the clock starts.
        stmts = [cur.mogrify(sql, (reduced_batch_json(b),)) for b in workload.batches(records, batch_size)]
        temp0 = temp_usage(ctx)
        lsn = wal_lsn(ctx)
        cpu0 = ctx.snapshot()
        t0 = time.perf_counter()
        for s in stmts:
            cur.execute(s)      # autocommit: one transaction per batch, as the worker does
        seconds = time.perf_counter() - t0
        cpu = ctx.snapshot().diff(cpu0, seconds, ctx.ncpu)
        wal = wal_bytes_since(ctx, lsn)
    finally:
        conn.close()
    return _result("ceiling", "ceiling", len(records), seconds, batch_size, 1, cpu, check_table(ctx, spec, expected),
                   statements=len(stmts), wal_bytes=wal, **_io(ctx, lsn, temp0))


# ------------------------------------------------------------------------------------------
# limit: the extension's statement, fed from typed rows already inside the server
# ------------------------------------------------------------------------------------------

def build_stage(ctx, spec, records, batch_size=1000):
    """The limit's input, loaded before any clock starts: an UNLOGGED table with the target's
    columns plus the batch number, one row per id and batch (each batch reduced to the newest
    version of each id, as the worker reduces it), already typed (computed by the ceiling's own
    expressions, so the content is the same), in (batch, id) order with an index on it.  Its
    varlena columns are stored EXTERNAL: uncompressed, so the limit pays TOAST compression of
    large values (the `data` object) as a fresh write from the worker does.  Then VACUUM
    (FREEZE, ANALYZE): the timed reads set no hint bits and plan with real statistics."""
    key = (spec.name, len(records), batch_size)
    if ctx.stages.get(spec.name, {}).get("key") == key:
        return ctx.stages[spec.name]
    stage = "bench_stage_%s" % spec.name
    t0 = time.perf_counter()
    ctx.sql("DROP TABLE IF EXISTS %s" % stage)
    ctx.sql("CREATE UNLOGGED TABLE %s (batch integer NOT NULL, LIKE %s)" % (stage, spec.table))
    for (col,) in ctx.sql("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                          "AND NOT attisdropped AND attstorage IN ('x', 'm') ORDER BY attnum", (stage,)):
        ctx.sql("ALTER TABLE %s ALTER COLUMN %s SET STORAGE EXTERNAL" % (stage, col))
    load = ("INSERT INTO %s (batch, %s) SELECT %%s, b.* FROM (SELECT %s FROM %s) AS b ORDER BY b.id"
            % (stage, ", ".join(spec.columns),
               ", ".join("%s AS %s" % (e, c) for e, c in zip(spec.select_exprs, spec.columns)), spec.from_clause))
    batches = workload.batches(records, batch_size)
    for k, b in enumerate(batches):
        ctx.sql(load, (k, reduced_batch_json(b)))
    ctx.sql("CREATE INDEX ON %s (batch, id)" % stage)
    ctx.sql("VACUUM (FREEZE, ANALYZE) %s" % stage)
    rows, size = ctx.sql("SELECT count(*), pg_total_relation_size(%s::regclass) FROM " + stage, (stage,))[0]
    info = {"key": key, "table": stage, "batches": len(batches), "rows": rows, "bytes": size,
            "load_seconds": round(time.perf_counter() - t0, 2)}
    ctx.stages[spec.name] = info
    return info


def limit_sql(spec, stage):
    """The statement BuildUpsert (src/pg/apply.cpp) builds, with the staged rows of one batch in
    place of its (SELECT unnest($1) AS c1, ...) select list.  They come in id order, as the worker sorts them before
    it builds its arrays: the staging table's physical order, which every plan (index, bitmap or
    sequential scan) returns, so the server sorts nothing the worker does not sort itself.  The
    worker reads the RETURNING rows through SPI; here the server counts them (inserted, total)."""
    cols = ", ".join(spec.columns)
    return ("WITH u AS (INSERT INTO %s AS t (%s) SELECT %s FROM %s s WHERE s.batch = $1 "
            "ON CONFLICT (id) DO UPDATE SET %s WHERE t.updated_idx IS NULL OR t.updated_idx < EXCLUDED.updated_idx "
            "RETURNING (t.xmax = 0) AS inserted, COALESCE(t.deleted, false) AS deleted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FROM u" % (
                spec.table, cols, ", ".join("s.%s" % c for c in spec.columns), stage, _set_list(spec, "EXCLUDED")))


def run_limit(ctx, spec, records, expected, batch_size=1000):
    """One prepared statement per batch, autocommit (one transaction per batch, the server's
    commit settings, as the worker), in a session with the worker's work_mem."""
    stage = build_stage(ctx, spec, records, batch_size)
    reset_table(ctx, spec.table)
    conn = ctx.cluster.connect(autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute(WORKER_WORK_MEM)
        cur.execute("PREPARE bench_limit(integer) AS " + limit_sql(spec, stage["table"]))
        inserted = written = 0
        temp0 = temp_usage(ctx)
        lsn = wal_lsn(ctx)
        cpu0 = ctx.snapshot()
        t0 = time.perf_counter()
        for k in range(stage["batches"]):
            cur.execute("EXECUTE bench_limit(%s)", (k,))
            ins, n = cur.fetchone()
            inserted += ins
            written += n
        seconds = time.perf_counter() - t0
        cpu = ctx.snapshot().diff(cpu0, seconds, ctx.ncpu)
        wal = wal_bytes_since(ctx, lsn)
        cur.execute("EXPLAIN EXECUTE bench_limit(0)")
        plan = [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
    check = check_table(ctx, spec, expected)
    if inserted != expected[0]:
        check["ok"] = False
    return _result("limit", "limit", len(records), seconds, batch_size, 1, cpu, check, statements=stage["batches"],
                   rows_inserted=inserted, rows_written=written, plan=plan,
                   stage={k: v for k, v in stage.items() if k != "key"}, wal_bytes=wal, **_io(ctx, lsn, temp0))


# ------------------------------------------------------------------------------------------
# sequin_sync
# ------------------------------------------------------------------------------------------

def worker_pids(ctx, consumer):
    return [r[0] for r in ctx.sql(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'sequin_sync worker' "
        "AND application_name LIKE %s ORDER BY application_name", ("sequin_sync %s/%%" % consumer,))]


def status_row(ctx, consumer):
    rows = ctx.sql("SELECT state, workers, received, inserted, updated, deleted, skipped, dead_lettered, acked, "
                   "last_error FROM sequin_sync.status WHERE consumer = %s", (consumer,))
    if not rows:
        return None
    keys = ("state", "workers", "received", "inserted", "updated", "deleted", "skipped", "dead_lettered", "acked",
            "last_error")
    return dict(zip(keys, rows[0]))


def create_consumer(ctx, consumer, batch_size, workers, table, collection, protocol="v1"):
    """create_consumer and map_collection in one transaction: the worker starts at commit and
    never sees the consumer unmapped.  The endpoint's path gives the protocol."""
    ctx.sql("BEGIN; "
            "SELECT sequin_sync.create_consumer(%s, %s, %s, batch_size => %s, wait_for => %s, workers => %s); "
            "SELECT sequin_sync.map_collection(%s, %s, %s::regclass); COMMIT",
            (consumer, ctx.endpoint(consumer, protocol), STREAM_TOKEN if protocol == "stream" else TOKEN,
             batch_size, WAIT_FOR, workers, consumer, collection, table))


def drop_consumer(ctx, consumer):
    ctx.sql("SELECT sequin_sync.drop_consumer(%s)", (consumer,))
    deadline = time.monotonic() + 15
    while worker_pids(ctx, consumer) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        ctx.admin.delete_consumer(consumer)
    except RuntimeError:
        pass


def fake_consumer(ctx, cid, max_in_flight, protocol="v1"):
    # The visibility timeout is long and max_ack_pending high enough for every worker to have
    # a batch in flight: neither may throttle the systems under test.  (A Sequin Stream sink has
    # no max_ack_pending.)
    if protocol == "stream":
        ctx.admin.create_consumer(cid, STREAM_TOKEN, protocol="stream", ack_wait_ms=120000)
    else:
        ctx.admin.create_consumer(cid, TOKEN, ack_wait_ms=120000, max_ack_pending=max(100000, max_in_flight))


def wait_all_acked(ctx, cid, n, what, consumer=None, on_poll=None):
    """Polls the fake's counters every 50 ms until n messages are acked; returns the time."""
    last, last_change = -1, time.monotonic()
    while True:
        time.sleep(POLL_S)
        st = ctx.admin.stats(cid)
        now = time.perf_counter()
        if on_poll is not None:
            on_poll(st)
        if st["acked"] >= n:
            return now, st
        if st["acked"] != last:
            last, last_change = st["acked"], time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            detail = status_row(ctx, consumer) if consumer else None
            raise BenchError("%s: no progress for %d s (acked %d of %d; fake %s; status %s)\n%s"
                             % (what, STALL_S, st["acked"], n, st, detail, ctx.cluster.log_tail(15)))


class Perf:
    """perf record -g on cpu-clock for the duration of a run (optional): the whole machine (-a),
    or with tid one thread (-t; samples of short-lived threads are misattributed under -a on
    this kernel, so the worker's main thread is recorded on its own)."""

    def __init__(self, path, tid=None):
        self.path = path
        self.tid = tid
        self.proc = None

    def __enter__(self):
        if self.path:
            # One thread: DWARF call graphs (Postgres and the extension are built without frame
            # pointers, so -g alone cannot say what a statement's time was spent under).
            target = (["-F", "499", "--call-graph", "dwarf,16384", "-t", str(self.tid)] if self.tid
                      else ["-F", "999", "-g", "-a"])
            self.proc = subprocess.Popen(["perf", "record", "-e", "cpu-clock"] + target +
                                         ["-o", self.path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5 if not self.tid else 0.05)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return False


def run_sequin_sync(ctx, spec, records, expected, batch_size=1000, workers=1, name=None, perf_file=None,
                    stream_lines=None):
    """The worker from create_consumer until every message is acked.  With stream_lines (the
    records as change messages, sequin_stream.messages) it is a Sequin Stream consumer writing
    the stream target (the workload's table plus sequin_version)."""
    protocol = "stream" if stream_lines is not None else "v1"
    name = name or "sequin_sync%s w%d b%d" % (" stream" if stream_lines is not None else "", workers, batch_size)
    table = sequin_stream.target(spec) if stream_lines is not None else spec.table
    collection = sequin_stream.collection(spec) if stream_lines is not None else spec.collection
    reset_table(ctx, table)
    consumer = ctx.unique("ss")
    fake_consumer(ctx, consumer, workers * batch_size, protocol)
    t = time.perf_counter()
    n = ctx.admin.publish_lines(consumer, stream_lines if stream_lines is not None else [r.line for r in records])
    publish_s = time.perf_counter() - t
    if n != len(records):
        raise BenchError("published %d of %d records" % (n, len(records)))
    try:
        temp0 = temp_usage(ctx)
        lsn = wal_lsn(ctx)
        with Perf(perf_file):
            cpu0 = ctx.snapshot()
            t0 = time.perf_counter()
            t0_mono = time.monotonic()
            create_consumer(ctx, consumer, batch_size, workers, table, collection, protocol)
            main_perf = None
            if perf_file:
                # The worker's main (applying) thread on its own: <perf_file>.main
                for _ in range(200):
                    started = worker_pids(ctx, consumer)
                    if started:
                        main_perf = Perf(perf_file + ".main", tid=started[0]).__enter__()
                        break
                    time.sleep(0.01)
            t1, st = wait_all_acked(ctx, consumer, n, name, consumer)
            if main_perf is not None:
                main_perf.__exit__(None, None, None)
            from_create = t1 - t0
            cpu = ctx.snapshot().diff(cpu0, from_create, ctx.ncpu)
        # Timed like the limit, whose clock starts at its first statement (its connection and
        # PREPARE come before): from the first message the fake delivered to the last ack.  The
        # worker's start (process, database connection, first long poll) is reported apart.
        first = st.get("first_delivery_at")
        startup = min(max(first - t0_mono, 0.0), from_create) if first is not None else 0.0
        seconds = from_create - startup
        wal = wal_bytes_since(ctx, lsn)
        pids = worker_pids(ctx, consumer)
        # The workers started with this run: their CPU so far is the run's.  The main thread
        # applies; the rest is the receive/parse thread (pull_session.hpp, Prefetch).
        worker_cpu = sum(procstat.cpu_seconds(pid) for pid in pids)
        apply_thread_cpu = sum(procstat.thread_cpu_seconds(pid, pid) for pid in pids)
        rss = {pid: procstat.status_kb(pid) for pid in pids}
        status = status_row(ctx, consumer)
    finally:
        drop_consumer(ctx, consumer)
    check = check_table(ctx, spec, expected, table)
    if status is not None and status["dead_lettered"]:
        check["ok"] = False
    if stream_lines is not None:
        # Every row was written by a change: it carries that change's version.
        versioned = ctx.sql("SELECT count(sequin_version) FROM %s" % table)[0][0]
        check["versioned_rows"] = versioned
        check["ok"] = check["ok"] and versioned == check["rows"]
    return _result(name, "sequin_sync", n, seconds, batch_size, workers, cpu, check, protocol=protocol,
                   status={k: v for k, v in status.items()} if status else None,
                   fake_stats={k: st.get(k) for k in ("delivered", "redelivered", "acked", "next_requests",
                                                      "receive_requests", "empty_replies", "ack_requests",
                                                      "expired") if k in st},
                   worker_rss_kb=list(rss.values()), publish_seconds=round(publish_s, 2), wal_bytes=wal,
                   worker_cpu_s=round(worker_cpu, 3), apply_thread_cpu_s=round(apply_thread_cpu, 3),
                   startup_s=round(startup, 3), seconds_from_create=round(from_create, 3),
                   **_io(ctx, lsn, temp0))


# ------------------------------------------------------------------------------------------
# external worker: what users write from Sequin's upsert guide (Python + psycopg2)
# ------------------------------------------------------------------------------------------

EXT_SQL = ("INSERT INTO {table} AS x ({cols}) VALUES {values} ON CONFLICT (id) DO UPDATE SET {set} "
           "WHERE x.updated_idx < excluded.updated_idx")


def run_external(ctx, spec, records, expected, mode, batch_size=1000):
    """mode: 'per-record' (one INSERT ... ON CONFLICT per record) or 'batched' (execute_values,
    one statement per batch after dropping older versions of an id within the batch, which a
    single INSERT ... ON CONFLICT cannot touch twice).  Pull, upsert in one transaction, commit,
    ack - in this Python process."""
    from psycopg2.extras import Json, execute_values

    name = "external %s" % mode
    reset_table(ctx, spec.table)
    cid = ctx.unique("ext")
    fake_consumer(ctx, cid, batch_size)
    n = ctx.admin.publish_lines(cid, [r.line for r in records])
    conn = ctx.cluster.connect(autocommit=False)
    client = ConsumerClient(ctx.fake.port, cid, TOKEN)
    cols = ", ".join(spec.columns)
    one = EXT_SQL.format(table=spec.table, cols=cols, values=spec.ext_template, set=_set_list(spec, "excluded"))
    many = EXT_SQL.format(table=spec.table, cols=cols, values="%s", set=_set_list(spec, "excluded"))
    row = spec.ext_row
    try:
        cur = conn.cursor()
        temp0 = temp_usage(ctx)
        lsn = wal_lsn(ctx)
        cpu0 = ctx.snapshot()
        t0 = time.perf_counter()
        acked = 0
        empty_since = None
        while acked < n:
            reply = json.loads(client.next_raw(batch_size, WAIT_FOR_MS))
            items = reply["data"]
            if not items:
                empty_since = empty_since or time.monotonic()
                if time.monotonic() - empty_since > STALL_S:
                    raise BenchError("%s: the fake delivers nothing (acked %d of %d)" % (name, acked, n))
                continue
            empty_since = None
            recs = [it["record"] for it in items]
            if mode == "per-record":
                for rec in recs:
                    cur.execute(one, row(rec, Json))
            else:
                newest = {}
                for rec in recs:
                    cur_best = newest.get(rec["id"])
                    if cur_best is None or rec["updated_idx"] > cur_best["updated_idx"]:
                        newest[rec["id"]] = rec
                execute_values(cur, many, [row(r, Json) for r in newest.values()], template=spec.ext_template,
                               page_size=len(newest))
            conn.commit()
            client.ack([it["ack_token"] for it in items])
            acked += len(items)
        seconds = time.perf_counter() - t0
        cpu = ctx.snapshot().diff(cpu0, seconds, ctx.ncpu)
        wal = wal_bytes_since(ctx, lsn)
    finally:
        client.close()
        conn.close()
        try:
            ctx.admin.delete_consumer(cid)
        except RuntimeError:
            pass
    return _result(name, "external", n, seconds, batch_size, 1, cpu, check_table(ctx, spec, expected), wal_bytes=wal,
                   **_io(ctx, lsn, temp0))


# ------------------------------------------------------------------------------------------
# the fake consumer's own cost per batch
# ------------------------------------------------------------------------------------------

_TOKEN_RX = re.compile(rb'"ack_token":"([A-Za-z0-9]+)"')
_ACK_ID_RX = re.compile(rb'"ack_id":"([0-9a-fA-F-]+)"')


def probe_fake(ctx, records, batch_size=1000, batches=20, stream_lines=None):
    """Serve and ack `batches` full batches straight from this script: the fake's own cost per
    batch (v1 records, or with stream_lines the same records as Sequin Stream messages)."""
    cid = ctx.unique("probe")
    if stream_lines is not None:
        fake_consumer(ctx, cid, batch_size, "stream")
        ctx.admin.publish_lines(cid, stream_lines[:batch_size * batches])
        client = StreamClient(ctx.fake.port, cid, STREAM_TOKEN)
        token_rx = _ACK_ID_RX
    else:
        fake_consumer(ctx, cid, batch_size)
        ctx.admin.publish_lines(cid, [r.line for r in records[:batch_size * batches]])
        client = ConsumerClient(ctx.fake.port, cid, TOKEN)
        token_rx = _TOKEN_RX
    next_ms, ack_ms, sizes = [], [], []
    try:
        while True:
            t0 = time.perf_counter()
            body = client.next_raw(batch_size, 0)
            t1 = time.perf_counter()
            tokens = [m.decode() for m in token_rx.findall(body)]
            if not tokens:
                break
            t2 = time.perf_counter()
            client.ack(tokens)
            t3 = time.perf_counter()
            if len(tokens) == batch_size:
                next_ms.append((t1 - t0) * 1000)
                ack_ms.append((t3 - t2) * 1000)
                sizes.append(len(body))
    finally:
        client.close()
        ctx.admin.delete_consumer(cid)
    if not next_ms:
        return None
    per_batch = statistics.median(next_ms) + statistics.median(ack_ms)
    return {"batch_size": batch_size, "batches": len(next_ms),
            "next_ms_p50": round(statistics.median(next_ms), 2), "next_ms_max": round(max(next_ms), 2),
            "ack_ms_p50": round(statistics.median(ack_ms), 2),
            "batch_bytes": int(statistics.mean(sizes)),
            "max_records_per_s": round(batch_size * 1000 / per_batch)}


# ------------------------------------------------------------------------------------------
# latency: one record published to an idle consumer until it is visible
# ------------------------------------------------------------------------------------------

def percentile(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def run_latency(ctx, records, samples=300, warmup=5):
    """The target table has an AFTER INSERT OR UPDATE trigger that calls pg_notify(id): the
    notification is delivered when the worker's transaction commits, i.e. exactly when the row
    becomes visible.  The clock starts before the publish request, and stops when a separate
    LISTEN connection receives the notification (select() on its socket: no poll granularity).
    Between samples the worker is left idle in its long poll (20-70 ms after the previous ack)."""
    reset_table(ctx, LATENCY_TABLE)
    consumer = ctx.unique("lat")
    fake_consumer(ctx, consumer, 1000)
    listener = ctx.cluster.connect(autocommit=True)
    rng = random.Random(7)
    try:
        listener.cursor().execute("LISTEN bench_seen")
        create_consumer(ctx, consumer, 1000, 1, LATENCY_TABLE, workload.COLLECTION)
        deadline = time.monotonic() + 15
        while not worker_pids(ctx, consumer):
            if time.monotonic() > deadline:
                raise BenchError("latency: the worker did not start")
            time.sleep(0.05)
        time.sleep(0.3)
        base = [json.loads(r.line) for r in records[:min(len(records), 50)]]
        lat_ms, publish_ms = [], []
        total = samples + warmup
        for i in range(total):
            rec = dict(base[i % len(base)])
            rec["id"] = "lat-%06d" % i
            body = b"[" + json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"]"
            t0 = time.perf_counter()
            ctx.admin.publish_raw(consumer, body)
            tp = time.perf_counter()
            seen = False
            limit = t0 + 15
            while not seen:
                left = limit - time.perf_counter()
                if left <= 0:
                    raise BenchError("latency: record %s not visible after 15 s (status %s)"
                                     % (rec["id"], status_row(ctx, consumer)))
                r, _, _ = select.select([listener], [], [], left)
                if r:
                    listener.poll()
                    while listener.notifies:
                        note = listener.notifies.pop(0)
                        if note.payload == rec["id"]:
                            seen = True
            t1 = time.perf_counter()
            if i >= warmup:
                lat_ms.append((t1 - t0) * 1000)
                publish_ms.append((tp - t0) * 1000)
            # Wait for the ack, then leave the worker in its next long poll for a while.
            deadline = time.monotonic() + 15
            while ctx.admin.stats(consumer)["acked"] < i + 1:
                if time.monotonic() > deadline:
                    raise BenchError("latency: record %s not acked" % rec["id"])
                time.sleep(0.002)
            time.sleep(rng.uniform(0.02, 0.07))
    finally:
        listener.close()
        drop_consumer(ctx, consumer)
    return {"samples": len(lat_ms), "warmup_excluded": warmup,
            "method": "LISTEN/NOTIFY: AFTER INSERT OR UPDATE trigger on the target calls pg_notify(id), "
                      "delivered at commit; clock from before the publish request to the notification",
            "p50_ms": round(percentile(lat_ms, 50), 2), "p90_ms": round(percentile(lat_ms, 90), 2),
            "p99_ms": round(percentile(lat_ms, 99), 2), "max_ms": round(max(lat_ms), 2),
            "min_ms": round(min(lat_ms), 2), "publish_request_ms_p50": round(percentile(publish_ms, 50), 2)}


# ------------------------------------------------------------------------------------------
# memory: the worker's RSS before and after a long stream
# ------------------------------------------------------------------------------------------

def run_memory(ctx, spec, records, total=1000000, chunk=50000, backlog=200000):
    """One worker, batch 1000, `total` records (the workload repeated with rising updated_idx, so
    every round updates every row).  Records are published in chunks while the worker runs,
    keeping at most `backlog` outstanding, so the fake's memory stays bounded."""
    reset_table(ctx, spec.table)
    consumer = ctx.unique("mem")
    fake_consumer(ctx, consumer, 1000)
    create_consumer(ctx, consumer, 1000, 1, spec.table, spec.collection)
    try:
        deadline = time.monotonic() + 15
        while not worker_pids(ctx, consumer):
            if time.monotonic() > deadline:
                raise BenchError("memory: the worker did not start")
            time.sleep(0.05)
        pid = worker_pids(ctx, consumer)[0]
        time.sleep(1.5)          # started, connected, one empty long poll done
        start = procstat.status_kb(pid)
        gen = workload.bumped_lines(records, total)
        published = 0
        warm = None
        samples = []
        t0 = time.perf_counter()
        last_sample = 0.0
        acked = 0
        last, last_change = -1, time.monotonic()
        while acked < total:
            st = ctx.admin.stats(consumer)
            acked = st["acked"]
            if published < total and st["outstanding"] < backlog:
                lines = []
                for line in gen:
                    lines.append(line)
                    if len(lines) == chunk:
                        break
                published += ctx.admin.publish_lines(consumer, lines)
                continue
            now = time.perf_counter()
            if warm is None and acked >= min(100000, total):
                warm = procstat.status_kb(pid)
                warm["acked"] = acked
            if now - last_sample > 0.5:
                s = procstat.status_kb(pid)
                samples.append((round(now - t0, 2), acked, s.get("VmRSS"), s.get("RssAnon")))
                last_sample = now
            if acked != last:
                last, last_change = acked, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                raise BenchError("memory: no progress (acked %d of %d, status %s)"
                                 % (acked, total, status_row(ctx, consumer)))
            time.sleep(POLL_S)
        seconds = time.perf_counter() - t0
        time.sleep(0.3)
        end = procstat.status_kb(pid)
        still_same = pid in worker_pids(ctx, consumer)
        status = status_row(ctx, consumer)
    finally:
        drop_consumer(ctx, consumer)
    anon = [s[3] for s in samples if s[3] is not None]
    # RssAnon swings by several MB from batch to batch (freed memory goes back to the kernel),
    # so a leak shows as a higher peak late in the stream than early, not in one sample.
    early = [s[3] for s in samples if s[3] is not None and s[1] <= total // 4]
    late = [s[3] for s in samples if s[3] is not None and s[1] >= total * 3 // 4]
    return {"records": total, "seconds": round(seconds, 2), "records_per_s": _rate(total, seconds),
            "worker_pid": pid, "same_worker_throughout": still_same,
            "start_kb": start, "after_100k_kb": warm, "end_kb": end,
            "growth_kb": {k: end.get(k, 0) - start.get(k, 0) for k in ("VmRSS", "RssAnon")},
            "growth_after_warmup_kb": ({k: end.get(k, 0) - warm.get(k, 0) for k in ("VmRSS", "RssAnon")}
                                       if warm else None),
            "rss_anon_max_kb": max(anon) if anon else None,
            "rss_anon_peak_first_quarter_kb": max(early) if early else None,
            "rss_anon_peak_last_quarter_kb": max(late) if late else None,
            "samples": samples[::max(1, len(samples) // 40)],
            "status": status}
