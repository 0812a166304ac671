-- Which errors are a record's (parked, the rest applied) and which are the server's state (the
-- whole batch fails and is retried).  A record's: any class, XX (internal error) included, once
-- bisection has isolated the record.  The server's: 40, 55P03, 53, 57, 25006, 08, 58.
CREATE EXTENSION sequin_sync;
SELECT sequin_sync.create_consumer('c', 'http://127.0.0.1:9/v1/http-consumers/c', 't');
\set VERBOSITY terse

-- a type whose check raises an internal error (XX000) for one value, as a bare elog(ERROR) in a
-- type's input function would: the record with that value is parked, the others applied
CREATE FUNCTION poison_check(v text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	IF v = 'poison' THEN
		RAISE EXCEPTION 'cache lookup failed for poison' USING ERRCODE = 'XX000';
	END IF;
	RETURN true;
END $$;
CREATE DOMAIN checked_text AS text CHECK (poison_check(VALUE));
CREATE TABLE t (id text PRIMARY KEY, updated_idx bigint, deleted boolean, v checked_text);
SELECT sequin_sync.map_collection('c', 't', 't');
SELECT * FROM sequin_sync.apply('c', '[
	{"id": "a", "collection_id": "t", "updated_idx": 1, "data": {"v": "fine"}},
	{"id": "b", "collection_id": "t", "updated_idx": 1, "data": {"v": "poison"}},
	{"id": "c", "collection_id": "t", "updated_idx": 1, "data": {"v": "also fine"}}]');
SELECT id, v FROM t ORDER BY id;
SELECT record->>'id' AS id, error, sqlstate FROM sequin_sync.dead_letters ORDER BY id;
DELETE FROM sequin_sync.dead_letters;

-- the same from a trigger, found by bisection of the set-based statement
CREATE FUNCTION t_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.v = 'XX000' THEN
		RAISE EXCEPTION 'internal error for %', NEW.id USING ERRCODE = 'XX000';
	ELSIF NEW.v LIKE 'sqlstate %' THEN
		RAISE EXCEPTION 'raised % for %', substr(NEW.v, 10), NEW.id USING ERRCODE = substr(NEW.v, 10);
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER t_check BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION t_trigger();
SELECT * FROM sequin_sync.apply('c', (
	SELECT jsonb_agg(jsonb_build_object('id', 'bulk-' || lpad(i::text, 2, '0'), 'collection_id', 't', 'updated_idx', 1,
		'data', jsonb_build_object('v', CASE WHEN i = 7 THEN 'XX000' ELSE 'v' || i END)) ORDER BY i)
	FROM generate_series(1, 20) i));
SELECT count(*) FROM t WHERE id LIKE 'bulk-%';
SELECT record->>'id' AS id, error, sqlstate FROM sequin_sync.dead_letters ORDER BY id;
DELETE FROM sequin_sync.dead_letters;

-- classes that are the record's: parked (not all of 55, not all of 25, F0)
SELECT * FROM sequin_sync.apply('c', '[
	{"id": "in-use", "collection_id": "t", "updated_idx": 2, "data": {"v": "sqlstate 55006"}},
	{"id": "active-transaction", "collection_id": "t", "updated_idx": 2, "data": {"v": "sqlstate 25001"}},
	{"id": "config-file", "collection_id": "t", "updated_idx": 2, "data": {"v": "sqlstate F0000"}},
	{"id": "fine", "collection_id": "t", "updated_idx": 2, "data": {"v": "fine"}}]');
SELECT record->>'id' AS id, error, sqlstate FROM sequin_sync.dead_letters ORDER BY id;
SELECT id FROM t WHERE id = 'fine';
DELETE FROM sequin_sync.dead_letters;

-- classes that are the server's state: the call fails, nothing is parked, nothing applied
SELECT * FROM sequin_sync.apply('c', '[{"id": "s1", "collection_id": "t", "updated_idx": 3, "data": {"v": "sqlstate 40001"}},
	{"id": "ok", "collection_id": "t", "updated_idx": 3, "data": {"v": "ok"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s2", "collection_id": "t", "updated_idx": 3, "data": {"v": "sqlstate 40P01"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s3", "collection_id": "t", "updated_idx": 3, "data": {"v": "sqlstate 55P03"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s4", "collection_id": "t", "updated_idx": 3, "data": {"v": "sqlstate 53100"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s5", "collection_id": "t", "updated_idx": 3, "data": {"v": "sqlstate 57014"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s6", "collection_id": "t", "updated_idx": 3, "data": {"v": "sqlstate 25006"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s7", "collection_id": "t", "updated_idx": 3, "data": {"v": "sqlstate 08006"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s8", "collection_id": "t", "updated_idx": 3, "data": {"v": "sqlstate 58030"}}]');
SELECT count(*) AS parked FROM sequin_sync.dead_letters;
SELECT count(*) AS applied FROM t WHERE id IN ('ok', 's1', 's2', 's3', 's4', 's5', 's6', 's7', 's8');

DROP EXTENSION sequin_sync;
DROP TABLE t;
DROP FUNCTION t_trigger();
DROP DOMAIN checked_text;
DROP FUNCTION poison_check(text);
