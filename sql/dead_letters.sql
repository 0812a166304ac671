-- Records that cannot be applied are parked with the reason; every other record of the call is
-- applied; retry_dead_letters() applies them again once the cause is fixed.
CREATE EXTENSION sequin_sync;
SELECT sequin_sync.create_consumer('c', 'http://127.0.0.1:9/v1/http-consumers/c', 't');
CREATE TABLE accounts (id text PRIMARY KEY, updated_idx bigint, deleted boolean);
CREATE TABLE items (id text PRIMARY KEY, updated_idx bigint, deleted boolean, name text NOT NULL,
	qty integer CHECK (qty >= 0), account text REFERENCES accounts (id), sku text UNIQUE);
SELECT sequin_sync.map_collection('c', 'items', 'items');
SELECT sequin_sync.map_collection('c', 'accounts', 'accounts');
SELECT * FROM sequin_sync.apply('c', '[{"id": "acct-1", "collection_id": "accounts", "updated_idx": 1, "data": {}}]');

-- records without the standard fields they need
SELECT * FROM sequin_sync.apply('c', '[
	"not an object",
	null,
	{"collection_id": "items", "updated_idx": 1, "data": {"name": "no id"}},
	{"id": 5, "collection_id": "items", "updated_idx": 1, "data": {"name": "numeric id"}},
	{"id": "", "collection_id": "items", "updated_idx": 1, "data": {"name": "empty id"}},
	{"id": "no-idx", "collection_id": "items", "data": {"name": "x"}},
	{"id": "idx-string", "collection_id": "items", "updated_idx": "7", "data": {"name": "x"}},
	{"id": "idx-fraction", "collection_id": "items", "updated_idx": 7.5, "data": {"name": "x"}},
	{"id": "idx-huge", "collection_id": "items", "updated_idx": 99999999999999999999, "data": {"name": "x"}},
	{"id": "deleted-yes", "collection_id": "items", "updated_idx": 1, "deleted": "yes", "data": {"name": "x"}},
	{"id": "data-array", "collection_id": "items", "updated_idx": 1, "data": [1, 2]},
	{"id": "no-data", "collection_id": "items", "updated_idx": 1},
	{"id": "data-null", "collection_id": "items", "updated_idx": 1, "data": null},
	{"id": "no-collection", "updated_idx": 1, "data": {"name": "x"}},
	{"id": "collection-number", "collection_id": 7, "updated_idx": 1, "data": {"name": "x"}},
	{"id": "unmapped", "collection_id": "stripe:invoice", "updated_idx": 1, "data": {"name": "x"}},
	{"id": "fine", "collection_id": "items", "updated_idx": 1, "data": {"name": "fine", "qty": 1}}]');
SELECT id, collection, error, sqlstate, record FROM sequin_sync.dead_letters ORDER BY id;
SELECT id, name FROM items ORDER BY id;
DELETE FROM sequin_sync.dead_letters;

-- constraint violations: only the records at fault are parked, found by bisection
SELECT * FROM sequin_sync.apply('c', (
	SELECT jsonb_agg(r ORDER BY r->>'id') FROM (
		SELECT jsonb_build_object('id', 'ok-' || lpad(i::text, 3, '0'), 'collection_id', 'items', 'updated_idx', 1,
			'data', jsonb_build_object('name', 'item ' || i, 'qty', i, 'sku', 'sku-' || i)) AS r
		FROM generate_series(1, 100) i
		UNION ALL SELECT '{"id": "ok-050x", "collection_id": "items", "updated_idx": 1, "data": {"qty": 1}}'
		UNION ALL SELECT '{"id": "ok-020x", "collection_id": "items", "updated_idx": 1, "data": {"name": "n", "qty": -1}}'
		UNION ALL SELECT '{"id": "ok-070x", "collection_id": "items", "updated_idx": 1, "data": {"name": "n", "account": "acct-404"}}'
		UNION ALL SELECT '{"id": "ok-090x", "collection_id": "items", "updated_idx": 1, "data": {"name": "n", "account": "acct-1"}}'
		UNION ALL SELECT '{"id": "ok-030x", "collection_id": "items", "updated_idx": 1, "data": {"name": "n", "sku": "sku-5"}}'
	) s));
SELECT count(*) FROM items WHERE id LIKE 'ok-%';
SELECT record->>'id' AS id, error, sqlstate, attempts FROM sequin_sync.dead_letters ORDER BY id;

-- fix the causes, then retry: the fixed ones are applied and removed, the rest stay with one more attempt
ALTER TABLE items ALTER COLUMN name DROP NOT NULL;
SELECT * FROM sequin_sync.apply('c', '[{"id": "acct-404", "collection_id": "accounts", "updated_idx": 1, "data": {}}]');
SELECT sequin_sync.retry_dead_letters('c');
SELECT record->>'id' AS id, error, attempts FROM sequin_sync.dead_letters ORDER BY id;
SELECT id, name, qty, account FROM items WHERE id LIKE '%x' ORDER BY id;

-- a parked version that is older than what the table now holds is obsolete: retry removes it
ALTER TABLE items DROP CONSTRAINT items_qty_check;
SELECT * FROM sequin_sync.apply('c', '[{"id": "ok-020x", "collection_id": "items", "updated_idx": 2, "data": {"name": "newer", "qty": 5}}]');
SELECT sequin_sync.retry_dead_letters();
SELECT id, name, qty, updated_idx FROM items WHERE id = 'ok-020x';

-- the remaining one: the sku conflict, resolved by mapping sku away
SELECT sequin_sync.map_collection('c', 'items', 'items', columns => '{"sku": null}');
SELECT sequin_sync.retry_dead_letters('c');
SELECT count(*) AS left_parked FROM sequin_sync.dead_letters;

-- an unmapped collection is parked until it is mapped
SELECT * FROM sequin_sync.apply('c', '[{"id": "later", "collection_id": "stripe:invoice", "updated_idx": 1, "data": {}}]');
SELECT collection, error FROM sequin_sync.dead_letters;
SELECT sequin_sync.map_collection('c', 'stripe:invoice', 'accounts');
SELECT sequin_sync.retry_dead_letters('c');
SELECT id FROM accounts ORDER BY id;

-- the same bad record parked again (a duplicate, a redelivery) keeps one row and counts attempts
DELETE FROM sequin_sync.dead_letters;
SELECT * FROM sequin_sync.apply('c', '[{"id": "twice", "collection_id": "items", "updated_idx": "x"},
	{"id": "twice", "collection_id": "items", "updated_idx": "x"}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "twice", "collection_id": "items", "updated_idx": "x"}]');
SELECT record->>'id' AS id, attempts FROM sequin_sync.dead_letters;
DELETE FROM sequin_sync.dead_letters;

-- a record that could not be decoded, as a worker parks it: its text as received, each byte that
-- is not UTF-8 as \udcXX.  Retrying finds it undecodable again, and the others are applied.
INSERT INTO sequin_sync.dead_letters (consumer, collection, record_text, record_hash, error, sqlstate)
	SELECT 'c', NULL, t, md5(t), 'record cannot be decoded: invalid UTF-8 in string', '22021'
	FROM (VALUES ('{"id": "undecodable", "collection_id": "items", "updated_idx": 1, "data": {"name": "a\udcffb"}}'),
				 ('{"id": "lone", "collection_id": "items", "updated_idx": 1, "data": {"name": "\ud800"}}')) v(t);
SELECT * FROM sequin_sync.apply('c', '[{"id": "not-yet", "collection_id": "stripe:charge", "updated_idx": 1, "data": {}}]');
SELECT sequin_sync.map_collection('c', 'stripe:charge', 'accounts');
SELECT sequin_sync.retry_dead_letters('c');
SELECT collection, record_text, error, sqlstate, attempts FROM sequin_sync.dead_letters ORDER BY id;
SELECT id FROM accounts WHERE id = 'not-yet';
DELETE FROM sequin_sync.dead_letters;

-- a mapping whose table is dropped parks its records instead of failing the batch
CREATE TABLE doomed (id text PRIMARY KEY, updated_idx bigint, deleted boolean);
SELECT sequin_sync.map_collection('c', 'doomed', 'doomed');
DROP TABLE doomed;
SELECT * FROM sequin_sync.apply('c', '[{"id": "d", "collection_id": "doomed", "updated_idx": 1, "data": {}},
	{"id": "acct-2", "collection_id": "accounts", "updated_idx": 1, "data": {}}]');
SELECT collection, regexp_replace(error, 'OID \d+', 'OID n') AS error, sqlstate FROM sequin_sync.dead_letters;

-- a table changed after mapping: the record says what is wrong now
CREATE TABLE changing (id text PRIMARY KEY, updated_idx bigint, deleted boolean);
SELECT sequin_sync.map_collection('c', 'changing', 'changing');
ALTER TABLE changing DROP COLUMN deleted;
SELECT * FROM sequin_sync.apply('c', '[{"id": "x", "collection_id": "changing", "updated_idx": 1, "data": {}}]');
SELECT error FROM sequin_sync.dead_letters WHERE collection = 'changing';

SELECT sequin_sync.retry_dead_letters('nope');

-- dropping a consumer drops its dead letters
SELECT sequin_sync.drop_consumer('c');
SELECT count(*) FROM sequin_sync.dead_letters;

DROP EXTENSION sequin_sync;
DROP TABLE items, accounts, changing;
