/*
 * sequin_sync install script (copied to sequin_sync--<version>.sql at build time).
 *
 * The configuration lives in tables of schema sequin_sync.  Nobody but the extension owner may
 * write them directly: the SQL functions below are the only write path and do the checks.
 * Roles granted sequin_sync_admin may call them, and see (row-level security) only their own
 * consumers, mappings and dead letters.  No role but a superuser can read a consumer's token.
 */

\echo Use "CREATE EXTENSION sequin_sync" to load this file. \quit

-- Consumers run in every database that has the extension, or only in the one named by
-- sequin_sync.database when that is set: then refuse any other, and say why.  sequin_sync.database
-- is a real setting (in pg_settings) only when the library was preloaded; a line in
-- postgresql.conf without the preload is a mere placeholder, which pg_settings does not list.
DO $$
DECLARE
	worker_db text := (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'sequin_sync.database');
BEGIN
	IF worker_db IS NULL THEN
		RAISE WARNING 'sequin_sync is not loaded through shared_preload_libraries'
			USING DETAIL = 'Consumers will not run until it is; sequin_sync.apply() works regardless.',
				  HINT = 'Add sequin_sync to shared_preload_libraries in postgresql.conf and restart the server.';
	ELSIF worker_db OPERATOR(pg_catalog.<>) '' AND pg_catalog.current_database() OPERATOR(pg_catalog.<>) worker_db THEN
		RAISE EXCEPTION 'sequin_sync must be created in database "%"', worker_db
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('sequin_sync.database restricts the workers to "%s"; this database is "%s".',
											 worker_db, pg_catalog.current_database()),
				  HINT = pg_catalog.format('Create the extension in "%s", or set sequin_sync.database = '''' (every database) in postgresql.conf and reload.',
										   worker_db);
	END IF;
END
$$;

CREATE SCHEMA sequin_sync;

DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'sequin_sync_admin') THEN
		CREATE ROLE sequin_sync_admin NOLOGIN;
	END IF;
END
$$;

CREATE TABLE sequin_sync.consumers (
	name        text        PRIMARY KEY,
	endpoint    text        NOT NULL,
	token       text        NOT NULL,
	batch_size  integer     NOT NULL,
	wait_for    interval    NOT NULL,
	workers     integer     NOT NULL,
	paused      boolean     NOT NULL DEFAULT false,
	owner       regrole     NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now(),
	updated_at  timestamptz NOT NULL DEFAULT now(),
	-- 'v1': Sequin's record consumers (/v1/http-consumers); 'stream': Sequin Stream
	protocol    text        NOT NULL DEFAULT 'v1' CHECK (protocol IN ('v1', 'stream'))
);

CREATE TABLE sequin_sync.mappings (
	consumer    text        NOT NULL REFERENCES sequin_sync.consumers (name) ON DELETE CASCADE,
	collection  text        NOT NULL,
	target      regclass    NOT NULL,
	delete_mode text        NOT NULL CHECK (delete_mode IN ('soft', 'hard')),
	columns     jsonb       NOT NULL DEFAULT '{}',
	owner       regrole     NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, collection)
);

/*
 * Records that could not be applied, with the reason.  record is NULL only when the record
 * cannot be stored as jsonb at all (a \u0000 in a string, nesting too deep); record_text then
 * holds its JSON text.  retry_dead_letters() applies them again.
 */
CREATE TABLE sequin_sync.dead_letters (
	id              bigserial   PRIMARY KEY,
	consumer        text        NOT NULL REFERENCES sequin_sync.consumers (name) ON DELETE CASCADE,
	collection      text,
	record          jsonb,
	record_text     text,
	record_hash     text        NOT NULL,
	error           text        NOT NULL,
	sqlstate        text        NOT NULL,
	attempts        integer     NOT NULL DEFAULT 1,
	first_failed_at timestamptz NOT NULL DEFAULT now(),
	failed_at       timestamptz NOT NULL DEFAULT now(),
	CHECK (record IS NOT NULL OR record_text IS NOT NULL),
	-- the same record parked again (a redelivery) updates its row instead of adding one
	UNIQUE (consumer, record_hash)
);
CREATE INDEX ON sequin_sync.dead_letters (consumer, id);

/*
 * Hard deletes remove the row, and with it its version: the tombstone keeps (table, key,
 * version) so that a late redelivery of an older version cannot bring the row back.  id is the
 * key as text (a composite key as a row literal); updated_idx the version (a record's
 * updated_idx, or a Sequin Stream change's commit_lsn * 2^32 + commit_idx).
 */
CREATE TABLE sequin_sync.tombstones (
	target      regclass    NOT NULL,
	id          text        NOT NULL,
	updated_idx numeric     NOT NULL,
	deleted_at  timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (target, id)
);
CREATE INDEX ON sequin_sync.tombstones (deleted_at);

/*
 * Durable counters, one row per worker, added to in the same transaction as each batch: they
 * count exactly what was committed, and survive restarts.
 */
CREATE TABLE sequin_sync.consumer_stats (
	consumer      text   NOT NULL REFERENCES sequin_sync.consumers (name) ON DELETE CASCADE,
	worker        integer NOT NULL,
	received      bigint NOT NULL DEFAULT 0,
	inserted      bigint NOT NULL DEFAULT 0,
	updated       bigint NOT NULL DEFAULT 0,
	deleted       bigint NOT NULL DEFAULT 0,
	skipped       bigint NOT NULL DEFAULT 0,
	dead_lettered bigint NOT NULL DEFAULT 0,
	acked         bigint NOT NULL DEFAULT 0,
	batches       bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (consumer, worker)
);

-- Any change to the consumers wakes the database's manager when it commits: the SQL API wakes it
-- anyway; this is for the rows pg_restore loads after the extension was created.
CREATE FUNCTION sequin_sync._wake_on_change()
RETURNS trigger
AS 'MODULE_PATHNAME', 'sequin_sync_wake_trigger' LANGUAGE C VOLATILE;

CREATE TRIGGER wake_manager AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sequin_sync.consumers
	FOR EACH STATEMENT EXECUTE FUNCTION sequin_sync._wake_on_change();

-- pg_dump keeps the configuration, the parked records and the tombstones.
SELECT pg_catalog.pg_extension_config_dump('sequin_sync.consumers', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_sync.mappings', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_sync.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_sync.dead_letters_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_sync.tombstones', '');

-- Privileges: nothing for PUBLIC; sequin_sync_admin reads its own rows, never a token.
REVOKE ALL ON ALL TABLES IN SCHEMA sequin_sync FROM PUBLIC;
REVOKE ALL ON SCHEMA sequin_sync FROM PUBLIC;
GRANT USAGE ON SCHEMA sequin_sync TO sequin_sync_admin;

GRANT SELECT (name, endpoint, batch_size, wait_for, workers, paused, owner, created_at, updated_at, protocol)
	ON sequin_sync.consumers TO sequin_sync_admin;
GRANT SELECT ON sequin_sync.mappings TO sequin_sync_admin;
GRANT SELECT, DELETE ON sequin_sync.dead_letters TO sequin_sync_admin;
GRANT SELECT ON sequin_sync.consumer_stats TO sequin_sync_admin;

ALTER TABLE sequin_sync.consumers ENABLE ROW LEVEL SECURITY;
ALTER TABLE sequin_sync.mappings ENABLE ROW LEVEL SECURITY;
ALTER TABLE sequin_sync.dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE sequin_sync.consumer_stats ENABLE ROW LEVEL SECURITY;

CREATE POLICY consumers_owner ON sequin_sync.consumers
	USING (pg_catalog.pg_has_role(owner, 'MEMBER'));
CREATE POLICY mappings_owner ON sequin_sync.mappings
	USING (pg_catalog.pg_has_role(owner, 'MEMBER'));
CREATE POLICY dead_letters_owner ON sequin_sync.dead_letters
	USING (EXISTS (SELECT FROM sequin_sync.consumers c
				   WHERE c.name = dead_letters.consumer AND pg_catalog.pg_has_role(c.owner, 'MEMBER')));
CREATE POLICY consumer_stats_owner ON sequin_sync.consumer_stats
	USING (EXISTS (SELECT FROM sequin_sync.consumers c
				   WHERE c.name = consumer_stats.consumer AND pg_catalog.pg_has_role(c.owner, 'MEMBER')));

-- The SQL API.  All are SECURITY INVOKER C functions: they check the caller's rights, then
-- write the configuration as the extension owner.
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

CREATE FUNCTION sequin_sync.drop_consumer(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'sequin_sync_drop_consumer' LANGUAGE C VOLATILE;

CREATE FUNCTION sequin_sync.pause(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'sequin_sync_pause' LANGUAGE C VOLATILE;

CREATE FUNCTION sequin_sync.resume(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'sequin_sync_resume' LANGUAGE C VOLATILE;

CREATE FUNCTION sequin_sync.map_collection(
	consumer text,
	collection text,
	target regclass,
	delete_mode text DEFAULT NULL,
	columns jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'sequin_sync_map_collection' LANGUAGE C VOLATILE;

CREATE FUNCTION sequin_sync.unmap_collection(consumer text, collection text)
RETURNS void
AS 'MODULE_PATHNAME', 'sequin_sync_unmap_collection' LANGUAGE C VOLATILE;

CREATE FUNCTION sequin_sync.apply(consumer text, records jsonb)
RETURNS TABLE (inserted bigint, updated bigint, deleted bigint, skipped bigint, dead_lettered bigint)
AS 'MODULE_PATHNAME', 'sequin_sync_apply' LANGUAGE C VOLATILE;

CREATE FUNCTION sequin_sync.retry_dead_letters(consumer text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'sequin_sync_retry_dead_letters' LANGUAGE C VOLATILE;

CREATE FUNCTION sequin_sync.prune_tombstones()
RETURNS bigint
AS 'MODULE_PATHNAME', 'sequin_sync_prune_tombstones' LANGUAGE C VOLATILE;

-- The workers' live state, from shared memory; read it through sequin_sync.status.
CREATE FUNCTION sequin_sync._worker_status(
	OUT consumer text, OUT worker integer, OUT pid integer, OUT state text, OUT last_poll_at timestamptz,
	OUT last_applied_at timestamptz, OUT pending bigint, OUT last_error text, OUT last_error_at timestamptz,
	OUT acked_unflushed bigint, OUT source_commit_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'sequin_sync_worker_status' LANGUAGE C VOLATILE;

-- The launcher's live state, from shared memory: whether the library was preloaded, and its
-- tombstone pruning; read it through sequin_sync.status and sequin_sync.tombstone_pruning.
CREATE FUNCTION sequin_sync._launcher_status(
	OUT preloaded boolean, OUT launcher_pid integer, OUT retention_s integer, OUT last_prune_at timestamptz,
	OUT last_pruned bigint, OUT next_prune_at timestamptz, OUT last_error text, OUT last_error_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'sequin_sync_launcher_status' LANGUAGE C VOLATILE;

-- Wakes the launcher when the transaction commits (used below, so a new installation starts at once).
CREATE FUNCTION sequin_sync._wake_workers()
RETURNS void
AS 'MODULE_PATHNAME', 'sequin_sync_wake_workers' LANGUAGE C VOLATILE;

/*
 * The one view to look at: one row per consumer the caller may see.  state is the worst of its
 * workers' (error, backoff, running, idle), or paused, or stopped when no worker runs; without
 * the preload, last_error says that consumers do not run.  For a Sequin Stream consumer,
 * source_commit_at is the newest source commit applied (since the workers started) and
 * source_lag how long ago it was; pending is NULL (Sequin Stream does not count).
 */
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

/*
 * The launcher's automatic pruning of hard-delete tombstones: the retention it prunes by (0:
 * tombstones are kept forever), when its last run ended and how many it removed, when the next
 * is due, and its last error.  Empty without the preload.
 */
CREATE VIEW sequin_sync.tombstone_pruning WITH (security_invoker = true) AS
SELECT pg_catalog.make_interval(secs => l.retention_s) AS retention,
	   l.last_prune_at, l.last_pruned, l.next_prune_at, l.last_error, l.last_error_at
FROM sequin_sync._launcher_status() l
WHERE l.preloaded;

GRANT SELECT ON sequin_sync.tombstone_pruning TO sequin_sync_admin;

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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA sequin_sync FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	sequin_sync.create_consumer(text, text, text, integer, interval, integer, text),
	sequin_sync.alter_consumer(text, text, text, integer, interval, integer, text),
	sequin_sync.drop_consumer(text),
	sequin_sync.pause(text),
	sequin_sync.resume(text),
	sequin_sync.map_collection(text, text, regclass, text, jsonb),
	sequin_sync.unmap_collection(text, text),
	sequin_sync.apply(text, jsonb),
	sequin_sync.retry_dead_letters(text),
	sequin_sync._worker_status(),
	sequin_sync._launcher_status()
TO sequin_sync_admin;

SELECT sequin_sync._wake_workers();
