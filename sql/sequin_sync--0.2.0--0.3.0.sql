/*
 * sequin_sync 0.2.0 -> 0.3.0.
 *
 * Every change 0.3.0 makes to the SQL objects goes here as well as into sql/sequin_sync.sql; the
 * upgrade test (sql/upgrade.sql) proves that 0.1.0 plus the upgrade scripts gives exactly the
 * objects of a fresh 0.3.0 install.
 */

\echo Use "ALTER EXTENSION sequin_sync UPDATE TO '0.3.0'" to load this file. \quit
