/*
 * settings.hpp - sequin_sync's postgresql.conf settings (GUCs).  Each is documented in the
 * README's settings table; keep the two in step.
 */
#ifndef SEQUIN_SYNC_SETTINGS_HPP
#define SEQUIN_SYNC_SETTINGS_HPP

namespace sequin_sync {

/* Seconds a hard-delete tombstone is kept; 0 keeps them forever. */
extern int tombstone_retention_s;
/* The one database whose consumers run; empty: every database (NULL unless preloaded). */
extern char *database_name;
/* The most consumer workers at once, in all databases together (only when preloaded). */
extern int max_workers;
constexpr int kMaxWorkersLimit = 128;	/* = kMaxSlots */
/* HTTP: connect timeout and the margin over wait_for a request may take (milliseconds). */
extern int connect_timeout_ms;
extern int poll_margin_ms;
/* Largest /next reply accepted, in kilobytes. */
extern int max_response_size_kb;
/* Longest wait between retries after failures, in milliseconds. */
extern int backoff_max_ms;
/* CA bundle for TLS verification; empty = the system's. */
extern char *ca_file;
/* Hosts endpoints may name (comma-separated); empty = any. */
extern char *allowed_hosts;
/* lock_timeout of the workers' apply transactions, in milliseconds (0 = none). */
extern int apply_lock_timeout_ms;

/* From _PG_init; preloaded: shared_preload_libraries is being processed. */
void DefineSettings(bool preloaded);

} /* namespace sequin_sync */

#endif
