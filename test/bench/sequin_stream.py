"""
sequin_stream.py - the benchmark's records as Sequin Stream change messages, for the stream
consumer's run (issue 11: "make bench runs the same workload through a stream consumer").

Each record becomes the change message Sequin would send for the row the record describes, in a
source table public.<workload table> whose columns are the target's: `record` holds the row's
values under the target's column names (the same values the ceiling's expressions compute from the
record: the record's standard fields, its mapped data fields, the whole `data` object), `action`
is "insert" for an id's first version and "update" (with `changes: {}`, the default replica
identity) for its second, and `metadata` is complete, as Sequin's pull_json writes it: commit_lsn
and commit_idx (transactions of TXN_SIZE changes in the records' order, so versions grow along the
stream as updated_idx does), record_pks [id], consumer and database objects.  The fake stores
complete messages byte for byte.

The stream target is the workload's table plus `sequin_version numeric`
(CREATE TABLE ... (LIKE <table> INCLUDING ALL, sequin_version numeric)), so every column but
sequin_version ends up equal to the other systems' (the benchmark compares fingerprints of those
columns).
"""

import base64
import datetime as dt
import json

import wide

SCHEMA = "public"
LSN_START = 0x16B3748
TXN_SIZE = 8                    # changes per source transaction
CONSUMER = {"id": "6d1c9a52-3f4e-4b7a-8c2d-1e0f9a8b7c6d", "name": "bench", "annotations": None}
DATABASE = {"id": "2f1c0e7a-9b3d-4e5f-8a6b-7c8d9e0f1a2b", "name": "source", "annotations": {},
            "database": "source", "hostname": "localhost"}
BASE_TIME = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def target(spec):
    return spec.table + "_stream"


def collection(spec):
    """The stream mapping's collection: the source table, <table_schema>.<table_name>."""
    return "%s.%s" % (SCHEMA, spec.table)


def target_ddl(spec):
    return "CREATE TABLE %s (LIKE %s INCLUDING ALL, sequin_version numeric)" % (target(spec), spec.table)


def _iso_epoch(seconds):
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def narrow_row(rec):
    """The narrow table's row (workload.SELECT_EXPRS), as a source row's values by column."""
    d = rec.get("data") or {}
    s = rec.get("sync") or {}
    created = d.get("created")
    return {"id": rec["id"], "upstream_id": rec.get("upstream_id"), "deleted": rec.get("deleted", False),
            "updated_idx": rec["updated_idx"], "sync_id": s.get("id"), "sync_external_id": s.get("external_id"),
            "email": d.get("email"), "name": d.get("name"), "balance": d.get("balance"),
            "created": None if created is None else _iso_epoch(created), "currency": d.get("currency"),
            "metadata": d.get("metadata"), "data": d}


def wide_row(rec):
    """The wide table's row (wide.SELECT_EXPRS): the 60 mapped fields under their column names."""
    d = rec.get("data") or {}
    row = {"id": rec["id"], "upstream_id": rec.get("upstream_id"), "deleted": rec.get("deleted", False),
           "updated_idx": rec["updated_idx"]}
    for col, field, _ in wide.MAPPED:
        row[col] = d.get(field)
    row["data"] = d
    return row


ROWS = {"narrow": narrow_row, "wide": wide_row}


def messages(spec, records):
    """One change message (compact JSON, UTF-8 bytes) per record, in the records' order."""
    dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    row_of = ROWS[spec.name]
    seen = set()
    out = []
    for seq, r in enumerate(records):
        rec = json.loads(r.line)
        lsn = LSN_START + (seq // TXN_SIZE) * 0x200
        idx = (seq % TXN_SIZE) * 2            # gaps: other tables' changes in the transaction
        first = r.id not in seen
        seen.add(r.id)
        msg = {"record": row_of(rec), "changes": None if first else {},
               "action": "insert" if first else "update",
               "metadata": {"table_schema": SCHEMA, "table_name": spec.table,
                            "commit_timestamp": (BASE_TIME + dt.timedelta(milliseconds=seq)).strftime(
                                "%Y-%m-%dT%H:%M:%S.%fZ"),
                            "commit_lsn": lsn, "commit_idx": idx,
                            "idempotency_key": base64.b64encode(b"%d:%d" % (lsn, idx)).decode(),
                            "record_pks": [r.id], "database_name": DATABASE["database"],
                            "transaction_annotations": None, "enrichment": None,
                            "consumer": CONSUMER, "database": DATABASE}}
        out.append(dump(msg).encode())
    return out
