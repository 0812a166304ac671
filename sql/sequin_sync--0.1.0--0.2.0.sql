/*
 * sequin_sync 0.1.0 -> 0.2.0.
 *
 * 0.2.0 changes the library only (the worker overlaps HTTP with applying, acks on a second
 * connection; record checks moved to a Postgres-free module with its own fuzzer).  The SQL
 * objects are unchanged.  The upgrade test (sql/upgrade.sql) proves that 0.1.0 plus this script
 * gives exactly the objects of a fresh 0.2.0 install.
 */

\echo Use "ALTER EXTENSION sequin_sync UPDATE TO '0.2.0'" to load this file. \quit
