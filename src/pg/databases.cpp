/*
 * databases.cpp - sequin_sync and the server's databases, seen from the backends: statements
 * that need a database empty find none of our processes in it, and a configuration restored
 * into a database wakes its manager.
 *
 * DROP DATABASE, ALTER DATABASE ... RENAME, CREATE DATABASE ... TEMPLATE (of its source) and
 * ALTER DATABASE ... ALLOW_CONNECTIONS false (which does not need it empty, but its workers must
 * stop) wait up to 5 s for other
 * sessions of the database and then fail with "database is being accessed by other users"; only
 * autovacuum workers are told to leave.  So before such a statement runs, a ProcessUtility hook
 * marks the database as being emptied in shared memory (no manager or worker starts there until
 * the statement's transaction ends), tells its manager and workers to stop (SIGTERM, which ends
 * even a long poll within 100 ms; after a second a cancel too, for a batch still being applied),
 * and waits until they are gone.  At the transaction's end, committed or not, the mark goes and
 * the launcher looks at pg_database again: a dropped database is forgotten, a renamed or copied
 * one gets its manager back (everything connects by oid), a closed one stays without.
 */
extern "C" {
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "tcop/utility.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(sequin_sync_wake_trigger);
}

#include "pg/shmem.hpp"

namespace sequin_sync {

namespace {

/* How long a statement waits for our processes to leave (Postgres itself then waits 5 s more). */
constexpr long kEmptyWaitMs = 5000;
/* After this, a worker still applying a batch is cancelled too. */
constexpr long kCancelAfterMs = 1000;

ProcessUtility_hook_type prev_process_utility = nullptr;

/* The databases this backend's transaction marked as being emptied. */
constexpr int kMaxEmptying = 8;
Oid emptying[kMaxEmptying];
int nemptying = 0;
bool callback_registered = false;

/* At the transaction's end: unmark, and let the launcher look at pg_database again. */
void
OnXactEnd(XactEvent event, void *arg)
{
	if (nemptying == 0 || shared == nullptr)
		return;
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_COMMIT &&
		event != XACT_EVENT_PARALLEL_ABORT)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < nemptying; i++) {
		DatabaseEntry *db = FindDatabase(emptying[i]);
		if (db != nullptr && db->leaving > 0)
			db->leaving--;
	}
	if (shared->launcher_latch != nullptr)
		SetLatch(shared->launcher_latch);
	LWLockRelease(shared->lock);
	nemptying = 0;
}

/* The database a statement needs without our processes, or InvalidOid. */
Oid
DatabaseToEmpty(Node *stmt)
{
	switch (nodeTag(stmt)) {
		case T_DropdbStmt:
			return get_database_oid(((DropdbStmt *) stmt)->dbname, true);
		case T_RenameStmt: {
			RenameStmt *rename = (RenameStmt *) stmt;
			if (rename->renameType == OBJECT_DATABASE)
				return get_database_oid(rename->subname, true);
			break;
		}
		case T_CreatedbStmt: {
			/* Copying a database needs its source without other sessions. */
			CreatedbStmt *create = (CreatedbStmt *) stmt;
			ListCell *lc;
			foreach (lc, create->options) {
				DefElem *option = (DefElem *) lfirst(lc);
				if (strcmp(option->defname, "template") == 0 && option->arg != nullptr)
					return get_database_oid(defGetString(option), true);
			}
			break;
		}
		case T_AlterDatabaseStmt: {
			AlterDatabaseStmt *alter = (AlterDatabaseStmt *) stmt;
			ListCell *lc;
			foreach (lc, alter->options) {
				DefElem *option = (DefElem *) lfirst(lc);
				if (strcmp(option->defname, "allow_connections") == 0 && !defGetBoolean(option))
					return get_database_oid(alter->dbname, true);
			}
			break;
		}
		default:
			break;
	}
	return InvalidOid;
}

/*
 * Marks the database as being emptied until this transaction ends, then stops our manager and
 * workers there and waits (up to kEmptyWaitMs) until they are gone.
 */
void
EmptyDatabase(Oid dboid)
{
	if (nemptying == kMaxEmptying)
		return;
	if (!callback_registered) {
		RegisterXactCallback(OnXactEnd, nullptr);
		callback_registered = true;
	}
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	DatabaseEntry *db = FindOrAddDatabase(dboid);
	if (db != nullptr) {
		db->leaving++;
		emptying[nemptying++] = dboid;
	}
	if (shared->launcher_latch != nullptr)
		SetLatch(shared->launcher_latch);
	LWLockRelease(shared->lock);
	if (db == nullptr)
		return;

	TimestampTz start = GetCurrentTimestamp();
	for (;;) {
		long waited = (long) ((GetCurrentTimestamp() - start) / 1000);
		bool any = false;
		LWLockAcquire(shared->lock, LW_SHARED);
		db = FindDatabase(dboid);
		if (db != nullptr && db->manager_pid != 0) {
			kill(db->manager_pid, SIGTERM);
			any = true;
		}
		for (int i = 0; i < kMaxSlots; i++) {
			WorkerSlot *s = &shared->slots[i];
			if (!s->in_use || s->dboid != dboid || s->pid == 0)
				continue;
			kill(s->pid, SIGTERM);
			if (waited >= kCancelAfterMs)
				kill(s->pid, SIGINT);
			any = true;
		}
		LWLockRelease(shared->lock);
		if (!any || waited >= kEmptyWaitMs)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 20, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

void
GuardUtility(PlannedStmt *pstmt, const char *query_string, bool read_only_tree, ProcessUtilityContext context,
			 ParamListInfo params, QueryEnvironment *query_env, DestReceiver *dest, QueryCompletion *qc)
{
	if (shared != nullptr) {
		Oid dboid = DatabaseToEmpty(pstmt->utilityStmt);
		/* Our own database: Postgres refuses the statement anyway. */
		if (OidIsValid(dboid) && dboid != MyDatabaseId)
			EmptyDatabase(dboid);
	}
	if (prev_process_utility != nullptr)
		prev_process_utility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
	else
		standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
}

} /* namespace */

void
InstallDatabaseHooks()
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = GuardUtility;
}

} /* namespace sequin_sync */

using namespace sequin_sync;

/*
 * The statement trigger on sequin_sync.consumers: any change to the table wakes the database's
 * manager at commit.  The SQL API wakes it anyway; this is for the rows pg_restore loads (the
 * extension is created in an earlier transaction, before there are any), and for a superuser's
 * direct change.
 */
extern "C" Datum
sequin_sync_wake_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("sequin_sync._wake_on_change() must be called as a trigger"),
				 errhint("It belongs to the trigger on sequin_sync.consumers; do not call it directly.")));
	WakeOnCommit(nullptr);
	return PointerGetDatum(nullptr);
}
