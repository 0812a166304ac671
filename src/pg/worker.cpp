/*
 * worker.cpp - a consumer worker: receive a batch, apply it in one transaction with the same
 * engine as sequin_sync.apply(), commit, and only then acknowledge.
 *
 *  - No transaction, snapshot or lock is held while waiting on HTTP.
 *  - A batch that fails as a whole (lock, deadlock, disk full, read-only) is rolled back and
 *    nacked, so it comes back at once; the worker backs off.  Records that fail alone were
 *    parked by the engine and are acknowledged with the batch.
 *  - A reply that is not valid JSON or not the documented shape is neither applied nor acked.
 *  - SIGTERM sets a flag and the latch; the HTTP client asks every 100 ms whether to stop, so a
 *    long poll ends within a second.  A committed configuration change wakes the worker the
 *    same way, and it reloads its consumer.
 *  - Memory: the batch context is reset after every batch; the pull session reuses its buffers.
 *
 * Boundary note: the C++ objects (HTTP client, reply, document) live inside the PullSession on
 * the heap; this file holds only its pointer and plain values, so an error that longjmps out of
 * the apply transaction (caught below, as autovacuum does) skips no destructor.
 */
#include <malloc.h>

#include "core/endpoint.hpp"
#include "core/pull_session.hpp"

extern "C" {
#include "postgres.h"

#include "port/atomics.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void sequin_sync_worker_main(Datum arg);
}

#include "pg/apply.hpp"
#include "pg/bgworkers.hpp"
#include "pg/extension.hpp"
#include "pg/security.hpp"
#include "pg/spi.hpp"
#include "pg/settings.hpp"
#include "pg/shmem.hpp"

namespace sequin_sync {

namespace {

int my_slot = -1;
char consumer_name[NAMEDATALEN];
uint64 seen_generation = 0;

/* The consumer's configuration, as last loaded. */
struct ConsumerConfig {
	bool		found;			/* exists, not paused, and this worker is within `workers` */
	char		endpoint[2048];
	char	   *token;			/* in TopMemoryContext, wiped on reload */
	int			batch_size;
	int			wait_for_ms;
};
ConsumerConfig config;

/*
 * Asked by the HTTP client every 100 ms during transfers: stop for SIGTERM, a configuration
 * change, or any pending interrupt - a procsignal barrier (DROP DATABASE waits for every process
 * to absorb one) must not wait for a long poll to end.
 */
bool
ShouldAbort(void *arg)
{
	return got_sigterm || ConfigReloadPending || InterruptPending || !PostmasterIsAlive() ||
		   pg_atomic_read_u64(&shared->config_generation) != seen_generation;
}

/*
 * Asked during acks and nacks.  A configuration change, a reload or another interrupt must not
 * drop the ack of a committed batch (it only costs a redelivery, but shows as an error); the ack
 * is bounded by sequin_sync.poll_margin anyway.  Only SIGTERM (the session's drain then gives
 * the ack its grace period) and the postmaster's death stop it.
 */
bool
AckShouldAbort(void *arg)
{
	return got_sigterm || !PostmasterIsAlive();
}

void
WorkerExit(int code, Datum arg)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	WorkerSlot *s = &shared->slots[my_slot];
	s->pid = 0;
	s->latch = nullptr;
	s->clean_exit = got_sigterm && code == 0;
	if (shared->launcher_latch != nullptr)
		SetLatch(shared->launcher_latch);
	LWLockRelease(shared->lock);
}

void
SetError(WorkerState state, const char *message)
{
	SetSlotState(my_slot, state, message);
}

/*
 * Session settings of a worker.  A batch waits at most sequin_sync.lock_timeout for a lock (a
 * locked target is retried later).  And its commit must be durable before the ack: with
 * synchronous_commit = off, a crash after the ack would lose a batch that Sequin will never send
 * again, so the worker turns "off" into "on" (any other setting is kept).
 */
void
SetSessionSettings()
{
	char value[32];
	snprintf(value, sizeof(value), "%d", apply_lock_timeout_ms);
	SetConfigOption("lock_timeout", value, PGC_SUSET, PGC_S_OVERRIDE);
	if (synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
	/* The unnest() rows of a large batch are materialized: keep them in memory. */
	if (work_mem < 64 * 1024)
		SetConfigOption("work_mem", "65536", PGC_SUSET, PGC_S_OVERRIDE);
}

/* Loads the consumer's row in a short transaction. */
void
LoadConfig()
{
	if (config.token != nullptr) {
		memset(config.token, 0, strlen(config.token));
		pfree(config.token);
		config.token = nullptr;
	}
	config.found = false;
	seen_generation = pg_atomic_read_u64(&shared->config_generation);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (LockExtension()) {
		SpiConnect();
		Oid types[1] = {TEXTOID};
		Datum values[1] = {CStringGetTextDatum(consumer_name)};
		SpiExec("SELECT endpoint, token, batch_size, "
				"(EXTRACT(epoch FROM wait_for) * 1000)::pg_catalog.int4, workers, paused "
				"FROM sequin_sync.consumers WHERE name = $1",
				1, types, values, nullptr, true, 1);
		if (SPI_processed == 1) {
			HeapTuple tup = SPI_tuptable->vals[0];
			TupleDesc desc = SPI_tuptable->tupdesc;
			bool isnull;
			int workers = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
			bool paused = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
			strlcpy(config.endpoint, SPI_getvalue(tup, desc, 1), sizeof(config.endpoint));
			config.token = MemoryContextStrdup(TopMemoryContext, SPI_getvalue(tup, desc, 2));
			config.batch_size = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
			config.wait_for_ms = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
			config.found = !paused && shared->slots[my_slot].index < workers;
		}
		SpiFinish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

/* Waits up to ms, waking early for SIGTERM, SIGHUP or a configuration change. */
void
Sleep(long ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	while (!got_sigterm) {
		long left = (long) ((until - GetCurrentTimestamp()) / 1000);
		if (left <= 0 || ShouldAbort(nullptr))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Exponential backoff with full jitter: a random wait up to 100 ms * 2^failures, capped. */
long
BackoffMs(int failures)
{
	long cap = Min((long) backoff_max_ms, 100L << Min(failures, 20));
	return cap / 2 + (long) (random() % (cap / 2 + 1));
}

struct BatchOutcome {
	bool		ok;
	ApplyCounts counts;
	char		error[kErrorLen];
};

/*
 * Adds the batch's counts to this worker's row of sequin_sync.consumer_stats, in the batch's
 * transaction: the counters are exactly what was committed, and survive restarts.
 */
void
UpdateStats(const ApplyCounts *c, int64 received, int64 acked)
{
	Oid types[10] = {TEXTOID, INT4OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID};
	Datum values[10] = {CStringGetTextDatum(consumer_name), Int32GetDatum(shared->slots[my_slot].index),
						Int64GetDatum(received), Int64GetDatum(c->inserted), Int64GetDatum(c->updated),
						Int64GetDatum(c->deleted), Int64GetDatum(c->skipped), Int64GetDatum(c->dead_lettered),
						Int64GetDatum(acked), Int64GetDatum(0)};
	/* WHERE EXISTS: a consumer dropped meanwhile has no counters to keep (and no FK to violate). */
	SpiExecCached("INSERT INTO sequin_sync.consumer_stats AS s (consumer, worker, received, inserted, updated, deleted, "
			"skipped, dead_lettered, acked, batches) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, "
			"CASE WHEN $3 > 0 THEN 1 ELSE 0 END WHERE EXISTS (SELECT FROM sequin_sync.consumers WHERE name = $1) "
			"ON CONFLICT (consumer, worker) DO UPDATE SET received = s.received + EXCLUDED.received, "
			"inserted = s.inserted + EXCLUDED.inserted, updated = s.updated + EXCLUDED.updated, "
			"deleted = s.deleted + EXCLUDED.deleted, skipped = s.skipped + EXCLUDED.skipped, "
			"dead_lettered = s.dead_lettered + EXCLUDED.dead_lettered, acked = s.acked + EXCLUDED.acked, "
			"batches = s.batches + CASE WHEN EXCLUDED.received > 0 THEN 1 ELSE 0 END",
			9, types, values, nullptr, false, 0);
}

/*
 * Applies the batch in one transaction.  An error rolls everything back (parked records
 * included) and is reported; the caller nacks.  Like autovacuum, the error is caught here so
 * the worker carries on with the next batch.
 */
void
ApplyBatchInTransaction(PullSession *session, MemoryContext batch_cxt, int64 acked_before, BatchOutcome *out)
{
	MemoryContext old = CurrentMemoryContext;
	out->ok = false;
	memset(&out->counts, 0, sizeof(out->counts));
	out->error[0] = '\0';

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "sequin_sync: applying a batch");
		SpiConnect();
		int nest_level = BeginSafeSearchPath();
		RoleSwitch rs;
		BeginAsRole(&rs, ExtensionOwner(), false);
		MemoryContextSwitchTo(batch_cxt);
		ApplyBatch batch;
		InitBatch(&batch, consumer_name, session->Doc(), session->Records(), session->Count(), batch_cxt);
		ApplyRecords(&batch);
		WriteDeadLetters(&batch);
		UpdateStats(&batch.counts, session->Count(), acked_before);
		out->counts = batch.counts;
		EndAsRole(&rs);
		EndSafeSearchPath(nest_level);
		SpiFinish();
		PopActiveSnapshot();
		MemoryContextSwitchTo(old);
		CommitTransactionCommand();
		out->ok = true;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		ErrorData *edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		snprintf(out->error, sizeof(out->error), "apply failed, batch nacked: %s", edata->message);
		FreeErrorData(edata);
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(batch_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, nullptr);
}

/* Acknowledgements now counted in consumer_stats leave the live counter. */
void
AckedFlushed(int64 n)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->slots[my_slot].acked_unflushed -= n;
	LWLockRelease(shared->lock);
}

/* Records acknowledgements when the worker goes idle or stops, so status never lags behind. */
void
FlushAcked(int64 *acked)
{
	if (*acked == 0)
		return;
	ApplyCounts none;
	memset(&none, 0, sizeof(none));
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SpiConnect();
	int nest_level = BeginSafeSearchPath();
	RoleSwitch rs;
	BeginAsRole(&rs, ExtensionOwner(), false);
	UpdateStats(&none, 0, *acked);
	EndAsRole(&rs);
	EndSafeSearchPath(nest_level);
	SpiFinish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	AckedFlushed(*acked);
	*acked = 0;
}

/* Counts acknowledgements the server has confirmed, and reports one that failed. */
void
CollectAcks(PullSession *session, int64 *acked_pending)
{
	int64 n = session->TakeAcked();
	if (n > 0) {
		*acked_pending += n;
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		shared->slots[my_slot].acked_unflushed += n;
		LWLockRelease(shared->lock);
	}
	const char *error = session->TakeAckError();
	if (error != nullptr) {
		SetError(WorkerState::Running, error);
		ereport(LOG, (errmsg("sequin_sync consumer \"%s\": %s", consumer_name, error),
					  errdetail("The batch was committed; its records will be delivered again and skipped.")));
	}
}

/* Waits for the acknowledgement in flight, if any, and counts it. */
void
WaitForAck(PullSession *session, int64 *acked_pending)
{
	session->CollectAck();
	CollectAcks(session, acked_pending);
}

/*
 * Ends a session: what is in flight gets two seconds to finish (an acknowledgement of a
 * committed batch, a prefetched batch to give back), then the connections close.
 */
void
EndSession(PullSession **session, int64 *acked_pending)
{
	if (*session == nullptr)
		return;
	(*session)->Drain(2000);
	CollectAcks(*session, acked_pending);
	delete *session;
	*session = nullptr;
}

PullSession *
NewSession(char *error, size_t errlen)
{
	SessionConfig sc;
	sc.endpoint = config.endpoint;
	sc.token = config.token;
	sc.connect_timeout_ms = connect_timeout_ms;
	sc.poll_margin_ms = poll_margin_ms;
	sc.max_response_size = (size_t) max_response_size_kb * 1024;
	sc.ca_file = ca_file;
	PullSession *s = PullSession::Create(sc, error, errlen);
	if (s != nullptr)
		s->SetAbortCheck(ShouldAbort, nullptr, AckShouldAbort, nullptr);
	return s;
}

} /* namespace */

} /* namespace sequin_sync */

using namespace sequin_sync;

extern "C" void
sequin_sync_worker_main(Datum arg)
{
	my_slot = DatumGetInt32(arg);
	/*
	 * A worker is a dedicated process that allocates and frees about the same memory every
	 * batch: keep it instead of handing it back to the kernel and faulting it in again (page
	 * faults were a fifth of a worker's time in the benchmark).  Its private memory plateaus.
	 */
	mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
	pqsignal(SIGTERM, HandleSigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(database_name, nullptr, 0);
	SetSessionSettings();
	/* The PGPROC's latch: in shared memory, so backends can set it. */
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	WorkerSlot *slot = &shared->slots[my_slot];
	strlcpy(consumer_name, slot->consumer, sizeof(consumer_name));
	slot->pid = MyProcPid;
	slot->latch = &MyProc->procLatch;
	slot->state = WorkerState::Starting;
	LWLockRelease(shared->lock);
	before_shmem_exit(WorkerExit, (Datum) 0);
	char appname[NAMEDATALEN];
	snprintf(appname, sizeof(appname), "sequin_sync %s/%d", consumer_name, slot->index);
	pgstat_report_appname(appname);

	{
		char error[256] = "";
		bool ok;
		{
			std::string err;
			ok = HttpGlobalInit(&err);
			if (!ok)
				strlcpy(error, err.c_str(), sizeof(error));
		}
		if (!ok)
			ereport(FATAL, (errmsg("sequin_sync could not initialize libcurl: %s", error)));
	}

	MemoryContext batch_cxt = AllocSetContextCreate(TopMemoryContext, "sequin_sync batch", ALLOCSET_DEFAULT_SIZES);
	PullSession *session = nullptr;
	int failures = 0;
	int64 acked_pending = 0; /* acked since the last stats update */
	char error[kErrorLen];

	while (!got_sigterm) {
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending) {
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			SetSessionSettings();
			EndSession(&session, &acked_pending);
		}
		if (session == nullptr || pg_atomic_read_u64(&shared->config_generation) != seen_generation) {
			EndSession(&session, &acked_pending);
			LoadConfig();
			if (!config.found) {
				/* Paused, dropped or fewer workers: the launcher stops this worker. */
				SetSlotState(my_slot, WorkerState::Idle, nullptr);
				Sleep(1000);
				continue;
			}
			if (!EndpointHostAllowed(config.endpoint, allowed_hosts ? allowed_hosts : "")) {
				SetError(WorkerState::Error, "the endpoint's host is not in sequin_sync.allowed_hosts");
				Sleep(backoff_max_ms);
				continue;
			}
			session = NewSession(error, sizeof(error));
			if (session == nullptr) {
				SetError(WorkerState::Error, error);
				Sleep(backoff_max_ms);
				continue;
			}
			SetSlotState(my_slot, WorkerState::Running, nullptr);
		}

		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		slot->last_poll_at = GetCurrentTimestamp();
		LWLockRelease(shared->lock);
		PullStatus status = session->Pull(config.batch_size, config.wait_for_ms);
		if (status == PullStatus::Aborted)
			continue;
		if (status != PullStatus::Ok) {
			long status_code = session->HttpStatus();
			bool config_error = status == PullStatus::HttpError &&
								(status_code == 401 || status_code == 403 || status_code == 404);
			long wait_ms;
			if (config_error)
				wait_ms = backoff_max_ms; /* retry slowly; alter_consumer wakes us at once */
			else if (status == PullStatus::HttpError && status_code == 429 && session->RetryAfter() >= 0)
				wait_ms = Min((long) backoff_max_ms, session->RetryAfter() * 1000L);
			else
				wait_ms = BackoffMs(failures);
			failures++;
			SetError(config_error || status == PullStatus::BadReply ? WorkerState::Error : WorkerState::Backoff,
					 session->LastError());
			WaitForAck(session, &acked_pending);
			ereport(LOG,
					(errmsg("sequin_sync consumer \"%s\": %s", consumer_name, session->LastError()),
					 errdetail("Retrying in %ld ms.", wait_ms)));
			Sleep(wait_ms);
			continue;
		}

		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		slot->has_pending = session->HasPending();
		slot->pending = session->Pending();
		LWLockRelease(shared->lock);
		if (session->Count() == 0) {
			failures = 0;
			WaitForAck(session, &acked_pending);
			FlushAcked(&acked_pending);
			SetSlotState(my_slot, WorkerState::Idle, nullptr);
			continue;
		}

		SetSlotState(my_slot, WorkerState::Running, nullptr);
		/* More is waiting: ask for it now, so it arrives while this batch is applied. */
		if (session->MoreWaiting(config.batch_size))
			session->Prefetch(config.batch_size);
		/*
		 * The previous batch's ack was sent before this batch was read, so its answer is
		 * normally here already.  Collecting it now counts it in this batch's transaction: a
		 * crash then loses the count of at most the one ack in flight, as without overlap.
		 */
		WaitForAck(session, &acked_pending);
		BatchOutcome outcome;
		ApplyBatchInTransaction(session, batch_cxt, acked_pending, &outcome);
		if (!outcome.ok) {
			/* The batch, and a prefetched one, go back to the consumer at once. */
			if (!session->NackAll())
				ereport(LOG, (errmsg("sequin_sync consumer \"%s\": %s", consumer_name, session->LastError())));
			CollectAcks(session, &acked_pending);
			failures++;
			SetError(WorkerState::Backoff, outcome.error);
			Sleep(BackoffMs(failures));
			continue;
		}
		AckedFlushed(acked_pending);
		acked_pending = 0;
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		slot->last_applied_at = GetCurrentTimestamp();
		LWLockRelease(shared->lock);

		/*
		 * Committed: now, and only now, acknowledge.  The ack travels while the loop goes on;
		 * its answer is collected with the next one.  A lost ack only means a redelivery.
		 */
		session->StartAck();
		CollectAcks(session, &acked_pending);
		failures = 0;
	}

	EndSession(&session, &acked_pending);
	FlushAcked(&acked_pending);
	proc_exit(0);
}
