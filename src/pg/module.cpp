/*
 * module.cpp - the library's entry point: PG_MODULE_MAGIC and _PG_init.
 *
 * The C++/Postgres boundary, for every file of this extension:
 *  - Files that include Postgres headers (src/pg/) are compiled with -fno-exceptions (see the Makefile) and
 *    keep no object with a non-trivial destructor on the stack, so an ereport(ERROR) longjmp never
 *    skips a destructor.  C++ objects they need (the JSON document) live on the heap, owned by a
 *    memory context callback that frees them when the context goes, error or not.
 *  - Files that do not include Postgres headers (src/core/, closed by core/cpp_only.hpp) expose
 *    only noexcept functions: no C++ exception ever reaches a Postgres frame.
 */
extern "C" {
#include "postgres.h"

#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#include "catalog/objectaccess.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"

PG_MODULE_MAGIC;

void _PG_init(void);
}

#include "pg/bgworkers.hpp"
#include "pg/settings.hpp"
#include "pg/shmem.hpp"

using namespace sequin_sync;

namespace {

object_access_hook_type prev_object_access_hook = nullptr;

/* DROP EXTENSION sequin_sync wakes the database's manager at commit, so the workers stop at once. */
void
ObjectAccess(ObjectAccessType access, Oid class_id, Oid object_id, int sub_id, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, class_id, object_id, sub_id, arg);
	if (access == OAT_DROP && class_id == ExtensionRelationId && shared != nullptr &&
		object_id == get_extension_oid("sequin_sync", true))
		WakeOnCommit(nullptr);
}


} /* namespace */

extern "C" void
_PG_init(void)
{
	DefineSettings(process_shared_preload_libraries_in_progress);
	if (!process_shared_preload_libraries_in_progress)
		return;
	InstallShmemHooks();
	InstallDatabaseHooks();
	RegisterLauncher();
	prev_object_access_hook = object_access_hook;
	object_access_hook = ObjectAccess;
}

#if defined(SEQUIN_SYNC_SANITIZE)
/*
 * `make SANITIZE=1` builds only, and not in the install script: planted undefined behaviour, so
 * that test/test_sanitizer_canary.py can prove UndefinedBehaviorSanitizer really watches this library
 * inside the server (a sanitizer run that could not see anything would pass every time).
 * canary(0) is fine; canary(2) shifts an int by 40 bits.
 */
extern "C" {
PG_FUNCTION_INFO_V1(sequin_sync_sanitizer_canary);
}

extern "C" Datum
sequin_sync_sanitizer_canary(PG_FUNCTION_ARGS)
{
	volatile int shift = PG_GETARG_INT32(0) == 2 ? 40 : 1;
	// cppcheck-suppress [shiftTooManyBits, integerOverflow]
	int value = 120 + (1 << shift); // NOLINT: the planted bug
	PG_RETURN_INT32(value);
}
#endif
