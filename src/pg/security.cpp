/*
 * security.cpp - see security.hpp.
 */
extern "C" {
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"
}

#include "pg/security.hpp"

namespace sequin_sync {

void
BeginAsRole(RoleSwitch *rs, Oid role, bool restricted)
{
	GetUserIdAndSecContext(&rs->saved_user, &rs->saved_context);
	int context = rs->saved_context | SECURITY_LOCAL_USERID_CHANGE;
	if (restricted)
		context |= SECURITY_RESTRICTED_OPERATION;
	SetUserIdAndSecContext(role, context);
}

void
EndAsRole(const RoleSwitch *rs)
{
	SetUserIdAndSecContext(rs->saved_user, rs->saved_context);
}

int
BeginSafeSearchPath()
{
	int nest_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest_level;
}

void
EndSafeSearchPath(int nest_level)
{
	AtEOXact_GUC(true, nest_level);
}

} /* namespace sequin_sync */
