"""
test_multidb.py - consumers run in every database that has the extension (issue 15), on one
server with sequin_sync.database left at its default (empty).

  * Three databases, each with the extension, its consumers and its fake endpoints, all sync at
    once.  Two consumers of the same name live in different databases; two more, also of one
    name, share one fake endpoint (each message reaches exactly one of them).  Each database's
    status shows its own consumers only; sequin_sync.all_workers (superusers) shows them all.
  * A fourth database creates the extension while the others run and syncs within 1 s of the
    commit; so does a pg_restore of its dump into a fresh database (the configuration rows
    pg_restore loads wake the manager).
  * While workers are long-polling: DROP EXTENSION in one database stops its workers at once;
    DROP DATABASE (without FORCE) of another returns at once instead of waiting 5 s for them and
    failing; ALTER DATABASE ... RENAME of a third succeeds and its consumers sync again under the
    new name; ALLOW_CONNECTIONS false stops a database's workers and keeps them away; CREATE
    DATABASE ... TEMPLATE of a database with workers succeeds at once, and the copy runs too.  The other
    databases' workers never stop, and no orphaned sequin_sync process remains.
  * sequin_sync.max_workers caps the workers of all databases; status says who waits and why.
  * sequin_sync.database set to one name (a reload is enough) restricts the workers, and
    CREATE EXTENSION, to it; reset, every database runs again.
  * Without the preload the extension installs in any database, with the documented warning.

Run: /usr/bin/python3 -m pytest test/test_multidb.py
"""

import json
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pgcluster  # noqa: E402

TOKEN = "multidb-token"
CLUSTER_SETTINGS = {
    "shared_preload_libraries": "'sequin_sync'",
    "max_worker_processes": "32",
    "sequin_sync.backoff_max": "'1s'",
    "fsync": "off",
    "log_line_prefix": "'%m [%p] %b '",
}
CLUSTER_PREFIX = "sequin_multidb."
LONG_POLL = "5 minutes"


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def fake_consumer(fake, cid):
    fake.http("POST", "/admin/consumers", {"id": cid, "token": TOKEN})


def publish(fake, cid, ids, tag):
    fake.http("POST", f"/admin/consumers/{cid}/publish",
              [{"id": rid, "collection_id": "stripe:customer", "updated_idx": 1, "deleted": False,
                "data": {"email": f"{rid}@{tag}"}} for rid in ids])


def nexts(fake, cid):
    return [r for r in fake.http("GET", f"/admin/consumers/{cid}/requests")["requests"] if r["kind"] == "next"]


def setup_database(cluster, db, consumers, wait_for=LONG_POLL, create_db=True):
    """Creates db (unless it exists), the extension, a table per consumer and the consumers:
    consumers maps a consumer name to its fake consumer id."""
    if create_db:
        cluster.psql(f"CREATE DATABASE {db};")
    sql = ["CREATE EXTENSION sequin_sync;"]
    for name in consumers:
        sql.append(f"CREATE TABLE rows_{name} (id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text);")
    cluster.psql("\n".join(sql), dbname=db)
    for name, cid in consumers.items():
        add_consumer(cluster, db, name, cid, wait_for)


def add_consumer(cluster, db, name, cid, wait_for=LONG_POLL):
    cluster.psql(f"""
        SELECT sequin_sync.create_consumer({lit(name)}, {lit(ENDPOINTS[cid])}, {lit(TOKEN)},
                                           batch_size => 50, wait_for => {lit(wait_for)});
        SELECT sequin_sync.map_collection({lit(name)}, 'stripe:customer', 'rows_{name}');
    """, dbname=db)


ENDPOINTS = {}


def rows(cluster, db, name):
    out = cluster.psql(f"SELECT id FROM rows_{name} ORDER BY id", dbname=db, check=False)
    return out.split() if out is not None else None


def worker_pids(cluster, db=None):
    """{(database, application_name): pid} of the sequin_sync processes (database None: all)."""
    where = "" if db is None else f" AND datname = {lit(db)}"
    out = cluster.query_json("SELECT datname, backend_type, application_name, pid FROM pg_stat_activity "
                             f"WHERE backend_type LIKE 'sequin_sync%'{where}")
    return {(r["datname"], r["application_name"]): r["pid"] for r in out}


def status(cluster, db):
    return json.loads(cluster.psql(
        "SELECT COALESCE(json_agg(s ORDER BY consumer), '[]') FROM (SELECT consumer, state, workers, last_error "
        "FROM sequin_sync.status) s", dbname=db))


# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(make_cluster, fake):
    cluster = make_cluster(CLUSTER_SETTINGS, prefix=CLUSTER_PREFIX)
    for cid in ("orders-a", "orders-b", "shared", "invoices-c", "d1", "a2", "cap"):
        fake_consumer(fake, cid)
        ENDPOINTS[cid] = fake.url(f"/v1/http-consumers/{cid}")
    return cluster


@pytest.fixture(scope="module")
def three(server, fake):
    """db_a, db_b, db_c with their consumers, all synced once."""
    setup_database(server, "db_a", {"orders": "orders-a"})
    setup_database(server, "db_b", {"orders": "orders-b", "shared": "shared"})
    setup_database(server, "db_c", {"shared": "shared", "invoices": "invoices-c"})
    return server


def test_three_databases_sync_at_once(three, fake):
    cluster = three
    assert cluster.scalar("SHOW sequin_sync.database") == ""
    publish(fake, "orders-a", ["a1", "a2", "a3"], "a")
    publish(fake, "orders-b", ["b1", "b2"], "b")
    publish(fake, "invoices-c", ["c1"], "c")
    shared_ids = [f"s{i:02d}" for i in range(40)]
    publish(fake, "shared", shared_ids, "s")
    pgcluster.wait_until("every database synced", lambda: (
        rows(cluster, "db_a", "orders") == ["a1", "a2", "a3"] and rows(cluster, "db_b", "orders") == ["b1", "b2"]
        and rows(cluster, "db_c", "invoices") == ["c1"]
        and sorted(rows(cluster, "db_b", "shared") + rows(cluster, "db_c", "shared")) == shared_ids), 20)
    # the consumers of one name stay apart: each message of the shared endpoint reached one of them
    assert not set(rows(cluster, "db_b", "shared")) & set(rows(cluster, "db_c", "shared"))
    assert fake.http("GET", "/admin/consumers/shared/stats")["outstanding"] == 0

    # each database's status shows its consumers, all running; none of another database's
    pgcluster.wait_until("status of every database", lambda: all(
        all(s["state"] in ("running", "idle") and s["workers"] == 1 for s in status(cluster, db))
        for db in ("db_a", "db_b", "db_c")), 10)
    assert [s["consumer"] for s in status(cluster, "db_a")] == ["orders"]
    assert [s["consumer"] for s in status(cluster, "db_b")] == ["orders", "shared"]
    assert [s["consumer"] for s in status(cluster, "db_c")] == ["invoices", "shared"]

    # superusers see every database's processes; a database without the extension has none
    everything = json.loads(cluster.psql(
        "SELECT json_agg(w ORDER BY kind, database, consumer) FROM (SELECT database, kind, consumer, worker "
        "FROM sequin_sync.all_workers) w", dbname="db_a"))
    assert everything == [
        {"database": None, "kind": "launcher", "consumer": None, "worker": None},
        {"database": "db_a", "kind": "manager", "consumer": None, "worker": None},
        {"database": "db_b", "kind": "manager", "consumer": None, "worker": None},
        {"database": "db_c", "kind": "manager", "consumer": None, "worker": None},
        {"database": "db_a", "kind": "worker", "consumer": "orders", "worker": 0},
        {"database": "db_b", "kind": "worker", "consumer": "orders", "worker": 0},
        {"database": "db_b", "kind": "worker", "consumer": "shared", "worker": 0},
        {"database": "db_c", "kind": "worker", "consumer": "invoices", "worker": 0},
        {"database": "db_c", "kind": "worker", "consumer": "shared", "worker": 0},
    ], everything
    procs = worker_pids(cluster)
    assert not [k for k in procs if k[0] in ("postgres", "template1")], procs
    # a non-superuser cannot list other databases' workers
    err = cluster.psql("CREATE ROLE regress_nosuper LOGIN; GRANT sequin_sync_admin TO regress_nosuper;"
                       "SET ROLE regress_nosuper; SELECT * FROM sequin_sync._all_workers();", dbname="db_a",
                       check=False)
    assert err is None

    # altering one consumer wakes only it: the same-named consumer of the other database keeps its poll
    before = len(nexts(fake, "orders-b"))
    cluster.psql("SELECT sequin_sync.alter_consumer('orders', batch_size => 7);", dbname="db_a")
    pgcluster.wait_until("db_a's orders with batch_size 7", lambda: [
        r for r in nexts(fake, "orders-a") if r["batch_size"] == 7], 5)
    time.sleep(0.5)
    assert len(nexts(fake, "orders-b")) == before, "altering db_a's orders woke db_b's orders"


def test_fourth_database_syncs_within_a_second(three, fake):
    cluster = three
    cluster.psql("CREATE DATABASE db_d;")
    cluster.psql("CREATE TABLE rows_d1 (id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text);",
                 dbname="db_d")
    publish(fake, "d1", ["d1"], "d")
    others = {k: v for k, v in worker_pids(cluster).items() if k[0] in ("db_a", "db_b", "db_c")}
    cluster.psql(f"""
        BEGIN;
        CREATE EXTENSION sequin_sync;
        SELECT sequin_sync.create_consumer('d1', {lit(ENDPOINTS['d1'])}, {lit(TOKEN)}, wait_for => '{LONG_POLL}');
        SELECT sequin_sync.map_collection('d1', 'stripe:customer', 'rows_d1');
        COMMIT;
    """, dbname="db_d")
    committed = time.monotonic()
    pgcluster.wait_until("db_d synced", lambda: rows(cluster, "db_d", "d1") == ["d1"], 10, interval=0.02)
    took = time.monotonic() - committed
    assert took < 1.0, f"db_d synced {took:.2f} s after CREATE EXTENSION committed"
    after = {k: v for k, v in worker_pids(cluster).items() if k[0] in ("db_a", "db_b", "db_c")}
    assert after == others, "the other databases' processes changed"


def test_restored_dump_syncs_within_a_second(three, fake):
    cluster = three
    dump = os.path.join(cluster.dir, "db_d.dump")
    cluster.run([cluster.bin("pg_dump"), "-Fc", "-h", cluster.dir, "-p", str(cluster.port), "-U", "postgres",
                 "-f", dump, "db_d"])
    # db_d lets go of the endpoint: only the restored copy pulls from it
    cluster.psql("SELECT sequin_sync.pause('d1');", dbname="db_d")
    publish(fake, "d1", ["r1"], "restored")
    cluster.psql("CREATE DATABASE db_r;")
    cluster.run([cluster.bin("pg_restore"), "-h", cluster.dir, "-p", str(cluster.port), "-U", "postgres",
                 "-d", "db_r", dump])
    restored = time.monotonic()
    pgcluster.wait_until("db_r synced", lambda: "r1" in (rows(cluster, "db_r", "d1") or []), 10, interval=0.02)
    took = time.monotonic() - restored
    assert took < 1.0, f"the restored consumer synced {took:.2f} s after pg_restore ended"
    assert rows(cluster, "db_r", "d1") == ["d1", "r1"]
    cluster.psql("SELECT sequin_sync.resume('d1');", dbname="db_d")


def wait_polling(fake, cids):
    marks = {cid: len(nexts(fake, cid)) for cid in cids}
    for cid in cids:
        pgcluster.wait_until(f"a long poll at {cid}", lambda: len(nexts(fake, cid)) >= max(marks[cid], 1), 10)
    time.sleep(0.3)


def test_drop_extension_drop_database_and_rename_while_polling(three, fake):
    cluster = three
    cluster.psql("SELECT sequin_sync.pause('d1');", dbname="db_r")   # db_d alone pulls d1 again
    wait_polling(fake, ["orders-a", "orders-b", "invoices-c", "d1"])
    keep = {k: v for k, v in worker_pids(cluster).items() if k[0] == "db_d"}
    assert ("db_d", "sequin_sync d1/0") in keep, keep

    # DROP EXTENSION: db_a's worker and manager stop at once
    cluster.psql("DROP EXTENSION sequin_sync;", dbname="db_a")
    t0 = time.monotonic()
    pgcluster.wait_until("db_a without sequin_sync processes", lambda: not worker_pids(cluster, "db_a"), 5, 0.02)
    assert time.monotonic() - t0 < 1.0

    # DROP DATABASE, no FORCE: our processes leave, it neither waits 5 s nor fails
    t0 = time.monotonic()
    cluster.psql("DROP DATABASE db_b;")
    took = time.monotonic() - t0
    assert took < 2.0, f"DROP DATABASE took {took:.2f} s"

    # RENAME: succeeds, and the consumers come back under the new name
    t0 = time.monotonic()
    cluster.psql("ALTER DATABASE db_c RENAME TO db_c_renamed;")
    assert time.monotonic() - t0 < 2.0
    publish(fake, "invoices-c", ["c2"], "c")
    pgcluster.wait_until("db_c_renamed synced", lambda: rows(cluster, "db_c_renamed", "invoices") == ["c1", "c2"], 15)

    # the fourth database's workers never stopped
    assert {k: v for k, v in worker_pids(cluster).items() if k[0] == "db_d"} == keep

    # no orphan: db_a and db_b have no process; nobody polls their endpoints any more
    time.sleep(1.0)
    marks = {cid: len(nexts(fake, cid)) for cid in ("orders-a", "orders-b")}
    time.sleep(2.0)
    assert {cid: len(nexts(fake, cid)) for cid in marks} == marks, "a dropped database's consumer still polls"
    procs = worker_pids(cluster)
    assert sorted({k[0] for k in procs}, key=str) == sorted({None, "db_c_renamed", "db_d", "db_r"}, key=str), procs
    workers = json.loads(cluster.psql("SELECT json_agg(w ORDER BY database, consumer) FROM (SELECT database, "
                                      "consumer, pid IS NOT NULL AS running FROM sequin_sync.all_workers "
                                      "WHERE kind = 'worker') w", dbname="db_d"))
    assert workers == [
        {"database": "db_c_renamed", "consumer": "invoices", "running": True},
        {"database": "db_c_renamed", "consumer": "shared", "running": True},
        {"database": "db_d", "consumer": "d1", "running": True},
    ], workers
    assert cluster.scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'sequin_sync manager'") == "3"


def test_allow_connections_false_stops_and_keeps_them_away(three, fake):
    cluster = three
    assert worker_pids(cluster, "db_c_renamed")
    t0 = time.monotonic()
    cluster.psql("ALTER DATABASE db_c_renamed ALLOW_CONNECTIONS false;")
    pgcluster.wait_until("db_c_renamed empty", lambda: not worker_pids(cluster, "db_c_renamed"), 5, 0.02)
    assert time.monotonic() - t0 < 1.5
    time.sleep(6)   # more than the launcher's look at pg_database
    assert not worker_pids(cluster, "db_c_renamed")
    cluster.psql("ALTER DATABASE db_c_renamed ALLOW_CONNECTIONS true;")
    pgcluster.wait_until("db_c_renamed back", lambda: len(db_c_workers(cluster)) == 2, 15)

    # CREATE DATABASE ... TEMPLATE needs its source without sessions: ours leave, and come back
    t0 = time.monotonic()
    cluster.psql("CREATE DATABASE db_copy TEMPLATE db_c_renamed;")
    took = time.monotonic() - t0
    assert took < 2.0, f"CREATE DATABASE ... TEMPLATE took {took:.2f} s"
    pgcluster.wait_until("db_c_renamed back after the copy", lambda: len(db_c_workers(cluster)) == 2, 15)
    # the copy has the extension: the launcher finds it without a wake (it reads pg_database)
    pgcluster.wait_until("the copy's manager", lambda: ("db_copy", "sequin_sync manager") in worker_pids(cluster), 15)
    cluster.psql("DROP DATABASE db_copy;")
    pgcluster.wait_until("the copy gone", lambda: not worker_pids(cluster, "db_copy"), 5)


def db_c_workers(cluster):
    return [k for k in worker_pids(cluster, "db_c_renamed") if k[1].startswith("sequin_sync ") and "/" in k[1]]


def test_max_workers_caps_all_databases(three, fake):
    cluster = three
    running = int(cluster.psql("SELECT count(*) FROM sequin_sync.all_workers WHERE kind = 'worker'", dbname="db_d"))
    cluster.psql(f"ALTER SYSTEM SET sequin_sync.max_workers = {running}; SELECT pg_reload_conf();")
    time.sleep(0.3)
    cluster.psql("CREATE TABLE rows_cap (id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text);",
                 dbname="db_d")
    add_consumer(cluster, "db_d", "cap", "cap", wait_for="1 second")
    pgcluster.wait_until("cap waiting", lambda: [s for s in status(cluster, "db_d") if s["consumer"] == "cap"
                                                 and s["state"] == "waiting"], 10)
    cap = [s for s in status(cluster, "db_d") if s["consumer"] == "cap"][0]
    assert cap["workers"] == 0
    assert cap["last_error"] == (f"waiting for a free worker: sequin_sync.max_workers ({running}) are running "
                                 "in all databases"), cap
    # a worker that ends elsewhere makes room
    cluster.psql("SELECT sequin_sync.pause('shared');", dbname="db_c_renamed")
    pgcluster.wait_until("cap running", lambda: [s for s in status(cluster, "db_d") if s["consumer"] == "cap"
                                                 and s["state"] in ("running", "idle")], 10)
    publish(fake, "cap", ["k1"], "cap")
    pgcluster.wait_until("cap synced", lambda: rows(cluster, "db_d", "cap") == ["k1"], 10)
    cluster.psql("ALTER SYSTEM RESET sequin_sync.max_workers; SELECT pg_reload_conf();")
    cluster.psql("SELECT sequin_sync.resume('shared');", dbname="db_c_renamed")


def test_database_setting_restricts_to_one(three, fake):
    cluster = three
    cluster.psql("ALTER SYSTEM SET sequin_sync.database = 'db_d'; SELECT pg_reload_conf();")
    pgcluster.wait_until("only db_d runs", lambda: {k[0] for k in worker_pids(cluster)} == {None, "db_d"}, 15)
    cluster.psql("CREATE DATABASE db_e;")
    p = cluster.run([cluster.bin("psql"), "-X", "-h", cluster.dir, "-p", str(cluster.port), "-U", "postgres",
                     "-d", "db_e", "-c", "CREATE EXTENSION sequin_sync"], check=False)
    err = p.stderr.decode()
    assert p.returncode != 0
    assert 'ERROR:  sequin_sync must be created in database "db_d"' in err, err
    assert "HINT:  Create the extension in \"db_d\", or set sequin_sync.database = '' (every database)" in err, err
    cluster.psql("ALTER SYSTEM RESET sequin_sync.database; SELECT pg_reload_conf();")
    pgcluster.wait_until("every database runs again", lambda: {k[0] for k in worker_pids(cluster)} >= {
        None, "db_d", "db_c_renamed", "db_r"}, 15)
    cluster.psql("CREATE EXTENSION sequin_sync;", dbname="db_e")
    cluster.psql("DROP DATABASE db_e;")


def test_no_preload_installs_in_any_database(make_cluster):
    cluster = make_cluster({"fsync": "off"}, prefix="sequin_multidb_bare.")
    cluster.psql("CREATE DATABASE app;")
    for db in ("postgres", "app"):
        p = cluster.run([cluster.bin("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", cluster.dir, "-p",
                         str(cluster.port), "-U", "postgres", "-d", db, "-c", "CREATE EXTENSION sequin_sync"],
                        check=False)
        err = p.stderr.decode()
        assert p.returncode == 0, err
        assert "WARNING:  sequin_sync is not loaded through shared_preload_libraries" in err, err
        cluster.psql("SELECT sequin_sync.create_consumer('x', 'http://127.0.0.1:9/v1/http-consumers/x', 't');",
                     dbname=db)
        assert json.loads(cluster.psql("SELECT json_agg(state) FROM sequin_sync.status", dbname=db)) == ["stopped"]
    assert cluster.psql("DROP DATABASE app;") is not None
