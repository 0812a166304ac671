-- The apply engine keeps each resolved mapping across batches (ResolveMappingCached): every
-- change to the table, its schema, its types, the owner's privileges or the mapping itself
-- takes effect on the very next batch.  Each change below follows an apply that resolved and
-- kept the mapping as it was.
CREATE EXTENSION sequin_sync;
SELECT sequin_sync.create_consumer('c', 'http://127.0.0.1:9/v1/http-consumers/c', 't');
CREATE SCHEMA kept;
CREATE TABLE kept.t (id text PRIMARY KEY, updated_idx bigint, deleted boolean, name text);
SELECT sequin_sync.map_collection('c', 'kept', 'kept.t');
CREATE FUNCTION rec(id text, idx int, data jsonb) RETURNS jsonb LANGUAGE sql
	AS $$ SELECT jsonb_build_object('id', id, 'collection_id', 'kept', 'updated_idx', idx, 'data', data) $$;
CREATE FUNCTION ap(id text, idx int, data jsonb) RETURNS TABLE (inserted bigint, updated bigint, dead_lettered bigint)
	LANGUAGE sql AS $$ SELECT inserted, updated, dead_lettered FROM sequin_sync.apply('c', jsonb_build_array(rec(id, idx, data))) $$;

SELECT * FROM ap('a', 1, '{"Name": "first"}');

-- a new column is filled by the next batch
ALTER TABLE kept.t ADD COLUMN extra integer;
SELECT * FROM ap('a', 2, '{"Name": "second", "extra": 5}');
SELECT id, updated_idx, name, extra FROM kept.t ORDER BY id;

-- a column's new type converts the next batch's values
ALTER TABLE kept.t ALTER COLUMN extra TYPE text;
SELECT * FROM ap('a', 3, '{"Name": "third", "extra": "not a number"}');
SELECT id, updated_idx, name, extra FROM kept.t ORDER BY id;

-- a renamed column takes the field of its new name
ALTER TABLE kept.t RENAME COLUMN name TO full_name;
SELECT * FROM ap('a', 4, '{"Name": "old name", "FullName": "fourth"}');
SELECT id, updated_idx, full_name, extra FROM kept.t ORDER BY id;

-- a dropped column is no longer written
ALTER TABLE kept.t DROP COLUMN extra;
SELECT * FROM ap('a', 5, '{"FullName": "fifth", "extra": "gone"}');
SELECT id, updated_idx, full_name FROM kept.t ORDER BY id;

-- a renamed schema: the statements name the table where it is now
ALTER SCHEMA kept RENAME TO kept2;
SELECT * FROM ap('a', 6, '{"FullName": "sixth"}');
SELECT id, updated_idx, full_name FROM kept2.t ORDER BY id;

-- without its unique index the mapping cannot work: the next batch is parked, and works again
-- once the index is back
ALTER TABLE kept2.t DROP CONSTRAINT t_pkey;
SELECT * FROM ap('a', 7, '{"FullName": "seventh"}');
SELECT error FROM sequin_sync.dead_letters;
ALTER TABLE kept2.t ADD PRIMARY KEY (id);
SELECT sequin_sync.retry_dead_letters('c');
SELECT id, updated_idx, full_name FROM kept2.t ORDER BY id;

-- a domain over the column's type: its constraint holds from the next batch on
CREATE DOMAIN short_text AS text CHECK (length(VALUE) < 10);
ALTER TABLE kept2.t ALTER COLUMN full_name TYPE short_text;
SELECT * FROM ap('a', 8, '{"FullName": "much too long for it"}');
SELECT error FROM sequin_sync.dead_letters;
DELETE FROM sequin_sync.dead_letters;

-- the mapping itself: new column sources, then another delete mode
SELECT sequin_sync.map_collection('c', 'kept', 'kept2.t', 'soft', '{"full_name": "data.nested.name"}');
SELECT * FROM ap('a', 9, '{"FullName": "ignored", "nested": {"name": "ninth"}}');
SELECT id, updated_idx, full_name FROM kept2.t ORDER BY id;
SELECT sequin_sync.map_collection('c', 'kept', 'kept2.t', 'hard');
SELECT deleted FROM sequin_sync.apply('c', '[{"id": "a", "collection_id": "kept", "updated_idx": 10, "deleted": true}]');
SELECT count(*) FROM kept2.t;

-- inside one transaction: a change made after an apply reaches the next apply of that
-- transaction, and a rolled-back change is forgotten with it
SELECT sequin_sync.map_collection('c', 'kept', 'kept2.t');
BEGIN;
SELECT * FROM ap('b', 1, '{"FullName": "b1"}');
ALTER TABLE kept2.t ADD COLUMN note text;
SELECT * FROM ap('b', 2, '{"FullName": "b2", "note": "in xact"}');
SELECT id, updated_idx, full_name, note FROM kept2.t ORDER BY id;
ROLLBACK;
SELECT * FROM ap('b', 3, '{"FullName": "b3", "note": "no such column"}');
SELECT * FROM kept2.t ORDER BY id;

-- the owner's privileges: through a role it is a member of, which it then leaves
CREATE ROLE regress_kept_owner IN ROLE sequin_sync_admin;
CREATE ROLE regress_kept_writers;
GRANT USAGE ON SCHEMA kept2 TO regress_kept_owner;
GRANT SELECT, INSERT, UPDATE ON kept2.t TO regress_kept_writers;
GRANT regress_kept_writers TO regress_kept_owner;
SET ROLE regress_kept_owner;
SELECT sequin_sync.create_consumer('o', 'http://127.0.0.1:9/v1/http-consumers/o', 't');
SELECT sequin_sync.map_collection('o', 'kept', 'kept2.t');
SELECT inserted, dead_lettered FROM sequin_sync.apply('o', jsonb_build_array(rec('o1', 1, '{}')));
RESET ROLE;
REVOKE regress_kept_writers FROM regress_kept_owner;
SELECT inserted, dead_lettered FROM sequin_sync.apply('o', jsonb_build_array(rec('o2', 1, '{}')));
SELECT error FROM sequin_sync.dead_letters WHERE consumer = 'o';
-- and the privilege granted on the table itself
GRANT SELECT, INSERT, UPDATE ON kept2.t TO regress_kept_owner;
SELECT sequin_sync.retry_dead_letters('o');
SELECT id FROM kept2.t ORDER BY id;
REVOKE INSERT ON kept2.t FROM regress_kept_owner;
SELECT inserted, dead_lettered FROM sequin_sync.apply('o', jsonb_build_array(rec('o3', 1, '{}')));
SELECT error FROM sequin_sync.dead_letters WHERE consumer = 'o';

-- a dropped table parks the next batch
DELETE FROM sequin_sync.dead_letters;
DROP TABLE kept2.t;
SELECT * FROM ap('a', 11, '{}');
SELECT regexp_replace(error, 'OID \d+', 'OID n') AS error FROM sequin_sync.dead_letters;

SELECT sequin_sync.drop_consumer('o');
DROP EXTENSION sequin_sync;
DROP FUNCTION ap, rec;
DROP SCHEMA kept2 CASCADE;
DROP DOMAIN short_text;
DROP ROLE regress_kept_owner, regress_kept_writers;
