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
 *    long poll ends within a second.  A committed change to this worker's consumer wakes it the
 *    same way, and it reads the consumer's row again; other consumers' changes, mapping
 *    changes and reloads that change none of its settings leave its HTTP session alone.
 *  - Every wait goes through WaitOnLatch, which leaves the process when the postmaster died.
 *  - Memory: the batch context is reset after every batch; the pull session reuses its buffers.
 *
 * Boundary note: the C++ objects (HTTP client, reply, document) live inside the PullSession on
 * the heap; this file holds only its pointer and plain values, so an error that longjmps out of
 * the apply transaction (caught below, as autovacuum does) skips no destructor.
 */
#include <malloc.h>

#include <string>

#include "core/endpoint.hpp"
#include "core/protocol.hpp"
#include "core/pull_session.hpp"

extern "C" {
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
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

/* Who this worker is: set once at start. */
int my_slot = -1;
char consumer_name[NAMEDATALEN];

/* The consumer's configuration, as last loaded. */
struct ConsumerConfig {
	bool		found;			/* exists, not paused, and this worker is within `workers` */
	char		endpoint[2048];
	char	   *token;			/* in TopMemoryContext, wiped on reload */
	int			batch_size;
	int			wait_for_ms;
	Protocol	protocol;		/* v1 records or Sequin Stream messages */
};

/*
 * Ack accounting.  An ack's answer arrives while the loop goes on.  What the server confirmed
 * is "unrecorded" until it is added to consumer_stats - in the next batch's transaction, or in
 * a transaction of its own when the worker goes idle or stops - and shows in status meanwhile
 * through the slot's acked_unflushed.
 */
struct AckLedger {
	int64		unrecorded;

	/* Counts the acks the server confirmed so far, and reports one that failed. */
	void		CountConfirmed(PullSession *session);
	/* The same, after waiting for the answer to the ack in flight. */
	void		AwaitAndCount(PullSession *session);
	/* The unrecorded count was committed with a batch's counters. */
	void		CommittedWithBatch();
	/* Commits the unrecorded count in a transaction of its own. */
	void		CommitNow();
};

/* Everything the loop's steps share. */
struct Worker {
	ConsumerConfig config;
	PullSession *session;		/* nullptr when there is none (before the first pull, after a change) */
	MemoryContext batch_cxt;
	int			failures;		/* consecutive failed pulls or batches: the backoff */
	AckLedger	acks;
	char	   *settings;		/* WorkerSettings() as last seen, in TopMemoryContext */
	bool		reloaded;		/* the configuration file was read: set the session settings again */
	bool		settings_changed;	/* ... and one of sequin_sync's changed: a new session */
};

Worker worker;

/* Every change to this worker's slot in shared memory goes through here. */
template <typename Edit>
void
UpdateSlot(Edit edit)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	edit(&shared->slots[my_slot]);
	LWLockRelease(shared->lock);
}

/* Records the worker's state and, when error is not NULL, its last error. */
void
ReportState(WorkerState state, const char *error)
{
	TimestampTz now = GetCurrentTimestamp();
	UpdateSlot([&](WorkerSlot *s) {
		s->state = state;
		if (error != nullptr) {
			strlcpy(s->last_error, error, sizeof(s->last_error));
			s->last_error_at = now;
		}
	});
}

/* Whether this worker's consumer row changed since the worker last read it. */
bool
ConsumerChanged()
{
	LWLockAcquire(shared->lock, LW_SHARED);
	bool changed = shared->slots[my_slot].consumer_changed;
	LWLockRelease(shared->lock);
	return changed;
}

/*
 * The settings a worker's session and waits are built from, as one string: a reload that
 * changes none of them leaves the session alone.
 */
char *
WorkerSettings()
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	char *settings = psprintf("%d %d %d %d %d\n%s\n%s", connect_timeout_ms, poll_margin_ms, max_response_size_kb,
							  backoff_max_ms, apply_lock_timeout_ms, ca_file ? ca_file : "",
							  allowed_hosts ? allowed_hosts : "");
	MemoryContextSwitchTo(old);
	return settings;
}

/*
 * Reads the configuration file after a SIGHUP.  Called from the HTTP client's abort check too,
 * so that a reload that changes nothing of ours does not end a long poll; an error cannot
 * longjmp from here into the client's C++ frames, it is caught and logged.
 */
void
ReloadSettingsIfPending(Worker *w)
{
	if (!ConfigReloadPending)
		return;
	ConfigReloadPending = false;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	PG_TRY();
	{
		ProcessConfigFile(PGC_SIGHUP);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(TopMemoryContext);
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	w->reloaded = true;
	char *now = WorkerSettings();
	if (strcmp(now, w->settings) != 0) {
		pfree(w->settings);
		w->settings = now;
		w->settings_changed = true;
	} else
		pfree(now);
}

/* Something the worker must act on before it waits any longer. */
bool
WakeRequested(Worker *w)
{
	ReloadSettingsIfPending(w);
	return got_sigterm || w->settings_changed || ConsumerChanged();
}

/*
 * Asked by the HTTP client every 100 ms during transfers: stop for SIGTERM, a change of this
 * consumer or of our settings, the postmaster's death, or any pending interrupt - a procsignal
 * barrier (DROP DATABASE waits for every process to absorb one) must not wait for a long poll.
 * The loop's next WaitOnLatch serves the interrupt, or leaves if the postmaster died.
 */
bool
ShouldAbort(void *arg)
{
	return WakeRequested(static_cast<Worker *>(arg)) || InterruptPending || !PostmasterIsAlive();
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

/* Waits up to ms; leaves early for SIGTERM or a change (see WakeRequested). */
void
Sleep(Worker *w, long ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	for (;;) {
		long left = (long) ((until - GetCurrentTimestamp()) / 1000);
		bool done = left <= 0 || WakeRequested(w);
		WaitOnLatch(done ? 0 : left);
		if (done)
			return;
	}
}

/*
 * Exponential backoff with equal jitter: half of min(backoff_max, 100 ms * 2^failures), plus a
 * random part up to the other half.  Not full jitter (a random wait from 0 up): that would
 * still retry at once now and then deep into an outage, and its strength - spreading the
 * retries of thousands of clients - matters little for a consumer's few workers, which equal
 * jitter keeps out of step as well.
 */
long
BackoffMs(int failures)
{
	long cap = Min((long) backoff_max_ms, 100L << Min(failures, 20));
	return cap / 2 + (long) pg_prng_uint64_range(&pg_global_prng_state, 0, (uint64) (cap / 2));
}

void
WorkerExit(int code, Datum arg)
{
	/* An exit that skipped Stop (a FATAL error): the prefetch thread ends before the process. */
	if (worker.session != nullptr)
		worker.session->CancelPrefetch();
	Oid dboid = InvalidOid;
	UpdateSlot([code, &dboid](WorkerSlot *s) {
		s->pid = 0;
		s->latch = nullptr;
		s->clean_exit = got_sigterm && code == 0;
		dboid = s->dboid;
	});
	WakeDatabase(dboid);
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

/*
 * Reads the consumer's row in a short transaction.  Returns whether the session must be opened
 * again: the endpoint or the token changed, or there is nothing to run.  A new batch_size or
 * wait_for needs no new session; they travel with each request.
 */
bool
LoadConfig(ConsumerConfig *config)
{
	/* Cleared before the read: a change committed after it wakes the worker again. */
	UpdateSlot([](WorkerSlot *s) { s->consumer_changed = false; });
	bool was_found = config->found;
	bool renew = true;
	config->found = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (LockExtension()) {
		SpiConnect();
		Oid types[1] = {TEXTOID};
		Datum values[1] = {CStringGetTextDatum(consumer_name)};
		SpiExec("SELECT endpoint, token, batch_size, "
				"(EXTRACT(epoch FROM wait_for) * 1000)::pg_catalog.int4, workers, paused, "
				"COALESCE(pg_catalog.to_jsonb(c) OPERATOR(pg_catalog.->>) 'protocol', 'v1') "
				"FROM sequin_sync.consumers c WHERE name = $1",
				1, types, values, nullptr, true, 1);
		if (SPI_processed == 1) {
			HeapTuple tup = SPI_tuptable->vals[0];
			TupleDesc desc = SPI_tuptable->tupdesc;
			bool isnull;
			const char *endpoint = SPI_getvalue(tup, desc, 1);
			const char *token = SPI_getvalue(tup, desc, 2);
			int workers = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
			bool paused = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
			Protocol protocol = Protocol::V1;
			(void) ParseProtocol(SPI_getvalue(tup, desc, 7), &protocol);
			config->found = !paused && shared->slots[my_slot].index < workers;
			renew = !config->found || !was_found || strcmp(endpoint, config->endpoint) != 0 ||
					config->token == nullptr || strcmp(token, config->token) != 0 || protocol != config->protocol;
			config->protocol = protocol;
			if (renew) {
				if (config->token != nullptr) {
					memset(config->token, 0, strlen(config->token));
					pfree(config->token);
				}
				strlcpy(config->endpoint, endpoint, sizeof(config->endpoint));
				config->token = MemoryContextStrdup(TopMemoryContext, token);
			}
			config->batch_size = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
			config->wait_for_ms = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		}
		SpiFinish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	return renew;
}

struct BatchOutcome {
	bool		ok;
	ApplyCounts counts;
	TimestampTz newest_commit_at;
	char		error[kErrorLen];
};

/*
 * Adds the batch's counts to this worker's row of sequin_sync.consumer_stats, in the batch's
 * transaction: the counters are exactly what was committed, and survive restarts.
 */
void
UpdateStats(const ApplyCounts *c, int64 received, int64 acked)
{
	Oid types[9] = {TEXTOID, INT4OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID};
	Datum values[9] = {CStringGetTextDatum(consumer_name), Int32GetDatum(shared->slots[my_slot].index),
					   Int64GetDatum(received), Int64GetDatum(c->inserted), Int64GetDatum(c->updated),
					   Int64GetDatum(c->deleted), Int64GetDatum(c->skipped), Int64GetDatum(c->dead_lettered),
					   Int64GetDatum(acked)};
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
ApplyBatchInTransaction(PullSession *session, Protocol protocol, MemoryContext batch_cxt, int64 acked_before,
						BatchOutcome *out)
{
	MemoryContext old = CurrentMemoryContext;
	out->ok = false;
	memset(&out->counts, 0, sizeof(out->counts));
	out->newest_commit_at = 0;
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
		InitBatch(&batch, consumer_name, protocol, session->Doc(), session->Records(), session->Count(), batch_cxt);
		batch.prepared = session->Prepared();
		batch.locators_out = session->Locators();
		ApplyRecords(&batch);
		WriteDeadLetters(&batch);
		UpdateStats(&batch.counts, session->Count(), acked_before);
		out->counts = batch.counts;
		out->newest_commit_at = batch.newest_commit_at;
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

void
AckLedger::CountConfirmed(PullSession *session)
{
	int64 n = session->TakeConfirmedAcks();
	if (n > 0) {
		unrecorded += n;
		UpdateSlot([n](WorkerSlot *s) { s->acked_unflushed += n; });
	}
	const char *error = session->TakeAckError();
	if (error != nullptr) {
		ReportState(WorkerState::Running, error);
		ereport(LOG, (errmsg("sequin_sync consumer \"%s\": %s", consumer_name, error),
					  errdetail("The batch was committed; its records will be delivered again and skipped.")));
	}
}

void
AckLedger::AwaitAndCount(PullSession *session)
{
	session->AwaitAck();
	CountConfirmed(session);
}

void
AckLedger::CommittedWithBatch()
{
	int64 n = unrecorded;
	UpdateSlot([n](WorkerSlot *s) { s->acked_unflushed -= n; });
	unrecorded = 0;
}

void
AckLedger::CommitNow()
{
	if (unrecorded == 0)
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
	UpdateStats(&none, 0, unrecorded);
	EndAsRole(&rs);
	EndSafeSearchPath(nest_level);
	SpiFinish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	CommittedWithBatch();
}

/*
 * Ends the session: what is in flight gets two seconds to finish (an acknowledgement of a
 * committed batch, a prefetched batch to give back), then the connections close.
 */
void
EndSession(Worker *w)
{
	if (w->session == nullptr)
		return;
	w->session->Drain(2000);
	w->acks.CountConfirmed(w->session);
	delete w->session;
	w->session = nullptr;
}

/*
 * Sets the worker up: signals, the database connection, its slot (with the latch backends
 * wake it through), libcurl.
 */
Worker *
InitWorker(int slot)
{
	my_slot = slot;
	Worker *w = &worker;
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

	/* Its consumer's database, by oid: a database renamed meanwhile is still the same. */
	BackgroundWorkerInitializeConnectionByOid(shared->slots[slot].dboid, InvalidOid, 0);
	SetSessionSettings();
	w->settings = WorkerSettings();
	w->batch_cxt = AllocSetContextCreate(TopMemoryContext, "sequin_sync batch", ALLOCSET_DEFAULT_SIZES);
	int index = 0;
	UpdateSlot([&](WorkerSlot *s) {
		strlcpy(consumer_name, s->consumer, sizeof(consumer_name));
		index = s->index;
		s->pid = MyProcPid;
		s->latch = &MyProc->procLatch; /* the PGPROC's: in shared memory, so backends can set it */
		s->state = WorkerState::Starting;
	});
	before_shmem_exit(WorkerExit, (Datum) 0);
	/* A statement waits for the database to empty (DROP DATABASE ...): leave before starting. */
	if (DatabaseLeaving(MyDatabaseId))
		proc_exit(0);
	char appname[NAMEDATALEN];
	snprintf(appname, sizeof(appname), "sequin_sync %s/%d", consumer_name, index);
	pgstat_report_appname(appname);

	/* The error text leaves its std::string before anything can longjmp. */
	char error[256] = "";
	bool ok;
	{
		std::string err;
		ok = HttpGlobalInit(&err);
		if (!ok)
			strlcpy(error, err.c_str(), sizeof(error));
	}
	if (!ok)
		ereport(FATAL, (errmsg("sequin_sync worker cannot start: %s", error)));
	return w;
}

/*
 * Step 1: a session that matches the configuration.  Reads again what changed (the settings
 * after a reload, this consumer's row after a change) and opens a session when there is none.
 * Returns false when there is nothing to pull with - paused, dropped, a refused host, a client
 * that cannot be built - after waiting.
 */
bool
EnsureSession(Worker *w)
{
	ReloadSettingsIfPending(w);
	if (w->reloaded) {
		w->reloaded = false;
		SetSessionSettings();
	}
	bool renew = w->settings_changed;
	w->settings_changed = false;
	if (w->session == nullptr || ConsumerChanged())
		renew = LoadConfig(&w->config) || renew;
	if (renew)
		EndSession(w);
	if (w->session != nullptr)
		return true;

	if (!w->config.found) {
		/* Paused, dropped or fewer workers: the launcher stops this worker. */
		ReportState(WorkerState::Idle, nullptr);
		Sleep(w, 1000);
		return false;
	}
	if (!EndpointHostAllowed(w->config.endpoint, allowed_hosts ? allowed_hosts : "")) {
		ReportState(WorkerState::Error, "the endpoint's host is not in sequin_sync.allowed_hosts");
		Sleep(w, backoff_max_ms);
		return false;
	}
	SessionConfig sc;
	sc.endpoint = w->config.endpoint;
	sc.token = w->config.token;
	sc.connect_timeout_ms = connect_timeout_ms;
	sc.poll_margin_ms = poll_margin_ms;
	sc.max_response_size = (size_t) max_response_size_kb * 1024;
	sc.ca_file = ca_file;
	sc.protocol = w->config.protocol;
	char error[kErrorLen];
	w->session = PullSession::Create(sc, error, sizeof(error));
	if (w->session == nullptr) {
		ReportState(WorkerState::Error, error);
		Sleep(w, backoff_max_ms);
		return false;
	}
	w->session->SetAbortCheck(ShouldAbort, w, AckShouldAbort, nullptr);
	ReportState(WorkerState::Running, nullptr);
	return true;
}

/* Step 2: pull a batch (the prefetched one, or a long poll). */
PullStatus
Pull(Worker *w)
{
	TimestampTz now = GetCurrentTimestamp();
	UpdateSlot([now](WorkerSlot *s) { s->last_poll_at = now; });
	PullStatus status = w->session->Pull(w->config.batch_size, w->config.wait_for_ms);
	if (status == PullStatus::Ok) {
		bool has_pending = w->session->HasPending();
		int64 pending = w->session->Pending();
		UpdateSlot([&](WorkerSlot *s) {
			s->has_pending = has_pending;
			s->pending = pending;
		});
	}
	return status;
}

/*
 * Step 3: a pull failed.  Say why, count the ack that may still be in flight, and wait: slowly
 * for what only a configuration change can fix (401/403/404; alter_consumer wakes the worker at
 * once), as long as the consumer asks after a 429, with backoff otherwise.
 */
void
HandlePullFailure(Worker *w, PullStatus status)
{
	PullSession *session = w->session;
	long http_status = session->HttpStatus();
	bool config_error = status == PullStatus::HttpError &&
						(http_status == 401 || http_status == 403 || http_status == 404);
	long wait_ms;
	if (config_error)
		wait_ms = backoff_max_ms;
	else if (status == PullStatus::HttpError && http_status == 429 && session->RetryAfter() >= 0)
		wait_ms = Min((long) backoff_max_ms, session->RetryAfter() * 1000L);
	else
		wait_ms = BackoffMs(w->failures);
	w->failures++;
	ReportState(config_error || status == PullStatus::BadReply ? WorkerState::Error : WorkerState::Backoff,
				session->LastError());
	w->acks.AwaitAndCount(session);
	ereport(LOG, (errmsg("sequin_sync consumer \"%s\": %s", consumer_name, session->LastError()),
				  errdetail("Retrying in %ld ms.", wait_ms)));
	Sleep(w, wait_ms);
}

/*
 * An empty batch: nothing is arriving, so the acks counted so far are recorded now.  Sequin
 * Stream's long poll returns at once, empty, while any message of the consumer is in flight
 * (another worker's, or one waiting for its visibility timeout), so an empty reply that came
 * back quickly is followed by a pause instead of the next poll (sequin-stream-api.md 1.4).
 */
void
GoIdle(Worker *w)
{
	w->failures = 0;
	w->acks.AwaitAndCount(w->session);
	w->acks.CommitNow();
	ReportState(WorkerState::Idle, nullptr);
	long pause_ms = w->session->EmptyPauseMs();
	if (pause_ms > 0)
		Sleep(w, pause_ms);
}

/*
 * Step 4: apply the batch, then acknowledge it - only after its commit.  A failed batch, and a
 * prefetched one, go back to the consumer at once, and the worker backs off.
 */
void
ApplyThenAcknowledge(Worker *w)
{
	PullSession *session = w->session;
	ReportState(WorkerState::Running, nullptr);
	/* More is waiting: ask for it now, so it arrives while this batch is applied. */
	if (session->MoreWaiting(w->config.batch_size))
		session->Prefetch(w->config.batch_size);
	/*
	 * The previous batch's ack was sent just before this batch was taken.  If its answer is in,
	 * it is counted now, in this batch's transaction; if not, the loop does not wait for it
	 * here (a round trip per batch): StartAck after this batch's commit awaits it, and the next
	 * batch records it.  A crash loses the count of at most those two acks, never an ack.
	 */
	session->PollAck();
	w->acks.CountConfirmed(session);
	BatchOutcome outcome;
	ApplyBatchInTransaction(session, w->config.protocol, w->batch_cxt, w->acks.unrecorded, &outcome);
	if (!outcome.ok) {
		if (!session->NackAll())
			ereport(LOG, (errmsg("sequin_sync consumer \"%s\": %s", consumer_name, session->LastError())));
		w->acks.CountConfirmed(session);
		w->failures++;
		ReportState(WorkerState::Backoff, outcome.error);
		Sleep(w, BackoffMs(w->failures));
		return;
	}
	w->acks.CommittedWithBatch();
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz newest = outcome.newest_commit_at;
	UpdateSlot([now, newest](WorkerSlot *s) {
		s->last_applied_at = now;
		if (newest > s->newest_commit_at)
			s->newest_commit_at = newest;
	});

	/* Committed: now, and only now, acknowledge.  The ack travels while the loop goes on. */
	session->StartAck();
	w->acks.CountConfirmed(session);
	w->failures = 0;
}

/* SIGTERM: give back what is in flight, record the acks, exit. */
void
Stop(Worker *w)
{
	WaitOnLatch(0); /* no orderly stop without a postmaster */
	EndSession(w);
	w->acks.CommitNow();
	proc_exit(0);
}

} /* namespace */

} /* namespace sequin_sync */

using namespace sequin_sync;

extern "C" void
sequin_sync_worker_main(Datum arg)
{
	Worker *w = InitWorker(DatumGetInt32(arg));
	while (!got_sigterm) {
		WaitOnLatch(0);			/* no wait: serve interrupts, leave if the postmaster died */
		if (!EnsureSession(w))
			continue;			/* paused, refused or failing; it has waited */
		PullStatus status = Pull(w);
		if (status == PullStatus::Aborted)
			continue;			/* SIGTERM, a change, an interrupt, the postmaster's death */
		if (status != PullStatus::Ok)
			HandlePullFailure(w, status);
		else if (w->session->Count() == 0)
			GoIdle(w);
		else
			ApplyThenAcknowledge(w);
	}
	Stop(w);
}
