"""
test_demo.py - the demo (test/demo.sh, what `make demo` runs once the extension is built and
installed) works from a clone anywhere: a copy of this tree in a new mode-700 directory that the
servers' user cannot enter.  As root the demo's servers run as sequin_test; as root it also runs
as an ordinary user (sequin_test itself, from a copy it owns).  Each run must say that every
record synced, name where the demo runs (outside the clone), and stop cleanly, leaving no server
or fake consumer behind.
"""
import os
import re
import subprocess

import pytest

import pgcluster

SYNCED = "synced: every record is applied and acknowledged."
OWNERS = ["me", "tester"] if pgcluster.is_root() else ["me"]


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
    finally:
        stopped = demo("stop", timeout=120)
    assert stopped.returncode == 0 and "demo stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not os.path.exists(demo_dir)
    pgcluster.wait_until("the demo's postmaster and fake consumer to exit",
                         lambda: not pid_alive(postmaster) and not pid_alive(fake), 30)
    again = demo("stop", timeout=60)
    assert again.returncode == 0 and "no demo is running" in again.stdout
