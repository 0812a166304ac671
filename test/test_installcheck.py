"""
test_installcheck.py - `make installcheck` (what packagers and PGXN clients run) passes against a
running server that preloads sequin_sync with sequin_sync.database at its default (empty: every
database), and passes again on the same server (the regression database's manager and workers
leave it when pg_regress drops it first).  Against a server without the library preloaded it stops at once and says what the
server needs.  `make` runs as sequin_test when we are root, in a copy of the tree it owns (the
tests write results/ and output_iso/ there); the extension must be installed (`make test` does).
"""
import os
import re
import subprocess

import pgcluster

CLUSTER_SETTINGS = dict({k: v for k, v in pgcluster.PRELOAD_SETTINGS.items() if k != "sequin_sync.database"}, **{
    "sequin_sync.backoff_max": "'1s'",
})
CLUSTER_PREFIX = "sequin_installcheck."


def installcheck(tree, cluster):
    env = dict(os.environ, PGHOST=cluster.dir, PGPORT=str(cluster.port), PGUSER="postgres")
    env.pop("PGDATABASE", None)
    return subprocess.run(pgcluster.as_tester(["make", "-C", tree, "installcheck"]), env=env,
                          capture_output=True, text=True, timeout=600)


def test_installcheck_passes_and_passes_again(cluster, copy_tree):
    tree = copy_tree("tester")
    for run in ("first", "second"):
        p = installcheck(tree, cluster)
        out = p.stdout + p.stderr
        diffs = os.path.join(tree, "regression.diffs")
        if os.path.exists(diffs):
            with open(diffs) as f:
                out += f.read()
        assert p.returncode == 0, f"{run} run:\n{out[-6000:]}"
        passed = re.findall(r"All (\d+) tests passed", out)
        assert len(passed) == 2, f"{run} run: expected the pg_regress and the isolation tests:\n{out[-3000:]}"


def test_installcheck_says_what_the_server_needs(make_cluster, copy_tree):
    bare = make_cluster({"log_line_prefix": "'%m [%p] %b '"}, prefix="sequin_installcheck_bare.")
    p = installcheck(copy_tree("tester"), bare)
    assert p.returncode != 0
    assert "the server must preload sequin_sync for the database contrib_regression" in p.stderr, p.stderr
    assert "sequin_sync.database = '(not set: sequin_sync is not loaded)'" in p.stderr, p.stderr
