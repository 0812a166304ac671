/*
 * manager.cpp - a database's manager: one dynamic background worker per database that has the
 * extension, started by the launcher (launcher.cpp).  It keeps, for every consumer of its
 * database that is not paused, `workers` consumer workers running, and none for anything else,
 * within sequin_sync.max_workers for all databases together.  Between its rounds it prunes the
 * database's old tombstones (pruner.cpp).
 *
 * It is woken when a configuration change commits in its database (shmem.cpp) and when one of
 * its workers exits (bgw_notify_pid), never by polling the tables; a timeout only serves
 * restarts that are due after a backoff, and consumers waiting for a free worker.  A worker that
 * ends abnormally is started again after a delay that doubles with each consecutive failure (1 s
 * up to 60 s); a worker stopped with pg_terminate_backend comes back at once.
 *
 * The launcher also starts a manager to find out whether a database has the extension: one that
 * finds none stops its workers, says so in its database's entry and leaves, so a database
 * without the extension keeps no process.
 */
extern "C" {
#include "postgres.h"

#include "port/atomics.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void sequin_sync_manager_main(Datum arg);
}

#include "pg/bgworkers.hpp"
#include "pg/extension.hpp"
#include "pg/spi.hpp"
#include "pg/settings.hpp"
#include "pg/shmem.hpp"

namespace sequin_sync {

namespace {

/* What should run: one entry per (consumer, worker number). */
struct Desired {
	char		consumer[NAMEDATALEN];
	int			index;
};

BackgroundWorkerHandle *handles[kMaxSlots];

/*
 * Reads the consumers that should run.  Returns -1 when the extension is not installed in this
 * database (then nothing should run).
 */
int
ReadDesired(Desired *out, int max)
{
	int n = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!LockExtension()) {
		PopActiveSnapshot();
		CommitTransactionCommand();
		return -1;
	}
	SpiConnect();
	SpiExec("SELECT name, workers FROM sequin_sync.consumers WHERE NOT paused ORDER BY name", 0, nullptr, nullptr,
			nullptr, true, 0);
	for (uint64 i = 0; i < SPI_processed; i++) {
		bool isnull;
		char *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		int workers = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		for (int k = 0; k < workers && n < max; k++) {
			strlcpy(out[n].consumer, name, NAMEDATALEN);
			out[n].index = k;
			n++;
		}
	}
	SpiFinish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	return n;
}

bool
IsDesired(const WorkerSlot *s, const Desired *desired, int ndesired)
{
	for (int i = 0; i < ndesired; i++)
		if (desired[i].index == s->index && strcmp(desired[i].consumer, s->consumer) == 0)
			return true;
	return false;
}

/* This database's slot of a consumer's worker, or NULL. */
WorkerSlot *
FindSlot(const Desired *d)
{
	for (int i = 0; i < kMaxSlots; i++) {
		WorkerSlot *s = &shared->slots[i];
		if (s->in_use && s->dboid == MyDatabaseId && s->index == d->index && strcmp(s->consumer, d->consumer) == 0)
			return s;
	}
	return nullptr;
}

/* Slots that hold a worker, running or due to restart, in all databases: what max_workers caps. */
int
OccupiedSlots()
{
	int n = 0;
	for (int i = 0; i < kMaxSlots; i++)
		if (shared->slots[i].in_use && shared->slots[i].state != WorkerState::Waiting)
			n++;
	return n;
}

bool
StartWorker(int slot)
{
	char name[BGW_MAXLEN];
	snprintf(name, sizeof(name), "sequin_sync worker for consumer %s", shared->slots[slot].consumer);
	StartDynamicWorker("sequin_sync_worker_main", "sequin_sync worker", name, Int32GetDatum(slot), &handles[slot]);
	return handles[slot] != nullptr;
}

/* Starts the slot's worker; a failure is shown in the slot and retried in a second. */
void
StartOrRetry(int slot, TimestampTz now)
{
	WorkerSlot *s = &shared->slots[slot];
	s->clean_exit = false;
	s->state = WorkerState::Starting;
	if (!StartWorker(slot)) {
		s->state = WorkerState::Stopped;
		s->failures++;
		s->restart_after = TimestampTzPlusMilliseconds(now, 1000);
		strlcpy(s->last_error, "could not start a background worker: raise max_worker_processes",
				sizeof(s->last_error));
		s->last_error_at = now;
	}
}

/* Is the slot's worker process alive (or about to be)? */
bool
Running(int slot)
{
	if (handles[slot] == nullptr)
		return false;
	pid_t pid;
	if (GetBackgroundWorkerPid(handles[slot], &pid) == BGWH_STOPPED) {
		pfree(handles[slot]);
		handles[slot] = nullptr;
		return false;
	}
	return true;
}

/*
 * Brings this database's workers in line with the configuration (ndesired < 0: nothing runs).
 * A wanted worker beyond sequin_sync.max_workers keeps a slot in state waiting, whose last_error
 * says why.  Returns how long to sleep before a delayed restart is due (or a long default).
 */
long
Reconcile(const Desired *desired, int ndesired)
{
	TimestampTz now = GetCurrentTimestamp();
	long sleep_ms = 10000;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	/* Existing slots: stop what is no longer wanted, restart what died. */
	for (int i = 0; i < kMaxSlots; i++) {
		WorkerSlot *s = &shared->slots[i];
		if (!s->in_use || s->dboid != MyDatabaseId)
			continue;
		bool running = Running(i);
		if (!running && s->pid != 0) {
			/* It died without running its exit callback. */
			s->pid = 0;
			s->latch = nullptr;
			s->clean_exit = false;
		}
		bool wanted = ndesired >= 0 && IsDesired(s, desired, ndesired);
		if (!wanted) {
			if (running)
				TerminateBackgroundWorker(handles[i]);
			else
				memset(s, 0, sizeof(*s));
			continue;
		}
		if (running || s->state == WorkerState::Waiting)
			continue;
		if (s->state != WorkerState::Stopped) {
			/* It has just exited (its exit callback clears only pid and latch): schedule its restart. */
			if (s->clean_exit)
				s->failures = 0;
			else
				s->failures++;
			long delay_ms = s->failures == 0 ? 0 : Min(60000L, 1000L << Min(s->failures - 1, 6));
			s->restart_after = TimestampTzPlusMilliseconds(now, delay_ms);
			s->state = WorkerState::Stopped;
			if (!s->clean_exit)
				ereport(LOG,
						(errmsg("sequin_sync worker %d for consumer \"%s\" exited unexpectedly; restarting in %ld ms",
								s->index, s->consumer, delay_ms)));
		}
		if (s->restart_after <= now)
			StartOrRetry(i, now);
		if (s->state == WorkerState::Stopped) {
			long ms = (long) ((s->restart_after - now) / 1000);
			sleep_ms = Max(1L, Min(sleep_ms, ms));
		}
	}
	/* Wanted workers without a process (a new one, or one waiting): start while max_workers allows. */
	int occupied = OccupiedSlots();
	for (int d = 0; d < ndesired; d++) {
		WorkerSlot *s = FindSlot(&desired[d]);
		if (s != nullptr && s->state != WorkerState::Waiting)
			continue;
		if (s == nullptr) {
			for (int i = 0; i < kMaxSlots && s == nullptr; i++)
				if (!shared->slots[i].in_use)
					s = &shared->slots[i];
			if (s == nullptr)
				break;
			memset(s, 0, sizeof(*s));
			s->in_use = true;
			s->dboid = MyDatabaseId;
			strlcpy(s->consumer, desired[d].consumer, NAMEDATALEN);
			s->index = desired[d].index;
			s->state = WorkerState::Stopped;
		}
		if (occupied >= max_workers) {
			if (s->state != WorkerState::Waiting) {
				s->state = WorkerState::Waiting;
				snprintf(s->last_error, sizeof(s->last_error),
						 "waiting for a free worker: sequin_sync.max_workers (%d) are running in all databases",
						 max_workers);
				s->last_error_at = now;
			}
			/* A worker of another database may end at any time: look again soon. */
			sleep_ms = Min(sleep_ms, 1000L);
			continue;
		}
		occupied++;
		s->last_error[0] = '\0';
		s->last_error_at = 0;
		StartOrRetry((int) (s - shared->slots), now);
		if (s->state == WorkerState::Stopped)
			sleep_ms = Min(sleep_ms, 1000L);
	}
	LWLockRelease(shared->lock);
	return sleep_ms;
}

/* Whether any slot of this database is left (a worker still stopping). */
bool
AnySlots()
{
	bool any = false;
	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < kMaxSlots && !any; i++)
		any = shared->slots[i].in_use && shared->slots[i].dboid == MyDatabaseId;
	LWLockRelease(shared->lock);
	return any;
}

/* Every change to this database's entry goes through here (it exists while we run). */
template <typename Edit>
void
UpdateEntry(Edit edit)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	DatabaseEntry *db = FindDatabase(MyDatabaseId);
	if (db != nullptr)
		edit(db);
	LWLockRelease(shared->lock);
}

/* Leaving: the launcher may start a manager here again, at once after a clean exit. */
void
ManagerExit(int code, Datum arg)
{
	TimestampTz now = GetCurrentTimestamp();
	UpdateEntry([code, now](DatabaseEntry *db) {
		if (db->manager_pid != MyProcPid)
			return;
		db->manager_pid = 0;
		db->manager_latch = nullptr;
		db->failures = code == 0 ? 0 : db->failures + 1;
		db->restart_after = db->failures == 0 ? 0 : TimestampTzPlusMilliseconds(now, Min(60000L, 1000L << Min(db->failures - 1, 6)));
	});
	LWLockAcquire(shared->lock, LW_SHARED);
	if (shared->launcher_latch != nullptr)
		SetLatch(shared->launcher_latch);
	LWLockRelease(shared->lock);
}

/*
 * A manager that starts after another one of this database ended has no handles for the
 * workers it left: stop them (they exit within a second) and start afresh.
 */
void
TakeOver()
{
	StopAndWait(MyDatabaseId, false);
}

} /* namespace */

void
StartDynamicWorker(const char *function, const char *type, const char *name, Datum arg,
				   BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "sequin_sync", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker.bgw_name, name, BGW_MAXLEN);
	strlcpy(worker.bgw_type, type, BGW_MAXLEN);
	worker.bgw_main_arg = arg;
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, handle))
		*handle = nullptr;
}

void
StopAndWait(Oid dboid, bool managers)
{
	for (int attempt = 0; attempt < 100; attempt++) {
		bool any = false;
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		for (int e = 0; e < kMaxDatabases && managers; e++) {
			DatabaseEntry *db = &shared->databases[e];
			if (db->dboid != InvalidOid && db->manager_pid != 0 && (dboid == InvalidOid || db->dboid == dboid)) {
				any = true;
				kill(db->manager_pid, SIGTERM);
			}
		}
		for (int i = 0; i < kMaxSlots; i++) {
			WorkerSlot *s = &shared->slots[i];
			if (s->in_use && s->pid != 0 && (dboid == InvalidOid || s->dboid == dboid)) {
				any = true;
				kill(s->pid, SIGTERM);
			}
		}
		LWLockRelease(shared->lock);
		if (!any)
			break;
		WaitOnLatch(100);
	}
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < kMaxSlots; i++) {
		WorkerSlot *s = &shared->slots[i];
		if (s->pid == 0 && (dboid == InvalidOid || s->dboid == dboid))
			memset(s, 0, sizeof(*s));
	}
	LWLockRelease(shared->lock);
}

} /* namespace sequin_sync */

using namespace sequin_sync;

extern "C" void
sequin_sync_manager_main(Datum arg)
{
	Oid dboid = DatumGetObjectId(arg);
	pqsignal(SIGTERM, HandleSigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	/* A statement waits for the database to empty: don't even connect. */
	if (DatabaseLeaving(dboid))
		proc_exit(0);
	/* By oid: a database renamed meanwhile is still the same database. */
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	bool mine = false;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	DatabaseEntry *db = FindDatabase(MyDatabaseId);
	if (db != nullptr && db->leaving == 0 && db->manager_pid == 0) {
		db->manager_pid = MyProcPid;
		db->manager_latch = &MyProc->procLatch; /* the PGPROC's: in shared memory, so backends can set it */
		mine = true;
	}
	LWLockRelease(shared->lock);
	if (!mine)
		proc_exit(0);
	before_shmem_exit(ManagerExit, (Datum) 0);
	pgstat_report_appname("sequin_sync manager");
	TakeOver();

	Desired *desired = (Desired *) MemoryContextAlloc(TopMemoryContext, sizeof(Desired) * kMaxSlots);
	while (!got_sigterm) {
		if (ConfigReloadPending) {
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		/* Cleared before the read: a change committed after it wakes us again. */
		UpdateEntry([](DatabaseEntry *e) { e->wake = false; });
		int ndesired = ReadDesired(desired, kMaxSlots);
		long sleep_ms = Reconcile(desired, ndesired);
		if (ndesired < 0) {
			/* No extension here (never, or dropped): leave once our workers have stopped. */
			if (!AnySlots()) {
				UpdateEntry([](DatabaseEntry *e) { e->absent = true; });
				break;
			}
			sleep_ms = Min(sleep_ms, 100L);
		} else
			sleep_ms = Min(sleep_ms, PruneTombstonesIfDue(true));
		WaitOnLatch(sleep_ms);
	}
	/* On SIGTERM the workers keep running: the next manager of this database takes them over. */
	proc_exit(0);
}
