/*
 * subxact.cpp - see subxact.hpp.
 */
extern "C" {
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
}

#include "pg/subxact.hpp"

namespace sequin_sync {

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

} /* namespace sequin_sync */
