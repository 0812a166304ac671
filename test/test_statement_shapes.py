"""
test_statement_shapes.py - pins the shape of the apply engine's statements that Citus relies on,
without Citus (the suite "python: test_statement_shapes").

sequin_sync works on Citus distributed and reference tables because every statement the engine
runs against a target table (the upsert, the upsert of soft deletes without data, the hard
delete) keeps two properties, which a later change could lose without any plain-Postgres test
noticing (README, Citus):

  * its own command is a SELECT; the writes are data-modifying CTEs that it reads.  The engine
    counts skipped records from the statement's processed count, and for a top-level
    INSERT ... SELECT ... RETURNING Citus reports the rows it sent rather than the rows returned
    (which also fails SPI's tuple count check): a SELECT's processed count is its rows;
  * it has no subquery expression (EXISTS, IN, a scalar subquery): Citus refuses a correlated
    one when the FROM clause holds a CTE ("correlated subqueries are not supported when the FROM
    clause contains a CTE or subquery").

The evidence is Postgres' own: with debug_print_parse on and client_min_messages = log, each
statement the engine prepares through SPI is sent to the client as its parse tree (the Query node
as the server prints it).  The engine's statements on the targets are the trees whose range table
holds a target table's OID.  The test applies batches that take every path (new rows, newer and
stale versions, soft deletes without data, hard deletes of present, absent and newer rows), checks
the counts and the tables, then checks each statement's tree: the first commandType of a Query is
its own (CmdType: 1 = SELECT, 2 = UPDATE, 3 = INSERT, 4 = DELETE), and SubLink is the node of
every subquery expression.  It also requires that the INSERT, UPDATE and DELETE paths were all seen, so it cannot
pass by seeing nothing.

The Sequin Stream statements are held to the same two properties (the stream_* tests): the upsert
of a composite key under the (commit_lsn, commit_idx) version guard, the soft delete, the hard
delete with its tombstone, the update that keeps the stored value of a column sent as
"unchanged_toast" (UpdateKeeping), and the upsert of backfill reads (which never overwrite a
change), applied to a paused stream consumer with sequin_sync.apply.

    /usr/bin/python3 -m pytest test/test_statement_shapes.py [--keep]
"""

import json
import os
import re
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pgcluster  # noqa: E402

CLUSTER_PREFIX = "sequin_shapes_"

SETUP = """
CREATE EXTENSION sequin_sync;
SELECT sequin_sync.create_consumer('c', 'http://127.0.0.1:9/v1/http-consumers/c', 't');
SELECT sequin_sync.pause('c');
CREATE TABLE soft_t (id text PRIMARY KEY, updated_idx bigint, deleted boolean,
    status text NOT NULL DEFAULT 'none', amount integer);
CREATE TABLE hard_t (id text PRIMARY KEY, updated_idx bigint, note text);
SELECT sequin_sync.map_collection('c', 'soft', 'soft_t');
SELECT sequin_sync.map_collection('c', 'hard', 'hard_t', delete_mode => 'hard');
"""


def rec(coll, rid, idx, data=None, deleted=False):
    r = {"id": rid, "collection_id": coll, "updated_idx": idx, "deleted": deleted}
    if data is not None:
        r["data"] = data
    return r


BATCH_1 = [rec("soft", i, 1, {"status": "s1", "amount": 1}) for i in "abc"] + \
          [rec("hard", i, 1, {"note": "n1"}) for i in "xyz"]
BATCH_2 = [
    rec("soft", "a", 2, {"status": "s2", "amount": 2}),   # newer: updated
    rec("soft", "b", 0, {"status": "s0", "amount": 0}),   # older: skipped by the version guard
    rec("soft", "c", 3, deleted=True),                    # soft delete without data, row exists
    rec("soft", "d", 1, deleted=True),                    # soft delete without data, no row yet
    rec("hard", "x", 2, deleted=True),                    # hard delete of an older row: removed
    rec("hard", "y", 0, deleted=True),                    # of a newer row: skipped
    rec("hard", "w", 1, deleted=True),                    # of an absent row: a tombstone
]


def session(cluster, sql):
    """Runs sql in one new session; returns (stdout, stderr) as text."""
    p = cluster.run([cluster.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", cluster.dir,
                     "-p", str(cluster.port), "-U", "postgres", "-d", "postgres"],
                    input=sql.encode("utf-8"), env={"PGCLIENTENCODING": "UTF8"})
    return p.stdout.decode("utf-8"), p.stderr.decode("utf-8")


MESSAGE = re.compile(r"^(?:psql:[^ ]*: )?(?:LOG|INFO|NOTICE|WARNING|ERROR|FATAL|PANIC|DEBUG\d):  ")


def msg(action, table, lsn, idx, record, changes=None):
    """A Sequin Stream change message (lsn None: a read, without a version)."""
    schema, name = table.split(".")
    return {"record": record, "changes": changes, "action": action,
            "metadata": {"table_schema": schema, "table_name": name, "commit_lsn": lsn, "commit_idx": idx,
                         "commit_timestamp": "2026-11-01T10:00:00.000000Z"}}


STREAM_SETUP = """
SELECT sequin_sync.create_consumer('s', 'http://127.0.0.1:9/api/sequin_streams/s', 't');
SELECT sequin_sync.pause('s');
CREATE TABLE s_lines (tenant text, id integer, sku text, note text, deleted boolean, sequin_version numeric,
    PRIMARY KEY (tenant, id));
CREATE TABLE s_items (id bigint PRIMARY KEY, name text, note text, sequin_version numeric);
SELECT sequin_sync.map_collection('s', 'shop.lines', 's_lines', delete_mode => 'soft');
SELECT sequin_sync.map_collection('s', 'public.items', 's_items');
"""
STREAM_BATCH_1 = [
    msg("insert", "shop.lines", 50, 0, {"tenant": "acme", "id": 1, "sku": "A-1", "note": "n"}),
    msg("insert", "shop.lines", 50, 1, {"tenant": "acme", "id": 2, "sku": "A-2", "note": "n"}),
    msg("insert", "shop.lines", 50, 2, {"tenant": "zeta", "id": 1, "sku": "Z-1", "note": "n"}),
    msg("insert", "public.items", 50, 3, {"id": 1, "name": "one", "note": "long one"}),
    msg("insert", "public.items", 50, 4, {"id": 2, "name": "two", "note": "long two"}),
    msg("insert", "public.items", 50, 5, {"id": 3, "name": "three", "note": "long three"}),
    msg("read", "public.items", None, None, {"id": 4, "name": "read four", "note": "r"}),     # read upsert
]
STREAM_BATCH_2 = [
    # updates keeping an unchanged TOAST value (UpdateKeeping), of both key shapes
    msg("update", "public.items", 60, 0, {"id": 1, "name": "one v2", "note": "unchanged_toast"}, {}),
    msg("update", "shop.lines", 60, 1, {"tenant": "acme", "id": 2, "sku": "A-2b", "note": "unchanged_toast"}, {}),
    msg("update", "public.items", 60, 2, {"id": 2, "name": "two v2", "note": "n2"}, {}),   # composite-free upsert
    msg("update", "shop.lines", 40, 0, {"tenant": "zeta", "id": 1, "sku": "old", "note": "old"}, {}),  # stale
    msg("delete", "public.items", 60, 3, {"id": 3, "name": None, "note": None}),              # hard delete
    msg("delete", "shop.lines", 60, 4, {"tenant": "acme", "id": 1, "sku": None, "note": None}),   # soft delete
    msg("delete", "shop.lines", 60, 5, {"tenant": "acme", "id": 9, "sku": None, "note": None}),   # of no row
    msg("read", "public.items", None, None, {"id": 1, "name": "stale read", "note": "r"}),   # never over a change
    msg("read", "public.items", None, None, {"id": 5, "name": "read five", "note": "r"}),
]
STREAM_TABLES = ("s_lines", "s_items")


def parse_trees(stderr):
    """The parse trees psql printed: the DETAIL of each "LOG:  parse tree:" message (a message
    starts with its level; its DETAIL and the tree's indented lines follow)."""
    messages = []
    for line in stderr.splitlines(True):
        if MESSAGE.match(line) or not messages:
            messages.append(MESSAGE.sub("", line, count=1))
        else:
            messages[-1] += line
    trees = []
    for m in messages:
        if m.startswith("parse tree:"):
            detail = m.split("DETAIL:", 1)[1]
            assert detail.lstrip().startswith("{QUERY"), detail[:200]
            trees.append(detail)
    return trees


def command_types(tree):
    """Every Query's commandType, the statement's own first."""
    return [int(c) for c in re.findall(r":commandType (\d+)", tree)]


def capture(cluster, consumer, batches, tables):
    """Applies the batches to a paused consumer in one session with the parse trees printed:
    the counts of each, every tree, and the trees of the engine's statements on the tables."""
    oids = dict(line.split("|") for line in cluster.psql(
        "SELECT relname, oid FROM pg_class WHERE relname IN (%s)" % ", ".join("'%s'" % t for t in tables)).split())
    counts = []
    out, err = session(cluster, "SET debug_print_parse = on;\nSET client_min_messages = log;\n" + "".join(
        "SELECT inserted, updated, deleted, skipped, dead_lettered FROM sequin_sync.apply('%s', '%s');\n"
        % (consumer, json.dumps(b).replace("'", "''")) for b in batches))
    for line in out.split():
        counts.append([int(v) for v in line.split("|")])
    targets = {int(o) for o in oids.values()}
    trees = parse_trees(err)
    engine = [t for t in trees if {int(o) for o in re.findall(r":relid (\d+)", t)} & targets]
    return {"counts": counts, "trees": trees, "engine": engine}


@pytest.fixture(scope="module")
def stream_run(cluster, run):
    cluster.psql(STREAM_SETUP)
    return capture(cluster, "s", (STREAM_BATCH_1, STREAM_BATCH_2), STREAM_TABLES)


@pytest.fixture(scope="module")
def run(cluster):
    cluster.psql(SETUP)
    return capture(cluster, "c", (BATCH_1, BATCH_2), ("soft_t", "hard_t"))


def test_batches_applied(cluster, run):
    # inserted, updated, deleted, skipped, dead_lettered: the processed counts the engine reads
    assert run["counts"] == [[6, 0, 0, 0, 0], [0, 1, 4, 2, 0]]
    assert cluster.query_json("SELECT id, updated_idx, deleted, status, amount FROM soft_t ORDER BY id") == [
        {"id": "a", "updated_idx": 2, "deleted": False, "status": "s2", "amount": 2},
        {"id": "b", "updated_idx": 1, "deleted": False, "status": "s1", "amount": 1},
        {"id": "c", "updated_idx": 3, "deleted": True, "status": "s1", "amount": 1},
        {"id": "d", "updated_idx": 1, "deleted": True, "status": "none", "amount": None}]
    assert cluster.query_json("SELECT id, updated_idx, note FROM hard_t ORDER BY id") == [
        {"id": "y", "updated_idx": 1, "note": "n1"}, {"id": "z", "updated_idx": 1, "note": "n1"}]
    assert cluster.query_json("SELECT id, updated_idx FROM sequin_sync.tombstones ORDER BY id") == [
        {"id": "w", "updated_idx": 1}, {"id": "x", "updated_idx": 2}]


def test_every_path_seen(run):
    """Not vacuous: the engine's statements were captured, with an INSERT, an UPDATE and a
    DELETE among their queries (the upsert, the soft delete without data, the hard delete)."""
    assert run["trees"], "no parse tree was printed: debug_print_parse did not reach the client"
    seen = set()
    for t in run["engine"]:
        seen.update(command_types(t))
    assert {2, 3, 4} <= seen, f"commandTypes seen in the engine's statements: {sorted(seen)}"
    # the upserts of both tables, the soft deletes without data, the hard delete
    assert len(run["engine"]) >= 4, len(run["engine"])


def test_every_statement_is_a_select(run):
    """Its processed count is the rows it returns, on Citus too."""
    for t in run["engine"]:
        types = command_types(t)
        assert types[0] == 1, f"an engine statement is a {types[0]} at the top, not a SELECT:\n{t[:3000]}"


def test_no_subquery_expression(run):
    """No EXISTS / IN / scalar subquery (Citus refuses correlated ones next to a CTE)."""
    for t in run["engine"]:
        assert "{SUBLINK" not in t, f"an engine statement has a subquery expression:\n{t[:3000]}"


def test_stream_batches_applied(cluster, stream_run):
    counts = stream_run["counts"]
    assert len(counts) == 2 and all(c[4] == 0 for c in counts), counts    # nothing parked
    v = lambda lsn, idx: str((lsn << 32) + idx)     # noqa: E731
    assert cluster.query_json("SELECT tenant, id, sku, note, deleted, sequin_version::text AS v FROM s_lines "
                              "ORDER BY tenant, id") == [
        {"tenant": "acme", "id": 1, "sku": "A-1", "note": "n", "deleted": True, "v": v(60, 4)},
        {"tenant": "acme", "id": 2, "sku": "A-2b", "note": "n", "deleted": False, "v": v(60, 1)},
        {"tenant": "acme", "id": 9, "sku": None, "note": None, "deleted": True, "v": v(60, 5)},
        {"tenant": "zeta", "id": 1, "sku": "Z-1", "note": "n", "deleted": False, "v": v(50, 2)}]
    assert cluster.query_json("SELECT id, name, note, sequin_version::text AS v FROM s_items ORDER BY id") == [
        {"id": 1, "name": "one v2", "note": "long one", "v": v(60, 0)},
        {"id": 2, "name": "two v2", "note": "n2", "v": v(60, 2)},
        {"id": 4, "name": "read four", "note": "r", "v": None},
        {"id": 5, "name": "read five", "note": "r", "v": None}]


def test_stream_every_path_seen(stream_run):
    """The stream engine's statements were captured: the upserts (INSERT), the soft delete and the
    updates keeping unchanged TOAST values (UPDATE), the hard delete (DELETE) - at least one
    statement each for the upserts of both tables, the read upserts, the UpdateKeeping updates,
    the soft delete and the hard delete."""
    assert stream_run["trees"], "no parse tree was printed"
    seen = set()
    for t in stream_run["engine"]:
        seen.update(command_types(t))
    assert {2, 3, 4} <= seen, f"commandTypes seen in the stream engine's statements: {sorted(seen)}"
    assert len(stream_run["engine"]) >= 6, len(stream_run["engine"])


def test_stream_every_statement_is_a_select(stream_run):
    for t in stream_run["engine"]:
        types = command_types(t)
        assert types[0] == 1, f"a stream engine statement is a {types[0]} at the top, not a SELECT:\n{t[:3000]}"


def test_stream_no_subquery_expression(stream_run):
    for t in stream_run["engine"]:
        assert "{SUBLINK" not in t, f"a stream engine statement has a subquery expression:\n{t[:3000]}"
