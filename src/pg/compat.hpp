/*
 * compat.hpp - the one place where Postgres major versions differ for sequin_sync.
 *
 * Include it after postgres.h (inside the extern "C" block of a Postgres-side file).
 * Supported: PostgreSQL 15, 16 and 17.
 */
#ifndef SEQUIN_SYNC_COMPAT_HPP
#define SEQUIN_SYNC_COMPAT_HPP

#if PG_VERSION_NUM < 150000
#error "sequin_sync needs PostgreSQL 15 or later"
#endif

/* A set-returning function that materializes its result (renamed in 16). */
#if PG_VERSION_NUM >= 160000
#define SS_INIT_MATERIALIZED_SRF(fcinfo) InitMaterializedSRF((fcinfo), 0)
#else
#define SS_INIT_MATERIALIZED_SRF(fcinfo) SetSingleFuncCall((fcinfo), 0)
#endif

#endif
