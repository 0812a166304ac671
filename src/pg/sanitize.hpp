/*
 * sanitize.hpp - what an AddressSanitizer build (make SANITIZE=1) needs at the Postgres boundary.
 *
 * ASan poisons the stack around instrumented frames and unpoisons it when they return.  An
 * ereport(ERROR) leaves through siglongjmp, which ASan only notices when its runtime intercepts
 * the call; in a server it is not preloaded into (test/run_tests.sh says why), Postgres' own
 * siglongjmp is not intercepted.  The frames the jump skipped then stay poisoned, and the next
 * code to use that stack would be reported for it.  So wherever an error lands - our PG_CATCH
 * blocks, and the server's error recovery, which calls emit_log_hook - the dead stack below is
 * unpoisoned.  In a normal build everything here compiles to nothing.
 *
 * Postgres-side header: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_SANITIZE_HPP
#define SEQUIN_SYNC_SANITIZE_HPP

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sys/resource.h>

#include <cstdint>

namespace sequin_sync {

/* Unpoisons the stack below the caller's frame: dead frames left by a longjmp. */
__attribute__((noinline)) inline void
UnpoisonDeadStack()
{
	size_t size = 8 * 1024 * 1024;
	struct rlimit rl;
	if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		size = (size_t) rl.rlim_cur;
	uintptr_t top = reinterpret_cast<uintptr_t>(__builtin_frame_address(0)) & ~(uintptr_t) 7;
	__asan_unpoison_memory_region(reinterpret_cast<void *>(top - size), size);
}

} /* namespace sequin_sync */

#define SS_AFTER_LONGJMP() ::sequin_sync::UnpoisonDeadStack()
#else
#define SS_AFTER_LONGJMP() ((void) 0)
#endif

#endif
