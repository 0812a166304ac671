/*
 * bgworkers.hpp - the background workers: the launcher (launcher.cpp) with its tombstone
 * pruning (pruner.cpp), and the consumer workers it starts (worker.cpp).
 */
#ifndef SEQUIN_SYNC_BGWORKERS_HPP
#define SEQUIN_SYNC_BGWORKERS_HPP

namespace sequin_sync {

/* Registers the launcher; from _PG_init while shared_preload_libraries is processed. */
void RegisterLauncher();

/* Set by SIGTERM in the launcher and the workers; the handler only sets it and the latch. */
extern volatile sig_atomic_t got_sigterm;
void HandleSigterm(SIGNAL_ARGS);

/*
 * The one way the launcher and the workers wait: on the latch for up to ms (0: only look),
 * then reset it and serve interrupts.  The process exits when the postmaster has died - also
 * when the latch was already set, where WaitLatch returns without looking - so that no worker
 * outlives the postmaster and keeps its shared memory from a new one.
 */
void WaitOnLatch(long ms);

/*
 * The launcher's tombstone pruning: removes, in short transactions of a few hundred rows, the
 * tombstones older than sequin_sync.tombstone_retention, every tenth of that retention (between
 * 1 s and 1 h) and at once when the retention changes.  installed: whether the extension is
 * installed in the launcher's database.  Returns how long until it is due again, in ms (0:
 * more is left, come back after the launcher's other work).
 */
long PruneTombstonesIfDue(bool installed);

} /* namespace sequin_sync */

#endif
