"""
conftest.py - what every Python suite (test/test_*.py, run by pytest) shares: throwaway
PostgreSQL clusters and the fake Sequin consumer, both from test/pgcluster.py, as fixtures.

  cluster       (module) a started cluster.  Its postgresql.conf settings are the module's
                CLUSTER_SETTINGS (default: pgcluster.PRELOAD_SETTINGS, sequin_sync preloaded for the
                database postgres), its directory prefix the module's CLUSTER_PREFIX.
  make_cluster  (module) a factory for clusters of a module that needs several, or none at
                start: make_cluster(settings, prefix="...", start=True) -> pgcluster.Cluster.
  fake          (module) test/fake_sequin.py in its own process: a pgcluster.FakeSequin
                (.port, .url(path), .http(method, path, doc)).
  say           (session) say(line): prints at once, past pytest's output capture: the progress
                of a long suite.
  copy_tree     (module) copy_tree(owner) -> a copy of this source tree (no .git, no build
                output) in a new mode-700 directory owned by owner: "me" (whoever runs pytest)
                or "tester" (sequin_test when we are root, else me).  Removed when the module
                ends.  The tree is $SEQUIN_SYNC_REPO (run_tests.sh sets it), else test/..

Every cluster is stopped when its module ends.  Its directory (data/, server.log) is removed,
unless a test of the module failed or pytest ran with --keep: then it is kept, and its path and
the tail of its server log are printed.  As root, the servers run as the user sequin_test.

Options (pytest ... --keep, --fault-ids N, ...): see pytest_addoption below.
"""

import contextlib
import os
import pwd
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pgcluster  # noqa: E402

FAKE_SEQUIN = os.path.join(HERE, "fake_sequin.py")
REPO = os.environ.get("SEQUIN_SYNC_REPO") or os.path.dirname(HERE)
# Not copied by copy_tree: version control and what a build or a test run leaves behind.
NOT_COPIED = shutil.ignore_patterns(".git", "*.o", "*.so", "*.bc", "*.d", "__pycache__", "results",
                                    "output_iso", "tmp_check*", "log", "regression.*", "bin",
                                    ".demo-dir", ".build-stamp")



def pytest_addoption(parser):
    group = parser.getgroup("sequin_sync")
    group.addoption("--keep", action="store_true",
                    help="keep every throwaway cluster's directory (else kept only after a failure)")
    group.addoption("--fault-ids", type=int, default=3000,
                    help="test_fault: distinct record ids (two collections)")
    group.addoption("--fault-seed", type=int, default=20241110, help="test_fault: the random seed")
    group.addoption("--skip-durability", action="store_true",
                    help="test_fault: skip phase 2 (crashes right after an ack with "
                         "synchronous_commit = off)")
    group.addoption("--hostile-jobs", type=int, default=4,
                    help="test_hostile: cases run at the same time")


@pytest.fixture(scope="session")
def say(request):
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def say(line):
        if reporter is None:
            print(line, flush=True)
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(line)
            reporter.flush()
    return say


@pytest.fixture(scope="module")
def make_cluster(request, say):
    """A factory of started clusters; all of them are stopped when the module ends."""
    clusters = []
    failed_before = request.session.testsfailed
    keep = request.config.getoption("--keep")

    def make(settings=None, prefix=None, start=True, env=None):
        c = pgcluster.Cluster(pgcluster.PRELOAD_SETTINGS if settings is None else settings, keep=True,
                              env=env, prefix=prefix or "sequin_sync_test.")
        clusters.append(c)
        if start:
            c.start()
        else:
            c.init()
        return c

    yield make
    failed = request.session.testsfailed > failed_before
    for c in clusters:
        c.stop()      # keep=True: the directory stays until cleanup() below
        if c.dir is None:
            continue
        if failed or keep:
            say(f"kept {c.dir} (server.log, data/)")
            if failed:
                say("--- tail of its server.log ---\n" + c.log_tail(40))
        else:
            c.cleanup()


@pytest.fixture(scope="module")
def cluster(request, make_cluster):
    """A started cluster with the module's CLUSTER_SETTINGS."""
    return make_cluster(getattr(request.module, "CLUSTER_SETTINGS", None),
                        getattr(request.module, "CLUSTER_PREFIX", None))


@pytest.fixture(scope="module")
def fake(tmp_path_factory, request, say):
    """test/fake_sequin.py on 127.0.0.1 and a free port; its log is fake.log in its directory."""
    workdir = tmp_path_factory.mktemp("fake")
    failed_before = request.session.testsfailed
    f = pgcluster.FakeSequin(FAKE_SEQUIN, str(workdir))
    f.start()
    yield f
    f.stop()
    if request.session.testsfailed > failed_before:
        say(f"the fake consumer's log: {workdir}/fake.log")


@pytest.fixture(scope="module")
def copy_tree():
    made = []

    def copy(owner="me"):
        top = tempfile.mkdtemp(prefix="sequin_sync_tree.")      # mode 700
        made.append(top)
        tree = os.path.join(top, "sequin_sync")
        shutil.copytree(REPO, tree, ignore=NOT_COPIED)
        if owner == "tester" and pgcluster.is_root():
            pgcluster.ensure_test_user()
            pw = pwd.getpwnam(pgcluster.TEST_USER)
            for d, dirs, files in os.walk(top):
                for name in [d] + [os.path.join(d, x) for x in dirs + files]:
                    os.lchown(name, pw.pw_uid, pw.pw_gid)
        return tree

    yield copy
    for top in made:
        shutil.rmtree(top, ignore_errors=True)
