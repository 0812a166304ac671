/*
 * status.cpp - the live part of sequin_sync.status: one row per worker slot from shared memory.
 * The view (sql/sequin_sync.sql) joins it with the consumers and their durable counters.
 */
extern "C" {
#include "postgres.h"

#include "port/atomics.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "pg/compat.hpp"

PG_FUNCTION_INFO_V1(sequin_sync_worker_status);
}

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
		if (!s->in_use)
			continue;
		Datum values[10];
		bool nulls[10] = {false};
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
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
