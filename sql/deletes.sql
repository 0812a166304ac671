-- Soft and hard deletes, and the stale redeliveries that must never bring a row back.
CREATE EXTENSION sequin_sync;
SELECT sequin_sync.create_consumer('c', 'http://127.0.0.1:9/v1/http-consumers/c', 't');

-- soft: the deleted version is upserted like any other, under the same guard
CREATE TABLE soft (id text PRIMARY KEY, updated_idx bigint, deleted boolean, status text);
SELECT sequin_sync.map_collection('c', 'soft', 'soft');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s", "collection_id": "soft", "updated_idx": 1, "data": {"status": "active"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s", "collection_id": "soft", "updated_idx": 3, "deleted": true, "data": {"status": "canceled"}}]');
SELECT * FROM soft;
-- a stale version after the delete is skipped
SELECT * FROM sequin_sync.apply('c', '[{"id": "s", "collection_id": "soft", "updated_idx": 2, "data": {"status": "past_due"}}]');
SELECT * FROM soft;
-- a newer version brings it back
SELECT * FROM sequin_sync.apply('c', '[{"id": "s", "collection_id": "soft", "updated_idx": 4, "deleted": false, "data": {"status": "active"}}]');
SELECT * FROM soft;

-- a soft delete without data changes only the standard columns: the data columns keep their values
CREATE TABLE soft_full (id text PRIMARY KEY, updated_idx bigint, deleted boolean, upstream_id text,
	sync_external_id text, status text, plan_amount integer, data jsonb, note text DEFAULT 'default');
SELECT sequin_sync.map_collection('c', 'soft_full', 'soft_full', columns => '{"plan_amount": "data.plan.amount"}');
SELECT * FROM sequin_sync.apply('c', '[{"id": "f", "collection_id": "soft_full", "updated_idx": 1, "upstream_id": "up-1",
	"sync": {"external_id": "org-1"}, "data": {"status": "active", "plan": {"amount": 5}, "note": "n1"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "f", "collection_id": "soft_full", "updated_idx": 2, "deleted": true,
	"upstream_id": "up-2", "sync": {"external_id": "org-2"}}]');
SELECT * FROM soft_full;
-- "data": null is the same; an older one is skipped by the version guard
SELECT * FROM sequin_sync.apply('c', '[{"id": "f", "collection_id": "soft_full", "updated_idx": 1, "deleted": true, "data": null}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "f", "collection_id": "soft_full", "updated_idx": 3, "deleted": true, "data": null}]');
SELECT * FROM soft_full;
-- a delete of a record never seen: a row with its standard columns, the data columns' defaults
SELECT * FROM sequin_sync.apply('c', '[{"id": "g", "collection_id": "soft_full", "updated_idx": 1, "deleted": true}]');
-- in one call with full versions: the newest version of each id is what counts
SELECT * FROM sequin_sync.apply('c', '[
	{"id": "h", "collection_id": "soft_full", "updated_idx": 1, "data": {"status": "h1"}},
	{"id": "h", "collection_id": "soft_full", "updated_idx": 2, "deleted": true},
	{"id": "g", "collection_id": "soft_full", "updated_idx": 2, "data": {"status": "g2"}},
	{"id": "f", "collection_id": "soft_full", "updated_idx": 4, "data": {"status": "back"}}]');
SELECT * FROM soft_full ORDER BY id;
-- a version that is not deleted but has no data is parked: it would overwrite good values with NULLs
SELECT * FROM sequin_sync.apply('c', '[{"id": "f", "collection_id": "soft_full", "updated_idx": 9},
	{"id": "f", "collection_id": "soft_full", "updated_idx": 10, "deleted": false, "data": null}]');
SELECT record->>'updated_idx' AS version, error, sqlstate FROM sequin_sync.dead_letters ORDER BY id;
SELECT id, updated_idx, deleted, status FROM soft_full WHERE id = 'f';
DELETE FROM sequin_sync.dead_letters;
-- a data column that cannot be NULL is left alone too (the delete converts nothing from data)
CREATE DOMAIN required_text AS text NOT NULL;
CREATE TABLE soft_strict (id text PRIMARY KEY, updated_idx bigint, deleted boolean, status required_text);
SELECT sequin_sync.map_collection('c', 'soft_strict', 'soft_strict');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s", "collection_id": "soft_strict", "updated_idx": 1, "data": {"status": "active"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "s", "collection_id": "soft_strict", "updated_idx": 2, "deleted": true}]');
SELECT * FROM soft_strict;
-- ... but a row that does not exist yet cannot be made without it: parked with the constraint
SELECT * FROM sequin_sync.apply('c', '[{"id": "t", "collection_id": "soft_strict", "updated_idx": 1, "deleted": true}]');
SELECT record->>'id' AS id, error, sqlstate FROM sequin_sync.dead_letters ORDER BY id;
DELETE FROM sequin_sync.dead_letters;

-- hard: the row goes, a tombstone keeps its version
CREATE TABLE hard (id text PRIMARY KEY, updated_idx bigint, status text);
SELECT sequin_sync.map_collection('c', 'hard', 'hard', delete_mode => 'hard');
SELECT * FROM sequin_sync.apply('c', '[{"id": "h", "collection_id": "hard", "updated_idx": 1, "data": {"status": "active"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "h", "collection_id": "hard", "updated_idx": 5, "deleted": true, "data": {"status": "canceled"}}]');
SELECT * FROM hard;
SELECT target, id, updated_idx FROM sequin_sync.tombstones;
-- late redeliveries of older versions cannot bring it back: not even the same version
SELECT * FROM sequin_sync.apply('c', '[{"id": "h", "collection_id": "hard", "updated_idx": 2, "data": {"status": "past_due"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "h", "collection_id": "hard", "updated_idx": 5, "data": {"status": "canceled"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "h", "collection_id": "hard", "updated_idx": 4, "deleted": true}]');
SELECT * FROM hard;
-- a newer version re-creates it
SELECT * FROM sequin_sync.apply('c', '[{"id": "h", "collection_id": "hard", "updated_idx": 6, "data": {"status": "reactivated"}}]');
SELECT * FROM hard;
-- and a newer delete removes it again, raising the tombstone
SELECT * FROM sequin_sync.apply('c', '[{"id": "h", "collection_id": "hard", "updated_idx": 7, "deleted": true}]');
SELECT * FROM hard;
SELECT id, updated_idx FROM sequin_sync.tombstones;

-- a stale delete (older than the row) leaves the row and no tombstone
SELECT * FROM sequin_sync.apply('c', '[{"id": "k", "collection_id": "hard", "updated_idx": 10, "data": {"status": "kept"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "k", "collection_id": "hard", "updated_idx": 9, "deleted": true}]');
SELECT * FROM hard;
SELECT id, updated_idx FROM sequin_sync.tombstones ORDER BY id;

-- a delete of a record never seen leaves a tombstone, so its older versions never appear
SELECT * FROM sequin_sync.apply('c', '[{"id": "ghost", "collection_id": "hard", "updated_idx": 3, "deleted": true}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "ghost", "collection_id": "hard", "updated_idx": 2, "data": {"status": "boo"}}]');
SELECT count(*) FROM hard WHERE id = 'ghost';

-- in one call: versions of one id around a delete, in any order
SELECT * FROM sequin_sync.apply('c', '[
	{"id": "m", "collection_id": "hard", "updated_idx": 3, "data": {"status": "v3"}},
	{"id": "m", "collection_id": "hard", "updated_idx": 4, "deleted": true},
	{"id": "m", "collection_id": "hard", "updated_idx": 1, "data": {"status": "v1"}},
	{"id": "n", "collection_id": "hard", "updated_idx": 2, "deleted": true},
	{"id": "n", "collection_id": "hard", "updated_idx": 3, "data": {"status": "n3"}}]');
SELECT * FROM hard ORDER BY id;

-- tombstones are pruned after sequin_sync.tombstone_retention
SHOW sequin_sync.tombstone_retention;
SELECT sequin_sync.prune_tombstones();
UPDATE sequin_sync.tombstones SET deleted_at = now() - interval '8 days' WHERE id = 'ghost';
SELECT sequin_sync.prune_tombstones();
SELECT id FROM sequin_sync.tombstones ORDER BY id;
SET sequin_sync.tombstone_retention = '1h';
UPDATE sequin_sync.tombstones SET deleted_at = now() - interval '2 hours' WHERE id = 'h';
SELECT sequin_sync.prune_tombstones();
SELECT id FROM sequin_sync.tombstones ORDER BY id;
SET sequin_sync.tombstone_retention = 0;
UPDATE sequin_sync.tombstones SET deleted_at = now() - interval '10 years';
SELECT sequin_sync.prune_tombstones();
RESET sequin_sync.tombstone_retention;

-- hard deletes need no data: not even a data column that cannot be NULL is converted
CREATE TABLE hard_strict (id text PRIMARY KEY, updated_idx bigint, status required_text);
SELECT sequin_sync.map_collection('c', 'hard_strict', 'hard_strict', delete_mode => 'hard');
SELECT * FROM sequin_sync.apply('c', '[{"id": "hs", "collection_id": "hard_strict", "updated_idx": 1, "data": {"status": "active"}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "hs", "collection_id": "hard_strict", "updated_idx": 2, "deleted": true}]');
SELECT count(*) AS rows, (SELECT count(*) FROM sequin_sync.dead_letters) AS parked FROM hard_strict;

DROP EXTENSION sequin_sync;
DROP TABLE soft, hard, soft_full, soft_strict, hard_strict;
DROP DOMAIN required_text;
