/*
 * module.cpp - the library's entry point: PG_MODULE_MAGIC and _PG_init.
 *
 * The C++/Postgres boundary, for every file of this extension:
 *  - Files that include Postgres headers are compiled with -fno-exceptions (see the Makefile) and
 *    keep no object with a non-trivial destructor on the stack, so an ereport(ERROR) longjmp never
 *    skips a destructor.  C++ objects they need (the JSON document) live on the heap, owned by a
 *    memory context callback that frees them when the context goes, error or not.
 *  - Files that do not include Postgres headers (json_doc, next_reply, endpoint, http_client)
 *    expose only noexcept functions: no C++ exception ever reaches a Postgres frame.
 */
#include "settings.hpp"

extern "C" {
#include "postgres.h"

#include "fmgr.h"

PG_MODULE_MAGIC;

void _PG_init(void);
}

extern "C" void
_PG_init(void)
{
	sequin_sync::DefineSettings();
}
