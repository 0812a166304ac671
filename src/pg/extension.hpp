/*
 * extension.hpp - sequin_sync's own objects as C++ sees them: whether the extension is
 * installed (and holding it installed), the role that owns its tables, and consumers: looking
 * one up and checking who may use it.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_EXTENSION_HPP
#define SEQUIN_SYNC_EXTENSION_HPP

namespace sequin_sync {

/* A consumer's configuration row (the token is not loaded here). */
struct ConsumerInfo {
	char	   *name;
	Oid			owner;
	bool		paused;
	bool		stream;			/* protocol 'stream' (Sequin Stream), else 'v1' */
};

/*
 * Whether sequin_sync is installed in this database; if so, it stays installed until the
 * transaction ends (DROP EXTENSION waits for the lock this takes).  Background workers check it
 * before they read the extension's tables, which a concurrent DROP EXTENSION would otherwise
 * pull away between the check and the query.
 */
bool LockExtension();

/* The role that owns sequin_sync's tables: configuration is written as this role. */
Oid ExtensionOwner();

/* Looks up a consumer (as the extension owner); raises "does not exist" unless missing_ok. */
ConsumerInfo *LookupConsumer(const char *name, bool missing_ok);
/* Raises unless the current user is the consumer's owner (or a member) or a superuser. */
void CheckConsumerAccess(const ConsumerInfo *consumer);

} /* namespace sequin_sync */

#endif
