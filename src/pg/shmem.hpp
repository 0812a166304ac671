/*
 * shmem.hpp - state shared by the launcher, the workers and the SQL functions: one slot per
 * running worker (its consumer, pid, state, last error), the launcher's latch, and a generation
 * counter that the configuration functions bump when they commit.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_SHMEM_HPP
#define SEQUIN_SYNC_SHMEM_HPP

namespace sequin_sync {

constexpr int kMaxSlots = 128;
constexpr int kErrorLen = 512;

enum class WorkerState : uint8 {
	Stopped,
	Starting,
	Running,	/* applying, or pulling with data flowing */
	Idle,		/* the last poll returned nothing */
	Backoff,	/* waiting after a transient failure */
	Error,		/* the consumer rejects us (401/403/404) or the reply is unusable */
};

struct WorkerSlot {
	bool		in_use;
	char		consumer[NAMEDATALEN];
	int			index;			/* the worker's number within its consumer */
	pid_t		pid;			/* 0 when not running */
	Latch	   *latch;
	WorkerState state;
	bool		clean_exit;		/* the worker ended on purpose (SIGTERM, paused, dropped) */
	int			failures;		/* consecutive abnormal exits: the launcher's restart backoff */
	TimestampTz restart_after;
	TimestampTz last_poll_at;
	TimestampTz last_applied_at;
	TimestampTz last_error_at;
	int64		acked_unflushed;	/* acknowledged, not yet added to consumer_stats */
	bool		has_pending;
	int64		pending;
	char		last_error[kErrorLen];
};

struct SharedState {
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	pg_atomic_uint64 config_generation;
	WorkerSlot	slots[kMaxSlots];
};

/* NULL unless the library was loaded through shared_preload_libraries. */
extern SharedState *shared;

/* Called from _PG_init when preloading: asks for the memory and installs the hooks. */
void InstallShmemHooks();

/*
 * Wakes the launcher and every worker when the current transaction commits (and bumps the
 * configuration generation), so that configuration changes act within moments of their commit.
 * Nothing happens if the transaction aborts.
 */
void WakeWorkersOnCommit();

/* Records a slot's state and, when error is not NULL, its last error. */
void SetSlotState(int slot, WorkerState state, const char *error);

const char *WorkerStateName(WorkerState state);

} /* namespace sequin_sync */

#endif
