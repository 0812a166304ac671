/*
 * shmem.cpp - see shmem.hpp.
 */
extern "C" {
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "port/atomics.h"
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
bool wake_pending = false;

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
		pg_atomic_init_u64(&shared->config_generation, 1);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
WakeAll()
{
	if (shared == nullptr)
		return;
	pg_atomic_fetch_add_u64(&shared->config_generation, 1);
	LWLockAcquire(shared->lock, LW_SHARED);
	if (shared->launcher_latch != nullptr)
		SetLatch(shared->launcher_latch);
	for (int i = 0; i < kMaxSlots; i++)
		if (shared->slots[i].in_use && shared->slots[i].latch != nullptr)
			SetLatch(shared->slots[i].latch);
	LWLockRelease(shared->lock);
}

void
OnXactEvent(XactEvent event, void *arg)
{
	switch (event) {
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
				WakeAll();
			wake_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = false;
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
WakeWorkersOnCommit()
{
	if (shared == nullptr)
		return;
	if (!wake_registered) {
		RegisterXactCallback(OnXactEvent, nullptr);
		wake_registered = true;
	}
	wake_pending = true;
}

void
SetSlotState(int slot, WorkerState state, const char *error)
{
	WorkerSlot *s = &shared->slots[slot];
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	s->state = state;
	if (error != nullptr) {
		strlcpy(s->last_error, error, sizeof(s->last_error));
		s->last_error_at = GetCurrentTimestamp();
	}
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
	}
	return "unknown";
}

} /* namespace sequin_sync */
