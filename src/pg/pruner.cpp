/*
 * pruner.cpp - the automatic tombstone pruning of each database's manager (see bgworkers.hpp).
 *
 * A hard delete leaves a tombstone so that a late, older redelivery cannot bring the row back;
 * after sequin_sync.tombstone_retention it has done its job.  The manager removes such
 * tombstones on a schedule, in batches of kPruneBatch rows, each in a transaction of its own
 * that lasts milliseconds.  A batch locks only the rows it deletes and skips rows a sync holds
 * (FOR UPDATE SKIP LOCKED), so it never waits for a sync; a sync that raises a tombstone being
 * pruned waits at most for that short transaction.  What the last run did is kept in shared
 * memory (its database's entry) for sequin_sync.tombstone_pruning.  sequin_sync.prune_tombstones() stays for manual use.
 */
extern "C" {
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lwlock.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

#include "pg/bgworkers.hpp"
#include "pg/extension.hpp"
#include "pg/security.hpp"
#include "pg/settings.hpp"
#include "pg/shmem.hpp"
#include "pg/spi.hpp"

namespace sequin_sync {

namespace {

/* Rows per transaction: a sync never waits long for a row the pruner holds. */
constexpr int kPruneBatch = 500;

int seen_retention_s = -1;		/* the retention the schedule was made for */
TimestampTz next_prune_at = 0;	/* 0: off */
int64 run_pruned = 0;			/* removed so far by the run in progress */

/* A tenth of the retention, so a tombstone outlives it by at most 10%; between 1 s and 1 h. */
long
PruneIntervalMs(int retention_s)
{
	return Max(1000L, Min(3600L * 1000L, (long) retention_s * 100L));
}

/*
 * Deletes one batch of expired tombstones in its own transaction.  Returns how many, or -1
 * with the error in error: a failure (a lock timeout, a cancel) is logged and tried again at
 * the next run, never the manager's end.
 */
int64
PruneBatch(char *error, size_t errlen)
{
	MemoryContext old = CurrentMemoryContext;
	volatile int64 pruned = -1;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "sequin_sync: pruning tombstones");
		int64 n = 0;
		if (LockExtension()) {
			SpiConnect();
			int nest_level = BeginSafeSearchPath();
			/* Reverted with the search_path: the pruner never waits long for a table lock. */
			(void) set_config_option("lock_timeout", "1000", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
			Oid types[2] = {FLOAT8OID, INT4OID};
			Datum values[2] = {Float8GetDatum((double) seen_retention_s), Int32GetDatum(kPruneBatch)};
			SpiExec("DELETE FROM sequin_sync.tombstones WHERE ctid = ANY (ARRAY("
					"SELECT ctid FROM sequin_sync.tombstones "
					"WHERE deleted_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1) "
					"ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
					2, types, values, nullptr, false, 0);
			n = (int64) SPI_processed;
			EndSafeSearchPath(nest_level);
			SpiFinish();
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		pruned = n;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		ErrorData *edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		snprintf(error, errlen, "pruning tombstones failed: %s", edata->message);
		FreeErrorData(edata);
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, nullptr);
	return pruned;
}

/* Publishes the schedule, and the result of a run that ended (pruned >= 0 or an error). */
void
Publish(bool run_ended, int64 pruned, const char *error)
{
	TimestampTz now = GetCurrentTimestamp();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	DatabaseEntry *db = FindDatabase(MyDatabaseId);
	if (db == nullptr) {
		LWLockRelease(shared->lock);
		return;
	}
	PruneState *p = &db->prune;
	p->retention_s = seen_retention_s;
	p->next_prune_at = next_prune_at;
	if (run_ended && error == nullptr) {
		p->last_prune_at = now;
		p->last_pruned = pruned;
	}
	if (error != nullptr) {
		strlcpy(p->last_error, error, sizeof(p->last_error));
		p->last_error_at = now;
	}
	LWLockRelease(shared->lock);
}

} /* namespace */

long
PruneTombstonesIfDue(bool installed)
{
	TimestampTz now = GetCurrentTimestamp();
	if (tombstone_retention_s != seen_retention_s) {
		/* The manager started, or a reload changed the retention: prune by it now. */
		seen_retention_s = tombstone_retention_s;
		next_prune_at = seen_retention_s > 0 ? now : 0;
		run_pruned = 0;
		Publish(false, 0, nullptr);
	}
	long interval_ms = PruneIntervalMs(seen_retention_s);
	if (next_prune_at == 0 || !installed)
		return 3600L * 1000L; /* a reload or a configuration change wakes the manager */
	if (now < next_prune_at)
		return (long) ((next_prune_at - now) / 1000) + 1;

	char error[kErrorLen];
	int64 n = PruneBatch(error, sizeof(error));
	if (n == kPruneBatch) {
		run_pruned += n;
		return 0;
	}
	next_prune_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), interval_ms);
	Publish(true, run_pruned + Max(n, (int64) 0), n < 0 ? error : nullptr);
	run_pruned = 0;
	return interval_ms;
}

} /* namespace sequin_sync */
