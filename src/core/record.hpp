/*
 * record.hpp - the Postgres-free half of turning a record into row values.
 *
 * What can be decided from the parsed JSON alone lives here, so it is unit-tested and fuzzed
 * without a server (test/unit/record_test.cpp, test/unit/fuzz_record.cpp):
 *  - the standard fields every record needs (id, updated_idx, deleted, data, collection),
 *    with the exact error message a dead letter shows;
 *  - where a column's value is in a record (a dotted path, or a field of "data");
 *  - how a JSON value reaches a column: which text the type's input function gets, or that it
 *    is epoch seconds, jsonb built from the tree, an array literal, or a type mismatch;
 *  - the Postgres array literals themselves (ArrayLiteralWriter).
 * The Postgres side (apply.cpp, convert.cpp) calls the input functions and raises the errors.
 *
 * Like json_doc.hpp: no Postgres headers, every function is noexcept, and nothing allocates
 * except ArrayLiteralWriter, which owns its buffers.  A Postgres-side file includes this before
 * postgres.h and holds an ArrayLiteralWriter only through a pointer (see apply.cpp).
 */
#ifndef SEQUIN_SYNC_RECORD_HPP
#define SEQUIN_SYNC_RECORD_HPP

#ifdef POSTGRES_H
#error "record.hpp must stay free of Postgres headers"
#endif

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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
	NoData,				/* no "data" object (absent or null) in a record that is not deleted */
};

/* The dead letter's message for an error ("" for None); static text. */
const char *FieldErrorMessage(FieldError err) noexcept;

/* A record's standard fields; the pointers point into the Document. */
struct Fields {
	const char *id = nullptr;		/* non-empty, no NUL byte, not NUL-terminated */
	uint32_t id_len = 0;
	int64_t updated_idx = 0;
	bool deleted = false;			/* false when absent or null */
	const json::Node *data = nullptr;	/* the "data" object; nullptr when absent or null, which
										 * only a deleted record may be */
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
 * (object, collection captured, id, updated_idx, deleted, data, collection, data present unless
 * deleted) and the first failure is returned; on None every field of *out is valid.
 */
FieldError ValidateFields(const json::Document &doc, const json::Node *rec, Fields *out) noexcept;

/* The value at `path` (dotted, from the record root), else at `alt_path` (may be nullptr) when
 * the first is absent or null; nullptr when neither has one. */
const json::Node *FindPathSource(const json::Document &doc, const json::Node *rec, const char *path,
								 const char *alt_path) noexcept;

/*
 * True when two names are equal once ASCII letters are lower-cased and underscores dropped:
 * "FirstName" matches "first_name".  How a column finds its data field when no field has the
 * column's exact name.
 */
bool NormalizedEquals(std::string_view a, std::string_view b) noexcept;

/* The member of the record's "data" object (nullptr: none, or not an object) named `name`,
 * exactly, or else the last one equal to it ignoring ASCII case and underscores ("FirstName"
 * for first_name).  For many names per record, FieldMatcher does the same in one walk. */
const json::Node *FindDataField(const json::Document &doc, const json::Node *data,
								std::string_view name) noexcept;

/*
 * FindDataField for all of a mapping's columns at once: built once per mapping, it finds every
 * column's field with one walk over a record's "data" members, so a record costs O(its fields)
 * instead of O(fields x columns) name comparisons.  Each column name is normalised (ASCII lower
 * case, underscores dropped) once, into a hash table; a member's key is hashed in one pass and
 * compared only with a name of the same hash.  The result is exactly FindDataField's: the last
 * member with the column's exact name, else the last one equal to it ignoring case and
 * underscores.  Owns its tables: Postgres-side code holds it through a pointer (mapping.cpp).
 */
class FieldMatcher {
public:
	/*
	 * Takes the column names (copied; duplicates and empty names allowed), slot i for names[i].
	 * Returns false when memory runs out; the matcher then has no names.
	 */
	bool Build(const std::string_view *names, size_t count) noexcept;

	size_t Size() const noexcept { return slots_.size(); }

	/*
	 * out[i] = FindDataField(doc, data, names[i]) for every slot i (out has Size() entries):
	 * all nullptr when data is nullptr or not an object of doc.
	 */
	void Match(const json::Document &doc, const json::Node *data, const json::Node **out) const noexcept;

private:
	struct Slot {
		uint32_t name_off;		/* the name as given, in names_ */
		uint32_t name_len;
		uint32_t next_same;		/* the next slot with the same normalised name; kNone ends */
	};
	struct Group {				/* one distinct normalised name */
		uint64_t hash;
		uint32_t norm_off;		/* the normalised name, in names_ */
		uint32_t norm_len;
		uint32_t first_slot;
	};
	static constexpr uint32_t kNone = UINT32_MAX;

	void Clear() noexcept;
	std::string_view Name(uint32_t slot) const noexcept
	{
		return std::string_view(names_.data() + slots_[slot].name_off, slots_[slot].name_len);
	}

	std::string names_;				/* every name, then every normalised name */
	std::vector<Slot> slots_;
	std::vector<Group> groups_;
	std::vector<uint32_t> table_;	/* open addressing: group index + 1, 0 = empty */
	uint64_t mask_ = 0;
};

/* What the column's conversion does with one value. */
enum class Plan : uint8_t {
	Null,			/* SQL NULL (a domain's input function still sees it, for NOT NULL) */
	Text,			/* the input function on text/text_len: a string's bytes, a number's raw
					 * text, "true" or "false" */
	Serialize,		/* the input function on the value serialized as JSON */
	Epoch,			/* a number of Unix epoch seconds into a timestamp(tz)/date */
	JsonbTree,		/* an object or array straight into jsonb, no text round trip */
	JsonElements,	/* json[]/jsonb[]: an array literal of each element serialized */
	ArrayLiteral,	/* ArrayLiteralWriter::ArrayLiteral, then the input function */
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

/*
 * Postgres array literals for JSON arrays, the text an array column's input function takes.
 * Keeps its buffer (and the Document's scratch buffer) for the next value: the result stays
 * valid until the next call on this writer or the next Serialize/Parse of the document.  It is
 * NUL-terminated (*out_len excludes the terminator).  Both return false when memory runs out
 * or `array` is not an array of `doc`.
 */
class ArrayLiteralWriter {
public:
	/*
	 * ["a", null, 1, true, {"x": 1}, ["b"]] -> {"a",NULL,"1","true","{\"x\":1}",{"b"}}: nested
	 * arrays become sub-arrays (a multi-dimensional array), objects their compact JSON text,
	 * every other element quoted and escaped; [] -> {}.  A string element's bytes are copied as
	 * they are, so a string holding a NUL byte puts a NUL into the literal: a caller handing the
	 * literal to a cstring input function must check for that, as it must for any string.
	 * Iterative: nesting depth costs heap, never stack.
	 */
	bool ArrayLiteral(json::Document &doc, const json::Node *array, const char **out, size_t *out_len) noexcept;

	/*
	 * For json[] and jsonb[]: every element is one JSON value, written as its compact JSON text
	 * (nested arrays included, where ArrayLiteral would make a sub-array); null is NULL.
	 */
	bool JsonElementsLiteral(json::Document &doc, const json::Node *array, const char **out,
							 size_t *out_len) noexcept;

private:
	static bool Start(const json::Document &doc, const json::Node *array, const char **out, size_t *out_len) noexcept;
	void AppendQuoted(const char *text, size_t len);

	std::string out_;
	std::vector<const json::Node *> stack_;
};

/* True when text holds a NUL byte, which no Postgres text value can store (\u0000). */
bool HasNul(const char *text, size_t len) noexcept;

/* The JSON kind as error messages name it: "null", "boolean", "number", ... */
const char *KindName(json::Kind kind) noexcept;

} /* namespace record */
} /* namespace sequin_sync */

#endif
