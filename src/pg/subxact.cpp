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

/*
 * Errors that are no record's fault: the batch fails as a whole and is retried later.  Transient
 * means the server's state, not the record's content, so only these:
 *  - 40 (transaction rollback: deadlock, serialization failure), the whole class;
 *  - 55P03 lock_not_available (lock_timeout); the rest of class 55 (an object in use, not in
 *    the state a statement needs) is about the object a record touches;
 *  - 53 (insufficient resources: disk full, out of memory, too many connections);
 *  - 57 (operator intervention: cancel, statement_timeout, shutdown);
 *  - 25006 read_only_sql_transaction (a standby, default_transaction_read_only); the rest of
 *    class 25 is about a transaction's state that a record's trigger can cause;
 *  - 08 (connection exception: a foreign table's server);
 *  - 58 (system error: an I/O error, a missing or duplicate file).  Kept, although a trigger
 *    could raise it for one record's value: what raises it is almost always the disk or the
 *    file system under the server, and parking every record a failing disk touches would fill
 *    dead_letters with good records instead of retrying them once the disk is back.
 * Everything else - XX (internal error, a bare elog(ERROR) in a type's input function or a
 * trigger), F0, and every data or constraint class - is the record's when bisection isolates
 * it: it is parked, or it would fail the batch on every redelivery.
 */
bool
IsTransient(const ErrorData *e)
{
	switch (e->sqlerrcode) {
		case ERRCODE_LOCK_NOT_AVAILABLE:				 /* 55P03 */
		case ERRCODE_READ_ONLY_SQL_TRANSACTION:			 /* 25006 */
			return true;
		default:
			break;
	}
	switch (ERRCODE_TO_CATEGORY(e->sqlerrcode)) {
		case ERRCODE_CONNECTION_EXCEPTION:				 /* 08 */
		case ERRCODE_TRANSACTION_ROLLBACK:				 /* 40 */
		case ERRCODE_INSUFFICIENT_RESOURCES:			 /* 53 */
		case ERRCODE_OPERATOR_INTERVENTION:				 /* 57 */
		case ERRCODE_SYSTEM_ERROR:						 /* 58 */
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
