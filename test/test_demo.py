"""
test_demo.py - the demo (test/demo.sh, what `make demo` runs once the extension is built and
installed) works from a clone anywhere: a copy of this tree in a new mode-700 directory that the
servers' user cannot enter.  As root the demo's servers run as sequin_test; as root it also runs
as an ordinary user (sequin_test itself, from a copy it owns).  Each run must say that every
record synced, name where the demo runs (outside the clone), and stop cleanly, leaving no server
or fake consumer behind.  Its Sequin Stream consumer must leave orders_mirror equal to the source
table's final state (STREAM_ROWS: backfilled rows, an update that kept a stored "unchanged_toast"
note, a hard delete, a key change), with no dead letter, and show protocol and source_lag.
"""
import os
import re
import subprocess

import pytest

import pgcluster

SYNCED = "synced: every record is applied and acknowledged."
STREAM_SYNCED = "stream synced: every message is applied and acknowledged."
LSN = 0x16B3748
GIFT = "Gift wrap, please. " * 150
# orders_mirror after test/demo.sh's history of public.orders: (tenant, id, customer, total,
# status, note, sequin_version = commit_lsn * 2^32 + commit_idx of the change that wrote it).
# acme/2 was deleted, globex/1 moved to globex/10; acme/1's note comes from its backfill read.
STREAM_ROWS = [
    ("acme", "1", "Ada Lovelace", "120.00", "paid", GIFT, str((LSN + 0x200) * 2 ** 32)),
    ("acme", "3", "Eve Liskov", "9.99", "new", None, str((LSN + 0x500) * 2 ** 32 + 1)),
    ("globex", "2", "Dee Knuth", "42.00", "paid", None, str((LSN + 0x200) * 2 ** 32 + 3)),
    ("globex", "10", "Cy Hopper", "300.00", "shipped", "leave at the door", str((LSN + 0x400) * 2 ** 32)),
]
OWNERS = ["me", "tester"] if pgcluster.is_root() else ["me"]


def demo_query(demo_dir, sql):
    """Rows of a query on the demo's server (TCP, trust), fields split on \\x1f, NULL as None."""
    with open(os.path.join(demo_dir, "port")) as f:
        port = f.read().strip()
    out = subprocess.run([os.path.join(pgcluster.pg_config("--bindir"), "psql"), "-X", "-A", "-t", "-q",
                          "-v", "ON_ERROR_STOP=1", "-F", "\x1f", "-P", "null=\x1e", "-h", "127.0.0.1", "-p", port,
                          "-U", "postgres", "-d", "postgres", "-c", sql],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [tuple(None if v == "\x1e" else v for v in line.split("\x1f")) for line in out.split("\n") if line]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.mark.parametrize("owner", OWNERS, ids=lambda o: "as root" if o == "me" and pgcluster.is_root()
                         else "as an ordinary user")
def test_demo_runs_from_a_mode_700_clone_and_stops(copy_tree, owner):
    tree = copy_tree(owner)
    assert os.stat(os.path.dirname(tree)).st_mode & 0o777 == 0o700

    def demo(*args, timeout):
        cmd = ["bash", os.path.join(tree, "test", "demo.sh"), *args]
        if owner == "tester":
            cmd = pgcluster.as_tester(cmd)
        return subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=timeout)

    started = None
    try:
        started = demo(timeout=300)
        out = started.stdout + started.stderr
        assert started.returncode == 0, out
        assert SYNCED in out, out
        where = re.search(r"^sequin_sync demo, in (\S+)$", out, re.M)
        assert where, out
        demo_dir = where.group(1)
        assert not demo_dir.startswith(os.path.dirname(tree)), demo_dir
        with open(os.path.join(demo_dir, "data", "postmaster.pid")) as f:
            postmaster = int(f.readline())
        with open(os.path.join(demo_dir, "fake.pid")) as f:
            fake = int(f.readline())
        assert pid_alive(postmaster) and pid_alive(fake)
        # The Sequin Stream consumer: the mirror equals the source's final state.
        assert STREAM_SYNCED in out, out
        assert "protocol" in out and "source_lag" in out, out
        rows = demo_query(demo_dir, "SELECT tenant, id, customer, total, status, note, sequin_version "
                                    "FROM orders_mirror ORDER BY tenant, id")
        assert rows == STREAM_ROWS, rows
        status = demo_query(demo_dir, "SELECT protocol, received, dead_lettered, acked, source_lag IS NOT NULL "
                                      "FROM sequin_sync.status WHERE consumer = 'orders'")
        assert status == [("stream", "9", "0", "9", "t")], status
        assert demo_query(demo_dir, "SELECT count(*) FROM sequin_sync.dead_letters") == [("0",)]
    finally:
        stopped = demo("stop", timeout=120)
    assert stopped.returncode == 0 and "demo stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not os.path.exists(demo_dir)
    pgcluster.wait_until("the demo's postmaster and fake consumer to exit",
                         lambda: not pid_alive(postmaster) and not pid_alive(fake), 30)
    again = demo("stop", timeout=60)
    assert again.returncode == 0 and "no demo is running" in again.stdout
