/*
 * extension.cpp - see extension.hpp.
 */
extern "C" {
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
}

#include "pg/extension.hpp"
#include "pg/security.hpp"
#include "pg/spi.hpp"

namespace sequin_sync {

bool
LockExtension()
{
	Oid ext = get_extension_oid("sequin_sync", true);
	if (!OidIsValid(ext))
		return false;
	LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
	/* Dropped, or dropped and created again, while we waited for the lock: not this time. */
	if (get_extension_oid("sequin_sync", true) != ext) {
		UnlockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
		return false;
	}
	return true;
}

Oid
ExtensionOwner()
{
	Oid nsp = get_namespace_oid("sequin_sync", false);
	Oid relid = get_relname_relid("consumers", nsp);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"sequin_sync\" is not installed correctly"),
				 errhint("Run DROP EXTENSION sequin_sync; CREATE EXTENSION sequin_sync;")));
	HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	Oid owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

ConsumerInfo *
LookupConsumer(const char *name, bool missing_ok)
{
	RoleSwitch rs;
	BeginAsRole(&rs, ExtensionOwner(), false);
	Oid argtypes[1] = {TEXTOID};
	Datum values[1] = {CStringGetTextDatum(name)};
	/* protocol through to_jsonb: tables of an older version (before ALTER EXTENSION UPDATE) lack it */
	SpiExec("SELECT owner::pg_catalog.oid, paused, "
			"(pg_catalog.to_jsonb(c) OPERATOR(pg_catalog.->>) 'protocol') IS NOT DISTINCT FROM 'stream' "
			"FROM sequin_sync.consumers c WHERE name = $1",
			1, argtypes, values, nullptr, true, 1);
	EndAsRole(&rs);
	if (SPI_processed == 0) {
		if (missing_ok)
			return nullptr;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("consumer \"%s\" does not exist", name),
				 errhint("Create it with sequin_sync.create_consumer(), or check the name in sequin_sync.consumers.")));
	}
	ConsumerInfo *info = (ConsumerInfo *) palloc0(sizeof(ConsumerInfo));
	bool isnull;
	info->name = pstrdup(name);
	info->owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	info->paused = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	info->stream = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	return info;
}

void
CheckConsumerAccess(const ConsumerInfo *consumer)
{
	if (!has_privs_of_role(GetUserId(), consumer->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for consumer \"%s\"", consumer->name),
				 errdetail("Consumer \"%s\" belongs to role \"%s\".", consumer->name,
						   GetUserNameFromId(consumer->owner, false)),
				 errhint("Only its owner, members of its owner's role and superusers can use or change it.")));
}

} /* namespace sequin_sync */
