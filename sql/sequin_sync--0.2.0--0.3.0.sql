/*
 * sequin_sync 0.2.0 -> 0.3.0.
 *
 * Every change 0.3.0 makes to the SQL objects goes here as well as into sql/sequin_sync.sql; the
 * upgrade test (sql/upgrade.sql) proves that 0.1.0 plus the upgrade scripts gives exactly the
 * objects of a fresh 0.3.0 install.
 */

\echo Use "ALTER EXTENSION sequin_sync UPDATE TO '0.3.0'" to load this file. \quit

-- The launcher's live state, from shared memory: whether the library was preloaded, and its
-- tombstone pruning; read it through sequin_sync.status and sequin_sync.tombstone_pruning.
CREATE FUNCTION sequin_sync._launcher_status(
	OUT preloaded boolean, OUT launcher_pid integer, OUT retention_s integer, OUT last_prune_at timestamptz,
	OUT last_pruned bigint, OUT next_prune_at timestamptz, OUT last_error text, OUT last_error_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'sequin_sync_launcher_status' LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION sequin_sync._launcher_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sequin_sync._launcher_status() TO sequin_sync_admin;

-- The launcher prunes tombstones automatically; this shows its last run.
CREATE VIEW sequin_sync.tombstone_pruning WITH (security_invoker = true) AS
SELECT pg_catalog.make_interval(secs => l.retention_s) AS retention,
	   l.last_prune_at, l.last_pruned, l.next_prune_at, l.last_error, l.last_error_at
FROM sequin_sync._launcher_status() l
WHERE l.preloaded;

GRANT SELECT ON sequin_sync.tombstone_pruning TO sequin_sync_admin;

-- Sequin Stream (a second consumer protocol): the consumer's protocol, tombstones whose
-- version is a numeric (commit_lsn * 2^32 + commit_idx exceeds bigint), create_consumer and
-- alter_consumer take the protocol, and map_collection's delete_mode defaults by protocol.
ALTER TABLE sequin_sync.consumers
	ADD COLUMN protocol text NOT NULL DEFAULT 'v1' CHECK (protocol IN ('v1', 'stream'));
GRANT SELECT (protocol) ON sequin_sync.consumers TO sequin_sync_admin;
ALTER TABLE sequin_sync.tombstones ALTER COLUMN updated_idx TYPE numeric;

DROP FUNCTION sequin_sync.create_consumer(text, text, text, integer, interval, integer);
CREATE FUNCTION sequin_sync.create_consumer(
	name text,
	endpoint text,
	token text,
	batch_size integer DEFAULT 1000,
	wait_for interval DEFAULT '5 seconds',
	workers integer DEFAULT 1,
	protocol text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'sequin_sync_create_consumer' LANGUAGE C VOLATILE;

DROP FUNCTION sequin_sync.alter_consumer(text, text, text, integer, interval, integer);
CREATE FUNCTION sequin_sync.alter_consumer(
	name text,
	endpoint text DEFAULT NULL,
	token text DEFAULT NULL,
	batch_size integer DEFAULT NULL,
	wait_for interval DEFAULT NULL,
	workers integer DEFAULT NULL,
	protocol text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'sequin_sync_alter_consumer' LANGUAGE C VOLATILE;

CREATE OR REPLACE FUNCTION sequin_sync.map_collection(
	consumer text,
	collection text,
	target regclass,
	delete_mode text DEFAULT NULL,
	columns jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'sequin_sync_map_collection' LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION sequin_sync.create_consumer(text, text, text, integer, interval, integer, text),
	sequin_sync.alter_consumer(text, text, text, integer, interval, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sequin_sync.create_consumer(text, text, text, integer, interval, integer, text),
	sequin_sync.alter_consumer(text, text, text, integer, interval, integer, text) TO sequin_sync_admin;

-- status: without the preload, last_error says that consumers do not run; it shows each consumer's
-- protocol and, for Sequin Stream, how far behind the source it is (a new column of _worker_status).
DROP VIEW sequin_sync.status;
DROP FUNCTION sequin_sync._worker_status();
CREATE FUNCTION sequin_sync._worker_status(
	OUT consumer text, OUT worker integer, OUT pid integer, OUT state text, OUT last_poll_at timestamptz,
	OUT last_applied_at timestamptz, OUT pending bigint, OUT last_error text, OUT last_error_at timestamptz,
	OUT acked_unflushed bigint, OUT source_commit_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'sequin_sync_worker_status' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION sequin_sync._worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sequin_sync._worker_status() TO sequin_sync_admin;

CREATE VIEW sequin_sync.status WITH (security_invoker = true) AS
SELECT c.name AS consumer,
	   CASE WHEN c.paused THEN 'paused'
			WHEN COALESCE(w.running, 0) = 0 THEN COALESCE(NULLIF(w.state, 'starting'), 'stopped')
			ELSE w.state END AS state,
	   COALESCE(w.running, 0)::integer AS workers,
	   w.last_poll_at, w.last_applied_at,
	   COALESCE(s.received, 0) AS received, COALESCE(s.inserted, 0) AS inserted,
	   COALESCE(s.updated, 0) AS updated, COALESCE(s.deleted, 0) AS deleted,
	   COALESCE(s.skipped, 0) AS skipped, COALESCE(s.dead_lettered, 0) AS dead_lettered,
	   (COALESCE(s.acked, 0) + COALESCE(w.acked_unflushed, 0))::bigint AS acked,
	   w.pending,
	   COALESCE(w.last_error, CASE WHEN NOT l.preloaded
			THEN 'sequin_sync is not loaded through shared_preload_libraries: consumers do not run' END) AS last_error,
	   w.last_error_at,
	   c.protocol,
	   w.source_commit_at,
	   pg_catalog.now() - w.source_commit_at AS source_lag
FROM sequin_sync.consumers c
CROSS JOIN sequin_sync._launcher_status() l
LEFT JOIN (
	SELECT ws.consumer,
		   count(ws.pid) AS running,
		   (pg_catalog.array_agg(ws.state ORDER BY CASE ws.state WHEN 'error' THEN 0 WHEN 'backoff' THEN 1
						WHEN 'running' THEN 2 WHEN 'idle' THEN 3 ELSE 4 END))[1] AS state,
		   max(ws.last_poll_at) AS last_poll_at,
		   max(ws.last_applied_at) AS last_applied_at,
		   (pg_catalog.array_agg(ws.pending ORDER BY ws.last_poll_at DESC NULLS LAST))[1] AS pending,
		   (pg_catalog.array_agg(ws.last_error ORDER BY ws.last_error_at DESC NULLS LAST))[1] AS last_error,
		   max(ws.last_error_at) AS last_error_at,
		   sum(ws.acked_unflushed) AS acked_unflushed,
		   max(ws.source_commit_at) AS source_commit_at
	FROM sequin_sync._worker_status() ws
	GROUP BY ws.consumer
) w ON w.consumer = c.name
LEFT JOIN (
	SELECT st.consumer, sum(st.received)::bigint AS received, sum(st.inserted)::bigint AS inserted,
		   sum(st.updated)::bigint AS updated, sum(st.deleted)::bigint AS deleted,
		   sum(st.skipped)::bigint AS skipped, sum(st.dead_lettered)::bigint AS dead_lettered,
		   sum(st.acked)::bigint AS acked
	FROM sequin_sync.consumer_stats st
	GROUP BY st.consumer
) s ON s.consumer = c.name;

GRANT SELECT ON sequin_sync.status TO sequin_sync_admin;

-- Any change to the consumers wakes the database's manager when it commits: the SQL API wakes it
-- anyway; this is for the rows pg_restore loads after the extension was created.
CREATE FUNCTION sequin_sync._wake_on_change()
RETURNS trigger
AS 'MODULE_PATHNAME', 'sequin_sync_wake_trigger' LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION sequin_sync._wake_on_change() FROM PUBLIC;

CREATE TRIGGER wake_manager AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sequin_sync.consumers
	FOR EACH STATEMENT EXECUTE FUNCTION sequin_sync._wake_on_change();

/*
 * Every database's sequin_sync processes, for superusers only: the launcher, the manager of each
 * database with the extension, and every consumer worker (state waiting: it has no process
 * because sequin_sync.max_workers are running).
 */
CREATE FUNCTION sequin_sync._all_workers(
	OUT database text, OUT kind text, OUT consumer text, OUT worker integer, OUT pid integer, OUT state text,
	OUT last_poll_at timestamptz, OUT last_applied_at timestamptz, OUT last_error text, OUT last_error_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'sequin_sync_all_workers' LANGUAGE C VOLATILE;

CREATE VIEW sequin_sync.all_workers WITH (security_invoker = true) AS
SELECT w.database, w.kind, w.consumer, w.worker, w.pid, w.state, w.last_poll_at, w.last_applied_at,
	   w.last_error, w.last_error_at
FROM sequin_sync._all_workers() w;

REVOKE ALL ON FUNCTION sequin_sync._all_workers() FROM PUBLIC;
