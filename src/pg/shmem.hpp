/*
 * shmem.hpp - state shared by the launcher, the workers and the SQL functions: one slot per
 * running worker (its consumer, pid, state, last error, and whether its consumer's row changed),
 * the launcher's latch, and what the launcher's tombstone pruning last did.
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
	bool		consumer_changed;	/* its consumer's row changed since the worker read it */
	int			failures;		/* consecutive abnormal exits: the launcher's restart backoff */
	TimestampTz restart_after;
	TimestampTz last_poll_at;
	TimestampTz last_applied_at;
	TimestampTz newest_commit_at;	/* stream: newest commit_timestamp applied, 0 when none */
	TimestampTz last_error_at;
	int64		acked_unflushed;	/* acknowledged, not yet added to consumer_stats */
	bool		has_pending;
	int64		pending;
	char		last_error[kErrorLen];
};

/* What the launcher's automatic tombstone pruning last did (sequin_sync.tombstone_pruning). */
struct PruneState {
	int			retention_s;	/* sequin_sync.tombstone_retention as the launcher reads it */
	TimestampTz last_prune_at;	/* when the last complete run ended; 0: none since start */
	int64		last_pruned;	/* tombstones that run removed */
	TimestampTz next_prune_at;	/* 0: pruning is off (retention 0) */
	TimestampTz last_error_at;
	char		last_error[kErrorLen];
};

struct SharedState {
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	PruneState	prune;
	WorkerSlot	slots[kMaxSlots];
};

/* NULL unless the library was loaded through shared_preload_libraries. */
extern SharedState *shared;

/* Called from _PG_init when preloading: asks for the memory and installs the hooks. */
void InstallShmemHooks();

/*
 * When the current transaction commits, wakes the launcher (consumers to start or stop) and,
 * for consumer != NULL, that consumer's workers, which then read its row again.  The other
 * consumers' workers are left alone.  Nothing happens if the transaction aborts.
 */
void WakeOnCommit(const char *consumer);

const char *WorkerStateName(WorkerState state);

} /* namespace sequin_sync */

#endif
