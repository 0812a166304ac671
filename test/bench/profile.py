#!/usr/bin/env python3
"""
profile.py - where a worker's applying (main) thread spends its time, from the perf file that
`make bench BENCH_ARGS="--perf FILE"` records of it (FILE.<workload>.main: perf -t with DWARF
call graphs), in the terms of the README's Performance section.

    python3 test/bench/profile.py /tmp/perf.narrow.main [/tmp/perf.wide.main ...]

Each line is the share of the thread's samples spent inside (inclusive) a function, so the
lines overlap where one calls another (the statement's TOAST compression is part of the
statement).  Postgres' own symbols need a server built with them (Debian's postgres binary has
none; a PostgreSQL built from source has).
"""

import re
import subprocess
import sys

# "  59.71%  0.00%  [.] SPI_execute_plan   -  -" (the last columns: IPC, when perf has it)
LINE = re.compile(r"^\s*([\d.]+)%\s+[\d.]+%\s+\[[.k]\]\s+(.*?)(?:\s+-\s+-)?\s*$")

# (label, symbol, indent): the symbols whose inclusive share is shown; indent 1 = part of the
# line above.
ROWS = [
    ("the batch's statements (SPI): Postgres writing the rows", "SPI_execute_plan", 0),
    ("TOAST compression (pglz)", "pglz_compress", 1),
    ("heap inserts", "heap_insert", 1),
    ("heap updates", "heap_update", 1),
    ("finding the conflicting row (unique index)", "ExecCheckIndexConstraints", 1),
    ("index inserts", "ExecInsertIndexTuples", 1),
    ("extending the table", "RelationAddBlocks", 1),
    ("unnest() of the parameter arrays", "ExecMakeFunctionResultSet", 1),
    ("converting values: input functions, jsonb", "sequin_sync::ConvertValue", 0),
    ("jsonb from the parsed JSON", "sequin_sync::(anonymous namespace)::JsonbFromNode", 1),
    ("finding values (records not prepared by the thread)", "sequin_sync::record::FieldMatcher::Match", 0),
    ("building the parameter arrays", "sequin_sync::(anonymous namespace)::ColumnArray", 0),
    ("in-batch reduction (sort by key)", "sequin_sync::(anonymous namespace)::Reduce", 0),
    ("per batch: resolving the mappings", "sequin_sync::ResolveMappingCached", 0),
    ("per batch: the counters row (consumer_stats)", "sequin_sync::(anonymous namespace)::UpdateStats", 0),
    ("per batch: commit (WAL flush)", "CommitTransactionCommand", 0),
    ("per batch: start (snapshot, search_path, role)", "StartTransactionCommand", 0),
    ("waiting for the prefetch thread or an ack (on CPU)", "sequin_sync::PullSession::Pull", 0),
]


def inclusive(path):
    out = subprocess.run(["perf", "report", "-i", path, "--children", "--sort", "symbol", "--stdio", "-g", "none"],
                         capture_output=True, text=True, check=True).stdout
    shares = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            shares.setdefault(m.group(2), float(m.group(1)))
    return shares


def main(argv):
    if not argv:
        sys.exit(__doc__)
    for path in argv:
        shares = inclusive(path)
        print("%s (the applying thread; %% of its samples, inclusive)" % path)
        for label, symbol, indent in ROWS:
            share = next((v for k, v in shares.items() if k == symbol or k.startswith(symbol + "(")), None)
            if share is None:
                continue
            print("  %s%-58s %5.1f%%" % ("  " * indent, label, share))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
