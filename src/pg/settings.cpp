/*
 * settings.cpp - defines sequin_sync's settings.  Each is documented in the README's settings
 * table; keep the two in step.
 */
#include <climits>

#include "pg/settings.hpp"

extern "C" {
#include "postgres.h"

#include "utils/guc.h"
}

namespace sequin_sync {

int tombstone_retention_s = 7 * 24 * 3600;
char *database_name = nullptr;
int max_workers = 16;
int connect_timeout_ms = 10000;
int poll_margin_ms = 15000;
int max_response_size_kb = 64 * 1024;
int backoff_max_ms = 60000;
char *ca_file = nullptr;
char *allowed_hosts = nullptr;
int apply_lock_timeout_ms = 10000;

void
DefineSettings(bool preloaded)
{
	DefineCustomIntVariable("sequin_sync.tombstone_retention",
							"How long a hard-delete tombstone is kept.",
							"A tombstone remembers the version of a hard-deleted record so that a late, "
							"older redelivery cannot bring the row back.  The launcher prunes older ones "
							"automatically; 0 keeps tombstones forever.",
							&tombstone_retention_s, 7 * 24 * 3600, 0, INT_MAX, PGC_SUSET, GUC_UNIT_S,
							nullptr, nullptr, nullptr);

	DefineCustomIntVariable("sequin_sync.connect_timeout",
							"How long a worker waits to connect to a consumer.",
							nullptr, &connect_timeout_ms, 10000, 100, 600000, PGC_SIGHUP, GUC_UNIT_MS,
							nullptr, nullptr, nullptr);

	DefineCustomIntVariable("sequin_sync.poll_margin",
							"How much longer than wait_for a request may take before it is abandoned.",
							"Also the total time allowed for an ack or nack.",
							&poll_margin_ms, 15000, 100, 600000, PGC_SIGHUP, GUC_UNIT_MS,
							nullptr, nullptr, nullptr);

	DefineCustomIntVariable("sequin_sync.max_response_size",
							"The largest /next reply a worker accepts.",
							"A larger reply is refused while it streams in, never read whole.",
							&max_response_size_kb, 64 * 1024, 64, 1024 * 1024, PGC_SIGHUP, GUC_UNIT_KB,
							nullptr, nullptr, nullptr);

	DefineCustomIntVariable("sequin_sync.backoff_max",
							"The longest wait between retries after consumer or apply failures.",
							"Retries back off exponentially with jitter from 100 ms up to this.",
							&backoff_max_ms, 60000, 100, 3600000, PGC_SIGHUP, GUC_UNIT_MS,
							nullptr, nullptr, nullptr);

	DefineCustomStringVariable("sequin_sync.ca_file",
							   "CA bundle used to verify consumers' TLS certificates.",
							   "Empty uses the system's. Certificates are always verified.",
							   &ca_file, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);

	DefineCustomStringVariable("sequin_sync.allowed_hosts",
							   "Hosts that consumer endpoints may name, comma-separated; empty allows any.",
							   "Entries are host names or addresses; *.example.com allows subdomains. Checked by "
							   "create_consumer and alter_consumer, and again before every connection.",
							   &allowed_hosts, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);

	DefineCustomIntVariable("sequin_sync.lock_timeout",
							"How long a worker's batch waits for a lock before it is rolled back and retried.",
							"A batch that cannot lock its target table in time is nacked and retried after a backoff. 0 waits forever.",
							&apply_lock_timeout_ms, 10000, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS,
							nullptr, nullptr, nullptr);

	/*
	 * A postmaster-level setting can only be defined while shared_preload_libraries is processed:
	 * defined later (CREATE EXTENSION without the preload) it is a FATAL error for the session.
	 * Without the preload there are no workers to place anyway, and the install script tells a
	 * preloaded server by sequin_sync.database being defined: the workers' settings are defined
	 * only then.  As in worker_spi, the prefix is reserved only then too, so a
	 * sequin_sync.database line in postgresql.conf stays a quiet placeholder instead of being
	 * removed with a warning.
	 */
	if (!preloaded)
		return;
	DefineCustomStringVariable("sequin_sync.database",
							   "The one database whose consumers run; empty: every database with the extension.",
							   "When set, the extension can be created only in this database.",
							   &database_name, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("sequin_sync.max_workers",
							"The most consumer workers that run at once, in all databases together.",
							"A consumer worker beyond it waits for a free one; sequin_sync.status says so.  The "
							"launcher and one manager per database with the extension come on top.",
							&max_workers, 16, 0, kMaxWorkersLimit, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	MarkGUCPrefixReserved("sequin_sync");
}

} /* namespace sequin_sync */
