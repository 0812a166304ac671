-- create_consumer, alter_consumer, pause, resume, drop_consumer: every argument is checked.
CREATE EXTENSION sequin_sync;

SELECT sequin_sync.create_consumer('stripe', 'http://127.0.0.1:9/v1/http-consumers/abc/', 'tok_secret');
-- the owner is the creating role (whatever the superuser is called: make installcheck)
SELECT name, endpoint, batch_size, wait_for, workers, paused, owner = current_user::regrole AS owned_by_creator
  FROM sequin_sync.consumers;

-- defaults and named arguments
SELECT sequin_sync.create_consumer(name => 'sf', endpoint => 'http://127.0.0.1:7376/v1/http-consumers/sf',
	token => 't', batch_size => 200, wait_for => '30 seconds', workers => 2);
SELECT name, endpoint, batch_size, wait_for, workers FROM sequin_sync.consumers ORDER BY name;

-- names
SELECT sequin_sync.create_consumer('stripe', 'http://127.0.0.1:9/v1/http-consumers/x', 't');
SELECT sequin_sync.create_consumer('', 'http://127.0.0.1:9/v1/http-consumers/x', 't');
SELECT sequin_sync.create_consumer('has space', 'http://127.0.0.1:9/v1/http-consumers/x', 't');
SELECT sequin_sync.create_consumer('_leading', 'http://127.0.0.1:9/v1/http-consumers/x', 't');
SELECT sequin_sync.create_consumer(repeat('a', 64), 'http://127.0.0.1:9/v1/http-consumers/x', 't');
SELECT sequin_sync.create_consumer(NULL, 'http://127.0.0.1:9/v1/http-consumers/x', 't');

-- endpoints: http and https only, a host, no credentials, no query string
SELECT sequin_sync.create_consumer('e1', 'ftp://api.sequin.io/v1/http-consumers/x', 't');
SELECT sequin_sync.create_consumer('e2', 'api.sequin.io/v1/http-consumers/x', 't');
SELECT sequin_sync.create_consumer('e3', 'https://user:pw@api.sequin.io/v1/http-consumers/x', 't');
SELECT sequin_sync.create_consumer('e4', 'http://127.0.0.1:9/v1/http-consumers/x?a=1', 't');
SELECT sequin_sync.create_consumer('e5', 'https:///v1/http-consumers/x', 't');
SELECT sequin_sync.create_consumer('e6', 'https://api.sequin.io/v1/http consumers/x', 't');
SELECT sequin_sync.create_consumer('e7', NULL, 't');

-- tokens are never echoed
SELECT sequin_sync.create_consumer('t1', 'http://127.0.0.1:9/v1/http-consumers/x', '');
SELECT sequin_sync.create_consumer('t2', 'http://127.0.0.1:9/v1/http-consumers/x', 'tok en');
SELECT sequin_sync.create_consumer('t3', 'http://127.0.0.1:9/v1/http-consumers/x', E'tok\n');
SELECT sequin_sync.create_consumer('t4', 'http://127.0.0.1:9/v1/http-consumers/x', repeat('t', 4097));

-- batch_size, wait_for, workers
SELECT sequin_sync.create_consumer('b1', 'http://127.0.0.1:9/v1/http-consumers/x', 't', batch_size => 0);
SELECT sequin_sync.create_consumer('b2', 'http://127.0.0.1:9/v1/http-consumers/x', 't', batch_size => 10001);
SELECT sequin_sync.create_consumer('b3', 'http://127.0.0.1:9/v1/http-consumers/x', 't', batch_size => NULL);
SELECT sequin_sync.create_consumer('w1', 'http://127.0.0.1:9/v1/http-consumers/x', 't', wait_for => '-1 second');
SELECT sequin_sync.create_consumer('w2', 'http://127.0.0.1:9/v1/http-consumers/x', 't', wait_for => '5 minutes 1 second');
SELECT sequin_sync.create_consumer('w3', 'http://127.0.0.1:9/v1/http-consumers/x', 't', wait_for => '1 month');
SELECT sequin_sync.create_consumer('w4', 'http://127.0.0.1:9/v1/http-consumers/x', 't', wait_for => '0');
SELECT sequin_sync.create_consumer('k1', 'http://127.0.0.1:9/v1/http-consumers/x', 't', workers => 0);
SELECT sequin_sync.create_consumer('k2', 'http://127.0.0.1:9/v1/http-consumers/x', 't', workers => 65);
SELECT name, wait_for FROM sequin_sync.consumers WHERE name = 'w4';

-- a failed create leaves nothing behind
SELECT count(*) FROM sequin_sync.consumers;

-- alter: NULL leaves a setting as it is
SELECT sequin_sync.alter_consumer('stripe', batch_size => 500);
SELECT sequin_sync.alter_consumer('stripe', endpoint => 'http://localhost:9/v1/http-consumers/abc', workers => 3);
SELECT sequin_sync.alter_consumer('stripe', token => 'tok_new');
SELECT name, endpoint, batch_size, wait_for, workers, token FROM sequin_sync.consumers WHERE name = 'stripe';
SELECT sequin_sync.alter_consumer('stripe', batch_size => -1);
SELECT sequin_sync.alter_consumer('stripe', endpoint => 'gopher://x');
SELECT sequin_sync.alter_consumer('nope', batch_size => 5);
SELECT sequin_sync.alter_consumer(NULL);

-- pause and resume
SELECT sequin_sync.pause('stripe');
SELECT name, paused FROM sequin_sync.consumers ORDER BY name;
SELECT sequin_sync.resume('stripe');
SELECT name, paused FROM sequin_sync.consumers ORDER BY name;
SELECT sequin_sync.pause('nope');

-- drop
SELECT sequin_sync.drop_consumer('sf');
SELECT sequin_sync.drop_consumer('sf');
SELECT name FROM sequin_sync.consumers ORDER BY name;

-- the configuration tables are kept by pg_dump
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) AS t(oid) JOIN pg_class c ON c.oid = t.oid
WHERE e.extname = 'sequin_sync' ORDER BY 1;

DROP EXTENSION sequin_sync;
