-- ALTER EXTENSION ... UPDATE from the first released version (0.1.0) keeps the configuration and
-- the data, and ends with exactly the objects of a fresh install of the current version.
CREATE EXTENSION sequin_sync VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'sequin_sync';

-- configuration and data made under 0.1.0
SELECT sequin_sync.create_consumer('legacy', 'http://127.0.0.1:9/v1/http-consumers/legacy', 'tok');
SELECT sequin_sync.pause('legacy');
CREATE TABLE legacy_customers (id text PRIMARY KEY, updated_idx bigint, email text, deleted boolean);
SELECT sequin_sync.map_collection('legacy', 'stripe:customer', 'legacy_customers', delete_mode => 'hard');
SELECT inserted, dead_lettered FROM sequin_sync.apply('legacy', '[
	{"id": "a", "collection_id": "stripe:customer", "updated_idx": 1, "data": {"email": "a@example.com"}},
	{"id": "b", "collection_id": "stripe:customer", "updated_idx": "7", "data": {}}]');

-- Everything that makes up the extension, as text: its objects, their definitions, privileges,
-- row-level security and what pg_dump keeps.
CREATE TEMP VIEW extension_shape AS
SELECT 'function ' || p.oid::regprocedure::text AS object,
	   concat_ws(' | ', pg_get_functiondef(p.oid), p.proacl::text, obj_description(p.oid, 'pg_proc')) AS definition
FROM pg_depend d JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'sequin_sync')
UNION ALL
SELECT c.relkind::text || ' ' || c.oid::regclass::text,
	   concat_ws(' | ', c.relrowsecurity, c.relforcerowsecurity, c.reloptions::text, c.relacl::text,
				 CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) END, obj_description(c.oid, 'pg_class'))
FROM pg_depend d JOIN pg_class c ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'sequin_sync')
UNION ALL
SELECT 'column ' || a.attrelid::regclass::text || '.' || a.attname,
	   concat_ws(' | ', format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attnum,
				 pg_get_expr(ad.adbin, ad.adrelid), a.attacl::text,
				 col_description(a.attrelid, a.attnum))
FROM pg_attribute a
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attrelid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_class'::regclass AND deptype = 'e'
						AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'sequin_sync'))
  AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint ' || conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'sequin_sync')
UNION ALL
SELECT 'index ' || indexrelid::regclass::text, pg_get_indexdef(indexrelid)
FROM pg_index WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'sequin_sync'))
UNION ALL
SELECT 'policy ' || polrelid::regclass::text || '.' || polname,
	   concat_ws(' | ', polcmd, polpermissive, polroles::regrole[]::text, pg_get_expr(polqual, polrelid),
				 pg_get_expr(polwithcheck, polrelid))
FROM pg_policy WHERE polrelid IN (SELECT oid FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'sequin_sync'))
UNION ALL
SELECT 'trigger ' || tgrelid::regclass::text || '.' || tgname, pg_get_triggerdef(oid)
FROM pg_trigger WHERE NOT tgisinternal
  AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'sequin_sync'))
UNION ALL
SELECT 'schema ' || nspname, concat_ws(' | ', nspowner::regrole::text, nspacl::text)
FROM pg_namespace WHERE nspname = 'sequin_sync'
UNION ALL
SELECT 'dumped ' || cfg::regclass::text, coalesce(cond, '')
FROM pg_extension, unnest(extconfig, extcondition) AS u(cfg, cond) WHERE extname = 'sequin_sync';

ALTER EXTENSION sequin_sync UPDATE;
SELECT extversion = (SELECT default_version FROM pg_available_extensions WHERE name = 'sequin_sync') AS current
FROM pg_extension WHERE extname = 'sequin_sync';

-- the configuration and the data are still there and still work
SELECT name, endpoint, paused FROM sequin_sync.consumers;
SELECT consumer, collection, target, delete_mode FROM sequin_sync.mappings;
SELECT * FROM legacy_customers ORDER BY id;
SELECT collection, error, attempts FROM sequin_sync.dead_letters;
SELECT inserted, updated FROM sequin_sync.apply('legacy', '[
	{"id": "a", "collection_id": "stripe:customer", "updated_idx": 2, "data": {"email": "a2@example.com"}},
	{"id": "c", "collection_id": "stripe:customer", "updated_idx": 1, "data": {}}]');
SELECT consumer, state FROM sequin_sync.status;

-- the upgraded extension has exactly the objects of a fresh install
CREATE TEMP TABLE upgraded AS SELECT * FROM extension_shape;
SELECT count(*) > 50 AS shape_is_complete FROM upgraded;
DROP EXTENSION sequin_sync;
CREATE EXTENSION sequin_sync;
SELECT 'only after upgrade' AS side, * FROM (SELECT * FROM upgraded EXCEPT SELECT * FROM extension_shape) x
UNION ALL
SELECT 'only in fresh install', * FROM (SELECT * FROM extension_shape EXCEPT SELECT * FROM upgraded) y
ORDER BY 1, 2;

DROP EXTENSION sequin_sync;
DROP TABLE legacy_customers;
