/*
 * catalog.cpp - see catalog.hpp.
 */
extern "C" {
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/hsearch.h"
#include "utils/syscache.h"
#include "common/hashfn.h"
}

#include "pg/catalog.hpp"
#include "pg/sanitize.hpp"

namespace sequin_sync {

void
SpiConnect()
{
	MemoryContext cxt = CurrentMemoryContext;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(cxt);
}

void
SpiFinish()
{
	MemoryContext cxt = CurrentMemoryContext;
	SPI_finish();
	MemoryContextSwitchTo(cxt);
}

int
SpiExec(const char *sql, int nargs, const Oid *argtypes, const Datum *values, const char *nulls,
		bool read_only, long tcount)
{
	MemoryContext cxt = CurrentMemoryContext;
	int rc = SPI_execute_with_args(sql, nargs, const_cast<Oid *>(argtypes), const_cast<Datum *>(values),
								   nulls, read_only, tcount);
	MemoryContextSwitchTo(cxt);
	if (rc < 0)
		elog(ERROR, "SPI_execute_with_args failed (%s): %s", SPI_result_code_string(rc), sql);
	return rc;
}

SPIPlanPtr
SpiPrepare(const char *sql, int nargs, const Oid *argtypes)
{
	MemoryContext cxt = CurrentMemoryContext;
	SPIPlanPtr plan = SPI_prepare(sql, nargs, const_cast<Oid *>(argtypes));
	MemoryContextSwitchTo(cxt);
	if (plan == nullptr)
		elog(ERROR, "SPI_prepare failed (%s): %s", SPI_result_code_string(SPI_result), sql);
	return plan;
}

int
SpiExecPlan(SPIPlanPtr plan, const Datum *values, const char *nulls, bool read_only, long tcount)
{
	MemoryContext cxt = CurrentMemoryContext;
	int rc = SPI_execute_plan(plan, const_cast<Datum *>(values), nulls, read_only, tcount);
	MemoryContextSwitchTo(cxt);
	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return rc;
}

namespace {

struct PlanKey {
	uint64		hash;
};

struct PlanEntry {
	PlanKey		key;
	char	   *sql;
	int			nargs;
	Oid		   *argtypes;
	Oid			user;
	SPIPlanPtr	plan;
};

constexpr long kMaxCachedPlans = 512;
HTAB *plan_cache = nullptr;

uint64
PlanHash(const char *sql, int nargs, const Oid *argtypes, Oid user)
{
	uint64 h = hash_bytes_extended((const unsigned char *) sql, (int) strlen(sql), user);
	if (nargs > 0)
		h = hash_combine64(h, hash_bytes_extended((const unsigned char *) argtypes, (int) (nargs * sizeof(Oid)), 0));
	return h;
}

/* Forgets every kept plan: the cache is small, and a full cache means mappings churned. */
void
ResetPlanCache()
{
	HASH_SEQ_STATUS status;
	hash_seq_init(&status, plan_cache);
	PlanEntry *e;
	while ((e = (PlanEntry *) hash_seq_search(&status)) != nullptr) {
		SPI_freeplan(e->plan);
		pfree(e->sql);
		if (e->argtypes)
			pfree(e->argtypes);
		hash_search(plan_cache, &e->key, HASH_REMOVE, nullptr);
	}
}

SPIPlanPtr
CachedPlan(const char *sql, int nargs, const Oid *argtypes)
{
	if (plan_cache == nullptr) {
		HASHCTL ctl;
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(PlanKey);
		ctl.entrysize = sizeof(PlanEntry);
		ctl.hcxt = CacheMemoryContext;
		plan_cache = hash_create("sequin_sync plans", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	Oid user = GetUserId();
	PlanKey key = {PlanHash(sql, nargs, argtypes, user)};
	bool found;
	PlanEntry *e = (PlanEntry *) hash_search(plan_cache, &key, HASH_FIND, &found);
	if (found && e->user == user && e->nargs == nargs && strcmp(e->sql, sql) == 0 &&
		(nargs == 0 || memcmp(e->argtypes, argtypes, nargs * sizeof(Oid)) == 0))
		return e->plan;

	SPIPlanPtr plan = SpiPrepare(sql, nargs, argtypes);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	if (found) {
		/* A hash collision: the newcomer takes the entry. */
		SPI_freeplan(e->plan);
		pfree(e->sql);
		if (e->argtypes)
			pfree(e->argtypes);
	} else {
		if (hash_get_num_entries(plan_cache) >= kMaxCachedPlans)
			ResetPlanCache();
		e = (PlanEntry *) hash_search(plan_cache, &key, HASH_ENTER, &found);
	}
	e->sql = MemoryContextStrdup(CacheMemoryContext, sql);
	e->nargs = nargs;
	e->argtypes = nullptr;
	if (nargs > 0) {
		e->argtypes = (Oid *) MemoryContextAlloc(CacheMemoryContext, nargs * sizeof(Oid));
		memcpy(e->argtypes, argtypes, nargs * sizeof(Oid));
	}
	e->user = user;
	e->plan = plan;
	return plan;
}

} /* namespace */

int
SpiExecCached(const char *sql, int nargs, const Oid *argtypes, const Datum *values, const char *nulls,
			  bool read_only, long tcount)
{
	return SpiExecPlan(CachedPlan(sql, nargs, argtypes), values, nulls, read_only, tcount);
}

bool
LockExtension()
{
	Oid ext = get_extension_oid("sequin_sync", true);
	if (!OidIsValid(ext))
		return false;
	LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
	/* Dropped, or dropped and created again, while we waited for the lock: not this time. */
	if (get_extension_oid("sequin_sync", true) != ext) {
		UnlockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
		return false;
	}
	return true;
}

Oid
ExtensionOwner()
{
	Oid nsp = get_namespace_oid("sequin_sync", false);
	Oid relid = get_relname_relid("consumers", nsp);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"sequin_sync\" is not installed correctly"),
				 errhint("Run DROP EXTENSION sequin_sync; CREATE EXTENSION sequin_sync;")));
	HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	Oid owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

void
BeginAsRole(RoleSwitch *rs, Oid role, bool restricted)
{
	GetUserIdAndSecContext(&rs->saved_user, &rs->saved_context);
	int context = rs->saved_context | SECURITY_LOCAL_USERID_CHANGE;
	if (restricted)
		context |= SECURITY_RESTRICTED_OPERATION;
	SetUserIdAndSecContext(role, context);
}

void
EndAsRole(const RoleSwitch *rs)
{
	SetUserIdAndSecContext(rs->saved_user, rs->saved_context);
}

int
BeginSafeSearchPath()
{
	int nest_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest_level;
}

void
EndSafeSearchPath(int nest_level)
{
	AtEOXact_GUC(true, nest_level);
}

ConsumerInfo *
LookupConsumer(const char *name, bool missing_ok)
{
	RoleSwitch rs;
	BeginAsRole(&rs, ExtensionOwner(), false);
	Oid argtypes[1] = {TEXTOID};
	Datum values[1] = {CStringGetTextDatum(name)};
	SpiExec("SELECT owner::pg_catalog.oid, paused FROM sequin_sync.consumers WHERE name = $1",
			1, argtypes, values, nullptr, true, 1);
	EndAsRole(&rs);
	if (SPI_processed == 0) {
		if (missing_ok)
			return nullptr;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("consumer \"%s\" does not exist", name),
				 errhint("Create it with sequin_sync.create_consumer(), or check the name in sequin_sync.consumers.")));
	}
	ConsumerInfo *info = (ConsumerInfo *) palloc0(sizeof(ConsumerInfo));
	bool isnull;
	info->name = pstrdup(name);
	info->owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	info->paused = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return info;
}

void
CheckConsumerAccess(const ConsumerInfo *consumer)
{
	if (!has_privs_of_role(GetUserId(), consumer->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for consumer \"%s\"", consumer->name),
				 errdetail("Consumer \"%s\" belongs to role \"%s\".", consumer->name,
						   GetUserNameFromId(consumer->owner, false)),
				 errhint("Only its owner, members of its owner's role and superusers can use or change it.")));
}

namespace {

/* Errors that are no record's fault: the batch fails as a whole and is retried later. */
bool
IsTransient(const ErrorData *e)
{
	switch (ERRCODE_TO_CATEGORY(e->sqlerrcode)) {
		case ERRCODE_CONNECTION_EXCEPTION:				 /* 08 */
		case ERRCODE_INVALID_TRANSACTION_STATE:			 /* 25: read-only */
		case ERRCODE_TRANSACTION_ROLLBACK:				 /* 40: deadlock, serialization */
		case ERRCODE_INSUFFICIENT_RESOURCES:			 /* 53: disk, memory */
		case ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE:	 /* 55: lock not available */
		case ERRCODE_OPERATOR_INTERVENTION:				 /* 57: cancel, shutdown */
		case ERRCODE_SYSTEM_ERROR:						 /* 58: I/O */
		case ERRCODE_SNAPSHOT_TOO_OLD:					 /* 72 */
		case ERRCODE_CONFIG_FILE_ERROR:					 /* F0 */
		case ERRCODE_INTERNAL_ERROR:					 /* XX */
			return true;
		default:
			return false;
	}
}

} /* namespace */

ErrorData *
RunProtected(ProtectedFn fn, void *arg, MemoryContext cxt)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData *volatile edata = nullptr;

	BeginInternalSubTransaction(nullptr);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		SS_AFTER_LONGJMP();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_END_TRY();

	if (edata != nullptr && IsTransient(edata))
		ReThrowError(edata);
	return edata;
}

void
RequireArgument(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

} /* namespace sequin_sync */
