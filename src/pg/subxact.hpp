/*
 * subxact.hpp - one step in a subtransaction, so that one record's error costs only that
 * record while errors that are nobody's record's fault fail the whole batch.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_SUBXACT_HPP
#define SEQUIN_SYNC_SUBXACT_HPP

namespace sequin_sync {

/*
 * Runs fn(arg) in a subtransaction.  Returns nullptr on success; on an error that is a record's
 * fault (bad data, a constraint, a privilege) rolls the subtransaction back and returns the
 * error, copied into cxt.  Errors that are nobody's record's fault - cancel, shutdown, deadlock,
 * serialization failure, a lock timeout, out of memory or disk, I/O, a read-only server - are
 * re-raised, so the whole batch fails and is retried instead of records being parked for a
 * transient cause (the list and why: IsTransient in subxact.cpp).  An internal error (XX000,
 * a bare elog) is the record's: a type or trigger that raises it for one value must not fail
 * every redelivery of the batch.
 */
using ProtectedFn = void (*)(void *arg);
ErrorData *RunProtected(ProtectedFn fn, void *arg, MemoryContext cxt);

} /* namespace sequin_sync */

#endif
