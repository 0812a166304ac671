-- apply(): the engine the worker uses, run synchronously.  Newest version wins, whatever the
-- order or duplication; the counts say what happened.
CREATE EXTENSION sequin_sync;
SELECT sequin_sync.create_consumer('stripe', 'http://127.0.0.1:9/v1/http-consumers/s', 't');

CREATE TABLE customers (
	id text PRIMARY KEY,
	upstream_id text,
	collection_id text,
	provider text,
	deleted boolean,
	updated_idx bigint,
	sync_id text,
	sync_external_id text,
	sync_metadata jsonb,
	inserted_at timestamptz,
	upstream_created_at timestamptz,
	upstream_updated_at timestamptz,
	email text,
	balance integer,
	created timestamptz,
	metadata jsonb,
	preferred_locales text[],
	plan_amount integer,
	notes text DEFAULT 'kept',
	data jsonb
);
SELECT sequin_sync.map_collection('stripe', 'stripe:customer', 'customers',
	columns => '{"plan_amount": "data.plan.amount", "notes": null}');

-- a record as Sequin sends it
SELECT * FROM sequin_sync.apply('stripe', '[{
	"id": "0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11", "upstream_id": "cus_PbY1", "collection_id": "stripe:customer",
	"provider": "stripe", "stream_id": "f0f7", "deleted": false, "updated_idx": 2745327036,
	"sync": {"id": "e6bd", "external_id": "org_42", "metadata": {"plan": "pro"}},
	"inserted_at": "2024-11-10T18:40:01.000000Z", "upstream_created_at": "2024-11-10T12:40:00.099999Z",
	"upstream_updated_at": "2024-11-10T18:40:00.099999Z",
	"data": {"id": "cus_PbY1", "email": "chani@example.com", "balance": -1250, "created": 1699999999,
			 "metadata": {"tier": "gold"}, "preferred_locales": ["en", "fr"], "plan": {"amount": 999}}}]');
SELECT id, upstream_id, collection_id, provider, deleted, updated_idx, sync_id, sync_external_id, sync_metadata,
	inserted_at, upstream_created_at, upstream_updated_at FROM customers;
SELECT email, balance, created, metadata, preferred_locales, plan_amount, notes, data->>'id' AS data_id FROM customers;

-- a newer version updates; every absent field becomes NULL (the row is the newest version)
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11", "collection_id": "stripe:customer",
	"updated_idx": 2745327040, "data": {"email": "chani.kynes@example.com"}}]');
SELECT updated_idx, email, balance, metadata, notes FROM customers;

-- an equal or older version is skipped: a redelivery never goes back in time
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11", "collection_id": "stripe:customer",
	"updated_idx": 2745327040, "data": {"email": "same version"}}]');
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11", "collection_id": "stripe:customer",
	"updated_idx": 2745327036, "data": {"email": "older"}}]');
SELECT updated_idx, email FROM customers;

-- the race of Sequin's upsert guide: A' applied by worker 2, then worker 1's late A
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "race", "collection_id": "stripe:customer", "updated_idx": 2, "data": {"email": "A prime"}}]');
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "race", "collection_id": "stripe:customer", "updated_idx": 1, "data": {"email": "A"}}]');
SELECT id, updated_idx, email FROM customers WHERE id = 'race';

-- the same id several times in one call: only the newest counts, in any order
SELECT * FROM sequin_sync.apply('stripe', '[
	{"id": "dup", "collection_id": "stripe:customer", "updated_idx": 3, "data": {"email": "v3"}},
	{"id": "dup", "collection_id": "stripe:customer", "updated_idx": 5, "data": {"email": "v5"}},
	{"id": "dup", "collection_id": "stripe:customer", "updated_idx": 4, "data": {"email": "v4"}},
	{"id": "dup", "collection_id": "stripe:customer", "updated_idx": 5, "data": {"email": "v5 again"}},
	{"id": "dup", "collection_id": "stripe:customer", "updated_idx": 1, "data": {"email": "v1"}}]');
SELECT id, updated_idx, email FROM customers WHERE id = 'dup';

-- many ids, shuffled versions, duplicated: the table ends with the newest of each
SELECT * FROM sequin_sync.apply('stripe', (
	SELECT jsonb_agg(jsonb_build_object('id', 'bulk-' || i, 'collection_id', 'stripe:customer',
		'updated_idx', v, 'data', jsonb_build_object('balance', v * 10)) ORDER BY md5(i::text || v::text || k::text))
	FROM generate_series(1, 300) i, generate_series(1, 4) v, generate_series(1, 2) k));
SELECT count(*), min(updated_idx), max(updated_idx), bool_and(balance = updated_idx * 10) FROM customers WHERE id LIKE 'bulk-%';

-- collection_slug and a flat sync_id are accepted; created_at stands in for inserted_at
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "slug", "collection_slug": "stripe:customer", "updated_idx": 1,
	"sync_id": "flat-sync", "created_at": "2024-01-02T03:04:05Z", "data": {}}]');
SELECT id, collection_id, sync_id, inserted_at FROM customers WHERE id = 'slug';

-- field names match ignoring case and underscores (Salesforce's PascalCase)
CREATE TABLE contacts (id text PRIMARY KEY, updated_idx bigint, deleted boolean, first_name text,
	last_name text, "Title" text, has_opted_out_of_email boolean, annual_revenue__c numeric, mailing_city text);
SELECT sequin_sync.map_collection('stripe', 'salesforce:contact', 'contacts',
	columns => '{"mailing_city": "data.MailingAddress.city"}');
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "aa9a", "collection_id": "salesforce:contact", "updated_idx": 88211,
	"data": {"FirstName": "Paul", "LastName": "Atreides", "Title": "Duke", "HasOptedOutOfEmail": false,
			 "AnnualRevenue__c": 12345678901234567890, "MailingAddress": {"city": "Arrakeen"}}}]');
SELECT * FROM contacts;

-- an exact name beats a normalized one
CREATE TABLE exact (id text PRIMARY KEY, updated_idx bigint, deleted boolean, first_name text);
SELECT sequin_sync.map_collection('stripe', 'exact', 'exact');
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "e", "collection_id": "exact", "updated_idx": 1,
	"data": {"FirstName": "pascal", "first_name": "exact"}}]');
SELECT first_name FROM exact;

-- generated and identity columns are left to Postgres
CREATE TABLE gen (id text PRIMARY KEY, updated_idx bigint, deleted boolean, n int GENERATED ALWAYS AS IDENTITY,
	twice bigint GENERATED ALWAYS AS (updated_idx * 2) STORED);
SELECT sequin_sync.map_collection('stripe', 'gen', 'gen');
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "g", "collection_id": "gen", "updated_idx": 21, "data": {"n": 5, "twice": 1}}]');
SELECT * FROM gen;

-- two collections in one call, each to its own table
SELECT * FROM sequin_sync.apply('stripe', '[
	{"id": "two-1", "collection_id": "exact", "updated_idx": 1, "data": {"first_name": "one"}},
	{"id": "two-2", "collection_id": "gen", "updated_idx": 2, "data": {}}]');
SELECT id FROM exact ORDER BY id;
SELECT id FROM gen ORDER BY id;

-- an empty array does nothing
SELECT * FROM sequin_sync.apply('stripe', '[]');

-- arguments
SELECT * FROM sequin_sync.apply('stripe', '{"id": "x"}');
SELECT * FROM sequin_sync.apply('stripe', '5');
SELECT * FROM sequin_sync.apply('stripe', NULL);
SELECT * FROM sequin_sync.apply('nope', '[]');

-- apply runs in the caller's transaction
BEGIN;
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "rolled-back", "collection_id": "stripe:customer", "updated_idx": 1, "data": {}}]');
ROLLBACK;
SELECT count(*) FROM customers WHERE id = 'rolled-back';

-- odd identifiers
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Stripe ""Customers""" ("id" text PRIMARY KEY, "updated_idx" bigint, "deleted" boolean,
	"Email Address" text, "select" text);
SELECT sequin_sync.map_collection('stripe', 'odd', '"Odd Schema"."Stripe ""Customers"""',
	columns => '{"Email Address": "data.email"}');
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "o", "collection_id": "odd", "updated_idx": 1, "data": {"email": "e@x", "select": "s"}}]');
SELECT * FROM sequin_sync.apply('stripe', '[{"id": "o", "collection_id": "odd", "updated_idx": 2, "data": {"email": "e2@x", "select": "s2"}}]');
SELECT * FROM "Odd Schema"."Stripe ""Customers""";

SELECT count(*) AS dead_letters FROM sequin_sync.dead_letters;

DROP EXTENSION sequin_sync;
DROP SCHEMA "Odd Schema" CASCADE;
DROP TABLE customers, contacts, exact, gen;
