-- The background worker against the fake Sequin consumer (test/fake_sequin.py, started by
-- test/run_tests.sh): records flow in; pause, resume, alter and drop act live; an auth failure
-- shows in status and recovers after alter_consumer; parked records are acked.
-- Every wait is a bounded poll that returns a boolean.
CREATE EXTENSION sequin_sync;

SET client_min_messages = warning;
-- helpers: drive the fake consumer's admin API, and wait for a condition (30 s at most)
CREATE FUNCTION fake(cmd text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	out jsonb;
BEGIN
	CREATE TEMP TABLE IF NOT EXISTS fake_out (line text);
	TRUNCATE fake_out;
	EXECUTE format('COPY fake_out FROM PROGRAM %L',
		format('python3 %s/test/fake_ctl.py --port %s %s', current_setting('sequin_sync_test.dir'),
			   current_setting('sequin_sync_test.fake_port'), cmd));
	SELECT line::jsonb INTO out FROM fake_out;
	RETURN out;
END $$;
CREATE FUNCTION publish(cid text, records jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('COPY (SELECT %L) TO PROGRAM %L', records::text,
		format('python3 %s/test/fake_ctl.py --port %s publish %s', current_setting('sequin_sync_test.dir'),
			   current_setting('sequin_sync_test.fake_port'), cid));
END $$;
CREATE FUNCTION endpoint(cid text) RETURNS text LANGUAGE sql AS $$
	SELECT format('http://127.0.0.1:%s/v1/http-consumers/%s', current_setting('sequin_sync_test.fake_port'), cid)
$$;
CREATE FUNCTION wait_until(condition text, timeout interval DEFAULT '30 seconds') RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
	ok boolean;
	deadline timestamptz := clock_timestamp() + timeout;
BEGIN
	LOOP
		PERFORM pg_stat_clear_snapshot();
		EXECUTE 'SELECT (' || condition || ')' INTO ok;
		IF ok THEN
			RETURN true;
		END IF;
		IF clock_timestamp() > deadline THEN
			RAISE WARNING 'timed out waiting for: %', condition;
			RETURN false;
		END IF;
		PERFORM pg_sleep(0.05);
	END LOOP;
END $$;
CREATE FUNCTION rec(id text, idx bigint, email text, deleted boolean DEFAULT false) RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('id', id, 'collection_id', 'stripe:customer', 'updated_idx', idx, 'deleted', deleted,
		'data', jsonb_build_object('email', email))
$$;
CREATE FUNCTION worker_pids(consumer text) RETURNS SETOF integer LANGUAGE sql AS $$
	SELECT pid FROM pg_stat_activity WHERE backend_type = 'sequin_sync worker' AND application_name LIKE 'sequin_sync ' || consumer || '/%'
$$;

SELECT fake('consumer w w-secret-token 2000') ->> 'id' AS fake_consumer;
CREATE TABLE customers (id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text, data jsonb);
SELECT sequin_sync.create_consumer('w', endpoint('w'), 'w-secret-token', batch_size => 50, wait_for => '1 second');
SELECT sequin_sync.map_collection('w', 'stripe:customer', 'customers');

-- records flow in, out of order and duplicated; the newest of each wins, everything is acked
SELECT publish('w', jsonb_build_array(rec('a', 2, 'a2'), rec('b', 1, 'b1'), rec('a', 1, 'a1'), rec('c', 5, 'c5', true), rec('a', 2, 'a2')));
SELECT publish('w', (SELECT jsonb_agg(rec('bulk-' || i, i, 'e' || i)) FROM generate_series(1, 300) i));
SELECT wait_until($$(SELECT count(*) FROM customers) = 303 AND (fake('stats w') ->> 'outstanding')::int = 0$$);
SELECT id, updated_idx, deleted, email FROM customers WHERE id NOT LIKE 'bulk-%' ORDER BY id;
SELECT wait_until($$(SELECT acked = 305 FROM sequin_sync.status)$$);
SELECT consumer, state IN ('running', 'idle') AS healthy, workers, received, inserted, updated, deleted, skipped,
	dead_lettered, acked, pending, last_error FROM sequin_sync.status;

-- the launcher, the database's manager, and the worker under its consumer's name show in pg_stat_activity
SELECT backend_type, application_name FROM pg_stat_activity WHERE backend_type LIKE 'sequin_sync%' ORDER BY 1, 2;

-- pause: the worker stops; nothing is pulled until resume
SELECT sequin_sync.pause('w');
SELECT wait_until($$NOT EXISTS (SELECT FROM worker_pids('w'))$$);
SELECT consumer, state, workers FROM sequin_sync.status;
SELECT publish('w', jsonb_build_array(rec('d', 1, 'while paused')));
SELECT pg_sleep(0.5);
SELECT count(*) AS applied_while_paused FROM customers WHERE id = 'd';
SELECT sequin_sync.resume('w');
SELECT wait_until($$EXISTS (SELECT FROM customers WHERE id = 'd')$$);

-- more workers, live
SELECT sequin_sync.alter_consumer('w', workers => 2);
SELECT wait_until($$(SELECT count(*) FROM worker_pids('w')) = 2$$);
SELECT wait_until($$(SELECT workers FROM sequin_sync.status) = 2$$);

-- a killed worker comes back
CREATE TEMP TABLE before AS SELECT * FROM worker_pids('w') AS pid;
SELECT count(*) FROM before, pg_terminate_backend(before.pid) t WHERE t;
SELECT wait_until($$(SELECT count(*) FROM worker_pids('w') p WHERE p NOT IN (SELECT pid FROM before)) = 2$$);
SELECT publish('w', jsonb_build_array(rec('e', 1, 'after restart')));
SELECT wait_until($$EXISTS (SELECT FROM customers WHERE id = 'e')$$);

-- so does a killed launcher, and its workers keep serving
SELECT count(*) FROM pg_stat_activity, pg_terminate_backend(pid) t WHERE backend_type = 'sequin_sync launcher' AND t;
SELECT wait_until($$EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'sequin_sync launcher')$$);
SELECT wait_until($$(SELECT count(*) FROM worker_pids('w')) = 2$$);
SELECT publish('w', jsonb_build_array(rec('f', 1, 'after launcher restart')));
SELECT wait_until($$EXISTS (SELECT FROM customers WHERE id = 'f')$$);

-- a wrong token: the consumer shows state error with the server's summary, and recovers at once after alter_consumer
SELECT sequin_sync.alter_consumer('w', token => 'wrong-token', workers => 1);
SELECT wait_until($$(SELECT state = 'error' AND last_error LIKE '%HTTP 401%' FROM sequin_sync.status)$$);
SELECT last_error FROM sequin_sync.status;
SELECT publish('w', jsonb_build_array(rec('g', 1, 'after fixing the token')));
SELECT sequin_sync.alter_consumer('w', token => 'w-secret-token');
SELECT wait_until($$EXISTS (SELECT FROM customers WHERE id = 'g')$$, '5 seconds');
SELECT wait_until($$(SELECT state IN ('running', 'idle') FROM sequin_sync.status)$$);

-- sequin_sync.allowed_hosts: endpoints elsewhere are refused, at create/alter time and before connecting
ALTER SYSTEM SET sequin_sync.allowed_hosts = 'localhost, *.sequin.io';
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);
SHOW sequin_sync.allowed_hosts;
SELECT sequin_sync.create_consumer('elsewhere', 'http://10.1.2.3/v1/http-consumers/x', 't');
SELECT sequin_sync.alter_consumer('w', endpoint => 'http://169.254.169.254/latest');
-- (the second worker, left over from workers => 1 above, is stopped by the launcher meanwhile)
SELECT wait_until($$(SELECT state = 'error' AND workers = 1 AND last_error LIKE '%allowed_hosts%' FROM sequin_sync.status)$$);
SELECT state, workers, last_error FROM sequin_sync.status;
ALTER SYSTEM RESET sequin_sync.allowed_hosts;
SELECT pg_reload_conf();
SELECT publish('w', jsonb_build_array(rec('i', 1, 'allowed again')));
SELECT wait_until($$EXISTS (SELECT FROM customers WHERE id = 'i')$$);

-- records that cannot be applied are parked, and acked with their batch
SELECT publish('w', jsonb_build_array(rec('h', 1, 'fine'),
	jsonb_build_object('id', 'no-version', 'collection_id', 'stripe:customer'),
	jsonb_build_object('id', 'unmapped', 'collection_id', 'stripe:invoice', 'updated_idx', 1, 'data', '{}'::jsonb)));
SELECT wait_until($$(SELECT count(*) FROM sequin_sync.dead_letters) = 2 AND (fake('stats w') ->> 'outstanding')::int = 0$$);
SELECT collection, error FROM sequin_sync.dead_letters ORDER BY id;
SELECT wait_until($$(SELECT dead_lettered FROM sequin_sync.status) = 2$$);

-- hostile records, byte for byte as a server could send them: each is parked or stored exactly
DELETE FROM sequin_sync.dead_letters;
SELECT fake('publish-file w ' || current_setting('sequin_sync_test.dir') || '/test/fixtures/hostile_records.json') ->> 'published' AS published;
SELECT wait_until($$(SELECT count(*) FROM sequin_sync.dead_letters) = 6 AND (fake('stats w') ->> 'outstanding')::int = 0$$);
SELECT COALESCE(record ->> 'id', record_text) AS record, record IS NULL AS kept_as_text, error
FROM sequin_sync.dead_letters ORDER BY id;
SELECT id, email, data ->> 'big' AS big, data ->> 'tiny' AS tiny FROM customers
WHERE id IN ('duplicate-keys', 'big-numbers', 'unicode') ORDER BY id;
SELECT (data -> 'big')::numeric = 1e400 AS big_exact, (data -> 'tiny')::numeric = -2.5e-999 AS tiny_exact
FROM customers WHERE id = 'beyond-double';

-- SIGTERM ends a worker within a second, even in the middle of a long poll
SELECT sequin_sync.alter_consumer('w', wait_for => '5 minutes');
SELECT wait_until($$(SELECT state = 'idle' OR (state = 'running' AND last_poll_at > now()) FROM sequin_sync.status)$$);
SELECT pg_sleep(0.3);
SELECT sequin_sync.pause('w');
SELECT wait_until($$NOT EXISTS (SELECT FROM worker_pids('w'))$$, '2 seconds') AS stopped_within_2s;
SELECT sequin_sync.resume('w');
SELECT sequin_sync.alter_consumer('w', wait_for => '1 second');

-- the token appears nowhere: not in pg_stat_activity, not in status, not in the server log
SELECT position('w-secret-token' IN pg_read_file(current_setting('sequin_sync_test.dir') || '/log/postmaster.log')) AS token_in_log;
SELECT count(*) AS token_leaks FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND (query LIKE '%' || 'w-secret' || '%' OR application_name LIKE '%' || 'w-secret' || '%');
SELECT count(*) AS token_leaks FROM sequin_sync.status s WHERE s::text LIKE '%' || 'w-secret' || '%';

-- tombstones are pruned automatically: the launcher removes those older than
-- sequin_sync.tombstone_retention (at once when the retention changes, then every tenth of it),
-- in batches, and shows its last run in sequin_sync.tombstone_pruning
CREATE TABLE gone (id text PRIMARY KEY, updated_idx bigint, deleted boolean, email text);
SELECT sequin_sync.map_collection('w', 'stripe:gone', 'gone', delete_mode => 'hard');
SELECT publish('w', jsonb_build_array(
	jsonb_build_object('id', 'x1', 'collection_id', 'stripe:gone', 'updated_idx', 1, 'deleted', false, 'data', jsonb_build_object('email', 'x')),
	jsonb_build_object('id', 'x1', 'collection_id', 'stripe:gone', 'updated_idx', 2, 'deleted', true)));
SELECT wait_until($$EXISTS (SELECT FROM sequin_sync.tombstones WHERE target = 'gone'::regclass AND id = 'x1')$$);
INSERT INTO sequin_sync.tombstones (target, id, updated_idx, deleted_at)
SELECT 'gone'::regclass, 'old-' || i, 1, now() - interval '2 hours' FROM generate_series(1, 1200) i;
ALTER SYSTEM SET sequin_sync.tombstone_retention = '1h';
SELECT pg_reload_conf();
SELECT wait_until($$(SELECT last_pruned = 1200 FROM sequin_sync.tombstone_pruning)$$);
SELECT id FROM sequin_sync.tombstones ORDER BY id;
SELECT retention, last_pruned, last_prune_at > now() - interval '1 minute' AS recent,
	next_prune_at - last_prune_at BETWEEN interval '5 minutes' AND interval '7 minutes' AS next_in_a_tenth,
	last_error FROM sequin_sync.tombstone_pruning;
-- a short retention prunes the fresh one too; the manual function still works
ALTER SYSTEM SET sequin_sync.tombstone_retention = '1s';
SELECT pg_reload_conf();
SELECT wait_until($$NOT EXISTS (SELECT FROM sequin_sync.tombstones)$$);
SELECT sequin_sync.prune_tombstones();
ALTER SYSTEM RESET sequin_sync.tombstone_retention;
SELECT pg_reload_conf();
SELECT wait_until($$(SELECT retention = interval '7 days' FROM sequin_sync.tombstone_pruning)$$);
SELECT sequin_sync.unmap_collection('w', 'stripe:gone');
DROP TABLE gone;

-- drop: the workers stop
SELECT sequin_sync.drop_consumer('w');
SELECT wait_until($$NOT EXISTS (SELECT FROM worker_pids('w'))$$);
SELECT count(*) FROM sequin_sync.status;

-- DROP EXTENSION stops every worker
SELECT fake('consumer w2 t2') ->> 'id' AS fake_consumer;
SELECT sequin_sync.create_consumer('w2', endpoint('w2'), 't2');
SELECT wait_until($$EXISTS (SELECT FROM worker_pids('w2'))$$);
DROP EXTENSION sequin_sync;
SELECT wait_until($$NOT EXISTS (SELECT FROM worker_pids('w2'))$$);

DROP TABLE customers;
DROP FUNCTION fake, publish, endpoint, wait_until, rec, worker_pids;
