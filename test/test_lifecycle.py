"""
test_lifecycle.py - sequin_sync's workers in the server's life cycle: a library that was not
preloaded, a postmaster that dies, and configuration changes that reach only the consumer
they change.

  * Without shared_preload_libraries, CREATE EXTENSION succeeds with the documented warning
    (it used to end the session with "FATAL: cannot create PGC_POSTMASTER variables after
    startup"), apply() and the mapping functions work, and status says that consumers don't run.
  * When only the postmaster is killed (SIGKILL to its pid, not its process group), during a
    long poll and during a backoff, no sequin_sync process is left after 3 s, and a new server
    starts on the same data directory (a worker that kept the old shared memory would stop it).
  * A change to one consumer wakes only that consumer's workers; a mapping change, and a reload
    that changes no sequin_sync setting, leave every HTTP session alone (seen at the fake
    consumer: no new /next request, no new connection), and the new mapping still reaches the
    next batch.

Throwaway clusters from test/pgcluster.py, the fake consumer test/fake_sequin.py (its request
log: GET /admin/consumers/<cid>/requests).  Run: /usr/bin/python3 -m pytest test/test_lifecycle.py
"""

import ctypes
import json
import os
import signal
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pgcluster  # noqa: E402

FAKE = os.path.join(HERE, "fake_sequin.py")
TOKEN = "lifecycle-token"
PRELOADED = {
    "shared_preload_libraries": "'sequin_sync'",
    "sequin_sync.database": "'postgres'",
    "sequin_sync.backoff_max": "'60s'",
    "max_worker_processes": "16",
    "fsync": "off",
}
LONG_POLL_MS = 300000   # wait_for => '5 minutes': nothing ends these polls but the worker


# --------------------------------------------------------------------------------------------
# Helpers, shared with test_reload_stress.py
# --------------------------------------------------------------------------------------------

@pytest.fixture
def fake(tmp_path):
    f = pgcluster.FakeSequin(FAKE, str(tmp_path))
    f.start()
    yield f
    f.stop()


@pytest.fixture
def preloaded():
    cluster = pgcluster.Cluster(settings=PRELOADED)
    cluster.start()
    try:
        cluster.psql("CREATE EXTENSION sequin_sync;")
        yield cluster
    finally:
        cluster.stop()


def fake_consumer(fake, cid, **settings):
    fake.http("POST", "/admin/consumers", dict({"id": cid, "token": TOKEN}, **settings))


def endpoint(fake, cid):
    return fake.url(f"/v1/http-consumers/{cid}")


def requests_at(fake, cid):
    """{"connections": n, "requests": [...]}: what the fake consumer cid was asked."""
    return fake.http("GET", f"/admin/consumers/{cid}/requests")


def nexts(fake, cid, **match):
    """The /next requests at cid whose parameters equal match."""
    return [r for r in requests_at(fake, cid)["requests"]
            if r["kind"] == "next" and all(r[k] == v for k, v in match.items())]


def sql_literal(s):
    return "'" + s.replace("'", "''") + "'"


def create_consumer(cluster, fake, name, batch_size=10, wait_for="5 minutes"):
    fake_consumer(fake, name)
    cluster.psql(f"SELECT sequin_sync.create_consumer({sql_literal(name)}, "
                 f"{sql_literal(endpoint(fake, name))}, {sql_literal(TOKEN)}, "
                 f"batch_size => {batch_size}, wait_for => {sql_literal(wait_for)});")


def wait_for_long_poll(fake, cid, **match):
    """Until the worker of cid is in a long poll (with these parameters), then a moment more."""
    pgcluster.wait_until(f"a long poll at {cid}", lambda: nexts(fake, cid, wait_for=LONG_POLL_MS, **match), 30)
    time.sleep(0.3)


def record(rid, idx, collection="stripe:customer"):
    return {"id": rid, "collection_id": collection, "updated_idx": idx, "deleted": False,
            "data": {"email": f"{rid}@example.com"}}


# --------------------------------------------------------------------------------------------
# 1. Without shared_preload_libraries
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("conf", [{}, {"sequin_sync.database": "'postgres'"}],
                         ids=["fresh cluster", "database set, library not preloaded"])
def test_create_extension_without_preload(conf):
    cluster = pgcluster.Cluster(settings=dict(conf, fsync="off"))
    cluster.start()
    try:
        p = cluster.run([cluster.bin("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", cluster.dir,
                         "-p", str(cluster.port), "-U", "postgres", "-d", "postgres",
                         "-c", "CREATE EXTENSION sequin_sync"], check=False)
        err = p.stderr.decode()
        assert p.returncode == 0, err
        assert "FATAL" not in err, err
        assert "WARNING:  sequin_sync is not loaded through shared_preload_libraries" in err, err
        assert "HINT:  Add sequin_sync to shared_preload_libraries" in err, err

        # once loaded, the settings a session may use are there; the postmaster-level one is not
        assert cluster.psql("LOAD 'sequin_sync'; SHOW sequin_sync.connect_timeout; SELECT count(*) "
                            "FROM pg_settings WHERE name = 'sequin_sync.database';").split() == ["10s", "0"]

        out = cluster.psql("""
            CREATE TABLE customers (id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text);
            CREATE TABLE gone (id text PRIMARY KEY, updated_idx bigint, deleted boolean);
            SELECT sequin_sync.create_consumer('np', 'http://127.0.0.1:9/v1/http-consumers/np', 'tok');
            SELECT sequin_sync.map_collection('np', 'stripe:customer', 'customers');
            SELECT sequin_sync.map_collection('np', 'stripe:gone', 'gone', delete_mode => 'hard');
            SELECT sequin_sync.alter_consumer('np', batch_size => 50);
            SELECT sequin_sync.pause('np');
            SELECT sequin_sync.resume('np');
            SELECT inserted, updated, deleted, skipped, dead_lettered FROM sequin_sync.apply('np', '[
                {"id": "a", "collection_id": "stripe:customer", "updated_idx": 1, "deleted": false, "data": {"email": "a@x"}},
                {"id": "b", "collection_id": "stripe:customer", "updated_idx": 1, "deleted": false, "data": {"email": "b@x"}},
                {"id": "g", "collection_id": "stripe:gone", "updated_idx": 3, "deleted": true},
                {"id": "u", "collection_id": "stripe:unmapped", "updated_idx": 1, "deleted": false, "data": {}}]');
            SELECT sequin_sync.unmap_collection('np', 'stripe:gone');
            SELECT count(*) FROM sequin_sync.tombstones;
            SELECT sequin_sync.prune_tombstones();
            SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM customers;
        """)
        assert out.split() == ["2|0|1|0|1", "1", "0", "a=a@x,b=b@x"], out

        status = cluster.query_json("SELECT consumer, state, workers, last_error FROM sequin_sync.status")
        assert status == [{"consumer": "np", "state": "stopped", "workers": 0,
                           "last_error": "sequin_sync is not loaded through shared_preload_libraries: "
                                         "consumers do not run"}]
        assert cluster.scalar("SELECT count(*) FROM sequin_sync.tombstone_pruning") == "0"
        assert "FATAL" not in cluster.server_log()
        cluster.psql("DROP EXTENSION sequin_sync;")
    finally:
        cluster.stop()


# --------------------------------------------------------------------------------------------
# 2. A dead postmaster
# --------------------------------------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Orphans of our descendants (the killed postmaster, its workers) become our children, so
    they can be reaped here: an environment whose init does not reap would otherwise keep them
    as zombies, and a zombie postmaster's pid would look alive to the next server."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def proc_stat(pid):
    """(state, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid):
    """Running (not gone, not a zombie); reaps it when it is a zombie child of ours."""
    st = proc_stat(pid)
    if st is not None and st[0] == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return st is not None


def sequin_processes(postmaster):
    """The pids of the postmaster's children that are sequin_sync's (launcher and workers)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st is None or st[1] != postmaster:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if b"sequin_sync" in f.read():
                    pids.append(int(name))
        except OSError:
            pass
    return pids


def kill_postmaster(cluster, what):
    """SIGKILL to the postmaster alone; asserts that every sequin_sync process is gone within
    3 s and that a new server starts on the same data directory."""
    postmaster = cluster.postmaster_pid()
    pids = sequin_processes(postmaster)
    assert len(pids) >= 2, f"launcher and worker expected, found {pids}"
    os.kill(postmaster, signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    left = pids
    while time.monotonic() < deadline:
        alive(postmaster)
        left = [p for p in pids if alive(p)]
        if not left:
            break
        time.sleep(0.05)
    try:
        assert not left, (f"{what}: sequin_sync processes {left} still run 3 s after the postmaster "
                          f"was killed")
    finally:
        for p in left:   # processes of the server this test started
            os.kill(p, signal.SIGKILL)
    pgcluster.wait_until("the old server's processes to end",
                         lambda: not [p for p in os.listdir("/proc") if p.isdigit() and
                                      proc_stat(int(p)) and proc_stat(int(p))[1] == postmaster], 10)
    cluster.start()   # raises with the server log when the old shared memory is still in use
    assert cluster.scalar("SELECT 1") == "1"


def test_no_worker_outlives_the_postmaster(fake):
    become_subreaper()
    cluster = pgcluster.Cluster(settings=PRELOADED)
    cluster.start()
    try:
        cluster.psql("CREATE EXTENSION sequin_sync;")
        create_consumer(cluster, fake, "pm")
        wait_for_long_poll(fake, "pm")
        kill_postmaster(cluster, "during a long poll")

        # the restarted server runs the consumer again; now make it back off (429, Retry-After 30 s)
        fake.http("POST", "/admin/consumers/pm/faults", {"status_429": 1.0, "retry_after": 30})
        cluster.psql("SELECT sequin_sync.alter_consumer('pm', wait_for => '1 second');")
        pgcluster.wait_until("state backoff", lambda: cluster.scalar(
            "SELECT state FROM sequin_sync.status") == "backoff", 30)
        time.sleep(0.3)
        kill_postmaster(cluster, "during a backoff")
    finally:
        cluster.stop()


# --------------------------------------------------------------------------------------------
# 7. Changes reach only the consumer they change
# --------------------------------------------------------------------------------------------

def sessions(fake, cids):
    """Per consumer: (connections, /next requests) so far."""
    out = {}
    for cid in cids:
        log = requests_at(fake, cid)
        out[cid] = (log["connections"], len([r for r in log["requests"] if r["kind"] == "next"]))
    return out


def test_changes_reach_only_their_consumer(fake, preloaded):
    cluster = preloaded
    cluster.psql("""
        CREATE TABLE a_rows (id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text);
        CREATE TABLE b_rows (id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text);
        CREATE TABLE b_rows_new (id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text);
    """)
    for name in ("a", "b"):
        create_consumer(cluster, fake, name)
        cluster.psql(f"SELECT sequin_sync.map_collection('{name}', 'stripe:customer', '{name}_rows');")
    wait_for_long_poll(fake, "a")
    wait_for_long_poll(fake, "b")

    # alter_consumer of a: a asks with the new batch size within a second; b is left alone
    before = sessions(fake, ["b"])
    started = time.monotonic()
    cluster.psql("SELECT sequin_sync.alter_consumer('a', batch_size => 7);")
    pgcluster.wait_until("a's /next with batch_size 7", lambda: nexts(fake, "a", batch_size=7), 5)
    assert time.monotonic() - started < 1.0 + 0.5, "a took more than a second to follow its change"
    time.sleep(1.0)
    assert sessions(fake, ["b"]) == before, "altering consumer a touched consumer b's session"

    # mapping changes wake nobody and touch no session ...
    before = sessions(fake, ["a", "b"])
    cluster.psql("""
        SELECT sequin_sync.map_collection('b', 'stripe:customer', 'b_rows_new');
        SELECT sequin_sync.map_collection('a', 'stripe:invoice', 'a_rows');
        SELECT sequin_sync.unmap_collection('a', 'stripe:invoice');
    """)
    time.sleep(1.5)
    assert sessions(fake, ["a", "b"]) == before, "a mapping change touched an HTTP session"

    # ... and a reload that changes no sequin_sync setting neither
    cluster.psql("ALTER SYSTEM SET work_mem = '5MB'; SELECT pg_reload_conf();")
    time.sleep(1.5)
    assert sessions(fake, ["a", "b"]) == before, "a reload touched an HTTP session"

    # the new mapping reaches b's next batch
    fake.http("POST", "/admin/consumers/b/publish", [record("r1", 1)])
    pgcluster.wait_until("the record in b_rows_new", lambda: cluster.scalar(
        "SELECT count(*) FROM b_rows_new WHERE id = 'r1'") == "1", 10)
    assert cluster.scalar("SELECT count(*) FROM b_rows") == "0"
    assert sessions(fake, ["a"])["a"] == before["a"]

    # a reload that changes a setting the sessions are built from renews both
    marks = {cid: len(nexts(fake, cid)) for cid in ("a", "b")}
    cluster.psql("ALTER SYSTEM SET sequin_sync.poll_margin = '20s'; SELECT pg_reload_conf();")
    pgcluster.wait_until("both consumers polling again", lambda: all(
        len(nexts(fake, cid)) > marks[cid] for cid in ("a", "b")), 5)
    assert json.loads(cluster.psql(
        "SELECT json_agg(state ORDER BY consumer) FROM sequin_sync.status")) == ["running", "running"]
