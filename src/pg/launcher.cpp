/*
 * launcher.cpp - the launcher: one static background worker that keeps, for every consumer
 * that is not paused, `workers` dynamic workers running, and none for anything else.
 *
 * It is woken when a configuration change commits (shmem.cpp) and when one of its workers
 * exits (bgw_notify_pid), never by polling the tables; a timeout only serves restarts that are
 * due after a backoff.  A worker that ends abnormally is started again after a delay that doubles
 * with each consecutive failure (1 s up to 60 s); a worker stopped with pg_terminate_backend comes
 * back at once.  If the launcher itself dies, the postmaster restarts it and it takes over.
 * Between its rounds it prunes old tombstones (pruner.cpp).
 */
extern "C" {
#include "postgres.h"

#include "port/atomics.h"

#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void sequin_sync_launcher_main(Datum arg);
}

#include "pg/bgworkers.hpp"
#include "pg/extension.hpp"
#include "pg/spi.hpp"
#include "pg/settings.hpp"
#include "pg/shmem.hpp"

namespace sequin_sync {

volatile sig_atomic_t got_sigterm = false;

void
HandleSigterm(SIGNAL_ARGS)
{
	int save_errno = errno;
	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

void
WaitOnLatch(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, Max(ms, 0L), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	if (!PostmasterIsAlive())
		proc_exit(1);
	CHECK_FOR_INTERRUPTS();
}

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

bool
StartWorker(int slot)
{
	BackgroundWorker worker;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "sequin_sync", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "sequin_sync_worker_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "sequin_sync worker for consumer %s", shared->slots[slot].consumer);
	strlcpy(worker.bgw_type, "sequin_sync worker", BGW_MAXLEN);
	worker.bgw_main_arg = Int32GetDatum(slot);
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handles[slot])) {
		handles[slot] = nullptr;
		return false;
	}
	return true;
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
 * Brings the running workers in line with the configuration.  Returns how long to sleep
 * before a delayed restart is due (or a long default).
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
		if (!s->in_use)
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
		if (running)
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
		if (s->restart_after <= now) {
			s->clean_exit = false;
			s->state = WorkerState::Starting;
			if (!StartWorker(i)) {
				s->state = WorkerState::Stopped;
				s->failures++;
				s->restart_after = TimestampTzPlusMilliseconds(now, 1000);
				strlcpy(s->last_error, "could not start a background worker: raise max_worker_processes",
						sizeof(s->last_error));
				s->last_error_at = now;
			}
		}
		if (s->state == WorkerState::Stopped) {
			long ms = (long) ((s->restart_after - now) / 1000);
			sleep_ms = Max(1L, Min(sleep_ms, ms));
		}
	}
	/* Wanted workers without a slot: take a free one and start. */
	for (int d = 0; d < ndesired; d++) {
		bool found = false;
		for (int i = 0; i < kMaxSlots && !found; i++)
			found = shared->slots[i].in_use && shared->slots[i].index == desired[d].index &&
					strcmp(shared->slots[i].consumer, desired[d].consumer) == 0;
		if (found)
			continue;
		for (int i = 0; i < kMaxSlots; i++) {
			WorkerSlot *s = &shared->slots[i];
			if (s->in_use)
				continue;
			memset(s, 0, sizeof(*s));
			s->in_use = true;
			strlcpy(s->consumer, desired[d].consumer, NAMEDATALEN);
			s->index = desired[d].index;
			s->state = WorkerState::Starting;
			if (!StartWorker(i)) {
				s->state = WorkerState::Stopped;
				s->failures = 1;
				s->restart_after = TimestampTzPlusMilliseconds(now, 1000);
				strlcpy(s->last_error, "could not start a background worker: raise max_worker_processes",
						sizeof(s->last_error));
				s->last_error_at = now;
				sleep_ms = Min(sleep_ms, 1000L);
			}
			break;
		}
	}
	LWLockRelease(shared->lock);
	return sleep_ms;
}

void
LauncherExit(int code, Datum arg)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->launcher_pid = 0;
	shared->launcher_latch = nullptr;
	LWLockRelease(shared->lock);
}

/*
 * A launcher that starts after another one died has no handles for the workers it left: stop
 * them (they exit within a second) and start afresh.
 */
void
TakeOver()
{
	for (int attempt = 0; attempt < 100; attempt++) {
		bool any = false;
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		for (int i = 0; i < kMaxSlots; i++) {
			WorkerSlot *s = &shared->slots[i];
			if (s->in_use && s->pid != 0) {
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
	for (int i = 0; i < kMaxSlots; i++)
		if (shared->slots[i].pid == 0)
			memset(&shared->slots[i], 0, sizeof(WorkerSlot));
	LWLockRelease(shared->lock);
}

} /* namespace */

void
RegisterLauncher()
{
	BackgroundWorker worker;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_library_name, "sequin_sync", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "sequin_sync_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "sequin_sync launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "sequin_sync launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

} /* namespace sequin_sync */

using namespace sequin_sync;

extern "C" void
sequin_sync_launcher_main(Datum arg)
{
	pqsignal(SIGTERM, HandleSigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(database_name, nullptr, 0);
	/* The PGPROC's latch: in shared memory, so backends can set it. */
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->launcher_pid = MyProcPid;
	shared->launcher_latch = &MyProc->procLatch;
	LWLockRelease(shared->lock);
	before_shmem_exit(LauncherExit, (Datum) 0);
	pgstat_report_appname("sequin_sync launcher");
	TakeOver();

	Desired *desired = (Desired *) MemoryContextAlloc(TopMemoryContext, sizeof(Desired) * kMaxSlots);
	while (!got_sigterm) {
		if (ConfigReloadPending) {
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		int ndesired = ReadDesired(desired, kMaxSlots);
		long sleep_ms = Reconcile(desired, ndesired);
		sleep_ms = Min(sleep_ms, PruneTombstonesIfDue(ndesired >= 0));
		WaitOnLatch(sleep_ms);
	}
	/* Workers stop with the launcher only at shutdown; a restarted launcher takes them over. */
	proc_exit(1);
}
