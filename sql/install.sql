-- CREATE EXTENSION works in any database: sequin_sync.database is empty (the default, which the
-- test configuration, test/regress.conf, keeps), so consumers run wherever it is created.
SHOW sequin_sync.database;
CREATE DATABASE regress_sequin_other;
\c regress_sequin_other
CREATE EXTENSION sequin_sync;
SELECT count(*) FROM pg_extension WHERE extname = 'sequin_sync';
\c contrib_regression
-- its manager leaves for DROP DATABASE, which does not wait for it
DROP DATABASE regress_sequin_other;

-- installing and dropping leaves nothing behind but the shared admin role
CREATE EXTENSION sequin_sync;
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'sequin_sync_admin';
SELECT count(*) > 0 AS has_functions FROM pg_proc WHERE pronamespace = 'sequin_sync'::regnamespace;
DROP EXTENSION sequin_sync;
SELECT count(*) FROM pg_namespace WHERE nspname = 'sequin_sync';
-- and it can be created again
CREATE EXTENSION sequin_sync;
DROP EXTENSION sequin_sync;
