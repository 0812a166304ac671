/*
 * launcher.cpp - the launcher: one static background worker per server, connected to no
 * database, that keeps a manager (manager.cpp) running in every database that has the
 * extension, and no process in any other.
 *
 * Every few seconds, and whenever it is woken, it reads pg_database: the databases that accept
 * connections and are not templates (only the one named by sequin_sync.database, when that is
 * set).  It starts a manager in each it has not looked into yet; a manager that finds no
 * extension leaves at once and the launcher remembers the database as without one, until a
 * configuration change commits there (CREATE EXTENSION calls sequin_sync._wake_workers(), a
 * restored configuration fires the consumers table's trigger: shmem.cpp), which wakes it.  A
 * database that goes away, refuses connections, becomes a template or is excluded by a reload
 * loses its manager and its workers; a statement that needs the database empty (DROP, RENAME,
 * ALTER DATABASE ... ALLOW_CONNECTIONS false) clears it first (databases.cpp).  A manager that
 * ends abnormally is started again after a delay that doubles (1 s up to 60 s), one stopped
 * with pg_terminate_backend at once.  If the launcher itself dies, the postmaster restarts it
 * and it takes over: it stops the managers and workers it has no handles for, and starts afresh.
 */
extern "C" {
#include "postgres.h"

#include "port/atomics.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
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
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void sequin_sync_launcher_main(Datum arg);
}

#include "pg/bgworkers.hpp"
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

/* How often pg_database is read without a wake: new databases made from a template, a reload. */
constexpr long kScanIntervalMs = 5000;
/* Managers looking into a database at once (at start there may be many databases). */
constexpr int kMaxProbes = 4;

/* A database a manager may run in. */
struct Candidate {
	Oid			dboid;
	char		name[NAMEDATALEN];
};

MemoryContext round_cxt;
Candidate  *candidates;
int			ncandidates;

/* Databases whose manager found no extension (launcher-local: they need no entry). */
Oid		   *absent;
int			nabsent;
int			absent_cap;

BackgroundWorkerHandle *manager_handles[kMaxDatabases];

/*
 * Reads pg_database (a shared catalog: the launcher is connected to no database): the
 * databases that accept connections, are not templates, are valid (not half dropped), and are
 * the one named by sequin_sync.database when it is set.
 */
void
ScanDatabases()
{
	MemoryContextReset(round_cxt);
	int cap = 16;
	candidates = (Candidate *) MemoryContextAlloc(round_cxt, sizeof(Candidate) * cap);
	ncandidates = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	Relation rel = table_open(DatabaseRelationId, AccessShareLock);
	TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
	HeapTuple tup;
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
		Form_pg_database form = (Form_pg_database) GETSTRUCT(tup);
		if (!form->datallowconn || form->datistemplate || database_is_invalid_form(form))
			continue;
		if (database_name != nullptr && database_name[0] != '\0' && strcmp(NameStr(form->datname), database_name) != 0)
			continue;
		if (ncandidates == cap) {
			cap *= 2;
			candidates = (Candidate *) repalloc(candidates, sizeof(Candidate) * cap);
		}
		candidates[ncandidates].dboid = form->oid;
		strlcpy(candidates[ncandidates].name, NameStr(form->datname), NAMEDATALEN);
		ncandidates++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

const Candidate *
FindCandidate(Oid dboid)
{
	for (int i = 0; i < ncandidates; i++)
		if (candidates[i].dboid == dboid)
			return &candidates[i];
	return nullptr;
}

bool
KnownAbsent(Oid dboid)
{
	for (int i = 0; i < nabsent; i++)
		if (absent[i] == dboid)
			return true;
	return false;
}

void
RememberAbsent(Oid dboid)
{
	if (KnownAbsent(dboid))
		return;
	if (nabsent == absent_cap) {
		absent_cap = Max(16, absent_cap * 2);
		absent = absent == nullptr ? (Oid *) MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * absent_cap)
								   : (Oid *) repalloc(absent, sizeof(Oid) * absent_cap);
	}
	absent[nabsent++] = dboid;
}

/* Forgets the databases without the extension that are no candidates any more (dropped ...). */
void
ForgetGoneAbsent()
{
	int kept = 0;
	for (int i = 0; i < nabsent; i++)
		if (FindCandidate(absent[i]) != nullptr)
			absent[kept++] = absent[i];
	nabsent = kept;
}

/* Is the entry's manager alive (or about to be)?  The caller holds the lock. */
bool
ManagerRunning(int e)
{
	DatabaseEntry *db = &shared->databases[e];
	if (manager_handles[e] != nullptr) {
		pid_t pid;
		if (GetBackgroundWorkerPid(manager_handles[e], &pid) != BGWH_STOPPED)
			return true;
		pfree(manager_handles[e]);
		manager_handles[e] = nullptr;
		if (db->manager_pid != 0) {
			/* It died without running its exit callback. */
			db->manager_pid = 0;
			db->manager_latch = nullptr;
			db->failures++;
			db->restart_after = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
		}
	}
	return db->manager_pid != 0;
}

/*
 * Stops the database's workers, which its manager has stopped or is about to leave; returns
 * whether any is still there.  Frees the slots of those gone.  The caller holds the lock.
 */
bool
StopWorkers(Oid dboid)
{
	bool any = false;
	for (int i = 0; i < kMaxSlots; i++) {
		WorkerSlot *s = &shared->slots[i];
		if (!s->in_use || s->dboid != dboid)
			continue;
		if (s->pid != 0) {
			kill(s->pid, SIGTERM);
			any = true;
		} else
			memset(s, 0, sizeof(*s));
	}
	return any;
}

void
Launch(int e, const char *name, TimestampTz now)
{
	DatabaseEntry *db = &shared->databases[e];
	db->absent = false;
	char bgw_name[BGW_MAXLEN];
	snprintf(bgw_name, sizeof(bgw_name), "sequin_sync manager for database %s", name);
	StartDynamicWorker("sequin_sync_manager_main", "sequin_sync manager", bgw_name, ObjectIdGetDatum(db->dboid),
					   &manager_handles[e]);
	if (manager_handles[e] == nullptr) {
		db->failures++;
		db->restart_after = TimestampTzPlusMilliseconds(now, 1000);
		ereport(LOG, (errmsg("sequin_sync could not start a manager for database \"%s\"", name),
					  errhint("Raise max_worker_processes.")));
	}
}

/*
 * One round: brings the managers in line with pg_database and with what the databases said
 * (extension or not, a wake).  Returns how long to sleep.
 */
long
Round()
{
	ScanDatabases();
	TimestampTz now = GetCurrentTimestamp();
	long sleep_ms = kScanIntervalMs;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->rescan) {
		/* A wake found no free entry: every database may have changed. */
		shared->rescan = false;
		nabsent = 0;
	}
	int probes = 0;
	for (int e = 0; e < kMaxDatabases; e++) {
		DatabaseEntry *db = &shared->databases[e];
		if (db->dboid == InvalidOid)
			continue;
		bool running = ManagerRunning(e);
		const Candidate *c = FindCandidate(db->dboid);
		if (c == nullptr || db->leaving > 0) {
			/* Gone, closed, a template, excluded, or being emptied: nothing of ours stays. */
			if (running && manager_handles[e] != nullptr)
				TerminateBackgroundWorker(manager_handles[e]);
			else if (running)
				kill(db->manager_pid, SIGTERM);
			bool busy = StopWorkers(db->dboid) || running;
			if (busy)
				sleep_ms = Min(sleep_ms, 100L);
			else if (db->leaving == 0)
				memset(db, 0, sizeof(*db));
			continue;
		}
		strlcpy(db->name, c->name, NAMEDATALEN);
		if (running) {
			if (!db->absent && db->prune.retention_s < 0 && db->failures == 0)
				probes++;
			continue;
		}
		if (db->absent && !db->wake) {
			RememberAbsent(db->dboid);
			(void) StopWorkers(db->dboid);
			memset(db, 0, sizeof(*db));
			continue;
		}
		if (db->restart_after > now) {
			sleep_ms = Max(1L, Min(sleep_ms, (long) ((db->restart_after - now) / 1000)));
			continue;
		}
		Launch(e, c->name, now);
	}
	/* Databases not looked into yet (new ones, or all of them at start). */
	for (int i = 0; i < ncandidates && probes < kMaxProbes; i++) {
		const Candidate *c = &candidates[i];
		if (KnownAbsent(c->dboid) || FindDatabase(c->dboid) != nullptr)
			continue;
		DatabaseEntry *db = FindOrAddDatabase(c->dboid);
		if (db == nullptr)
			break;
		strlcpy(db->name, c->name, NAMEDATALEN);
		Launch((int) (db - shared->databases), c->name, now);
		probes++;
		sleep_ms = Min(sleep_ms, 100L);
	}
	LWLockRelease(shared->lock);
	ForgetGoneAbsent();
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
 * A launcher that starts after another one died has no handles for the managers and workers it
 * left: stop them (they exit within a second) and start afresh.  The entries of databases being
 * emptied stay: their statements still count on them.
 */
void
TakeOver()
{
	StopAndWait(InvalidOid, true);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int e = 0; e < kMaxDatabases; e++) {
		DatabaseEntry *db = &shared->databases[e];
		if (db->dboid != InvalidOid && db->manager_pid == 0 && db->leaving == 0)
			memset(db, 0, sizeof(*db));
	}
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

	/* No database: only the shared catalogs, so no DROP DATABASE ever waits for the launcher. */
	BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
	/* The PGPROC's latch: in shared memory, so backends can set it. */
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->launcher_pid = MyProcPid;
	shared->launcher_latch = &MyProc->procLatch;
	LWLockRelease(shared->lock);
	before_shmem_exit(LauncherExit, (Datum) 0);
	pgstat_report_appname("sequin_sync launcher");
	round_cxt = AllocSetContextCreate(TopMemoryContext, "sequin_sync launcher round", ALLOCSET_SMALL_SIZES);
	TakeOver();

	while (!got_sigterm) {
		if (ConfigReloadPending) {
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		WaitOnLatch(Round());
	}
	/* Managers and workers stop with the launcher only at shutdown; a restarted launcher takes them over. */
	proc_exit(1);
}
