/*
 * compat.hpp - the one place where Postgres major versions differ for sequin_sync.
 *
 * Include it after postgres.h (inside the extern "C" block of a Postgres-side file).
 * Supported and tested: PostgreSQL 15, 16, 17 and 18 (.ci/run builds 16-18 from source and runs
 * `make test PG_CONFIG=...` on each; README, Installation).  Each difference below names the
 * version that made it and why it matters here.
 *
 * Not a macro here but worth knowing: ERRCODE_SNAPSHOT_TOO_OLD is gone since 17 (with
 * old_snapshot_threshold), so no code of ours names it.
 */
#ifndef SEQUIN_SYNC_COMPAT_HPP
#define SEQUIN_SYNC_COMPAT_HPP

#if PG_VERSION_NUM < 150000
#error "sequin_sync needs PostgreSQL 15 or later"
#endif

/* A set-returning function that materializes its result: SetSingleFuncCall was renamed
 * InitMaterializedSRF in 16. */
#if PG_VERSION_NUM >= 160000
#define SS_INIT_MATERIALIZED_SRF(fcinfo) InitMaterializedSRF((fcinfo), 0)
#else
#define SS_INIT_MATERIALIZED_SRF(fcinfo) SetSingleFuncCall((fcinfo), 0)
#endif

#endif
