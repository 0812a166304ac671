/*
 * status.cpp - the live parts of sequin_sync.status and sequin_sync.tombstone_pruning, from
 * shared memory: one row per worker slot of the current database, and the launcher's row
 * (whether the library was preloaded at all, and what the tombstone pruning of this database
 * last did).  The views (sql/sequin_sync.sql) join them with the consumers and their durable
 * counters.  Also sequin_sync.all_workers, for superusers: every database's processes.
 */
extern "C" {
#include "postgres.h"

#include "port/atomics.h"

#include "fmgr.h"
#include "access/htup_details.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "pg/compat.hpp"

PG_FUNCTION_INFO_V1(sequin_sync_worker_status);
PG_FUNCTION_INFO_V1(sequin_sync_launcher_status);
PG_FUNCTION_INFO_V1(sequin_sync_all_workers);
}

#include "pg/settings.hpp"
#include "pg/shmem.hpp"

using namespace sequin_sync;

extern "C" Datum
sequin_sync_worker_status(PG_FUNCTION_ARGS)
{
	SS_INIT_MATERIALIZED_SRF(fcinfo);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	if (shared == nullptr)
		return (Datum) 0;

	/* Copy under the lock, build tuples after it. */
	WorkerSlot *copy = (WorkerSlot *) palloc(sizeof(WorkerSlot) * kMaxSlots);
	LWLockAcquire(shared->lock, LW_SHARED);
	memcpy(copy, shared->slots, sizeof(WorkerSlot) * kMaxSlots);
	LWLockRelease(shared->lock);

	for (int i = 0; i < kMaxSlots; i++) {
		WorkerSlot *s = &copy[i];
		if (!s->in_use || s->dboid != MyDatabaseId)
			continue;
		Datum values[11];
		bool nulls[11] = {false};
		values[0] = CStringGetTextDatum(s->consumer);
		values[1] = Int32GetDatum(s->index);
		values[2] = Int32GetDatum(s->pid);
		nulls[2] = s->pid == 0;
		values[3] = CStringGetTextDatum(WorkerStateName(s->state));
		values[4] = TimestampTzGetDatum(s->last_poll_at);
		nulls[4] = s->last_poll_at == 0;
		values[5] = TimestampTzGetDatum(s->last_applied_at);
		nulls[5] = s->last_applied_at == 0;
		values[6] = Int64GetDatum(s->pending);
		nulls[6] = !s->has_pending;
		values[7] = CStringGetTextDatum(s->last_error);
		nulls[7] = s->last_error[0] == '\0';
		values[8] = TimestampTzGetDatum(s->last_error_at);
		nulls[8] = s->last_error_at == 0;
		values[9] = Int64GetDatum(s->acked_unflushed);
		values[10] = TimestampTzGetDatum(s->newest_commit_at);
		nulls[10] = s->newest_commit_at == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * One row: preloaded (false: no launcher, no workers, nothing else is known), the launcher's
 * pid, and the tombstone pruning of this database (by its manager): the retention it prunes by
 * (seconds), the end and result of its last run, when the next is due, its last error.  Before
 * a manager has published anything, the retention is the server's and the rest is NULL.
 */
extern "C" Datum
sequin_sync_launcher_status(PG_FUNCTION_ARGS)
{
	TupleDesc desc;
	if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	Datum values[8];
	bool nulls[8];
	memset(nulls, true, sizeof(nulls));
	values[0] = BoolGetDatum(shared != nullptr);
	nulls[0] = false;
	if (shared != nullptr) {
		PruneState p;
		memset(&p, 0, sizeof(p));
		p.retention_s = tombstone_retention_s;
		LWLockAcquire(shared->lock, LW_SHARED);
		pid_t pid = shared->launcher_pid;
		DatabaseEntry *db = FindDatabase(MyDatabaseId);
		if (db != nullptr && db->prune.retention_s >= 0)
			p = db->prune;
		LWLockRelease(shared->lock);
		values[1] = Int32GetDatum(pid);
		nulls[1] = pid == 0;
		values[2] = Int32GetDatum(p.retention_s);
		nulls[2] = false;
		values[3] = TimestampTzGetDatum(p.last_prune_at);
		nulls[3] = p.last_prune_at == 0;
		values[4] = Int64GetDatum(p.last_pruned);
		nulls[4] = p.last_prune_at == 0;
		values[5] = TimestampTzGetDatum(p.next_prune_at);
		nulls[5] = p.next_prune_at == 0;
		values[6] = CStringGetTextDatum(p.last_error);
		nulls[6] = p.last_error[0] == '\0';
		values[7] = TimestampTzGetDatum(p.last_error_at);
		nulls[7] = p.last_error_at == 0;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * sequin_sync.all_workers, for superusers: the launcher, every database's manager and every
 * consumer worker slot, with its database's name (as the launcher last read pg_database).  A
 * slot in state waiting has no process: sequin_sync.max_workers are running.
 */
extern "C" Datum
sequin_sync_all_workers(PG_FUNCTION_ARGS)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to list the workers of every database"),
				 errdetail("sequin_sync.all_workers shows other databases' consumers."),
				 errhint("Ask a superuser, or look at sequin_sync.status, which shows this database's consumers.")));
	SS_INIT_MATERIALIZED_SRF(fcinfo);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	if (shared == nullptr)
		return (Datum) 0;

	WorkerSlot *slots = (WorkerSlot *) palloc(sizeof(WorkerSlot) * kMaxSlots);
	DatabaseEntry *dbs = (DatabaseEntry *) palloc(sizeof(DatabaseEntry) * kMaxDatabases);
	LWLockAcquire(shared->lock, LW_SHARED);
	pid_t launcher_pid = shared->launcher_pid;
	memcpy(slots, shared->slots, sizeof(WorkerSlot) * kMaxSlots);
	memcpy(dbs, shared->databases, sizeof(DatabaseEntry) * kMaxDatabases);
	LWLockRelease(shared->lock);

	/* database, kind, consumer, worker, pid, state, last_poll_at, last_applied_at, last_error, last_error_at */
	constexpr int kColumns = 10;
	Datum values[kColumns];
	bool nulls[kColumns];
	if (launcher_pid != 0) {
		memset(nulls, true, sizeof(nulls));
		values[1] = CStringGetTextDatum("launcher");
		values[4] = Int32GetDatum(launcher_pid);
		values[5] = CStringGetTextDatum("running");
		nulls[1] = nulls[4] = nulls[5] = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	for (int d = 0; d < kMaxDatabases; d++) {
		DatabaseEntry *db = &dbs[d];
		if (db->dboid == InvalidOid || db->manager_pid == 0)
			continue;
		memset(nulls, true, sizeof(nulls));
		values[0] = CStringGetTextDatum(db->name);
		values[1] = CStringGetTextDatum("manager");
		values[4] = Int32GetDatum(db->manager_pid);
		values[5] = CStringGetTextDatum("running");
		nulls[0] = nulls[1] = nulls[4] = nulls[5] = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	for (int i = 0; i < kMaxSlots; i++) {
		WorkerSlot *s = &slots[i];
		if (!s->in_use)
			continue;
		const char *dbname = nullptr;
		for (int d = 0; d < kMaxDatabases && dbname == nullptr; d++)
			if (dbs[d].dboid == s->dboid)
				dbname = dbs[d].name;
		memset(nulls, false, sizeof(nulls));
		values[0] = CStringGetTextDatum(dbname != nullptr ? dbname : "");
		nulls[0] = dbname == nullptr;
		values[1] = CStringGetTextDatum("worker");
		values[2] = CStringGetTextDatum(s->consumer);
		values[3] = Int32GetDatum(s->index);
		values[4] = Int32GetDatum(s->pid);
		nulls[4] = s->pid == 0;
		values[5] = CStringGetTextDatum(WorkerStateName(s->state));
		values[6] = TimestampTzGetDatum(s->last_poll_at);
		nulls[6] = s->last_poll_at == 0;
		values[7] = TimestampTzGetDatum(s->last_applied_at);
		nulls[7] = s->last_applied_at == 0;
		values[8] = CStringGetTextDatum(s->last_error);
		nulls[8] = s->last_error[0] == '\0';
		values[9] = TimestampTzGetDatum(s->last_error_at);
		nulls[9] = s->last_error_at == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
