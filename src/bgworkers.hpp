/*
 * bgworkers.hpp - the background workers: the launcher (launcher.cpp) and the consumer
 * workers it starts (worker.cpp).
 */
#ifndef SEQUIN_SYNC_BGWORKERS_HPP
#define SEQUIN_SYNC_BGWORKERS_HPP

namespace sequin_sync {

/* Registers the launcher; from _PG_init while shared_preload_libraries is processed. */
void RegisterLauncher();

} /* namespace sequin_sync */

#endif
