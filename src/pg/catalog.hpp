/*
 * catalog.hpp - shared Postgres-side plumbing: SPI calls that keep the caller's memory context,
 * acting as another role, a safe search_path, sequin_sync's own tables, and running a step in a
 * subtransaction so one record's error costs only that record.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_CATALOG_HPP
#define SEQUIN_SYNC_CATALOG_HPP

namespace sequin_sync {

/* A consumer's configuration row (the token is not loaded here). */
struct ConsumerInfo {
	char	   *name;
	Oid			owner;
	bool		paused;
};

/* SPI calls that restore CurrentMemoryContext (SPI leaves its own procedure context current). */
void SpiConnect();
void SpiFinish();
/* Executes a query with parameters ('n' in nulls = NULL); raises on any SPI failure. */
int SpiExec(const char *sql, int nargs, const Oid *argtypes, const Datum *values, const char *nulls,
			bool read_only, long tcount);
SPIPlanPtr SpiPrepare(const char *sql, int nargs, const Oid *argtypes);
int SpiExecPlan(SPIPlanPtr plan, const Datum *values, const char *nulls, bool read_only, long tcount);

/*
 * Like SpiExec, with the plan prepared once per backend and kept (SPI_keepplan), keyed by the
 * query text, the argument types and the current user.  Postgres revalidates kept plans when
 * a table they use changes.  For the statements of every batch: no batch re-plans.
 */
int SpiExecCached(const char *sql, int nargs, const Oid *argtypes, const Datum *values, const char *nulls,
				  bool read_only, long tcount);

/*
 * Whether sequin_sync is installed in this database; if so, it stays installed until the
 * transaction ends (DROP EXTENSION waits for the lock this takes).  Background workers check it
 * before they read the extension's tables, which a concurrent DROP EXTENSION would otherwise
 * pull away between the check and the query.
 */
bool LockExtension();

/* The role that owns sequin_sync's tables: configuration is written as this role. */
Oid ExtensionOwner();

/* Acting as another role, as a definer would; restored by End or by (sub)transaction abort. */
struct RoleSwitch {
	Oid			saved_user;
	int			saved_context;
};
void BeginAsRole(RoleSwitch *rs, Oid role, bool restricted);
void EndAsRole(const RoleSwitch *rs);

/* search_path = pg_catalog, pg_temp until EndSafeSearchPath (or transaction end). */
int BeginSafeSearchPath();
void EndSafeSearchPath(int nest_level);

/* Looks up a consumer (as the extension owner); raises "does not exist" unless missing_ok. */
ConsumerInfo *LookupConsumer(const char *name, bool missing_ok);
/* Raises unless the current user is the consumer's owner (or a member) or a superuser. */
void CheckConsumerAccess(const ConsumerInfo *consumer);

/*
 * Runs fn(arg) in a subtransaction.  Returns nullptr on success; on an error that is a record's
 * fault (bad data, a constraint, a privilege) rolls the subtransaction back and returns the
 * error, copied into cxt.  Errors that are nobody's record's fault - cancel, shutdown, deadlock,
 * serialization failure, out of memory or disk, a read-only server - are re-raised, so the whole
 * batch fails and is retried instead of records being parked for a transient cause.
 */
using ProtectedFn = void (*)(void *arg);
ErrorData *RunProtected(ProtectedFn fn, void *arg, MemoryContext cxt);

/* Raises a clear error when a required argument is NULL. */
void RequireArgument(FunctionCallInfo fcinfo, int argno, const char *name);

} /* namespace sequin_sync */

#endif
