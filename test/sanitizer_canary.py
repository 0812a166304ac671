#!/usr/bin/env python3
"""
sanitizer_canary.py - proves that `make test-sanitize` can see a bug in the extension inside the
server, so a sanitizer run with no report means something.  Run by test/run_tests.sh under
SANITIZE=1 only: the library is then built with the sanitizers and has a C function,
sequin_sync_sanitizer_canary(int), with planted bugs (see src/pg/module.cpp).

A throwaway cluster (test/pgcluster.py) preloads the library with the same sanitizer options as
the suites.  canary(0) must pass quietly; canary(2), a shift past the width of int, must end its
backend with an UndefinedBehaviorSanitizer report in the server log, and the server must come back.

AddressSanitizer does not run inside the server (see the Makefile): memory errors of our C++ are
caught by the unit tests and fuzzers, which are built with it whole.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgcluster  # noqa: E402


def main():
    cluster = pgcluster.Cluster(settings={"shared_preload_libraries": "'sequin_sync'"},
                                prefix="sequin_sync_canary.")
    cluster.init()
    # The suites' options, but reports go to this server's log, not to the suites' report files.
    cluster.env = {"UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    failures = []
    try:
        cluster.start()
        cluster.psql("CREATE FUNCTION canary(int) RETURNS int AS 'sequin_sync', "
                     "'sequin_sync_sanitizer_canary' LANGUAGE C STRICT")
        if cluster.scalar("SELECT canary(0)") != "122":
            failures.append("canary(0) did not compute its value")
        if "runtime error" in cluster.server_log():
            failures.append("a report when nothing is wrong")
        cluster.psql("SELECT canary(2)", check=False)
        found = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "shift exponent" not in found:
            found = cluster.server_log()
            time.sleep(0.2)
        if "runtime error: shift exponent 40" not in found or "src/pg/module.cpp" not in found:
            failures.append("no UndefinedBehaviorSanitizer report naming the canary:\n" + found[-2000:])
        pgcluster.wait_until("the server to accept connections again",
                             lambda: (cluster.psql("SELECT 1", check=False) or "").strip() == "1", 60)
    finally:
        cluster.stop()
        cluster.cleanup()
    for f in failures:
        print("FAIL", f)
    print("sanitizer canary:", "seen" if not failures else "NOT SEEN")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
