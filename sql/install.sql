-- CREATE EXTENSION works only in the database the workers run in (sequin_sync.database; the
-- test configuration, test/regress.conf, names the regression database).
SHOW sequin_sync.database;
CREATE DATABASE regress_sequin_other;
\c regress_sequin_other
-- The error is what is checked: its context line (the install script's DO block) reads
-- differently from PostgreSQL 18 on.
\set SHOW_CONTEXT never
CREATE EXTENSION sequin_sync;
\set SHOW_CONTEXT errors
SELECT count(*) FROM pg_extension WHERE extname = 'sequin_sync';
\c contrib_regression
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
