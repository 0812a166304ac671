/*
 * cpp_only.hpp - the last include of every file in src/core/.
 *
 * src/core/ is the C++ side of the boundary: code there may throw (and catches what it throws
 * before returning), so it must never include a Postgres header, whose ereport would longjmp
 * over its destructors.  Including this file last fails the build if any header before it
 * brought postgres.h in.  Files in src/pg/ include Postgres and never throw (-fno-exceptions).
 */
#ifdef POSTGRES_H
#error "a src/core/ file includes a Postgres header: move that code to src/pg/"
#endif
