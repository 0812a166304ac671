"""
stream.py - what every workload's record stream shares: the Record, and the order of versions.

N records = N/2 ids x 2 versions.  The first half of the stream is version 1 of every id (in a
random order): inserts.  The second half is version 2 of every id, in another random order:
updates of rows that exist.  updated_idx and the record's time grow along the stream.
"""

import datetime as dt


class Record:
    __slots__ = ("id", "idx", "line")

    def __init__(self, rid, idx, line):
        self.id = rid
        self.idx = idx
        self.line = line          # compact JSON, UTF-8 bytes


def two_versions(rng, n_ids, n_records, record, update, base_idx, t0):
    """The stream: record(i, updated_idx, time) makes id i's Record, update(i, time) turns id i's
    object into its next version (called before version 2 is made)."""
    out = []
    seq = 0
    for version in (1, 2):
        order = list(range(n_ids))
        rng.shuffle(order)
        for i in order:
            if len(out) >= n_records:
                break
            when = t0 + dt.timedelta(seconds=seq)
            if version == 2:
                update(i, when)
            out.append(record(i, base_idx + seq, when))
            seq += 1
    return out
