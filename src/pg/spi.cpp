/*
 * spi.cpp - see spi.hpp.
 */
extern "C" {
#include "postgres.h"

#include "executor/spi.h"
#include "utils/memutils.h"
#include "utils/hsearch.h"
#include "common/hashfn.h"
#include "miscadmin.h"
}

#include "pg/spi.hpp"

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

} /* namespace sequin_sync */
