/*
 * settings.cpp - defines sequin_sync's settings.  Each is documented in the README's settings
 * table; keep the two in step.
 */
#include <climits>

#include "settings.hpp"

extern "C" {
#include "postgres.h"

#include "utils/guc.h"
}

namespace sequin_sync {

int tombstone_retention_s = 7 * 24 * 3600;

void
DefineSettings()
{
	DefineCustomIntVariable("sequin_sync.tombstone_retention",
							"How long a hard-delete tombstone is kept.",
							"A tombstone remembers the version of a hard-deleted record so that a late, "
							"older redelivery cannot bring the row back.  0 keeps tombstones forever.",
							&tombstone_retention_s,
							7 * 24 * 3600,
							0,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							nullptr,
							nullptr,
							nullptr);

	MarkGUCPrefixReserved("sequin_sync");
}

} /* namespace sequin_sync */
