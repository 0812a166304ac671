-- Converting JSON values: each column type's own input function, no digit lost, epoch seconds
-- for times, arrays, json.  A value that cannot be stored parks its record, not the batch.
CREATE EXTENSION sequin_sync;
SELECT sequin_sync.create_consumer('c', 'http://127.0.0.1:9/v1/http-consumers/c', 't');
SET timezone = 'UTC';

CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TABLE typed (
	id text PRIMARY KEY, updated_idx bigint, deleted boolean,
	t text, vc varchar(5), i integer, bi bigint, small smallint, n numeric, n2 numeric(6,2), f float8, b boolean,
	ts timestamptz, tsn timestamp, d date, j json, jb jsonb, tags text[], nums int[], grid int[], jbs jsonb[],
	u uuid, m mood, p positive, obj_text text
);
SELECT sequin_sync.map_collection('c', 'typed', 'typed');

-- every kind of value that fits
SELECT * FROM sequin_sync.apply('c', '[{"id": "ok", "collection_id": "typed", "updated_idx": 1, "data": {
	"t": "héllo ✓", "vc": "five5", "i": -2147483648, "bi": 9223372036854775807, "small": 7,
	"n": 123456789012345678901234567890.123456789012345678901, "n2": 1234.5, "f": 1.5e300, "b": true,
	"ts": 1700000000, "tsn": 1700000000.25, "d": 1700000000, "j": {"b": 1, "a": [1, 2]}, "jb": [1, "two", null],
	"tags": ["a", "b,c", "d\"e", null], "nums": [1, 2, 3], "grid": [[1, 2], [3, 4]], "jbs": [{"x": 1}, [2]],
	"u": "0F0C9A1E-2B7B-4C1E-9A5E-6A7F1F0D9B11", "m": "happy", "p": 5, "obj_text": {"k": "v"}}}]');
SELECT t, vc, i, bi, small, n, n2, f, b FROM typed;
SELECT ts, tsn, d, j, jb, tags, nums, grid, jbs, u, m, p, obj_text FROM typed;

-- strings are parsed as usual: ISO times, numbers in strings
SELECT * FROM sequin_sync.apply('c', '[{"id": "strings", "collection_id": "typed", "updated_idx": 1, "data": {
	"ts": "2024-11-10T18:40:00.099999Z", "tsn": "2024-11-10 18:40:00", "d": "2024-11-10", "i": "42", "b": "yes",
	"jb": "just a string", "n": "1e-3", "t": 17, "obj_text": [1, 2]}}]');
SELECT ts, tsn, d, i, b, jb, n, t, obj_text FROM typed WHERE id = 'strings';

-- nulls and absent fields are NULL
SELECT * FROM sequin_sync.apply('c', '[{"id": "nulls", "collection_id": "typed", "updated_idx": 1, "data": {"t": null}}]');
SELECT count(*) FROM typed WHERE id = 'nulls' AND t IS NULL AND i IS NULL AND jb IS NULL;

-- values that cannot be stored: each parks its own record, with the column in the error
SELECT * FROM sequin_sync.apply('c', '[
	{"id": "bad-int", "collection_id": "typed", "updated_idx": 1, "data": {"i": "abc"}},
	{"id": "bad-fraction", "collection_id": "typed", "updated_idx": 1, "data": {"i": 1.5}},
	{"id": "bad-range", "collection_id": "typed", "updated_idx": 1, "data": {"i": 2147483648}},
	{"id": "bad-small", "collection_id": "typed", "updated_idx": 1, "data": {"small": 99999}},
	{"id": "bad-varchar", "collection_id": "typed", "updated_idx": 1, "data": {"vc": "toolong"}},
	{"id": "bad-numeric", "collection_id": "typed", "updated_idx": 1, "data": {"n2": 123456.7}},
	{"id": "bad-object", "collection_id": "typed", "updated_idx": 1, "data": {"i": {"v": 1}}},
	{"id": "bad-array", "collection_id": "typed", "updated_idx": 1, "data": {"b": [true]}},
	{"id": "bad-ragged", "collection_id": "typed", "updated_idx": 1, "data": {"grid": [[1, 2], [3]]}},
	{"id": "bad-array-elem", "collection_id": "typed", "updated_idx": 1, "data": {"nums": [1, "x"]}},
	{"id": "bad-bool", "collection_id": "typed", "updated_idx": 1, "data": {"b": "maybe"}},
	{"id": "bad-time", "collection_id": "typed", "updated_idx": 1, "data": {"ts": "yesterday-ish"}},
	{"id": "bad-epoch", "collection_id": "typed", "updated_idx": 1, "data": {"ts": 1e300}},
	{"id": "bad-uuid", "collection_id": "typed", "updated_idx": 1, "data": {"u": "nope"}},
	{"id": "bad-enum", "collection_id": "typed", "updated_idx": 1, "data": {"m": "angry"}},
	{"id": "bad-domain", "collection_id": "typed", "updated_idx": 1, "data": {"p": -1}},
	{"id": "good-among-bad", "collection_id": "typed", "updated_idx": 1, "data": {"i": 1}}]');
SELECT id FROM typed ORDER BY id;
SELECT record->>'id' AS id, error, sqlstate FROM sequin_sync.dead_letters ORDER BY id;

-- a uuid key: ids match whatever their case
CREATE TABLE by_uuid (id uuid PRIMARY KEY, updated_idx numeric, deleted boolean);
SELECT sequin_sync.map_collection('c', 'by_uuid', 'by_uuid');
SELECT * FROM sequin_sync.apply('c', '[{"id": "0F0C9A1E-2B7B-4C1E-9A5E-6A7F1F0D9B11", "collection_id": "by_uuid", "updated_idx": 1, "data": {}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11", "collection_id": "by_uuid", "updated_idx": 2, "data": {}}]');
SELECT * FROM sequin_sync.apply('c', '[{"id": "not-a-uuid", "collection_id": "by_uuid", "updated_idx": 2, "data": {}}]');
SELECT * FROM by_uuid;

DROP EXTENSION sequin_sync;
DROP TABLE typed, by_uuid;
DROP TYPE mood;
DROP DOMAIN positive;
