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

DROP EXTENSION sequin_sync;
DROP TABLE soft, hard;
