-- Citus tables as targets, checked without Citus.  When Citus' catalog pg_catalog.pg_dist_partition
-- exists (it is looked up by name at run time: sequin_sync neither links to Citus nor needs it),
-- map_collection and every batch check how the target is distributed.  Citus is not packaged for
-- Debian, so a stand-in catalog with the columns of Citus 13.2's is made here; the engine on a
-- real three-node cluster was tried by hand (README, Citus).
CREATE EXTENSION sequin_sync;
SELECT sequin_sync.create_consumer('c', 'http://127.0.0.1:9/v1/http-consumers/c', 't');

-- without the catalog: an ordinary table, an ordinary error
CREATE TABLE "Org Dist" (org text, id text, updated_idx bigint, deleted boolean, PRIMARY KEY (org, id));
SELECT sequin_sync.map_collection('c', 'org', '"Org Dist"');

SET allow_system_table_mods = on;
CREATE TABLE pg_catalog.pg_dist_partition (logicalrelid regclass NOT NULL, partmethod "char" NOT NULL,
	partkey text, colocationid integer NOT NULL DEFAULT 0, repmodel "char" NOT NULL DEFAULT 's',
	autoconverted boolean DEFAULT false);
CREATE UNIQUE INDEX pg_dist_partition_logical_relid_index ON pg_catalog.pg_dist_partition (logicalrelid);
RESET allow_system_table_mods;

-- Citus keeps the distribution column as a Var node's text.  A stored generated column's
-- expression (pg_attrdef.adbin) is such a Var, in this server's own format: made on a scratch
-- table whose column number n is the one wanted.
CREATE FUNCTION pg_temp.partkey(tbl regclass, col name) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	n int;
	key text;
BEGIN
	SELECT attnum INTO n FROM pg_attribute WHERE attrelid = tbl AND attname = col;
	EXECUTE format('CREATE TEMP TABLE partkey_src (%s, g int GENERATED ALWAYS AS (c%s) STORED)',
		(SELECT string_agg('c' || i || ' int', ', ') FROM generate_series(1, n) i), n);
	SELECT adbin INTO key FROM pg_attrdef WHERE adrelid = 'partkey_src'::regclass;
	DROP TABLE partkey_src;
	RETURN key;
END $$;

-- hash-distributed by the key, reference, single-shard and Citus local tables: mapped and applied
CREATE TABLE by_id (note text, id text PRIMARY KEY, updated_idx bigint, deleted boolean);
CREATE TABLE ref (id text PRIMARY KEY, updated_idx bigint, deleted boolean, note text);
CREATE TABLE single (id text PRIMARY KEY, updated_idx bigint, deleted boolean, note text);
CREATE TABLE citus_local (id text PRIMARY KEY, updated_idx bigint, deleted boolean, note text);
INSERT INTO pg_catalog.pg_dist_partition (logicalrelid, partmethod, partkey, colocationid, repmodel) VALUES
	('by_id', 'h', pg_temp.partkey('by_id', 'id'), 1, 's'),
	('ref', 'n', NULL, 2, 't'),
	('single', 'n', NULL, 3, 's'),
	('citus_local', 'n', NULL, 0, 's');
SELECT sequin_sync.map_collection('c', 'by_id', 'by_id');
SELECT sequin_sync.map_collection('c', 'ref', 'ref', delete_mode => 'hard');
SELECT sequin_sync.map_collection('c', 'single', 'single');
SELECT sequin_sync.map_collection('c', 'citus_local', 'citus_local');
SELECT * FROM sequin_sync.apply('c', '[
	{"id": "a", "collection_id": "by_id", "updated_idx": 1, "data": {"note": "by id"}},
	{"id": "a", "collection_id": "ref", "updated_idx": 1, "data": {"note": "ref"}},
	{"id": "a", "collection_id": "single", "updated_idx": 1, "data": {"note": "single"}},
	{"id": "a", "collection_id": "citus_local", "updated_idx": 1, "data": {"note": "local"}}]');
SELECT 'by_id' AS t, * FROM by_id UNION ALL SELECT 'ref', note, id, updated_idx, deleted FROM ref
	UNION ALL SELECT 'single', note, id, updated_idx, deleted FROM single
	UNION ALL SELECT 'citus_local', note, id, updated_idx, deleted FROM citus_local ORDER BY 1;

-- hash-distributed by another column: refused before the key's missing unique index is
CREATE TABLE "Org Dist 2" (org text, id text, updated_idx bigint, deleted boolean, PRIMARY KEY (org, id));
INSERT INTO pg_catalog.pg_dist_partition (logicalrelid, partmethod, partkey, colocationid) VALUES
	('"Org Dist"', 'h', pg_temp.partkey('"Org Dist"', 'org'), 1),
	('"Org Dist 2"', 'h', pg_temp.partkey('"Org Dist 2"', 'org'), 1);
SELECT sequin_sync.map_collection('c', 'org', '"Org Dist"');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_sync.map_collection('c', 'org', '"Org Dist 2"', delete_mode => 'hard');

-- append- and range-distributed tables cannot take INSERT ... SELECT ... ON CONFLICT
CREATE TABLE app (id text PRIMARY KEY, updated_idx bigint, deleted boolean);
CREATE TABLE rng (id text PRIMARY KEY, updated_idx bigint, deleted boolean);
INSERT INTO pg_catalog.pg_dist_partition (logicalrelid, partmethod, partkey, repmodel) VALUES
	('app', 'a', pg_temp.partkey('app', 'id'), 'c'),
	('rng', 'r', pg_temp.partkey('rng', 'id'), 'c');
SELECT sequin_sync.map_collection('c', 'app', 'app');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_sync.map_collection('c', 'rng', 'rng');

-- every batch checks again: a mapped table since distributed by another column parks its records
UPDATE pg_catalog.pg_dist_partition SET partkey = pg_temp.partkey('by_id', 'note') WHERE logicalrelid = 'by_id'::regclass;
-- Citus invalidates a table's relcache entry when its distribution changes, which makes the engine
-- resolve its mapping again; the fake catalog does not, so an ALTER TABLE does it here.
ALTER TABLE by_id SET (fillfactor = 100);
SELECT * FROM sequin_sync.apply('c', '[{"id": "b", "collection_id": "by_id", "updated_idx": 1, "data": {"note": "b"}}]');
SELECT collection, record->>'id' AS id, sqlstate, error FROM sequin_sync.dead_letters;
SELECT * FROM by_id;

-- no catalog, no check
SET allow_system_table_mods = on;
DROP TABLE pg_catalog.pg_dist_partition;
ALTER TABLE by_id SET (fillfactor = 100);
RESET allow_system_table_mods;
SELECT * FROM sequin_sync.apply('c', '[{"id": "b", "collection_id": "by_id", "updated_idx": 1, "data": {"note": "b"}}]');
SELECT * FROM by_id ORDER BY id;

DROP EXTENSION sequin_sync;
DROP TABLE "Org Dist", "Org Dist 2", by_id, ref, single, citus_local, app, rng;
