/*
 * shmem.hpp - state shared by the launcher, the database managers, the workers and the SQL
 * functions: one slot per consumer worker (its database and consumer, pid, state, last error,
 * and whether its consumer's row changed), one entry per database that has (or may have) the
 * extension (its manager, what woke it, DDL waiting for it to empty, what its tombstone pruning
 * last did), and the launcher's latch.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_SHMEM_HPP
#define SEQUIN_SYNC_SHMEM_HPP

namespace sequin_sync {

constexpr int kMaxSlots = 128;
constexpr int kMaxDatabases = 64;
constexpr int kErrorLen = 512;

enum class WorkerState : uint8 {
	Stopped,
	Starting,
	Running,	/* applying, or pulling with data flowing */
	Idle,		/* the last poll returned nothing */
	Backoff,	/* waiting after a transient failure */
	Error,		/* the consumer rejects us (401/403/404) or the reply is unusable */
	Waiting,	/* no process: sequin_sync.max_workers workers run already (last_error says so) */
};

struct WorkerSlot {
	bool		in_use;
	Oid			dboid;			/* the database its consumer is in */
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

/*
 * A database the launcher runs a manager in: one known to have the extension, or one it is
 * looking into.  A database without the extension has no entry once its manager has said so.
 */
struct DatabaseEntry {
	Oid			dboid;			/* InvalidOid: a free entry */
	char		name[NAMEDATALEN];	/* as the launcher last read it */
	bool		wake;			/* a configuration change committed there: read it again */
	bool		absent;			/* its manager found no extension and left */
	int			leaving;		/* DROP/RENAME/ALTER DATABASE statements waiting for it to empty */
	pid_t		manager_pid;	/* 0 when no manager runs */
	Latch	   *manager_latch;
	int			failures;		/* consecutive abnormal manager exits: the restart backoff */
	TimestampTz restart_after;
	PruneState	prune;
};

struct SharedState {
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	bool		rescan;			/* a wake found no free entry: look into every database again */
	DatabaseEntry databases[kMaxDatabases];
	WorkerSlot	slots[kMaxSlots];
};

/* NULL unless the library was loaded through shared_preload_libraries. */
extern SharedState *shared;

/* Called from _PG_init when preloading: asks for the memory and installs the hooks. */
void InstallShmemHooks();
/* Also from _PG_init when preloading: the statements that empty a database (databases.cpp). */
void InstallDatabaseHooks();

/*
 * When the current transaction commits, wakes this database's manager (consumers to start or
 * stop; the launcher starts a manager when none runs) and, for consumer != NULL, that
 * consumer's workers in this database, which then read its row again.  The other consumers'
 * workers are left alone.  Nothing happens if the transaction aborts.
 */
void WakeOnCommit(const char *consumer);

/* The entry of a database, or NULL; the caller holds shared->lock. */
DatabaseEntry *FindDatabase(Oid dboid);
/* The entry of a database, taken when it has none; NULL when every entry is in use. */
DatabaseEntry *FindOrAddDatabase(Oid dboid);

/*
 * Whether a statement waits for the database to empty (DROP, RENAME, ALTER DATABASE ...
 * ALLOW_CONNECTIONS false): then nothing of sequin_sync starts or stays in it.
 */
bool DatabaseLeaving(Oid dboid);

/* Wakes the database's manager, or the launcher when it has none. */
void WakeDatabase(Oid dboid);

const char *WorkerStateName(WorkerState state);

} /* namespace sequin_sync */

#endif
