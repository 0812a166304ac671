/*
 * json_doc.hpp - the JSON decoder: RapidJSON parsed into a flat node arena, and the compact
 * JSON writer over it.  What a record means (its fields, array literals for columns) is the
 * record layer's (record.hpp); what RapidJSON 1.1 needed changing is in rapidjson_patches.hpp.
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
#include <utility>
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

/*
 * A string the parse accepted although it is not Unicode text: it held a byte that is not
 * UTF-8, or a \u escape of a UTF-16 surrogate without its pair.  Its text in the document was
 * made valid (see Document::Parse); the caller decides what the string costs.
 */
struct BadString {
	uint32_t node = 0;			/* the string's node; for a key, its member's node */
	size_t offset = 0;			/* the first bad byte or escape, from the start of the input */
	const char *message = "";	/* "invalid UTF-8 in string" or
								 * "invalid unicode surrogate pair in string" */
};

class Document {
public:
	Document() noexcept = default;
	Document(const Document &) = delete;
	Document &operator=(const Document &) = delete;

	/*
	 * Parse buf[0, len) in place: the buffer is modified and must outlive the Document.
	 * Rejects trailing garbage, NaN/Infinity, and an empty input.  A UTF-8 byte-order mark at
	 * the start is skipped.  Duplicate keys are kept (Find returns the last, as jsonb does).
	 * Returns false on error; then ErrorMessage() says what was wrong, in lower case without a
	 * trailing period (e.g. "invalid value"), and ErrorOffset() where (a byte offset into buf,
	 * the byte-order mark included).  A Document can be re-used: Parse resets it.
	 *
	 * The buffer needs no NUL terminator (nothing at buf[len] is read or written); a raw NUL
	 * byte inside it is an error (Postgres rejects it).  Numbers keep their exact text, even
	 * those RapidJSON 1.1 cannot represent (rapidjson_patches.hpp, patch 6).
	 *
	 * A string that is not Unicode text (invalid UTF-8, or a lone surrogate escape such as
	 * \ud800) does not fail the parse: one bad value in one record must not make a whole reply
	 * unreadable.  Its bad bytes become '?' and its lone surrogate escapes U+FFFD, so every
	 * string of the document is valid UTF-8, and the string is listed in BadStrings(): a
	 * caller that stores values checks FindBadString first (the apply engine parks the record).
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
	 * Calls visit(child) for each member of an object or element of an array, in order;
	 * nothing for a scalar, nullptr or a node of another document.  One ownership check for
	 * the whole walk where First/Next check at every step: for walks over every member of
	 * every record (record::FieldMatcher).  visit must not throw.
	 */
	template <class Visit>
	void ForEachChild(const Node *n, Visit &&visit) const noexcept
	{
		if (!Owns(n) || (n->kind != Kind::Array && n->kind != Kind::Object))
			return;
		for (uint32_t i = n->first; i != 0; i = nodes_[i].next)
			visit(nodes_[i]);
	}

	/* Every bad string of the last parse, in document order (see Parse). */
	const std::vector<BadString> &BadStrings() const noexcept { return bad_strings_; }
	/* The first bad string inside n (n itself, its members' keys, everything below), or nullptr. */
	const BadString *FindBadString(const Node *n) const noexcept;
	/*
	 * The first bad string inside none of subtrees[0, count), which must be nodes of this
	 * document in document order, none inside another (nullptr entries are skipped); nullptr
	 * when every bad string is inside one of them.  For a reply: a bad string outside the
	 * records is the reply's, not a record's.
	 */
	const BadString *FindBadStringOutside(const Node *const *subtrees, size_t count) const noexcept;

	/*
	 * Serialize a value back to compact JSON text (strings re-escaped: \" \\ \n \t \r \b \f,
	 * other control characters and NUL as \u00xx, UTF-8 kept as is; numbers as their raw text;
	 * members in input order, duplicates kept).  The result lives in a scratch buffer owned by
	 * the Document and stays valid until the next Serialize, SourceText or Parse call; it is
	 * NUL-terminated (*out_len excludes the terminator).  Returns false when memory runs out or
	 * when `n` is not a node of this document.
	 */
	bool Serialize(const Node *n, const char **out, size_t *out_len) noexcept;

	/*
	 * The text of an object or array as it was in the input, when the document has bad strings
	 * (what a dead letter keeps of a record that cannot be decoded): byte for byte, except that
	 * each byte that is not UTF-8 is written as the escape \udc80-\udcff of that byte (the
	 * "surrogateescape" of Python's PEP 383), so the text is valid UTF-8, the original bytes
	 * can be told from it, and parsing it again finds the same strings bad.  Any other node, or
	 * any node of a document without bad strings: Serialize.  Same buffer rules as Serialize.
	 */
	bool SourceText(const Node *n, const char **out, size_t *out_len) noexcept;

	/*
	 * Members of every object in jsonb's key order: shorter keys first, then bytewise, members
	 * with equal keys in input order.  For a caller that builds jsonb: Postgres sorts an
	 * object's pairs when it builds one, and pairs that come sorted cost it one comparison each
	 * instead of a sort.  Postgres-free, so it can run where the reply is parsed (the prefetch
	 * thread).  Returns false when memory runs out (the walks then keep the input order).
	 */
	bool SortMembers() noexcept;
	/*
	 * First/Next in that order once SortMembers ran for this parse; in input order before (and
	 * for arrays, always).  NextSorted takes a child of a container walked with FirstSorted.
	 */
	const Node *FirstSorted(const Node *n) const noexcept;
	const Node *NextSorted(const Node *n) const noexcept;

	size_t NodeCount() const noexcept { return nodes_.size(); }
	/* Whether n is a node of this document (of its last successful parse). */
	bool Owns(const Node *n) const noexcept;

private:
	friend class DocumentBuilder;
	uint32_t SubtreeEnd(uint32_t index) const noexcept;
	void SetError(const char *message, size_t offset) noexcept;
	template <class Out> void WriteJson(uint32_t start, Out &out);

	std::vector<Node> nodes_;
	/* SortMembers: each node's first child and next sibling in key order (valid if sorted_) */
	bool sorted_ = false;
	std::vector<uint32_t> sorted_first_;
	std::vector<uint32_t> sorted_next_;
	std::vector<uint32_t> sort_scratch_;
	std::string scratch_;
	std::string error_;
	size_t error_offset_ = 0;
	/* explicit stacks (node indices) so that nothing here recurses; kept to reuse capacity */
	std::vector<uint32_t> build_stack_; /* Parse: (open container, its last child) pairs */
	std::vector<uint32_t> walk_stack_;  /* Serialize: open containers */
	/*
	 * What the input scan (rapidjson_patches.hpp, patch 6) found: numbers set aside (a deque:
	 * the strings never move, so nodes point into them) and strings that are not Unicode text.
	 */
	std::deque<std::pair<size_t, std::string>> big_numbers_;
	std::vector<BadString> bad_strings_;
	/* Only when there are bad strings: the input as received, and each container's extent in
	 * it (offsets of its first and last byte; 0, 0 for scalars). */
	std::string source_;
	std::vector<std::pair<uint32_t, uint32_t>> extents_;
};

/*
 * A JSON integer that fits int64: a Number whose raw text is an integer (no fraction, no
 * exponent) within range.  False for anything else, nullptr included (*out is then unchanged).
 */
bool ParseInt64(const Node *n, int64_t *out) noexcept;

/*
 * Append `text` to *out as a JSON string literal (quotes included, escaped like Serialize).
 * For building request bodies (the ack/nack body) without a second escaping routine.
 * Returns false when memory runs out (*out may then hold part of the literal).
 */
bool AppendJsonString(std::string *out, std::string_view text) noexcept;

/*
 * {"<key>":["a","b",...]} into *out (replaced), every string escaped by AppendJsonString: the
 * one writer of both protocols' ack/nack bodies ("ack_tokens" for v1, "ack_ids" for Sequin
 * Stream).  key is written as given (a literal of the caller's, not escaped).  False, with
 * *out empty, for an empty list (both APIs want a non-empty array) or when memory runs out.
 */
bool StringListObject(std::string_view key, const std::vector<std::string_view> &items, std::string *out) noexcept;

} /* namespace json */
} /* namespace sequin_sync */

#endif
