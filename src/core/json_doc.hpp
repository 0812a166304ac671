/*
 * json_doc.hpp - the record decoder's document: RapidJSON parsed into a flat node arena.
 *
 * This file and json_doc.cpp never include Postgres headers: they are unit-tested and fuzzed
 * alone (test/unit/).  Postgres code may hold a Document only through a pointer whose lifetime
 * is tied to a memory context (see apply.cpp), because a Postgres error longjmps over C++ frames.
 *
 * Why our own node arena instead of rapidjson::Document:
 *  - numbers keep their raw text, so 12345678901234567890 or 1.000000000000000000001 reach a
 *    numeric column with every digit (the raw text goes to the column type's input function);
 *  - strings and numbers point into the caller's buffer (in-situ parsing): no copies;
 *  - parsing is iterative (kParseIterativeFlag) and so is everything here: JSON nested 100,000
 *    levels deep cannot overflow the stack.
 *
 * Every member function is noexcept: no C++ exception can leave this module.
 */
#ifndef SEQUIN_SYNC_JSON_DOC_HPP
#define SEQUIN_SYNC_JSON_DOC_HPP

#ifdef POSTGRES_H
#error "json_doc.hpp must stay free of Postgres headers"
#endif

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace sequin_sync {
namespace json {

enum class Kind : uint8_t { Null, False, True, Number, String, Array, Object };

/*
 * One JSON value.  Children of an array or object are linked through `next`; index 0 is
 * never a child (it is the root), so 0 means "none".
 */
struct Node {
	Kind kind = Kind::Null;
	uint32_t len = 0;        /* String: decoded byte length (may contain NUL bytes); Number: raw
	                          * text length; Array/Object: number of children */
	const char *str = nullptr; /* String: decoded UTF-8 (not NUL-terminated); Number: raw text
	                            * exactly as in the input, e.g. "-1.50e3" */
	uint32_t first = 0;      /* Array/Object: index of the first child, 0 if empty */
	uint32_t next = 0;       /* index of the next sibling, 0 if last */
	const char *key = nullptr; /* when the parent is an object: the member's decoded key */
	uint32_t key_len = 0;

	std::string_view Str() const noexcept { return std::string_view(str, len); }
	std::string_view Key() const noexcept { return std::string_view(key, key_len); }
	bool IsNull() const noexcept { return kind == Kind::Null; }
	bool IsBool() const noexcept { return kind == Kind::True || kind == Kind::False; }
	bool IsString() const noexcept { return kind == Kind::String; }
	bool IsNumber() const noexcept { return kind == Kind::Number; }
	bool IsObject() const noexcept { return kind == Kind::Object; }
	bool IsArray() const noexcept { return kind == Kind::Array; }
	/* Number whose raw text is an integer: optional '-', digits, no fraction or exponent. */
	bool IsIntegerText() const noexcept;
};

class Document {
public:
	Document() noexcept = default;
	Document(const Document &) = delete;
	Document &operator=(const Document &) = delete;

	/*
	 * Parse buf[0, len) in place: the buffer is modified and must outlive the Document.
	 * Rejects invalid UTF-8, trailing garbage, NaN/Infinity, and an empty input.  A UTF-8
	 * byte-order mark at the start is skipped.  Duplicate keys are kept (Find returns the last,
	 * as jsonb does).  Returns false on error; then ErrorMessage() says what was wrong, in
	 * lower case without a trailing period (e.g. "invalid value"), and ErrorOffset() where
	 * (a byte offset into buf, the byte-order mark included).
	 * A Document can be re-used: Parse resets it.
	 *
	 * The buffer needs no NUL terminator (nothing at buf[len] is read or written); a raw NUL
	 * byte inside it is an error, as is a \u escape that decodes to a lone UTF-16 surrogate
	 * (Postgres rejects both).  RapidJSON 1.1 still computes a double while it scans a number
	 * and rejects one it cannot represent, even with numbers kept as text; such numbers (300+
	 * characters, or an exponent of 300 or more) are set aside before parsing and keep their
	 * exact text, so one of them cannot make a whole reply unparseable.
	 */
	bool Parse(char *buf, size_t len) noexcept;

	const char *ErrorMessage() const noexcept { return error_.c_str(); }
	size_t ErrorOffset() const noexcept { return error_offset_; }

	/* The root value; nullptr unless the last Parse succeeded.  The accessors below also
	 * return nullptr for a null node or one that does not belong to this document. */
	const Node *Root() const noexcept;
	/* First child of an array or object, nullptr if none (or not a container). */
	const Node *First(const Node *n) const noexcept;
	/* Next sibling, nullptr if last. */
	const Node *Next(const Node *n) const noexcept;
	/* Object member by key (last one wins for duplicates); nullptr if absent or not an object. */
	const Node *Find(const Node *obj, std::string_view key) const noexcept;
	/* Follows a dotted path of object keys, e.g. "data.plan.amount"; nullptr where any step
	 * is absent or not an object. */
	const Node *FindPath(const Node *obj, std::string_view dotted_path) const noexcept;

	/*
	 * Serialize a value back to compact JSON text (strings re-escaped: \" \\ \n \t \r \b \f,
	 * other control characters and NUL as \u00xx, UTF-8 kept as is; numbers as their raw text;
	 * members in input order, duplicates kept).  The result lives in a scratch buffer owned by
	 * the Document and stays valid until the next Serialize, ArrayLiteral or Parse call; it is
	 * NUL-terminated (*out_len excludes the terminator).  Returns false when memory runs out or
	 * when `n` is not a node of this document.
	 */
	bool Serialize(const Node *n, const char **out, size_t *out_len) noexcept;

	/*
	 * Postgres array literal for a JSON array, for the input function of an array column:
	 * ["a", null, 1, true, {"x": 1}, ["b"]] -> {"a",NULL,"1","true","{\"x\":1}",{"b"}}
	 * (nested arrays become sub-arrays, objects their compact JSON text, every other element
	 * quoted and escaped; [] -> {}).  A string element's bytes are copied as they are, so a
	 * string holding a NUL byte puts a NUL into the literal: a caller handing the literal to a
	 * cstring input function must check for that, as it must for any string value.  Same buffer
	 * rules as Serialize.  Returns false when memory runs out or `array` is not an array of
	 * this document.
	 */
	bool ArrayLiteral(const Node *array, const char **out, size_t *out_len) noexcept;

	size_t NodeCount() const noexcept { return nodes_.size(); }

private:
	friend class DocumentBuilder;
	bool Owns(const Node *n) const noexcept;
	void SetError(const char *message, size_t offset) noexcept;
	template <class Out> void WriteJson(uint32_t start, Out &out);

	std::vector<Node> nodes_;
	std::string scratch_;
	std::string error_;
	size_t error_offset_ = 0;
	/* explicit stacks (node indices) so that nothing here recurses; kept to reuse capacity */
	std::vector<uint32_t> build_stack_; /* Parse: (open container, its last child) pairs */
	/*
	 * Numbers RapidJSON would reject as too big for a double (300+ characters, or an exponent
	 * of 300 or more): their text is kept here and they are blanked to "0" in the buffer before
	 * parsing, so one such value in a record cannot make the whole reply unparseable.  A deque:
	 * the strings never move, so nodes may point into them.
	 */
	std::deque<std::pair<size_t, std::string>> big_numbers_;
	size_t next_big_number_ = 0;
	const char *base_for_offsets_ = nullptr;
	void SetAsideBigNumbers(char *begin, size_t len);
	std::vector<uint32_t> walk_stack_;  /* Serialize: open containers */
	std::vector<uint32_t> array_stack_; /* ArrayLiteral: open (sub-)arrays */
};

/*
 * True when two names are equal once ASCII letters are lower-cased and underscores dropped:
 * "FirstName" matches "first_name".  Used to match a column to a data field when no field
 * has the column's exact name.
 */
bool NormalizedEquals(std::string_view a, std::string_view b) noexcept;

/*
 * Append `text` to *out as a JSON string literal (quotes included, escaped like Serialize).
 * For building request bodies (the ack/nack body) without a second escaping routine.
 * Returns false when memory runs out (*out may then hold part of the literal).
 */
bool AppendJsonString(std::string *out, std::string_view text) noexcept;

} /* namespace json */
} /* namespace sequin_sync */

#endif
