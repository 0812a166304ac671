/*
 * settings.hpp - sequin_sync's postgresql.conf settings (GUCs).
 */
#ifndef SEQUIN_SYNC_SETTINGS_HPP
#define SEQUIN_SYNC_SETTINGS_HPP

namespace sequin_sync {

/* Seconds a hard-delete tombstone is kept; 0 keeps them forever. */
extern int tombstone_retention_s;

void DefineSettings();

} /* namespace sequin_sync */

#endif
