-- map_collection checks the mapping against the table when it is made, and refuses what
-- cannot work with an error naming the table and column.
CREATE EXTENSION sequin_sync;
SELECT sequin_sync.create_consumer('c', 'http://127.0.0.1:9/v1/http-consumers/c', 't');

CREATE TABLE good (id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text);
SELECT sequin_sync.map_collection('c', 'stripe:customer', 'good');
SELECT consumer, collection, target, delete_mode, columns FROM sequin_sync.mappings;

-- mapping again replaces the mapping
SELECT sequin_sync.map_collection('c', 'stripe:customer', 'good', 'hard', '{"email": "data.contact.email"}');
SELECT consumer, collection, target, delete_mode, columns FROM sequin_sync.mappings;

-- the key, the version and the deleted flag
CREATE TABLE no_id (key text PRIMARY KEY, updated_idx bigint, deleted boolean);
SELECT sequin_sync.map_collection('c', 'x', 'no_id');
CREATE TABLE id_not_unique (id text, updated_idx bigint, deleted boolean);
SELECT sequin_sync.map_collection('c', 'x', 'id_not_unique');
CREATE TABLE id_partial_unique (id text, updated_idx bigint, deleted boolean);
CREATE UNIQUE INDEX ON id_partial_unique (id) WHERE id <> '';
SELECT sequin_sync.map_collection('c', 'x', 'id_partial_unique');
CREATE TABLE id_composite (id text, other int, updated_idx bigint, deleted boolean, PRIMARY KEY (id, other));
SELECT sequin_sync.map_collection('c', 'x', 'id_composite');
CREATE TABLE id_unique_index (id text, updated_idx bigint, deleted boolean);
CREATE UNIQUE INDEX ON id_unique_index (id);
SELECT sequin_sync.map_collection('c', 'unique_index', 'id_unique_index');
CREATE TABLE no_idx (id text PRIMARY KEY, deleted boolean);
SELECT sequin_sync.map_collection('c', 'x', 'no_idx');
CREATE TABLE idx_text (id text PRIMARY KEY, updated_idx text, deleted boolean);
SELECT sequin_sync.map_collection('c', 'x', 'idx_text');
CREATE TABLE idx_numeric (id text PRIMARY KEY, updated_idx numeric, deleted boolean);
SELECT sequin_sync.map_collection('c', 'numeric_idx', 'idx_numeric');
CREATE TABLE no_deleted (id text PRIMARY KEY, updated_idx bigint);
SELECT sequin_sync.map_collection('c', 'x', 'no_deleted');
SELECT sequin_sync.map_collection('c', 'hard_without_deleted', 'no_deleted', delete_mode => 'hard');
CREATE TABLE deleted_text (id text PRIMARY KEY, updated_idx bigint, deleted text);
SELECT sequin_sync.map_collection('c', 'x', 'deleted_text');

-- arguments
SELECT sequin_sync.map_collection('c', 'x', 'good', delete_mode => 'purge');
-- delete_mode => NULL is the protocol's default: soft for a record consumer
SELECT sequin_sync.map_collection('c', 'x', 'good', delete_mode => NULL);
SELECT delete_mode FROM sequin_sync.mappings WHERE collection = 'x';
SELECT sequin_sync.unmap_collection('c', 'x');
SELECT sequin_sync.map_collection('c', '', 'good');
SELECT sequin_sync.map_collection('c', NULL, 'good');
SELECT sequin_sync.map_collection('c', 'x', NULL);
SELECT sequin_sync.map_collection('nope', 'x', 'good');
SELECT sequin_sync.map_collection('c', 'x', 'does_not_exist');

-- columns overrides
SELECT sequin_sync.map_collection('c', 'x', 'good', columns => '[1]');
SELECT sequin_sync.map_collection('c', 'x', 'good', columns => '"email"');
SELECT sequin_sync.map_collection('c', 'x', 'good', columns => '{"email": 5}');
SELECT sequin_sync.map_collection('c', 'x', 'good', columns => '{"emial": "data.email"}');
SELECT sequin_sync.map_collection('c', 'x', 'good', columns => '{"id": "data.id"}');
SELECT sequin_sync.map_collection('c', 'x', 'good', columns => '{"updated_idx": null}');
SELECT sequin_sync.map_collection('c', 'x', 'good', columns => '{"email": "data..email"}');
SELECT sequin_sync.map_collection('c', 'x', 'good', columns => '{"email": ""}');
CREATE TABLE gen (id text PRIMARY KEY, updated_idx bigint, deleted boolean,
	n int GENERATED ALWAYS AS IDENTITY, twice bigint GENERATED ALWAYS AS (updated_idx * 2) STORED);
SELECT sequin_sync.map_collection('c', 'x', 'gen', columns => '{"twice": "data.twice"}');
SELECT sequin_sync.map_collection('c', 'x', 'gen', columns => '{"n": "data.n"}');
SELECT sequin_sync.map_collection('c', 'gen', 'gen', columns => '{"n": null}');

-- what cannot be a target
CREATE VIEW good_view AS SELECT * FROM good;
SELECT sequin_sync.map_collection('c', 'x', 'good_view');
CREATE TEMP TABLE tmp (id text PRIMARY KEY, updated_idx bigint, deleted boolean);
SELECT sequin_sync.map_collection('c', 'x', 'tmp');
SELECT sequin_sync.map_collection('c', 'x', 'sequin_sync.tombstones');
SELECT sequin_sync.map_collection('c', 'x', 'pg_class');

-- odd identifiers are quoted everywhere
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Stripe ""Customers""" ("id" text PRIMARY KEY, "updated_idx" bigint, "deleted" boolean,
	"Email Address" text, "select" text);
SELECT sequin_sync.map_collection('c', 'odd', '"Odd Schema"."Stripe ""Customers"""',
	columns => '{"Email Address": "data.email"}');

-- a partitioned table works
CREATE TABLE parted (id text PRIMARY KEY, updated_idx bigint, deleted boolean) PARTITION BY HASH (id);
CREATE TABLE parted_0 PARTITION OF parted FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES WITH (MODULUS 2, REMAINDER 1);
SELECT sequin_sync.map_collection('c', 'parted', 'parted');

SELECT collection, target, delete_mode, columns FROM sequin_sync.mappings ORDER BY collection;

-- unmap
SELECT sequin_sync.unmap_collection('c', 'parted');
SELECT sequin_sync.unmap_collection('c', 'parted');
SELECT sequin_sync.unmap_collection('nope', 'parted');
SELECT collection FROM sequin_sync.mappings ORDER BY collection;

-- dropping the consumer drops its mappings
SELECT sequin_sync.drop_consumer('c');
SELECT count(*) FROM sequin_sync.mappings;

DROP EXTENSION sequin_sync;
DROP SCHEMA "Odd Schema" CASCADE;
DROP TABLE good, no_id, id_not_unique, id_partial_unique, id_composite, id_unique_index, no_idx, idx_text,
	idx_numeric, no_deleted, deleted_text, gen, parted CASCADE;
