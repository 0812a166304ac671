-- Nothing is usable by PUBLIC; a role sees and changes only its own consumers; records are
-- applied with the privileges of the role that mapped the collection; no role reads a token.
CREATE EXTENSION sequin_sync;
CREATE ROLE regress_alice LOGIN IN ROLE sequin_sync_admin;
CREATE ROLE regress_bob LOGIN IN ROLE sequin_sync_admin;
CREATE ROLE regress_mallory LOGIN;
CREATE TABLE alice_items (id text PRIMARY KEY, updated_idx bigint, deleted boolean, name text);
ALTER TABLE alice_items OWNER TO regress_alice;
CREATE TABLE bob_items (id text PRIMARY KEY, updated_idx bigint, deleted boolean, name text);
ALTER TABLE bob_items OWNER TO regress_bob;

-- a role without sequin_sync_admin can do nothing
SET ROLE regress_mallory;
SELECT sequin_sync.create_consumer('m', 'http://127.0.0.1:9/v1/http-consumers/m', 't');
SELECT * FROM sequin_sync.consumers;
SELECT * FROM sequin_sync.apply('m', '[]');
RESET ROLE;

-- alice creates a consumer and maps her table
SET ROLE regress_alice;
SELECT sequin_sync.create_consumer('alice', 'http://127.0.0.1:9/v1/http-consumers/a', 'alice_secret_token');
SELECT sequin_sync.map_collection('alice', 'items', 'alice_items');
-- she cannot map a table she could not write herself
SELECT sequin_sync.map_collection('alice', 'bob', 'bob_items');
-- she sees her consumer, never its token, and its status
SELECT name, owner FROM sequin_sync.consumers;
SELECT consumer, received FROM sequin_sync.status;
SELECT token FROM sequin_sync.consumers;
SELECT * FROM sequin_sync.consumers;
-- and cannot write the configuration tables around the functions
UPDATE sequin_sync.consumers SET batch_size = 1;
INSERT INTO sequin_sync.mappings VALUES ('alice', 'x', 'bob_items', 'soft', '{}', 'regress_alice');
DELETE FROM sequin_sync.tombstones;
SELECT * FROM sequin_sync.apply('alice', '[{"id": "a1", "collection_id": "items", "updated_idx": 1, "data": {"name": "mine"}}]');
RESET ROLE;

-- bob sees nothing of alice's and cannot touch it
SET ROLE regress_bob;
SELECT name FROM sequin_sync.consumers;
SELECT collection FROM sequin_sync.mappings;
SELECT consumer FROM sequin_sync.status;
SELECT sequin_sync.alter_consumer('alice', batch_size => 1);
SELECT sequin_sync.pause('alice');
SELECT sequin_sync.drop_consumer('alice');
SELECT sequin_sync.map_collection('alice', 'mine', 'bob_items');
SELECT sequin_sync.unmap_collection('alice', 'items');
SELECT * FROM sequin_sync.apply('alice', '[]');
SELECT sequin_sync.retry_dead_letters('alice');
-- retry without a name only touches bob's own
SELECT sequin_sync.retry_dead_letters();
RESET ROLE;

-- records are written as the mapping's owner: losing a privilege parks records with the reason
REVOKE INSERT ON alice_items FROM regress_alice;
SET ROLE regress_alice;
SELECT * FROM sequin_sync.apply('alice', '[{"id": "a2", "collection_id": "items", "updated_idx": 1, "data": {"name": "blocked"}}]');
SELECT record->>'id' AS id, error, sqlstate FROM sequin_sync.dead_letters;
RESET ROLE;
GRANT INSERT ON alice_items TO regress_alice;
SET ROLE regress_alice;
SELECT sequin_sync.retry_dead_letters('alice');
SELECT id, name FROM alice_items ORDER BY id;
-- she may discard her own dead letters
SELECT * FROM sequin_sync.apply('alice', '[{"id": "a3", "collection_id": "nope", "updated_idx": 1, "data": {}}]');
DELETE FROM sequin_sync.dead_letters WHERE collection = 'nope';
SELECT count(*) FROM sequin_sync.dead_letters;
RESET ROLE;

-- row-level security on the target applies to the mapping's owner
CREATE TABLE shared_items (id text PRIMARY KEY, updated_idx bigint, deleted boolean, name text, tenant text);
GRANT SELECT, INSERT, UPDATE ON shared_items TO regress_alice;
ALTER TABLE shared_items ENABLE ROW LEVEL SECURITY;
CREATE POLICY alice_tenant ON shared_items TO regress_alice USING (tenant = 'alice') WITH CHECK (tenant = 'alice');
SET ROLE regress_alice;
SELECT sequin_sync.map_collection('alice', 'shared', 'shared_items');
SELECT * FROM sequin_sync.apply('alice', '[
	{"id": "s1", "collection_id": "shared", "updated_idx": 1, "data": {"name": "ok", "tenant": "alice"}},
	{"id": "s2", "collection_id": "shared", "updated_idx": 1, "data": {"name": "not hers", "tenant": "bob"}}]');
SELECT record->>'id' AS id, error, sqlstate FROM sequin_sync.dead_letters;
RESET ROLE;
SELECT id, tenant FROM shared_items;

-- a superuser sees everything, the token included
SELECT name, owner, token FROM sequin_sync.consumers ORDER BY name;

-- a search_path with look-alike functions changes nothing
CREATE SCHEMA evil;
CREATE FUNCTION evil.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql AS 'SELECT NULL::text';
SET search_path = evil, public;
SELECT * FROM sequin_sync.apply('alice', '[{"id": "a4", "collection_id": "items", "updated_idx": 1, "data": {"name": "safe"}}]');
RESET search_path;
SELECT id, name FROM alice_items ORDER BY id;
DROP SCHEMA evil CASCADE;

-- dropping the role that made a mapping parks its records with a clear error; mapping again fixes it
CREATE ROLE regress_carol IN ROLE sequin_sync_admin;
CREATE TABLE carol_items (id text PRIMARY KEY, updated_idx bigint, deleted boolean);
ALTER TABLE carol_items OWNER TO regress_carol;
SET ROLE regress_carol;
SELECT sequin_sync.create_consumer('carol', 'http://127.0.0.1:9/v1/http-consumers/c', 't');
SELECT sequin_sync.map_collection('carol', 'items', 'carol_items');
RESET ROLE;
ALTER TABLE carol_items OWNER TO regress_alice;
DROP ROLE regress_carol;
SELECT * FROM sequin_sync.apply('carol', '[{"id": "c1", "collection_id": "items", "updated_idx": 1, "data": {}}]');
SELECT regexp_replace(error, 'OID \d+', 'OID n') AS error FROM sequin_sync.dead_letters WHERE consumer = 'carol';
SELECT sequin_sync.map_collection('carol', 'items', 'carol_items');
SELECT sequin_sync.retry_dead_letters('carol');
SELECT id FROM carol_items;

DROP EXTENSION sequin_sync;
DROP TABLE alice_items, bob_items, shared_items, carol_items;
DROP ROLE regress_alice, regress_bob, regress_mallory;
