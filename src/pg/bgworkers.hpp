/*
 * bgworkers.hpp - the background workers: the launcher (launcher.cpp) and the consumer
 * workers it starts (worker.cpp).
 */
#ifndef SEQUIN_SYNC_BGWORKERS_HPP
#define SEQUIN_SYNC_BGWORKERS_HPP

namespace sequin_sync {

/* Registers the launcher; from _PG_init while shared_preload_libraries is processed. */
void RegisterLauncher();

/* Set by SIGTERM in the launcher and the workers; the handler only sets it and the latch. */
extern volatile sig_atomic_t got_sigterm;
void HandleSigterm(SIGNAL_ARGS);

} /* namespace sequin_sync */

#endif
