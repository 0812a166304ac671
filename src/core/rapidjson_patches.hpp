/*
 * rapidjson_patches.hpp - what json_doc.cpp changes about RapidJSON 1.1.0, the version Debian
 * ships (rapidjson-dev), and why.  Each patch names the upstream issue or, where none could be
 * found, the exact upstream behaviour it works around.  json_doc.cpp includes this instead of
 * RapidJSON's headers, and nothing else does: the specializations below must be seen by the one
 * translation unit that instantiates the reader.
 *
 * The patches:
 *  1. RAPIDJSON_ASSERT throws instead of calling assert(), which would abort the whole server.
 *  2. BoundedInsituStream: in-situ parsing of a buffer with an explicit end instead of a NUL.
 *  3. StreamTraits<BoundedInsituStream>::copyOptimization, without which in-situ
 *     numbers-as-strings point past their number.
 *  4. Stack<ParserStackTag>: the reader's stack without the undefined behaviour UBSan reports.
 *  5. FixErrorCode: two misleading error codes of the iterative parser.
 *  6. ScanInput: numbers too big for a double, and strings that are not Unicode, found before
 *     parsing and defused, so that one such value cannot make a whole reply unparseable.
 *
 * No Postgres headers; the last include of json_doc.cpp is core/cpp_only.hpp.
 */
#ifndef SEQUIN_SYNC_RAPIDJSON_PATCHES_HPP
#define SEQUIN_SYNC_RAPIDJSON_PATCHES_HPP

#ifdef POSTGRES_H
#error "rapidjson_patches.hpp must stay free of Postgres headers"
#endif

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

/* ---- 1. RAPIDJSON_ASSERT ---------------------------------------------------------------- */

namespace sequin_sync {
namespace json {
namespace detail {

/*
 * RapidJSON's default RAPIDJSON_ASSERT is assert(): on a broken invariant (or input that reaches
 * one) it aborts the process, and inside a backend that restarts the whole server.  RapidJSON
 * documents the macro as the one to override; ours throws, and Document::Parse catches it.
 */
struct RapidJsonAssertion : std::exception {
	const char *what() const noexcept override { return "rapidjson assertion failed"; }
};

[[noreturn]] inline void
RapidJsonAssertFailed()
{
	throw RapidJsonAssertion();
}

} /* namespace detail */
} /* namespace json */
} /* namespace sequin_sync */

/* Must precede every RapidJSON header; an expression, as RapidJSON uses it in expressions. */
#ifdef RAPIDJSON_ASSERT
#error "RAPIDJSON_ASSERT is already defined: a RapidJSON header was included before rapidjson_patches.hpp"
#endif
#define RAPIDJSON_ASSERT(x) \
	((x) ? static_cast<void>(0) : ::sequin_sync::json::detail::RapidJsonAssertFailed())

#include <rapidjson/error/error.h>
#include <rapidjson/reader.h>
#include <rapidjson/stream.h>

namespace sequin_sync {
namespace json {
namespace detail {

/* ---- 2. a bounded in-situ stream ---------------------------------------------------------- */

/*
 * RapidJSON 1.1's in-situ streams find the end of the input by its NUL terminator, and there is
 * no in-situ stream with a length (Tencent/rapidjson#692, "Is it possible to ParseInsitu non
 * null terminated buffers?" - "Currently no."; still open as #2181).  Ours has an explicit end:
 * the caller's buffer needs no terminator, and a raw NUL byte in the middle cannot silently cut
 * the document short (Parse checks for that).  Past the end, Peek/Take return '\0' (which every
 * RapidJSON state treats as end of input) and Put writes nothing: UTF-8 validation Puts each
 * byte it Takes, so at a multi-byte sequence cut off by the end of the buffer it would otherwise
 * write past it (the parse fails there anyway).  Pos() is for the SAX handler: where the reader
 * stands, which at StartObject/StartArray is the opening bracket and at EndObject/EndArray the
 * closing one (the iterative reader calls those before it Takes the bracket).
 */
struct BoundedInsituStream {
	typedef char Ch;

	BoundedInsituStream(char *begin, char *end) : src_(begin), dst_(nullptr), head_(begin), end_(end) {}

	Ch Peek() const { return src_ < end_ ? *src_ : '\0'; }
	Ch Take() { return src_ < end_ ? *src_++ : '\0'; }
	size_t Tell() const { return static_cast<size_t>(src_ - head_); }
	const char *Pos() const { return src_; }

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

/*
 * Tag type naming our replacement for RapidJSON's parse stack (patch 4).  The reader only
 * passes a pointer to it on to the stack, which ignores it.
 */
struct ParserStackTag {};

} /* namespace detail */
} /* namespace json */
} /* namespace sequin_sync */

namespace rapidjson {

/* ---- 3. copy optimization for the bounded stream ----------------------------------------- */

/*
 * Not just speed.  In RapidJSON 1.1, ParseNumber with kParseInsituFlag |
 * kParseNumbersAsStringsFlag scans the number through a StreamLocalCopy of the stream and then
 * takes the number's start from the *original* stream (is.PutBegin(), reader.h "Finish
 * parsing").  That start is only right when the copy was a real copy, i.e. when the stream's
 * copyOptimization is on; with the default (a reference), every RawNumber points just past its
 * number.  In-situ numbers-as-strings is a rough path upstream (Tencent/rapidjson#798: the raw
 * numbers are not NUL-terminated either, which Node::len takes care of).
 */
template <>
struct StreamTraits<sequin_sync::json::detail::BoundedInsituStream> {
	enum { copyOptimization = 1 };
};

namespace internal {

/* ---- 4. the reader's stack ----------------------------------------------------------------- */

/*
 * The reader's stack (one entry per open container in iterative mode), replacing RapidJSON
 * 1.1's internal::Stack for our tag type.  The original is lazily allocated and tests
 * `stackTop_ + n > stackEnd_` while both are still NULL: undefined behaviour that clang's
 * UBSan reports on every parse (Tencent/rapidjson#1724, fixed upstream in 16872af after 1.1.0,
 * never released).  It also writes through the NULL that CrtAllocator returns when memory runs
 * out.  This one compares sizes instead of pointers and throws std::bad_alloc, which Parse
 * catches.  It provides exactly what GenericReader and its StackStream use.
 */
template <>
class Stack<sequin_sync::json::detail::ParserStackTag> {
public:
	Stack(sequin_sync::json::detail::ParserStackTag *, size_t initial_capacity)
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
namespace detail {

/* ---- 5. error codes ------------------------------------------------------------------------- */

/*
 * Two of RapidJSON 1.1's codes are misleading (no upstream issue found; reader.h as shipped):
 *  - the iterative parser's HandleError reports kParseErrorDocumentEmpty for any error in its
 *    start state, so a document that starts with ']', '}', ',' or ':' is "empty" although it
 *    has text: reported here as an invalid value, as the recursive parser does;
 *  - ParseStringToStream reports a backslash that is the last byte of the input as
 *    kParseErrorStringEscapeInvalid (it reads the escape character as '\0'): the string is
 *    unterminated, which is what a reply cut off mid-string should say.
 */
inline rapidjson::ParseErrorCode
FixErrorCode(const rapidjson::ParseResult &result, size_t parse_len)
{
	if (result.Code() == rapidjson::kParseErrorDocumentEmpty && result.Offset() < parse_len)
		return rapidjson::kParseErrorValueInvalid;
	if (result.Code() == rapidjson::kParseErrorStringEscapeInvalid && result.Offset() + 1 == parse_len)
		return rapidjson::kParseErrorStringMissQuotationMark;
	return result.Code();
}

/* ---- 6. the input scan ---------------------------------------------------------------------- */

/*
 * RapidJSON 1.1 fails the whole document for a value that one item of a reply could hold and
 * that should cost only that item (issue 9: a consumer must not be blocked by one bad record):
 *
 *  - Numbers too big for a double.  Even with kParseNumbersAsStringsFlag, ParseNumber computes
 *    the double and reports kParseErrorNumberTooBig for an exponent past 308 or too many digits
 *    (Tencent/rapidjson#1368, fixed on master after 1.1.0).  Postgres' numeric takes such
 *    values, and a float column parks the record with a range error.  Such a number (300+
 *    characters, or an exponent of 300 or more) is copied aside and blanked to "0" and spaces
 *    in the buffer (same length, still valid JSON); RawNumber then hands out the original text.
 *
 *  - Strings that are not Unicode text.  kParseValidateEncodingFlag rejects the document at the
 *    first byte that is not UTF-8, and a \uD800-\uDBFF escape without a low surrogate after it
 *    is kParseErrorStringUnicodeSurrogateInvalid.  A lone low surrogate \uDC00-\uDFFF is worse:
 *    1.1 accepts it and writes the bytes of a surrogate (ED B0..BF xx), which is not UTF-8
 *    (Tencent/rapidjson#1738, fixed by #1744 after 1.1.0).  Each such string is recorded with
 *    the offset of its first bad byte or escape, and defused in place with text of the same
 *    length: a byte that is not UTF-8 becomes '?', a lone surrogate escape \ufffd.  The parse
 *    then succeeds, the document holds only valid UTF-8, and the caller decides what the bad
 *    string costs (Document::FindBadString).
 *
 * The scan is lexical and runs outside and inside strings exactly as JSON does; in a document
 * that is not JSON it may see strings where there are none, but then the parse fails anyway,
 * and defusing only ever replaces bytes inside what it took for a string, never a quote or a
 * backslash.
 */

/* Length of the well-formed UTF-8 sequence at p (Unicode Table 3-7), or 0 when it is not one. */
inline size_t
Utf8SequenceLength(const unsigned char *p, size_t avail)
{
	unsigned char c = p[0];
	if (c < 0x80)
		return 1;
	auto in = [&](size_t k, unsigned char lo, unsigned char hi) { return k < avail && p[k] >= lo && p[k] <= hi; };
	if (c >= 0xC2 && c <= 0xDF)
		return in(1, 0x80, 0xBF) ? 2 : 0;
	if (c == 0xE0)
		return in(1, 0xA0, 0xBF) && in(2, 0x80, 0xBF) ? 3 : 0;
	if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
		return in(1, 0x80, 0xBF) && in(2, 0x80, 0xBF) ? 3 : 0;
	if (c == 0xED)
		return in(1, 0x80, 0x9F) && in(2, 0x80, 0xBF) ? 3 : 0;
	if (c == 0xF0)
		return in(1, 0x90, 0xBF) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF) ? 4 : 0;
	if (c >= 0xF1 && c <= 0xF3)
		return in(1, 0x80, 0xBF) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF) ? 4 : 0;
	if (c == 0xF4)
		return in(1, 0x80, 0x8F) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF) ? 4 : 0;
	return 0;
}

/* The value of the four hex digits at p, or -1. */
inline long
Hex4(const char *p, size_t avail)
{
	if (avail < 4)
		return -1;
	long v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

constexpr const char *kBadUtf8 = "invalid UTF-8 in string";
constexpr const char *kBadSurrogate = "invalid unicode surrogate pair in string";

/* One place to change in the buffer: a bad byte (len 1) or a lone surrogate escape (len 6). */
struct BadSpot {
	size_t offset;			/* from the start of the input */
	size_t len;
};

/* A string that is not Unicode text: where its content starts (after the quote) and why. */
struct BadStringSpot {
	size_t string_begin;
	size_t offset;			/* its first bad byte or escape */
	const char *message;
};

/* The JSON number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? over the whole text. */
inline bool
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

/*
 * Scans a string's content from begin[i] (just after its opening quote) to its closing quote;
 * returns the index of that quote (or len).  Bad bytes and lone surrogate escapes are recorded.
 */
inline size_t
ScanString(const char *begin, size_t len, size_t i, size_t base, std::vector<BadStringSpot> *bad_strings,
		   std::vector<BadSpot> *spots)
{
	const size_t content = i;
	bool bad = false;
	auto mark = [&](size_t at, size_t n, const char *message) {
		if (!bad)
			bad_strings->push_back(BadStringSpot{base + content, base + at, message});
		bad = true;
		spots->push_back(BadSpot{base + at, n});
	};
	while (i < len) {
		unsigned char c = static_cast<unsigned char>(begin[i]);
		if (c == '"')
			return i;
		if (c == '\\') {
			if (i + 1 < len && begin[i + 1] == 'u') {
				long cp = Hex4(begin + i + 2, len - i - 2);
				if (cp >= 0xD800 && cp <= 0xDBFF) {
					long low = (i + 7 < len && begin[i + 6] == '\\' && begin[i + 7] == 'u')
								   ? Hex4(begin + i + 8, len - i - 8) : -1;
					if (low >= 0xDC00 && low <= 0xDFFF) {
						i += 12;
						continue;
					}
					mark(i, 6, kBadSurrogate);
				} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
					mark(i, 6, kBadSurrogate);
				}
				i += cp >= 0 ? 6 : 2;
				continue;
			}
			i += 2;
			continue;
		}
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n = Utf8SequenceLength(reinterpret_cast<const unsigned char *>(begin + i), len - i);
		if (n == 0) {
			mark(i, 1, kBadUtf8);
			n = 1;
		}
		i += n;
	}
	return i;
}

/*
 * The scan of patch 6 over begin[0, len), changing nothing: the numbers to set aside (offset and
 * original text), the bad strings, and the spots to defuse, all in input order, with offsets
 * counted from base bytes before begin.  A number token is set aside when it is valid JSON and
 * 300 characters or longer, or has an exponent of 300 or more.
 */
inline void
ScanInput(const char *begin, size_t len, size_t base, std::deque<std::pair<size_t, std::string>> *big_numbers,
		  std::vector<BadStringSpot> *bad_strings, std::vector<BadSpot> *spots)
{
	big_numbers->clear();
	bad_strings->clear();
	spots->clear();
	for (size_t i = 0; i < len; i++) {
		char c = begin[i];
		if (c == '"') {
			i = ScanString(begin, len, i + 1, base, bad_strings, spots);
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
		if (big && ValidJsonNumber(begin + i, end - i))
			big_numbers->emplace_back(base + i, std::string(begin + i, end - i));
		i = end - 1;
	}
}

/* Applies what ScanInput found to the buffer (buf = where its offsets count from). */
inline void
DefuseInput(char *buf, const std::deque<std::pair<size_t, std::string>> &big_numbers,
			const std::vector<BadSpot> &spots)
{
	for (const auto &big : big_numbers) {
		char *p = buf + big.first;
		p[0] = '0';
		std::memset(p + 1, ' ', big.second.size() - 1);
	}
	static const char kReplacement[6] = {'\\', 'u', 'f', 'f', 'f', 'd'}; /* same length as \uXXXX */
	for (const BadSpot &spot : spots) {
		if (spot.len == 1)
			buf[spot.offset] = '?';
		else
			std::memcpy(buf + spot.offset, kReplacement, sizeof(kReplacement));
	}
}

} /* namespace detail */
} /* namespace json */
} /* namespace sequin_sync */

#endif
