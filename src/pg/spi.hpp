/*
 * spi.hpp - SPI calls that keep the caller's memory context and raise on failure, and the
 * per-backend cache of kept plans that every batch's statements go through.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_SPI_HPP
#define SEQUIN_SYNC_SPI_HPP

namespace sequin_sync {

/* SPI calls that restore CurrentMemoryContext (SPI leaves its own procedure context current). */
void SpiConnect();
void SpiFinish();
/* Executes a query with parameters ('n' in nulls = NULL); raises on any SPI failure. */
int SpiExec(const char *sql, int nargs, const Oid *argtypes, const Datum *values, const char *nulls,
			bool read_only, long tcount);
SPIPlanPtr SpiPrepare(const char *sql, int nargs, const Oid *argtypes);
int SpiExecPlan(SPIPlanPtr plan, const Datum *values, const char *nulls, bool read_only, long tcount);

/*
 * Like SpiExec, with the plan prepared once per backend and kept (SPI_keepplan), keyed by the
 * query text, the argument types and the current user.  Postgres revalidates kept plans when
 * a table they use changes.  For the statements of every batch: no batch re-plans.
 */
int SpiExecCached(const char *sql, int nargs, const Oid *argtypes, const Datum *values, const char *nulls,
				  bool read_only, long tcount);

} /* namespace sequin_sync */

#endif
