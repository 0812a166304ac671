/*
 * security.hpp - acting as another role (as a definer would) and a safe search_path, for
 * work done on a user's behalf.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_SECURITY_HPP
#define SEQUIN_SYNC_SECURITY_HPP

namespace sequin_sync {

/* Acting as another role, as a definer would; restored by End or by (sub)transaction abort. */
struct RoleSwitch {
	Oid			saved_user;
	int			saved_context;
};
void BeginAsRole(RoleSwitch *rs, Oid role, bool restricted);
void EndAsRole(const RoleSwitch *rs);

/* search_path = pg_catalog, pg_temp until EndSafeSearchPath (or transaction end). */
int BeginSafeSearchPath();
void EndSafeSearchPath(int nest_level);

} /* namespace sequin_sync */

#endif
