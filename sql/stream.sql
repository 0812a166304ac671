-- Sequin Stream consumers: change messages into rows, under a version guard of
-- (commit_lsn, commit_idx), with backfill reads, unchanged TOAST values, key changes and deletes.
CREATE EXTENSION sequin_sync;

-- A change message as Sequin sends it (the "data" of a /receive item); lsn NULL makes a read.
CREATE FUNCTION pg_temp.msg(action text, tbl text, lsn numeric, idx bigint, record jsonb, changes jsonb DEFAULT NULL)
RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('record', record, 'changes', changes, 'action', action,
		'metadata', jsonb_build_object('table_schema', split_part(tbl, '.', 1), 'table_name', split_part(tbl, '.', 2),
			'commit_timestamp', '2026-11-01T10:00:00.000000Z', 'commit_lsn', lsn, 'commit_idx', idx,
			'idempotency_key', 'k', 'record_pks', jsonb_build_array(record->>'id'), 'database_name', 'src',
			'transaction_annotations', NULL, 'enrichment', NULL,
			'consumer', jsonb_build_object('id', 'c1', 'name', 'orders_feed', 'annotations', NULL),
			'database', jsonb_build_object('id', 'd1', 'name', 'src', 'annotations', '{}'::jsonb,
				'database', 'src', 'hostname', 'localhost')))
$$;

-- the protocol: told from the endpoint's path, or named
SELECT sequin_sync.create_consumer('feed', 'http://127.0.0.1:9/api/sequin_streams/orders_feed', 't');
SELECT sequin_sync.create_consumer('legacy_path', 'http://127.0.0.1:9/sequin/api/http_pull_consumers/6d1c9a52-3f4e-4b7a-8c2d-1e0f9a8b7c6d', 't');
SELECT sequin_sync.create_consumer('records', 'http://127.0.0.1:9/v1/http-consumers/records', 't');
SELECT sequin_sync.create_consumer('named', 'http://127.0.0.1:9/sink', 't', protocol => 'stream');
SELECT name, protocol, batch_size FROM sequin_sync.consumers ORDER BY name;
SELECT sequin_sync.create_consumer('unknown', 'http://127.0.0.1:9/sink', 't');
SELECT sequin_sync.create_consumer('bad', 'http://127.0.0.1:9/sink', 't', protocol => 'v3');
-- Sequin's limits: at most 1000 messages per receive, and a wait of 0 or at least 500 ms
SELECT sequin_sync.create_consumer('big', 'http://127.0.0.1:9/api/sequin_streams/big', 't', batch_size => 5000);
SELECT sequin_sync.create_consumer('quick', 'http://127.0.0.1:9/api/sequin_streams/quick', 't', batch_size => 100, wait_for => '200 ms');
SELECT sequin_sync.alter_consumer('named', batch_size => 1001);
-- a record consumer's larger batch is refused when it becomes a stream consumer, and nothing changes
SELECT sequin_sync.alter_consumer('records', batch_size => 2000);
SELECT sequin_sync.alter_consumer('records', endpoint => 'http://127.0.0.1:9/api/sequin_streams/x');
SELECT name, protocol, batch_size, endpoint FROM sequin_sync.consumers WHERE name = 'records';
SELECT sequin_sync.alter_consumer('records', protocol => 'stream', batch_size => 1000);
SELECT name, protocol, batch_size FROM sequin_sync.consumers WHERE name = 'records';
SELECT sequin_sync.alter_consumer('records', protocol => 'v1');
SELECT consumer, protocol, pending, source_commit_at, source_lag FROM sequin_sync.status ORDER BY consumer;

-- mappings: the key is the primary key, the version a numeric sequin_version
CREATE TABLE no_key (id bigint, sequin_version numeric);
SELECT sequin_sync.map_collection('feed', 'public.no_key', 'no_key');
CREATE TABLE no_version (id bigint PRIMARY KEY);
SELECT sequin_sync.map_collection('feed', 'public.no_version', 'no_version');
CREATE TABLE int_version (id bigint PRIMARY KEY, sequin_version bigint);
SELECT sequin_sync.map_collection('feed', 'public.int_version', 'int_version');
CREATE TABLE orders (id bigint PRIMARY KEY, customer text, total numeric(10,2), placed_at timestamptz,
	tags text[], attrs jsonb, note text, source_table text, sequin_version numeric);
SELECT sequin_sync.map_collection('feed', 'orders', 'orders');
SELECT sequin_sync.map_collection('feed', 'public.orders', 'orders', delete_mode => 'soft');
SELECT sequin_sync.map_collection('feed', 'public.orders', 'orders', columns => '{"id": "record.order_id"}');
SELECT sequin_sync.map_collection('feed', 'public.orders', 'orders', columns => '{"sequin_version": "metadata.commit_lsn"}');
SELECT sequin_sync.map_collection('feed', 'public.orders', 'orders', columns => '{"source_table": "metadata.table_name"}');
SELECT collection, target, delete_mode, columns FROM sequin_sync.mappings WHERE consumer = 'feed';

-- inserts and updates; an older or equal version is skipped (at-least-once redelivery)
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('insert', 'public.orders', 23002360, 0, '{"id": 1, "customer": "Ada", "total": "10.50", "placed_at": "2026-11-01T10:00:00Z", "tags": ["a"], "attrs": {"n": 1}, "note": "long note one"}'),
	pg_temp.msg('insert', 'public.orders', 23002360, 3, '{"id": 2, "customer": "Bob", "total": 20, "placed_at": null, "tags": [], "attrs": null, "note": "long note two"}')));
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 23002500, 1, '{"id": 1, "customer": "Ada L.", "total": "11.00", "placed_at": "2026-11-01T10:00:00Z", "tags": ["a", "b"], "attrs": {"n": 2}, "note": "long note one"}', '{}'),
	pg_temp.msg('update', 'public.orders', 23002360, 3, '{"id": 2, "customer": "Bob again", "total": 20, "placed_at": null, "tags": [], "attrs": null, "note": "long note two"}', '{}'),
	pg_temp.msg('update', 'public.orders', 23002000, 9, '{"id": 2, "customer": "Bob older", "total": 20, "placed_at": null, "tags": [], "attrs": null, "note": "long note two"}', '{}')));
SELECT * FROM orders ORDER BY id;

-- a version is commit_lsn * 2^32 + commit_idx, exactly, up to the largest LSN
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('insert', 'public.orders', 18446744073709551615, 4294967295, '{"id": 3, "customer": "max"}')));
SELECT id, sequin_version, sequin_version = 18446744073709551615 * 4294967296 + 4294967295 AS exact FROM orders WHERE id = 3;

-- unchanged TOAST: an update keeps the stored value of a column sent as "unchanged_toast"
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 23003000, 0, '{"id": 1, "customer": "Ada K.", "total": "12.00", "placed_at": "2026-11-01T10:00:00Z", "tags": ["a"], "attrs": {"n": 3}, "note": "unchanged_toast"}', '{}')));
SELECT id, customer, note, sequin_version FROM orders WHERE id = 1;
-- ... redelivered, it is a duplicate
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 23003000, 0, '{"id": 1, "customer": "Ada K.", "total": "12.00", "placed_at": "2026-11-01T10:00:00Z", "tags": ["a"], "attrs": {"n": 3}, "note": "unchanged_toast"}', '{}')));
-- ... and with no stored row there is no value to keep: parked, with the reason, and no row is made
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 23003000, 1, '{"id": 7, "customer": "Gus", "total": "1.00", "placed_at": null, "tags": [], "attrs": null, "note": "unchanged_toast"}', '{}')));
SELECT collection, sqlstate, error FROM sequin_sync.dead_letters;
SELECT count(*) FROM orders WHERE id = 7;

-- hard deletes (the default for a stream mapping): the record holds the key, the rest is null;
-- the tombstone keeps the version, so a late older change never brings the row back
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('delete', 'public.orders', 23004000, 0, '{"id": 2, "customer": null, "total": null, "placed_at": null, "tags": null, "attrs": null, "note": null}')));
SELECT id FROM orders ORDER BY id;
SELECT target, id, updated_idx FROM sequin_sync.tombstones;
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 23003999, 7, '{"id": 2, "customer": "Bob late", "total": 20}', '{}')));
SELECT id FROM orders ORDER BY id;

-- backfill reads carry no version: a read inserts a row that is absent and not tombstoned,
-- overwrites only a row an earlier read wrote, never one a change wrote
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('read', 'public.orders', NULL, NULL, '{"id": 10, "customer": "read one", "total": "1.00"}'),
	pg_temp.msg('read', 'public.orders', NULL, NULL, '{"id": 1, "customer": "stale read", "total": "0.00"}'),
	pg_temp.msg('read', 'public.orders', NULL, NULL, '{"id": 2, "customer": "deleted read", "total": "0.00"}')));
SELECT id, customer, total, sequin_version FROM orders ORDER BY id;
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('read', 'public.orders', NULL, NULL, '{"id": 10, "customer": "read again", "total": "2.00"}')));
-- a change after a read always applies
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 100, 0, '{"id": 10, "customer": "changed", "total": "3.00"}', '{}')));
SELECT id, customer, total, sequin_version FROM orders WHERE id = 10;
-- in one batch, a change beats a read of the same row, whatever the order
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('insert', 'public.orders', 200, 0, '{"id": 11, "customer": "change"}'),
	pg_temp.msg('read', 'public.orders', NULL, NULL, '{"id": 11, "customer": "read"}')));
SELECT id, customer, sequin_version FROM orders WHERE id = 11;

-- a key change: the update's record has the new key, its changes the old one; the row moves
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 23005000, 0, '{"id": 12, "customer": "Ada K.", "total": "12.00", "note": "moved"}', '{"id": 1}')));
SELECT id, customer, note FROM orders ORDER BY id;
SELECT id, updated_idx FROM sequin_sync.tombstones ORDER BY id;
-- the old key's delete happens even when the new key's row is already newer (1 -> 13 arrives
-- after 13 -> 14, Sequin orders each key's messages, not two keys')
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 23006002, 0, '{"id": 14, "customer": "x"}', '{"id": 13}')));
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 23006001, 0, '{"id": 13, "customer": "x"}', '{"id": 12}')));
SELECT id, customer FROM orders ORDER BY id;

-- several versions of a row in one array (apply() and retried dead letters take any): an update
-- that keeps a TOAST value takes it from the version before it in the same array
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 400, 2, '{"id": 40, "customer": "third", "note": "unchanged_toast"}', '{}'),
	pg_temp.msg('insert', 'public.orders', 400, 0, '{"id": 40, "customer": "first", "note": "the long note"}'),
	pg_temp.msg('update', 'public.orders', 400, 1, '{"id": 40, "customer": "second", "note": "unchanged_toast"}', '{}'),
	pg_temp.msg('update', 'public.orders', 399, 0, '{"id": 41, "customer": "changed", "note": "unchanged_toast"}', '{}'),
	pg_temp.msg('read', 'public.orders', NULL, NULL, '{"id": 41, "customer": "read", "note": "read note"}')));
SELECT id, customer, note, sequin_version FROM orders WHERE id IN (40, 41) ORDER BY id;

-- what is parked: no key value, no version in a change, a version in a read, a transform's
-- payload, an unmapped table, and a value the column cannot take
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('insert', 'public.orders', 1, 0, '{"customer": "no key"}'),
	pg_temp.msg('insert', 'public.orders', NULL, NULL, '{"id": 20}'),
	pg_temp.msg('read', 'public.orders', 5, 0, '{"id": 21}'),
	'{"id": 22, "customer": "record only"}'::jsonb,
	pg_temp.msg('insert', 'public.invoices', 1, 0, '{"id": 23}'),
	pg_temp.msg('insert', 'public.orders', 1, 0, '{"id": 24, "total": "lots"}'),
	pg_temp.msg('upsert', 'public.orders', 1, 0, '{"id": 25}')));
SELECT collection, sqlstate, error FROM sequin_sync.dead_letters ORDER BY id;

-- retry_dead_letters and reads: a change parked before a read of its row is older than what
-- the read brings, so the read supersedes it (its dead letter goes) ...
DELETE FROM sequin_sync.dead_letters;
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('insert', 'public.orders', 300, 0, '{"id": 30, "customer": "parked", "total": "much"}')));
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('read', 'public.orders', NULL, NULL, '{"id": 30, "customer": "read later", "total": "5.00"}')));
SELECT count(*) FROM sequin_sync.dead_letters;
SELECT sequin_sync.retry_dead_letters('feed');
SELECT id, customer, total, sequin_version FROM orders WHERE id = 30;
-- ... and the read's row takes the superseded change's version: when Sequin redelivers that change
-- after a restart, it is a duplicate, not an overwrite of the read's newer state
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 320, 0, '{"id": 32, "customer": "before the read", "note": "unchanged_toast"}', '{}')));
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('read', 'public.orders', NULL, NULL, '{"id": 32, "customer": "read later", "note": "read note"}')));
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 320, 0, '{"id": 32, "customer": "before the read", "note": "unchanged_toast"}', '{}')));
SELECT id, customer, note, sequin_version FROM orders WHERE id = 32;
-- ... while a change parked after the read is newer, and retrying it applies it
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('read', 'public.orders', NULL, NULL, '{"id": 31, "customer": "read first", "total": "5.00"}')));
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'public.orders', 310, 0, '{"id": 31, "customer": "changed", "total": "too much to hold"}', '{}')));
ALTER TABLE orders ALTER COLUMN total TYPE text;
SELECT sequin_sync.retry_dead_letters('feed');
SELECT id, customer, total, sequin_version FROM orders WHERE id = 31;
ALTER TABLE orders ALTER COLUMN total TYPE numeric(10,2) USING NULL;

-- composite keys, soft deletes: a delete changes only deleted and the version
CREATE TABLE lines (tenant text, id integer, sku text, qty integer, deleted boolean, sequin_version numeric,
	PRIMARY KEY (tenant, id));
SELECT sequin_sync.map_collection('feed', 'shop.lines', 'lines', delete_mode => 'soft');
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('insert', 'shop.lines', 50, 0, '{"tenant": "acme", "id": 1, "sku": "A-1", "qty": 2}'),
	pg_temp.msg('insert', 'shop.lines', 50, 1, '{"tenant": "acme, inc", "id": 1, "sku": "B-1", "qty": 1}'),
	pg_temp.msg('insert', 'shop.lines', 50, 2, '{"tenant": "zeta", "id": 1, "sku": "Z-1", "qty": 9}')));
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('delete', 'shop.lines', 60, 0, '{"tenant": "acme", "id": 1, "sku": null, "qty": null}'),
	pg_temp.msg('update', 'shop.lines', 60, 1, '{"tenant": "zeta", "id": 2, "sku": "Z-1", "qty": 9}', '{"id": 1}')));
SELECT * FROM lines ORDER BY tenant, id;
-- a stale insert does not undo the soft delete; a newer one revives the row
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('insert', 'shop.lines', 55, 0, '{"tenant": "acme", "id": 1, "sku": "A-0", "qty": 0}')));
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('insert', 'shop.lines', 70, 0, '{"tenant": "acme", "id": 1, "sku": "A-2", "qty": 3}')));
SELECT * FROM lines ORDER BY tenant, id;

-- composite keys with hard deletes: the tombstone's key is a row literal
CREATE TABLE hard_lines (tenant text, id integer, qty integer, sequin_version numeric, PRIMARY KEY (tenant, id));
SELECT sequin_sync.map_collection('feed', 'shop.hard_lines', 'hard_lines');
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('insert', 'shop.hard_lines', 80, 0, '{"tenant": "acme, inc", "id": 1, "qty": 1}'),
	pg_temp.msg('delete', 'shop.hard_lines', 81, 0, '{"tenant": "acme, inc", "id": 1, "qty": null}')));
SELECT * FROM sequin_sync.apply('feed', jsonb_build_array(
	pg_temp.msg('update', 'shop.hard_lines', 80, 5, '{"tenant": "acme, inc", "id": 1, "qty": 2}', '{}'),
	pg_temp.msg('read', 'shop.hard_lines', NULL, NULL, '{"tenant": "acme, inc", "id": 1, "qty": 3}')));
SELECT * FROM hard_lines;
SELECT target, id, updated_idx FROM sequin_sync.tombstones WHERE target = 'hard_lines'::regclass;

DROP EXTENSION sequin_sync;
DROP TABLE no_key, no_version, int_version, orders, lines, hard_lines;
