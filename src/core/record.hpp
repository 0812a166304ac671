/*
 * record.hpp - the Postgres-free half of turning a record into row values.
 *
 * What can be decided from the parsed JSON alone lives here, so it is unit-tested and fuzzed
 * without a server (test/unit/record_test.cpp, test/unit/fuzz_record.cpp):
 *  - the standard fields every record needs (id, updated_idx, deleted, data, collection),
 *    with the exact error message a dead letter shows;
 *  - where a column's value is in a record (a dotted path, or a field of "data");
 *  - how a JSON value reaches a column: which text the type's input function gets, or that it
 *    is epoch seconds, jsonb built from the tree, an array literal, or a type mismatch.
 * The Postgres side (apply.cpp, convert.cpp) calls the input functions and raises the errors.
 *
 * Like json_doc.hpp: no Postgres headers, nothing here allocates, every function is noexcept.
 * A Postgres-side file includes this before postgres.h.
 */
#ifndef SEQUIN_SYNC_RECORD_HPP
#define SEQUIN_SYNC_RECORD_HPP

#ifdef POSTGRES_H
#error "record.hpp must stay free of Postgres headers"
#endif

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/convert_kind.hpp"
#include "core/json_doc.hpp"

namespace sequin_sync {

namespace record {

/* Why a record's standard fields are unusable; every one is SQLSTATE 22023 on the Postgres side. */
enum class FieldError : uint8_t {
	None,
	NotObject,			/* record is not a JSON object */
	NoId,				/* "id" absent or null */
	BadId,				/* "id" not a non-empty string, or holds \u0000 */
	NoUpdatedIdx,		/* "updated_idx" absent or null */
	BadUpdatedIdx,		/* "updated_idx" not an integer that fits int64 */
	BadDeleted,			/* "deleted" neither a boolean nor null */
	BadData,			/* "data" neither an object nor null */
	NoCollection,		/* neither "collection_id" nor "collection_slug" */
	BadCollection,		/* the collection is not a non-empty string without \u0000 */
};

/* The dead letter's message for an error ("" for None); static text. */
const char *FieldErrorMessage(FieldError err) noexcept;

/* A record's standard fields; the pointers point into the Document. */
struct Fields {
	const char *id = nullptr;		/* non-empty, no NUL byte, not NUL-terminated */
	uint32_t id_len = 0;
	int64_t updated_idx = 0;
	bool deleted = false;			/* false when absent or null */
	const json::Node *data = nullptr;	/* the "data" object; nullptr when absent or null */
	/*
	 * "collection_id", else "collection_slug" when that is absent or null.  Set whenever it is
	 * a non-empty string without NUL bytes, even when another field is invalid (a dead letter
	 * still names its collection); nullptr otherwise.
	 */
	const char *collection = nullptr;
	uint32_t collection_len = 0;
};

/*
 * Checks the standard fields of one record and fills *out.  The checks run in a fixed order
 * (object, collection captured, id, updated_idx, deleted, data, collection) and the first
 * failure is returned; on None every field of *out is valid.
 */
FieldError ValidateFields(const json::Document &doc, const json::Node *rec, Fields *out) noexcept;

/* A JSON integer that fits int64; false for non-numbers, fractions, exponents and overflow. */
bool ParseInt64(const json::Node *n, int64_t *out) noexcept;

/* The value at `path` (dotted, from the record root), else at `alt_path` (may be nullptr) when
 * the first is absent or null; nullptr when neither has one. */
const json::Node *FindPathSource(const json::Document &doc, const json::Node *rec, const char *path,
								 const char *alt_path) noexcept;

/* The member of the record's "data" object (nullptr: none) named `name`, exactly, or else the
 * last one equal to it ignoring ASCII case and underscores ("FirstName" for first_name). */
const json::Node *FindDataField(const json::Document &doc, const json::Node *data,
								std::string_view name) noexcept;

/* What the column's conversion does with one value. */
enum class Plan : uint8_t {
	Null,			/* SQL NULL (a domain's input function still sees it, for NOT NULL) */
	Text,			/* the input function on text/text_len: a string's bytes, a number's raw
					 * text, "true" or "false" */
	Serialize,		/* the input function on the value serialized as JSON */
	Epoch,			/* a number of Unix epoch seconds into a timestamp(tz)/date */
	JsonbTree,		/* an object or array straight into jsonb, no text round trip */
	JsonElements,	/* json[]/jsonb[]: an array literal of each element serialized */
	ArrayLiteral,	/* Document::ArrayLiteral, then the input function */
	Mismatch,		/* an object or array for a column that cannot hold one: the error */
};

/* The facts about a column that decide the plan (see MappedColumn). */
struct Target {
	ConvertKind convert = ConvertKind::Scalar;
	bool jsonb_tree = false;	/* a jsonb column (or domain) passed as a jsonb Datum */
	bool json_elements = false;	/* an array of json/jsonb */
	bool string_like = false;	/* type category S: objects and arrays stored as JSON text */
};

struct ValuePlan {
	Plan plan = Plan::Null;
	const char *text = nullptr;	/* Plan::Text: not NUL-terminated, may contain NUL bytes */
	size_t text_len = 0;
};

/* Decides how `value` (nullptr = absent) reaches a column. */
ValuePlan PlanValue(const json::Node *value, const Target &target) noexcept;

/* True when text holds a NUL byte, which no Postgres text value can store (\u0000). */
bool HasNul(const char *text, size_t len) noexcept;

/* The JSON kind as error messages name it: "null", "boolean", "number", ... */
const char *KindName(json::Kind kind) noexcept;

} /* namespace record */
} /* namespace sequin_sync */

#endif
