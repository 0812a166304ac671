/*
 * shmem.cpp - see shmem.hpp.
 */
extern "C" {
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"
}

#include "pg/shmem.hpp"

namespace sequin_sync {

SharedState *shared = nullptr;

namespace {

shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;
bool wake_registered = false;

void
RequestShmem()
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(SharedState)));
	RequestNamedLWLockTranche("sequin_sync", 1);
}

void
StartupShmem()
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	bool found;
	shared = (SharedState *) ShmemInitStruct("sequin_sync", sizeof(SharedState), &found);
	if (!found) {
		memset(shared, 0, sizeof(SharedState));
		shared->lock = &(GetNamedLWLockTranche("sequin_sync"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The consumers whose rows the current transaction changed.  Beyond kMaxWakeNames of them (one
 * transaction reconfiguring many consumers), every worker is woken instead: a spurious wake
 * only makes a worker read its row again.
 */
constexpr int kMaxWakeNames = 8;
struct PendingWake {
	bool		pending;		/* wake the launcher at commit */
	bool		all_consumers;
	int			nnames;
	char		names[kMaxWakeNames][NAMEDATALEN];
};
PendingWake wake;

bool
WakesConsumer(const char *consumer)
{
	if (wake.all_consumers)
		return true;
	for (int i = 0; i < wake.nnames; i++)
		if (strcmp(wake.names[i], consumer) == 0)
			return true;
	return false;
}

/*
 * At commit: flag this database for its manager (an entry is taken when the database has none:
 * CREATE EXTENSION, a restored configuration), flag the changed consumers' slots, and set the
 * latches of those workers and of the manager, or of the launcher when no manager runs there.
 */
void
WakeCommitted()
{
	if (shared == nullptr)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	DatabaseEntry *db = FindOrAddDatabase(MyDatabaseId);
	if (db == nullptr)
		shared->rescan = true;
	else
		db->wake = true;
	if (db != nullptr && db->manager_latch != nullptr)
		SetLatch(db->manager_latch);
	else if (shared->launcher_latch != nullptr)
		SetLatch(shared->launcher_latch);
	for (int i = 0; i < kMaxSlots; i++) {
		WorkerSlot *s = &shared->slots[i];
		if (!s->in_use || s->dboid != MyDatabaseId || !WakesConsumer(s->consumer))
			continue;
		s->consumer_changed = true;
		if (s->latch != nullptr)
			SetLatch(s->latch);
	}
	LWLockRelease(shared->lock);
}

void
OnXactEvent(XactEvent event, void *arg)
{
	switch (event) {
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake.pending)
				WakeCommitted();
			memset(&wake, 0, sizeof(wake));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			memset(&wake, 0, sizeof(wake));
			break;
		default:
			break;
	}
}

} /* namespace */

void
InstallShmemHooks()
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = RequestShmem;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = StartupShmem;
}

void
WakeOnCommit(const char *consumer)
{
	if (shared == nullptr)
		return;
	if (!wake_registered) {
		RegisterXactCallback(OnXactEvent, nullptr);
		wake_registered = true;
	}
	wake.pending = true;
	if (consumer == nullptr || WakesConsumer(consumer))
		return;
	if (wake.nnames < kMaxWakeNames)
		strlcpy(wake.names[wake.nnames++], consumer, NAMEDATALEN);
	else
		wake.all_consumers = true;
}

DatabaseEntry *
FindDatabase(Oid dboid)
{
	for (int i = 0; i < kMaxDatabases; i++)
		if (shared->databases[i].dboid == dboid)
			return &shared->databases[i];
	return nullptr;
}

DatabaseEntry *
FindOrAddDatabase(Oid dboid)
{
	DatabaseEntry *db = FindDatabase(dboid);
	if (db != nullptr)
		return db;
	for (int i = 0; i < kMaxDatabases; i++) {
		db = &shared->databases[i];
		if (db->dboid != InvalidOid)
			continue;
		memset(db, 0, sizeof(*db));
		db->dboid = dboid;
		db->prune.retention_s = -1; /* nothing published yet */
		return db;
	}
	return nullptr;
}

bool
DatabaseLeaving(Oid dboid)
{
	LWLockAcquire(shared->lock, LW_SHARED);
	DatabaseEntry *db = FindDatabase(dboid);
	bool leaving = db != nullptr && db->leaving > 0;
	LWLockRelease(shared->lock);
	return leaving;
}

void
WakeDatabase(Oid dboid)
{
	LWLockAcquire(shared->lock, LW_SHARED);
	DatabaseEntry *db = FindDatabase(dboid);
	if (db != nullptr && db->manager_latch != nullptr)
		SetLatch(db->manager_latch);
	else if (shared->launcher_latch != nullptr)
		SetLatch(shared->launcher_latch);
	LWLockRelease(shared->lock);
}

const char *
WorkerStateName(WorkerState state)
{
	switch (state) {
		case WorkerState::Stopped:
			return "stopped";
		case WorkerState::Starting:
			return "starting";
		case WorkerState::Running:
			return "running";
		case WorkerState::Idle:
			return "idle";
		case WorkerState::Backoff:
			return "backoff";
		case WorkerState::Error:
			return "error";
		case WorkerState::Waiting:
			return "waiting";
	}
	return "unknown";
}

} /* namespace sequin_sync */
