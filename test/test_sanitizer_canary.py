"""
test_sanitizer_canary.py - proves that `make test-sanitize` can see a bug in the extension inside
the server, so a sanitizer run with no report means something.  Runs under SANITIZE=1 only (the
suite "python: test_sanitizer_canary" of `make test-sanitize`; skipped otherwise): the library is
then built with the sanitizers and has a C function, sequin_sync_sanitizer_canary(int), with
planted bugs (see src/pg/module.cpp).

A throwaway cluster (conftest.py's make_cluster) preloads the library with the same sanitizer
options as the suites.  canary(0) must pass quietly; canary(2), a shift past the width of int, must
end its backend with an UndefinedBehaviorSanitizer report in the server log, and the server must
come back.  The tests run in this order, on one cluster.

AddressSanitizer does not run inside the server (see the Makefile): memory errors of our C++ are
caught by the unit tests and fuzzers, which are built with it whole.
"""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgcluster  # noqa: E402

pytestmark = pytest.mark.skipif(not os.environ.get("SANITIZE"),
                                reason="the canary exists only in a SANITIZE=1 build (make test-sanitize)")


@pytest.fixture(scope="module")
def canary(make_cluster):
    # The suites' options, but reports go to this server's log, not to the suites' report files.
    cluster = make_cluster({"shared_preload_libraries": "'sequin_sync'"}, prefix="sequin_sync_canary.",
                           env={"UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    cluster.psql("CREATE FUNCTION canary(int) RETURNS int AS 'sequin_sync', "
                 "'sequin_sync_sanitizer_canary' LANGUAGE C STRICT")
    return cluster


def test_canary_zero_computes_its_value(canary):
    assert canary.scalar("SELECT canary(0)") == "122"


def test_no_report_when_nothing_is_wrong(canary):
    assert "runtime error" not in canary.server_log()


def test_a_planted_shift_is_reported_and_the_server_comes_back(canary):
    canary.psql("SELECT canary(2)", check=False)
    found = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "shift exponent" not in found:
        found = canary.server_log()
        time.sleep(0.2)
    assert "runtime error: shift exponent 40" in found and "src/pg/module.cpp" in found, \
        "no UndefinedBehaviorSanitizer report naming the canary:\n" + found[-2000:]
    pgcluster.wait_until("the server to accept connections again",
                         lambda: (canary.psql("SELECT 1", check=False) or "").strip() == "1", 60)
