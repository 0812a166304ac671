/*
 * json_doc.cpp - RapidJSON 1.1 SAX parsing into the flat node arena of json_doc.hpp, and the
 * iterative compact-JSON writer over that arena.  The changes RapidJSON 1.1 needs are in
 * rapidjson_patches.hpp, each with the upstream issue it works around.
 *
 * No Postgres headers here: this file is unit-tested and fuzzed alone (test/unit/).  Nothing
 * in it recurses, and no C++ exception leaves it: RapidJSON's assertions are turned into
 * exceptions (patch 1) and every public function catches everything.
 */
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <functional>
#include <new>

#include "core/json_doc.hpp"
#include "core/rapidjson_patches.hpp"
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

} /* namespace */

/*
 * The SAX handler: appends a node per value to the arena, in document order, and links it to
 * its parent.  Open containers live on an explicit stack (build_stack_, pairs of container
 * index and last child index), so nesting depth costs heap, never C++ stack.  Strings the input
 * scan found bad are listed against their node, and when the document has any, each
 * container's extent in the input is kept for Document::SourceText.
 */
class DocumentBuilder {
public:
	DocumentBuilder(Document &doc, const char *base, const detail::BoundedInsituStream *stream,
					const std::vector<detail::BadStringSpot> *bad, bool keep_extents)
		: doc_(doc), base_(base), stream_(stream), bad_(bad), keep_extents_(keep_extents)
	{
	}

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
		if (next_big_ < big.size() && big[next_big_].first == static_cast<size_t>(str - base_)) {
			const std::string &text = big[next_big_++].second;
			return Add(Kind::Number, text.data(), static_cast<uint32_t>(text.size()));
		}
		return Add(Kind::Number, str, len);
	}

	bool
	String(const char *str, rapidjson::SizeType len, bool copy)
	{
		if (!CheckString(str, len, copy))
			return false;
		NoteBadString(str, static_cast<uint32_t>(doc_.nodes_.size()));
		return Add(Kind::String, str, len);
	}

	bool
	Key(const char *str, rapidjson::SizeType len, bool copy)
	{
		if (!CheckString(str, len, copy))
			return false;
		key_ = str;
		key_len_ = len;
		/* the member's node is the next one added */
		NoteBadString(str, static_cast<uint32_t>(doc_.nodes_.size()));
		return true;
	}

	bool StartObject() { return Open(Kind::Object); }
	bool EndObject(rapidjson::SizeType) { return Close(); }
	bool StartArray() { return Open(Kind::Array); }
	bool EndArray(rapidjson::SizeType) { return Close(); }

	/* After a successful parse: every bad string the scan found belongs to a node. */
	bool AllBadStringsPlaced() const { return next_bad_ == bad_->size(); }

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
	 * The input scan defuses every string that is not Unicode text (patch 6), so a decoded
	 * string can never hold the bytes of a surrogate (ED A0..BF) or anything else that is not
	 * UTF-8.  Raw input bytes are validated by RapidJSON; a surrogate could only come from an
	 * escape the scan missed, which would be our bug: fail loudly (the fuzzers check for it).
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
				return Fail("internal error: surrogate in a decoded string", str - 1);
			++p;
		}
		return true;
	}

	/* A string starting at str (after its quote) that the scan found bad belongs to node. */
	void
	NoteBadString(const char *str, uint32_t node)
	{
		size_t at = static_cast<size_t>(str - base_);
		while (next_bad_ < bad_->size() && (*bad_)[next_bad_].string_begin < at)
			next_bad_++; /* not a string after all: the parse fails, AllBadStringsPlaced says so */
		if (next_bad_ < bad_->size() && (*bad_)[next_bad_].string_begin == at) {
			const detail::BadStringSpot &spot = (*bad_)[next_bad_++];
			BadString b;
			b.node = node;
			b.offset = spot.offset;
			b.message = spot.message;
			doc_.bad_strings_.push_back(b);
		}
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
		if (keep_extents_)
			doc_.extents_.emplace_back(0, 0);
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

	/* The reader stands on the container's bracket in both Open and Close (see patch 2). */
	uint32_t Here() const { return static_cast<uint32_t>(stream_->Pos() - base_); }

	bool
	Open(Kind kind)
	{
		uint32_t index = static_cast<uint32_t>(doc_.nodes_.size());
		if (!Add(kind, nullptr, 0))
			return false;
		if (keep_extents_)
			doc_.extents_[index].first = Here();
		doc_.build_stack_.push_back(index);
		doc_.build_stack_.push_back(0);
		return true;
	}

	bool
	Close()
	{
		std::vector<uint32_t> &stack = doc_.build_stack_;
		if (stack.size() < 2)
			return Fail("internal error: unbalanced container", nullptr);
		if (keep_extents_)
			doc_.extents_[stack[stack.size() - 2]].second = Here();
		stack.resize(stack.size() - 2);
		return true;
	}

	Document &doc_;
	const char *base_;
	const detail::BoundedInsituStream *stream_;
	const std::vector<detail::BadStringSpot> *bad_;
	bool keep_extents_;
	size_t next_big_ = 0;
	size_t next_bad_ = 0;
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
		return detail::kBadSurrogate;
	case rapidjson::kParseErrorStringEscapeInvalid:
		return "invalid escape or control character in string";
	case rapidjson::kParseErrorStringMissQuotationMark:
		return "unterminated string";
	case rapidjson::kParseErrorStringInvalidEncoding:
		return detail::kBadUtf8;
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

/* std::from_chars takes exactly JSON's integer syntax (an optional '-', digits) and checks range. */
bool
ParseInt64(const Node *n, int64_t *out) noexcept
{
	if (n == nullptr || out == nullptr || !n->IsIntegerText())
		return false;
	int64_t value = 0;
	std::from_chars_result r = std::from_chars(n->str, n->str + n->len, value);
	if (r.ec != std::errc() || r.ptr != n->str + n->len)
		return false;
	*out = value;
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
 * Parse with RapidJSON's iterative reader straight into the arena, after the input scan
 * (patch 6) has set big numbers aside and defused strings that are not Unicode.  Everything
 * that can go wrong (syntax, out of memory, a RapidJSON assertion) ends as false + message.
 */
bool
Document::Parse(char *buf, size_t len) noexcept
{
	nodes_.clear();
	sorted_ = false;
	build_stack_.clear();
	bad_strings_.clear();
	source_.clear();
	extents_.clear();
	error_.clear();
	error_offset_ = 0;

	try {
		big_numbers_.clear();
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

		std::vector<detail::BadStringSpot> bad;
		std::vector<detail::BadSpot> spots;
		detail::ScanInput(begin, parse_len, start, &big_numbers_, &bad, &spots);
		if (!bad.empty())
			source_.assign(buf, len); /* before anything in buf changes */
		detail::DefuseInput(buf, big_numbers_, spots);

		rapidjson::GenericReader<rapidjson::UTF8<>, rapidjson::UTF8<>, detail::ParserStackTag> reader(nullptr, 256);
		detail::BoundedInsituStream stream(begin, begin + parse_len);
		DocumentBuilder builder(*this, buf, &stream, &bad, !bad.empty());
		rapidjson::ParseResult result = reader.Parse<kParseFlags>(stream, builder);

		if (result.IsError()) {
			if (result.Code() == rapidjson::kParseErrorTermination && builder.error_ != nullptr)
				SetError(builder.error_, builder.error_offset_);
			else if (nul != nullptr && result.Offset() >= parse_len)
				SetError("unexpected NUL byte", start + parse_len);
			else
				SetError(ParseErrorText(detail::FixErrorCode(result, parse_len)), start + result.Offset());
		} else if (nul != nullptr) {
			SetError("unexpected NUL byte", start + parse_len);
		} else if (nodes_.empty()) {
			/* cannot happen: a successful parse has a root */
			SetError("the document is empty", start);
		} else if (!builder.AllBadStringsPlaced()) {
			SetError("internal error: a bad string outside the document's strings", 0);
		} else {
			return true;
		}
	} catch (const std::bad_alloc &) {
		SetError("out of memory", 0);
	} catch (const detail::RapidJsonAssertion &) {
		SetError("internal error: parser assertion failed", 0);
	} catch (...) {
		SetError("internal error: unexpected exception", 0);
	}
	nodes_.clear();
	bad_strings_.clear();
	source_.clear();
	extents_.clear();
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

bool
Document::SortMembers() noexcept
{
	sorted_ = false;
	try {
		size_t n = nodes_.size();
		sorted_first_.resize(n);
		sorted_next_.resize(n);
		for (size_t i = 0; i < n; i++) {
			sorted_first_[i] = nodes_[i].first;
			sorted_next_[i] = nodes_[i].next;
		}
		auto key_less = [this](uint32_t a, uint32_t b) {
			const Node &x = nodes_[a];
			const Node &y = nodes_[b];
			if (x.key_len != y.key_len)
				return x.key_len < y.key_len;
			return x.key_len != 0 && memcmp(x.key, y.key, x.key_len) < 0;
		};
		for (size_t i = 0; i < n; i++) {
			const Node &obj = nodes_[i];
			if (obj.kind != Kind::Object || obj.len < 2)
				continue;
			std::vector<uint32_t> &members = sort_scratch_;
			members.clear();
			for (uint32_t c = obj.first; c != 0; c = nodes_[c].next)
				members.push_back(c);
			if (std::is_sorted(members.begin(), members.end(), key_less))
				continue;
			std::stable_sort(members.begin(), members.end(), key_less);
			sorted_first_[i] = members[0];
			for (size_t k = 0; k + 1 < members.size(); k++)
				sorted_next_[members[k]] = members[k + 1];
			sorted_next_[members.back()] = 0;
		}
	} catch (...) {
		return false;
	}
	sorted_ = true;
	return true;
}

const Node *
Document::FirstSorted(const Node *n) const noexcept
{
	if (!sorted_)
		return First(n);
	if (!Owns(n) || (n->kind != Kind::Array && n->kind != Kind::Object))
		return nullptr;
	uint32_t first = sorted_first_[n - nodes_.data()];
	return first == 0 ? nullptr : &nodes_[first];
}

const Node *
Document::NextSorted(const Node *n) const noexcept
{
	if (!sorted_)
		return Next(n);
	if (!Owns(n))
		return nullptr;
	uint32_t next = sorted_next_[n - nodes_.data()];
	return next == 0 ? nullptr : &nodes_[next];
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
 * Nodes are stored in document order, so a subtree is the index range [index, SubtreeEnd):
 * its end is one past its last descendant, found by following last children down.
 */
uint32_t
Document::SubtreeEnd(uint32_t index) const noexcept
{
	uint32_t cur = index;
	for (;;) {
		const Node &n = nodes_[cur];
		if ((n.kind != Kind::Array && n.kind != Kind::Object) || n.first == 0)
			return cur + 1;
		uint32_t child = n.first;
		while (nodes_[child].next != 0)
			child = nodes_[child].next;
		cur = child;
	}
}

/* A binary search in the (node-ordered) bad strings for the first one in n's index range. */
const BadString *
Document::FindBadString(const Node *n) const noexcept
{
	if (bad_strings_.empty() || !Owns(n))
		return nullptr;
	uint32_t lo = static_cast<uint32_t>(n - nodes_.data());
	uint32_t hi = SubtreeEnd(lo);
	auto it = std::lower_bound(bad_strings_.begin(), bad_strings_.end(), lo,
							   [](const BadString &b, uint32_t node) { return b.node < node; });
	return it != bad_strings_.end() && it->node < hi ? &*it : nullptr;
}

/* Both lists are in document order: one merge walk. */
const BadString *
Document::FindBadStringOutside(const Node *const *subtrees, size_t count) const noexcept
{
	size_t k = 0;
	uint32_t lo = 0;
	uint32_t hi = 0; /* the range of subtrees[k - 1], or empty */
	for (const BadString &b : bad_strings_) {
		while (b.node >= hi && k < count) {
			const Node *n = subtrees[k++];
			if (!Owns(n))
				continue;
			lo = static_cast<uint32_t>(n - nodes_.data());
			hi = SubtreeEnd(lo);
		}
		if (b.node < lo || b.node >= hi)
			return &b;
	}
	return nullptr;
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

/* The container's bytes from the kept input; a byte that is not UTF-8 becomes \udcXX. */
bool
Document::SourceText(const Node *n, const char **out, size_t *out_len) noexcept
{
	if (!Owns(n) || out == nullptr || out_len == nullptr || source_.empty() ||
		(n->kind != Kind::Array && n->kind != Kind::Object))
		return Serialize(n, out, out_len);
	const std::pair<uint32_t, uint32_t> &extent = extents_[static_cast<size_t>(n - nodes_.data())];
	*out = nullptr;
	*out_len = 0;
	try {
		static const char hex[] = "0123456789abcdef";
		const unsigned char *p = reinterpret_cast<const unsigned char *>(source_.data()) + extent.first;
		const unsigned char *end = reinterpret_cast<const unsigned char *>(source_.data()) + extent.second + 1;
		scratch_.clear();
		scratch_.reserve(static_cast<size_t>(end - p));
		while (p < end) {
			size_t run = detail::Utf8SequenceLength(p, static_cast<size_t>(end - p));
			if (run != 0) {
				scratch_.append(reinterpret_cast<const char *>(p), run);
				p += run;
				continue;
			}
			char u[6] = {'\\', 'u', 'd', 'c', hex[*p >> 4], hex[*p & 0xF]};
			scratch_.append(u, sizeof(u));
			p++;
		}
		*out = scratch_.data();
		*out_len = scratch_.size();
		return true;
	} catch (...) {
		scratch_.clear();
		return false;
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

bool
StringListObject(std::string_view key, const std::vector<std::string_view> &items, std::string *out) noexcept
{
	if (out == nullptr)
		return false;
	out->clear();
	if (items.empty())
		return false;
	try {
		size_t size = key.size() + 8;
		for (std::string_view item : items)
			size += item.size() + 3;
		out->reserve(size);
		out->append("{\"");
		out->append(key);
		out->append("\":[");
		for (size_t i = 0; i < items.size(); i++) {
			if (i > 0)
				out->push_back(',');
			if (!AppendJsonString(out, items[i])) {
				out->clear();
				return false;
			}
		}
		out->append("]}");
		return true;
	} catch (...) {
		out->clear();
		return false;
	}
}

} /* namespace json */
} /* namespace sequin_sync */
