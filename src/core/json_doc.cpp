/*
 * json_doc.cpp - RapidJSON 1.1 SAX parsing into the flat node arena of json_doc.hpp, and the
 * iterative writers (compact JSON, Postgres array literals) over that arena.
 *
 * No Postgres headers here: this file is unit-tested and fuzzed alone (test/unit/).  Nothing
 * in it recurses, and no C++ exception leaves it: RapidJSON's assertions are turned into
 * exceptions below and every public function catches everything.
 */
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <new>

#include "core/json_doc.hpp"

namespace sequin_sync {
namespace json {
namespace detail {

/* Thrown instead of RapidJSON's default assert(), which would abort the whole server. */
struct RapidJsonAssertion : std::exception {
	const char *what() const noexcept override { return "rapidjson assertion failed"; }
};

[[noreturn]] static void
RapidJsonAssertFailed()
{
	throw RapidJsonAssertion();
}

} /* namespace detail */
} /* namespace json */
} /* namespace sequin_sync */

/* Must precede every RapidJSON header; an expression, as RapidJSON uses it in expressions. */
#ifdef RAPIDJSON_ASSERT
#error "RAPIDJSON_ASSERT is already defined: json_doc.cpp must include RapidJSON first"
#endif
#define RAPIDJSON_ASSERT(x) \
	((x) ? static_cast<void>(0) : ::sequin_sync::json::detail::RapidJsonAssertFailed())

#include <rapidjson/error/error.h>
#include <rapidjson/reader.h>
#include <rapidjson/stream.h>
#include "core/cpp_only.hpp" // must be the last include

namespace sequin_sync {
namespace json {
namespace {

/* Largest input we accept: RapidJSON sizes strings and numbers with 32-bit SizeType, and node
 * indices are uint32_t (a document has at most one node per input byte). */
constexpr size_t kMaxInputLen = 0xFFFFFFFEu;

constexpr unsigned kParseFlags = rapidjson::kParseInsituFlag |
	rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag |
	rapidjson::kParseNumbersAsStringsFlag;

/*
 * Tag type naming our replacement for RapidJSON's parse stack (specialized below).  The
 * reader only passes a pointer to it on to the stack, which ignores it.
 */
struct ParserStackTag {};

/*
 * RapidJSON's in-situ stream relies on a NUL terminator to find the end of the input.  Ours
 * has an explicit end instead: the caller's buffer needs no terminator and a raw NUL byte in
 * the middle cannot silently cut the document short (Parse checks for that).  Past the end,
 * Peek/Take return '\0' (which every RapidJSON state treats as end of input) and Put writes
 * nothing: UTF-8 validation Puts each byte it Takes, so at a multi-byte sequence cut off by
 * the end of the buffer it would otherwise write past it (the parse fails there anyway).
 */
struct BoundedInsituStream {
	typedef char Ch;

	BoundedInsituStream(char *begin, char *end) : src_(begin), dst_(nullptr), head_(begin), end_(end) {}

	Ch Peek() const { return src_ < end_ ? *src_ : '\0'; }
	Ch Take() { return src_ < end_ ? *src_++ : '\0'; }
	size_t Tell() const { return static_cast<size_t>(src_ - head_); }

	void
	Put(Ch c)
	{
		if (dst_ < end_)
			*dst_++ = c;
	}
	Ch *PutBegin() { return dst_ = src_; }
	size_t PutEnd(const Ch *begin) { return static_cast<size_t>(dst_ - begin); }
	void Flush() {}

	char *src_;
	char *dst_;
	char *head_;
	char *end_;
};

} /* namespace */
} /* namespace json */
} /* namespace sequin_sync */

/*
 * Copy optimization is not just speed here: with in-situ numbers-as-strings, ParseNumber
 * scans a local copy of the stream and then takes the number's start from the *original*
 * stream (is.PutBegin()), which has only stayed put because it was copied.  Without this
 * specialization every RawNumber would point just past its number.
 */
namespace rapidjson {
template <>
struct StreamTraits<sequin_sync::json::BoundedInsituStream> {
	enum { copyOptimization = 1 };
};

namespace internal {
/*
 * The reader's stack (one entry per open container in iterative mode), replacing RapidJSON
 * 1.1's internal::Stack for our tag type.  The original is lazily allocated and tests
 * `stackTop_ + n > stackEnd_` while both are still NULL: undefined behaviour that clang's
 * UBSan reports on every parse (Tencent/rapidjson#1724, fixed upstream after 1.1.0, never
 * released).  It also writes through the NULL that CrtAllocator returns when memory runs
 * out.  This one compares sizes instead of pointers and throws std::bad_alloc, which Parse
 * catches.  It provides exactly what GenericReader and its StackStream use.
 */
template <>
class Stack<sequin_sync::json::ParserStackTag> {
public:
	Stack(sequin_sync::json::ParserStackTag *, size_t initial_capacity)
		: initial_capacity_(initial_capacity != 0 ? initial_capacity : 256)
	{
	}
	~Stack() { std::free(bottom_); }
	Stack(const Stack &) = delete;
	Stack &operator=(const Stack &) = delete;

	void Clear() { top_ = bottom_; }
	size_t GetSize() const { return static_cast<size_t>(top_ - bottom_); }
	bool Empty() const { return top_ == bottom_; }

	template <typename T>
	T *
	Push(size_t count = 1)
	{
		size_t bytes = sizeof(T) * count;
		if (static_cast<size_t>(end_ - top_) < bytes)
			Grow(bytes);
		T *p = reinterpret_cast<T *>(top_);
		top_ += bytes;
		return p;
	}

	template <typename T>
	T *
	Pop(size_t count)
	{
		size_t bytes = sizeof(T) * count;
		RAPIDJSON_ASSERT(GetSize() >= bytes);
		top_ -= bytes;
		return reinterpret_cast<T *>(top_);
	}

	template <typename T>
	T *
	Top()
	{
		RAPIDJSON_ASSERT(GetSize() >= sizeof(T));
		return reinterpret_cast<T *>(top_ - sizeof(T));
	}

private:
	void
	Grow(size_t bytes)
	{
		size_t size = GetSize();
		size_t capacity = static_cast<size_t>(end_ - bottom_);
		size_t wanted = capacity != 0 ? capacity + (capacity + 1) / 2 : initial_capacity_;
		if (bytes > SIZE_MAX / 2 - size)
			throw std::bad_alloc();
		if (wanted < size + bytes)
			wanted = size + bytes;
		char *p = static_cast<char *>(std::realloc(bottom_, wanted));
		if (p == nullptr)
			throw std::bad_alloc(); /* bottom_ is still ours and still freed by the destructor */
		bottom_ = p;
		top_ = p + size;
		end_ = p + wanted;
	}

	char *bottom_ = nullptr;
	char *top_ = nullptr;
	char *end_ = nullptr;
	size_t initial_capacity_;
};
} /* namespace internal */
} /* namespace rapidjson */

namespace sequin_sync {
namespace json {

/*
 * The SAX handler: appends a node per value to the arena, in document order, and links it to
 * its parent.  Open containers live on an explicit stack (build_stack_, pairs of container
 * index and last child index), so nesting depth costs heap, never C++ stack.
 */
class DocumentBuilder {
public:
	DocumentBuilder(Document &doc, const char *base) : doc_(doc), base_(base) {}

	bool Null() { return Add(Kind::Null, nullptr, 0); }
	bool Bool(bool b) { return Add(b ? Kind::True : Kind::False, nullptr, 0); }
	/* Never called with kParseNumbersAsStringsFlag; present because the reader needs them. */
	bool Int(int) { return Fail("internal error: unexpected binary number", nullptr); }
	bool Uint(unsigned) { return Fail("internal error: unexpected binary number", nullptr); }
	bool Int64(int64_t) { return Fail("internal error: unexpected binary number", nullptr); }
	bool Uint64(uint64_t) { return Fail("internal error: unexpected binary number", nullptr); }
	bool Double(double) { return Fail("internal error: unexpected binary number", nullptr); }

	bool
	RawNumber(const char *str, rapidjson::SizeType len, bool copy)
	{
		/* in-situ parsing never copies; a copy would live in the reader's stack and die */
		if (copy)
			return Fail("internal error: copied number", nullptr);
		/* A number set aside before parsing (too big for RapidJSON): its original text. */
		auto &big = doc_.big_numbers_;
		size_t &next = doc_.next_big_number_;
		if (next < big.size() && big[next].first == static_cast<size_t>(str - base_)) {
			const std::string &text = big[next++].second;
			return Add(Kind::Number, text.data(), static_cast<uint32_t>(text.size()));
		}
		return Add(Kind::Number, str, len);
	}

	bool
	String(const char *str, rapidjson::SizeType len, bool copy)
	{
		if (!CheckString(str, len, copy))
			return false;
		return Add(Kind::String, str, len);
	}

	bool
	Key(const char *str, rapidjson::SizeType len, bool copy)
	{
		if (!CheckString(str, len, copy))
			return false;
		key_ = str;
		key_len_ = len;
		return true;
	}

	bool StartObject() { return Open(Kind::Object); }
	bool EndObject(rapidjson::SizeType) { return Close(); }
	bool StartArray() { return Open(Kind::Array); }
	bool EndArray(rapidjson::SizeType) { return Close(); }

	const char *error_ = nullptr; /* set when a callback returned false */
	size_t error_offset_ = 0;

private:
	bool
	Fail(const char *message, const char *where)
	{
		error_ = message;
		error_offset_ = where ? static_cast<size_t>(where - base_) : 0;
		return false;
	}

	/*
	 * RapidJSON decodes a lone \uDC00-\uDFFF escape into the bytes of a surrogate (ED B0..BF
	 * xx), which is not UTF-8: text and jsonb input would reject it later, far from here.  Raw
	 * input bytes are validated, so such a sequence can only come from an escape.
	 */
	bool
	CheckString(const char *str, size_t len, bool copy)
	{
		if (copy)
			return Fail("internal error: copied string", nullptr);
		const char *p = str;
		const char *end = str + len;
		while (p < end) {
			const void *hit = std::memchr(p, 0xED, static_cast<size_t>(end - p));
			if (hit == nullptr)
				break;
			p = static_cast<const char *>(hit);
			if (p + 1 < end && static_cast<unsigned char>(p[1]) >= 0xA0)
				return Fail("invalid unicode surrogate pair in string", str - 1);
			++p;
		}
		return true;
	}

	/* New node, linked as the last child of the innermost open container. */
	bool
	Add(Kind kind, const char *str, uint32_t len)
	{
		std::vector<Node> &nodes = doc_.nodes_;
		std::vector<uint32_t> &stack = doc_.build_stack_;
		uint32_t index = static_cast<uint32_t>(nodes.size());

		nodes.emplace_back();
		Node &node = nodes.back();
		node.kind = kind;
		node.str = str;
		node.len = len;
		if (!stack.empty()) {
			Node &parent = nodes[stack[stack.size() - 2]];
			uint32_t &last = stack.back();

			if (parent.kind == Kind::Object) {
				node.key = key_;
				node.key_len = key_len_;
			}
			if (last != 0)
				nodes[last].next = index;
			else
				parent.first = index;
			last = index;
			parent.len++;
		}
		return true;
	}

	bool
	Open(Kind kind)
	{
		uint32_t index = static_cast<uint32_t>(doc_.nodes_.size());
		if (!Add(kind, nullptr, 0))
			return false;
		doc_.build_stack_.push_back(index);
		doc_.build_stack_.push_back(0);
		return true;
	}

	bool
	Close()
	{
		if (doc_.build_stack_.size() < 2)
			return Fail("internal error: unbalanced container", nullptr);
		doc_.build_stack_.resize(doc_.build_stack_.size() - 2);
		return true;
	}

	Document &doc_;
	const char *base_;
	const char *key_ = nullptr;
	uint32_t key_len_ = 0;
};

namespace {

/* Our wording for RapidJSON's errors: Postgres message style, lower case, no period. */
const char *
ParseErrorText(rapidjson::ParseErrorCode code)
{
	switch (code) {
	case rapidjson::kParseErrorNone:
		return "no error";
	case rapidjson::kParseErrorDocumentEmpty:
		return "the document is empty";
	case rapidjson::kParseErrorDocumentRootNotSingular:
		return "text after the end of the document";
	case rapidjson::kParseErrorValueInvalid:
		return "invalid value";
	case rapidjson::kParseErrorObjectMissName:
		return "missing member name in object";
	case rapidjson::kParseErrorObjectMissColon:
		return "missing colon after member name in object";
	case rapidjson::kParseErrorObjectMissCommaOrCurlyBracket:
		return "missing comma or closing brace in object";
	case rapidjson::kParseErrorArrayMissCommaOrSquareBracket:
		return "missing comma or closing bracket in array";
	case rapidjson::kParseErrorStringUnicodeEscapeInvalidHex:
		return "invalid \\u escape in string";
	case rapidjson::kParseErrorStringUnicodeSurrogateInvalid:
		return "invalid unicode surrogate pair in string";
	case rapidjson::kParseErrorStringEscapeInvalid:
		return "invalid escape or control character in string";
	case rapidjson::kParseErrorStringMissQuotationMark:
		return "unterminated string";
	case rapidjson::kParseErrorStringInvalidEncoding:
		return "invalid UTF-8 in string";
	case rapidjson::kParseErrorNumberTooBig:
		return "number too big";
	case rapidjson::kParseErrorNumberMissFraction:
		return "missing digits after the decimal point";
	case rapidjson::kParseErrorNumberMissExponent:
		return "missing digits in the exponent";
	case rapidjson::kParseErrorTermination:
		return "parsing stopped";
	case rapidjson::kParseErrorUnspecificSyntaxError:
		return "syntax error";
	}
	return "syntax error";
}

/*
 * Two of RapidJSON 1.1's codes are misleading: its iterative parser reports a document that
 * starts with ']', '}', ',' or ':' as empty, and a string cut off right after a backslash as
 * an invalid escape.
 */
rapidjson::ParseErrorCode
FixErrorCode(const rapidjson::ParseResult &result, size_t parse_len)
{
	if (result.Code() == rapidjson::kParseErrorDocumentEmpty && result.Offset() < parse_len)
		return rapidjson::kParseErrorValueInvalid;
	if (result.Code() == rapidjson::kParseErrorStringEscapeInvalid && result.Offset() + 1 == parse_len)
		return rapidjson::kParseErrorStringMissQuotationMark;
	return result.Code();
}

/* Which bytes a JSON string literal must escape: '"', '\\' and the control characters. */
struct EscapeTable {
	bool needs[256];
	constexpr EscapeTable() : needs()
	{
		for (int c = 0; c < 0x20; c++)
			needs[c] = true;
		needs[static_cast<unsigned char>('"')] = true;
		needs[static_cast<unsigned char>('\\')] = true;
	}
};
constexpr EscapeTable kEscape;

/* Writes straight into the buffer. */
struct PlainOut {
	std::string &s;

	void Put(char c) { s.push_back(c); }
	void
	Append(const char *p, size_t n)
	{
		if (n != 0)
			s.append(p, n);
	}
};

/*
 * Writes inside a double-quoted Postgres array element: '"' and '\\' get a backslash.  Used
 * to put an object's JSON text into an array literal without building it twice.
 */
struct QuotedOut {
	std::string &s;

	void
	Put(char c)
	{
		if (c == '"' || c == '\\')
			s.push_back('\\');
		s.push_back(c);
	}
	void
	Append(const char *p, size_t n)
	{
		size_t run = 0;
		for (size_t i = 0; i < n; i++) {
			if (p[i] != '"' && p[i] != '\\')
				continue;
			if (i > run)
				s.append(p + run, i - run);
			s.push_back('\\');
			run = i; /* the quote or backslash itself starts the next run */
		}
		if (n > run)
			s.append(p + run, n - run);
	}
};

/* A JSON string literal, runs of plain bytes appended at once; UTF-8 passes through. */
template <class Out>
void
WriteJsonString(Out &out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;

	out.Put('"');
	for (size_t i = 0; i < len; i++) {
		unsigned char c = static_cast<unsigned char>(s[i]);
		if (!kEscape.needs[c])
			continue;
		out.Append(s + run, i - run);
		run = i + 1;
		switch (c) {
		case '"': out.Append("\\\"", 2); break;
		case '\\': out.Append("\\\\", 2); break;
		case '\n': out.Append("\\n", 2); break;
		case '\t': out.Append("\\t", 2); break;
		case '\r': out.Append("\\r", 2); break;
		case '\b': out.Append("\\b", 2); break;
		case '\f': out.Append("\\f", 2); break;
		default: {
			char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
			out.Append(u, sizeof(u));
			break;
		}
		}
	}
	out.Append(s + run, len - run);
	out.Put('"');
}

inline char
AsciiLower(char c)
{
	return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

} /* namespace */

bool
Node::IsIntegerText() const noexcept
{
	if (kind != Kind::Number || str == nullptr || len == 0)
		return false;
	uint32_t i = (str[0] == '-') ? 1 : 0;
	if (i == len)
		return false;
	for (; i < len; i++)
		if (str[i] < '0' || str[i] > '9')
			return false;
	return true;
}

/* error_ allocates for longer messages; running out of memory there must not throw. */
void
Document::SetError(const char *message, size_t offset) noexcept
{
	error_offset_ = offset;
	try {
		error_.assign(message);
	} catch (...) {
		error_.clear();
	}
}

/*
 * One lexical pass over the input, outside strings: a number token of 300 characters or more,
 * or with an exponent of 300 or more, is copied aside and replaced in the buffer by "0" and
 * spaces (same length, still valid JSON).  RawNumber then hands out the original text.  RapidJSON
 * computes a double even in numbers-as-strings mode and fails the whole document on overflow;
 * Postgres' numeric takes such values, and a float column parks the record with a range error.
 * Offsets are from `buf` (the base DocumentBuilder measures from).
 */
namespace {

/* The JSON number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? over the whole text. */
bool
ValidJsonNumber(const char *p, size_t n)
{
	size_t i = 0;
	auto digit = [&](size_t k) { return k < n && p[k] >= '0' && p[k] <= '9'; };
	if (i < n && p[i] == '-')
		i++;
	if (!digit(i))
		return false;
	if (p[i] == '0')
		i++;
	else
		while (digit(i))
			i++;
	if (i < n && p[i] == '.') {
		i++;
		if (!digit(i))
			return false;
		while (digit(i))
			i++;
	}
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < n && (p[i] == '+' || p[i] == '-'))
			i++;
		if (!digit(i))
			return false;
		while (digit(i))
			i++;
	}
	return i == n;
}

} /* namespace */

void
Document::SetAsideBigNumbers(char *begin, size_t len)
{
	big_numbers_.clear();
	next_big_number_ = 0;
	bool in_string = false;
	for (size_t i = 0; i < len; i++) {
		char c = begin[i];
		if (in_string) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"') {
			in_string = true;
			continue;
		}
		if (c != '-' && (c < '0' || c > '9'))
			continue;
		size_t end = i;
		size_t exp_at = 0;
		while (end < len) {
			char d = begin[end];
			if ((d >= '0' && d <= '9') || d == '-' || d == '+' || d == '.')
				end++;
			else if (d == 'e' || d == 'E') {
				exp_at = end;
				end++;
			} else
				break;
		}
		bool big = end - i >= 300;
		if (!big && exp_at) {
			size_t j = exp_at + 1;
			if (j < end && (begin[j] == '+' || begin[j] == '-'))
				j++;
			while (j < end && begin[j] == '0')
				j++;
			big = end - j > 3 || (end - j == 3 && std::strncmp(begin + j, "300", 3) >= 0);
		}
		if (big && ValidJsonNumber(begin + i, end - i)) {
			big_numbers_.emplace_back(static_cast<size_t>(begin + i - base_for_offsets_), std::string(begin + i, end - i));
			begin[i] = '0';
			std::memset(begin + i + 1, ' ', end - i - 1);
		}
		i = end - 1;
	}
}

/*
 * Parse with RapidJSON's iterative reader straight into the arena.  Everything that can go
 * wrong (syntax, bad UTF-8, out of memory, a RapidJSON assertion) ends as false + message.
 */
bool
Document::Parse(char *buf, size_t len) noexcept
{
	nodes_.clear();
	build_stack_.clear();
	error_.clear();
	error_offset_ = 0;

	try {
		if (buf == nullptr && len != 0) {
			SetError("no input buffer", 0);
			return false;
		}
		if (len > kMaxInputLen) {
			SetError("document too large", 0);
			return false;
		}

		/* RapidJSON only skips a BOM through its AutoUTF streams, not the in-situ ones. */
		size_t start = 0;
		if (len >= 3 && static_cast<unsigned char>(buf[0]) == 0xEF &&
			static_cast<unsigned char>(buf[1]) == 0xBB && static_cast<unsigned char>(buf[2]) == 0xBF)
			start = 3;
		char *begin = buf ? buf + start : buf;
		size_t avail = len - start;

		/*
		 * RapidJSON reads '\0' as the end of the input, so a raw NUL byte (never valid JSON)
		 * would quietly end the document there.  Parse only what precedes it, then fail.
		 */
		const void *nul = avail ? std::memchr(begin, '\0', avail) : nullptr;
		size_t parse_len = nul ? static_cast<size_t>(static_cast<const char *>(nul) - begin) : avail;

		/*
		 * Typical API JSON has a node per 20-25 bytes (the sample reply: one per 22).  Capped
		 * so that one huge string does not reserve megabytes of nodes; past the estimate the
		 * vector grows geometrically, and a re-used Document keeps its capacity.
		 */
		nodes_.reserve(std::min<size_t>(parse_len / 20 + 16, size_t(1) << 16));

		base_for_offsets_ = buf;
		SetAsideBigNumbers(begin, parse_len);

		rapidjson::GenericReader<rapidjson::UTF8<>, rapidjson::UTF8<>, ParserStackTag> reader(nullptr, 256);
		BoundedInsituStream stream(begin, begin + parse_len);
		DocumentBuilder builder(*this, buf);
		rapidjson::ParseResult result = reader.Parse<kParseFlags>(stream, builder);

		if (result.IsError()) {
			if (result.Code() == rapidjson::kParseErrorTermination && builder.error_ != nullptr)
				SetError(builder.error_, builder.error_offset_);
			else if (nul != nullptr && result.Offset() >= parse_len)
				SetError("unexpected NUL byte", start + parse_len);
			else
				SetError(ParseErrorText(FixErrorCode(result, parse_len)), start + result.Offset());
			nodes_.clear();
			return false;
		}
		if (nul != nullptr) {
			SetError("unexpected NUL byte", start + parse_len);
			nodes_.clear();
			return false;
		}
		if (nodes_.empty()) {
			/* cannot happen: a successful parse has a root */
			SetError("the document is empty", start);
			return false;
		}
		return true;
	} catch (const std::bad_alloc &) {
		SetError("out of memory", 0);
	} catch (const detail::RapidJsonAssertion &) {
		SetError("internal error: parser assertion failed", 0);
	} catch (...) {
		SetError("internal error: unexpected exception", 0);
	}
	nodes_.clear();
	return false;
}

/* Guards every index walk: a node from another Document would index out of our arena. */
bool
Document::Owns(const Node *n) const noexcept
{
	if (n == nullptr || nodes_.empty())
		return false;
	std::less_equal<const Node *> le;
	std::less<const Node *> lt;
	return le(nodes_.data(), n) && lt(n, nodes_.data() + nodes_.size());
}

const Node *
Document::Root() const noexcept
{
	return nodes_.empty() ? nullptr : &nodes_[0];
}

const Node *
Document::First(const Node *n) const noexcept
{
	if (!Owns(n) || (n->kind != Kind::Array && n->kind != Kind::Object) || n->first == 0)
		return nullptr;
	return &nodes_[n->first];
}

const Node *
Document::Next(const Node *n) const noexcept
{
	if (!Owns(n) || n->next == 0)
		return nullptr;
	return &nodes_[n->next];
}

/* Linear scan of the members, keeping the last match: duplicates resolve as in jsonb. */
const Node *
Document::Find(const Node *obj, std::string_view key) const noexcept
{
	if (!Owns(obj) || obj->kind != Kind::Object)
		return nullptr;
	const Node *found = nullptr;
	for (uint32_t i = obj->first; i != 0; i = nodes_[i].next) {
		const Node &member = nodes_[i];
		if (member.key_len == key.size() &&
			(key.empty() || std::memcmp(member.key, key.data(), key.size()) == 0))
			found = &member;
	}
	return found;
}

const Node *
Document::FindPath(const Node *obj, std::string_view dotted_path) const noexcept
{
	const Node *cur = obj;
	size_t pos = 0;

	for (;;) {
		size_t dot = dotted_path.find('.', pos);
		size_t end = (dot == std::string_view::npos) ? dotted_path.size() : dot;
		if (end == pos)
			return nullptr; /* empty segment: "", "a..b", ".a", "a." */
		cur = Find(cur, std::string_view(dotted_path.data() + pos, end - pos));
		if (cur == nullptr || dot == std::string_view::npos)
			return cur;
		pos = dot + 1;
	}
}

/*
 * Pre-order walk with an explicit stack of open containers: emit a node, descend into its
 * first child, or else climb until some ancestor has a next sibling.  The start node's own
 * siblings are never visited.
 */
template <class Out>
void
Document::WriteJson(uint32_t start, Out &out)
{
	std::vector<uint32_t> &stack = walk_stack_;
	const size_t base = stack.size();
	uint32_t cur = start;

	for (;;) {
		const Node &n = nodes_[cur];

		if (stack.size() > base && nodes_[stack.back()].kind == Kind::Object) {
			WriteJsonString(out, n.key, n.key_len);
			out.Put(':');
		}
		switch (n.kind) {
		case Kind::Null: out.Append("null", 4); break;
		case Kind::False: out.Append("false", 5); break;
		case Kind::True: out.Append("true", 4); break;
		case Kind::Number: out.Append(n.str, n.len); break;
		case Kind::String: WriteJsonString(out, n.str, n.len); break;
		case Kind::Array:
		case Kind::Object:
			out.Put(n.kind == Kind::Array ? '[' : '{');
			if (n.first != 0) {
				stack.push_back(cur);
				cur = n.first;
				continue;
			}
			out.Put(n.kind == Kind::Array ? ']' : '}');
			break;
		}

		/* cur is complete: move to its next sibling, closing finished containers on the way */
		for (;;) {
			if (stack.size() == base)
				return;
			if (nodes_[cur].next != 0) {
				out.Put(',');
				cur = nodes_[cur].next;
				break;
			}
			cur = stack.back();
			stack.pop_back();
			out.Put(nodes_[cur].kind == Kind::Array ? ']' : '}');
		}
	}
}

bool
Document::Serialize(const Node *n, const char **out, size_t *out_len) noexcept
{
	if (out != nullptr)
		*out = nullptr;
	if (out_len != nullptr)
		*out_len = 0;
	if (!Owns(n) || out == nullptr || out_len == nullptr)
		return false;
	try {
		scratch_.clear();
		walk_stack_.clear();
		PlainOut plain{scratch_};
		WriteJson(static_cast<uint32_t>(n - nodes_.data()), plain);
		*out = scratch_.data();
		*out_len = scratch_.size();
		return true;
	} catch (...) {
		scratch_.clear();
		walk_stack_.clear();
		return false;
	}
}

/*
 * Same walk as WriteJson, but only arrays nest (as sub-arrays); any other element is written
 * whole: objects through WriteJson into a quoted element, scalars directly.
 */
bool
Document::ArrayLiteral(const Node *array, const char **out, size_t *out_len) noexcept
{
	if (out != nullptr)
		*out = nullptr;
	if (out_len != nullptr)
		*out_len = 0;
	if (!Owns(array) || array->kind != Kind::Array || out == nullptr || out_len == nullptr)
		return false;
	try {
		std::vector<uint32_t> &stack = array_stack_;
		scratch_.clear();
		walk_stack_.clear();
		stack.clear();

		PlainOut plain{scratch_};
		QuotedOut quoted{scratch_};
		uint32_t start = static_cast<uint32_t>(array - nodes_.data());
		stack.push_back(start);
		plain.Put('{');
		uint32_t cur = array->first;

		for (;;) {
			if (cur == 0) {
				/* end of the innermost open array */
				plain.Put('}');
				uint32_t closed = stack.back();
				stack.pop_back();
				if (stack.empty())
					break;
				cur = nodes_[closed].next;
				if (cur != 0)
					plain.Put(',');
				continue;
			}
			const Node &n = nodes_[cur];
			switch (n.kind) {
			case Kind::Array:
				stack.push_back(cur);
				plain.Put('{');
				cur = n.first;
				continue;
			case Kind::Null: plain.Append("NULL", 4); break;
			case Kind::False: plain.Append("\"false\"", 7); break;
			case Kind::True: plain.Append("\"true\"", 6); break;
			case Kind::Number:
			case Kind::String:
				plain.Put('"');
				quoted.Append(n.str, n.len);
				plain.Put('"');
				break;
			case Kind::Object:
				plain.Put('"');
				WriteJson(cur, quoted);
				plain.Put('"');
				break;
			}
			cur = n.next;
			if (cur != 0)
				plain.Put(',');
		}
		*out = scratch_.data();
		*out_len = scratch_.size();
		return true;
	} catch (...) {
		scratch_.clear();
		walk_stack_.clear();
		array_stack_.clear();
		return false;
	}
}

bool
NormalizedEquals(std::string_view a, std::string_view b) noexcept
{
	size_t i = 0;
	size_t j = 0;

	for (;;) {
		while (i < a.size() && a[i] == '_')
			i++;
		while (j < b.size() && b[j] == '_')
			j++;
		if (i == a.size() || j == b.size())
			return i == a.size() && j == b.size();
		if (AsciiLower(a[i]) != AsciiLower(b[j]))
			return false;
		i++;
		j++;
	}
}

bool
AppendJsonString(std::string *out, std::string_view text) noexcept
{
	if (out == nullptr)
		return false;
	try {
		PlainOut plain{*out};
		WriteJsonString(plain, text.data(), text.size());
		return true;
	} catch (...) {
		return false;
	}
}

} /* namespace json */
} /* namespace sequin_sync */
