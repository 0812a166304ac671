/*
 * bgworkers.hpp - the background workers: the launcher (launcher.cpp, one per server), the
 * manager of each database with the extension (manager.cpp) with its tombstone pruning
 * (pruner.cpp), and the consumer workers a manager starts (worker.cpp).
 */
#ifndef SEQUIN_SYNC_BGWORKERS_HPP
#define SEQUIN_SYNC_BGWORKERS_HPP

struct BackgroundWorkerHandle;

namespace sequin_sync {

/* Registers the launcher; from _PG_init while shared_preload_libraries is processed. */
void RegisterLauncher();

/*
 * Starts a dynamic background worker of this library (a manager, a consumer worker) that
 * notifies the caller when it starts and stops; *handle is NULL when no slot was free.
 */
void StartDynamicWorker(const char *function, const char *type, const char *name, Datum arg,
						BackgroundWorkerHandle **handle);

/*
 * Stops the consumer workers of a database (InvalidOid: of every database), and the managers
 * too with `managers`, and waits until they are gone (at most 10 s); then frees their slots.
 * For a launcher or a manager that takes over from one that died: it has no handles for them.
 */
void StopAndWait(Oid dboid, bool managers);

/* Set by SIGTERM in the launcher and the workers; the handler only sets it and the latch. */
extern volatile sig_atomic_t got_sigterm;
void HandleSigterm(SIGNAL_ARGS);

/*
 * The one way the launcher, the managers and the workers wait: on the latch for up to ms (0: only look),
 * then reset it and serve interrupts.  The process exits when the postmaster has died - also
 * when the latch was already set, where WaitLatch returns without looking - so that no worker
 * outlives the postmaster and keeps its shared memory from a new one.
 */
void WaitOnLatch(long ms);

/*
 * A manager's tombstone pruning, in its database: removes, in short transactions of a few
 * hundred rows, the tombstones older than sequin_sync.tombstone_retention, every tenth of that
 * retention (between 1 s and 1 h) and at once when the retention changes.  installed: whether
 * the extension is installed in the manager's database.  Returns how long until it is due
 * again, in ms (0: more is left, come back after the manager's other work).
 */
long PruneTombstonesIfDue(bool installed);

} /* namespace sequin_sync */

#endif
