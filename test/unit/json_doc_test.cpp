/*
 * json_doc_test.cpp - unit tests for the JSON decoder (json_doc.cpp, with the RapidJSON patches
 * of rapidjson_patches.hpp) and the `/next` reply decoder (next_reply.cpp).  No framework and
 * no Postgres: build and run with
 *
 *   g++ -std=c++17 -O1 -g -Wall -Wextra -Werror -Isrc src/core/json_doc.cpp src/core/next_reply.cpp \
 *       test/unit/json_doc_test.cpp -o /tmp/json_doc_test && /tmp/json_doc_test
 *
 * from the repository root (add -fsanitize=address,undefined to check memory too).  Fixtures
 * are read from test/fixtures, or from the directory given as the first argument.  Every
 * document is parsed from a heap buffer of exactly its size, with no NUL after it, so that
 * AddressSanitizer catches any read or write past the end.  Prints each failed check, then
 * "N passed, M failed"; exits non-zero on any failure.
 */
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/json_doc.hpp"
#include "core/next_reply.hpp"
#include "unit_check.hpp"

using namespace sequin_sync;
using json::Document;
using json::Kind;
using json::Node;

namespace {

std::string
Serialize(Document &doc, const Node *n)
{
	const char *out = nullptr;
	size_t len = 0;
	if (!doc.Serialize(n, &out, &len))
		return "<serialize failed>";
	if (out[len] != '\0')
		return "<not NUL-terminated>";
	return std::string(out, len);
}

/* Parse text, then serialize its root; "<error: message @offset>" when the parse fails. */
std::string
RoundTrip(std::string_view text)
{
	Parsed p(text);
	if (!p.ok)
		return "<error: " + p.Error() + " @" + std::to_string(p.doc.ErrorOffset()) + ">";
	return Serialize(p.doc, p.Root());
}

/* The parse error of text, "" when it parses. */
std::string
ErrorOf(std::string_view text)
{
	Parsed p(text);
	return p.ok ? std::string() : p.Error();
}

/* The bad strings of text as "message @offset" lines (node index in brackets); "<error: ...>"
 * when it does not parse. */
std::string
BadStringsOf(std::string_view text)
{
	Parsed p(text);
	if (!p.ok)
		return "<error: " + p.Error() + ">";
	std::string out;
	for (const json::BadString &b : p.doc.BadStrings())
		out += std::string(out.empty() ? "" : "\n") + b.message + " @" + std::to_string(b.offset) + " [" +
			   std::to_string(b.node) + "]";
	return out;
}

/* ---------------------------------------------------------------------------------------- */

void
TestKinds()
{
	Parsed p(R"( [null, false, true, 0, "s", [], {}, [1], {"k": "v"}] )");
	CHECK(p.ok);
	const Node *root = p.Root();
	CHECK(root != nullptr && root->IsArray() && root->len == 9);
	Kind want[] = {Kind::Null, Kind::False, Kind::True, Kind::Number, Kind::String,
				   Kind::Array, Kind::Object, Kind::Array, Kind::Object};
	size_t i = 0;
	for (const Node *n = p.doc.First(root); n != nullptr; n = p.doc.Next(n), i++)
		CHECK(i < 9 && n->kind == want[i]);
	CHECK(i == 9);

	const Node *n = p.doc.First(root);
	CHECK(n->IsNull() && !n->IsBool());
	n = p.doc.Next(n);
	CHECK(n->IsBool() && n->kind == Kind::False);
	n = p.doc.Next(n);
	CHECK(n->IsBool() && n->kind == Kind::True);
	n = p.doc.Next(n);
	CHECK(n->IsNumber());
	CHECK_EQ(n->Str(), "0");
	n = p.doc.Next(n);
	CHECK(n->IsString());
	CHECK_EQ(n->Str(), "s");
	n = p.doc.Next(n);
	CHECK(n->IsArray() && n->len == 0 && p.doc.First(n) == nullptr);
	n = p.doc.Next(n);
	CHECK(n->IsObject() && n->len == 0 && p.doc.First(n) == nullptr);
	n = p.doc.Next(n);
	CHECK(n->IsArray() && n->len == 1 && p.doc.First(n)->IsNumber());
	n = p.doc.Next(n);
	CHECK(n->IsObject() && n->len == 1);
	CHECK_EQ(p.doc.First(n)->Key(), "k");
	CHECK_EQ(p.doc.First(n)->Str(), "v");
	CHECK(p.doc.Next(n) == nullptr);
	CHECK(p.doc.NodeCount() == 12);

	/* scalar roots; each buffer ends exactly at the value */
	const char *scalars[] = {"null", "true", "false", "123", "-1.5", "\"x\"", "[]", "{}"};
	for (const char *s : scalars)
		CHECK_EQ(RoundTrip(s), s);
	Parsed num("98765");
	CHECK(num.ok && num.Root()->IsNumber());
	CHECK_EQ(num.Root()->Str(), "98765");

	/* First/Next on scalars and null pointers */
	Parsed s("\"x\"");
	CHECK(s.doc.First(s.Root()) == nullptr);
	CHECK(s.doc.Next(s.Root()) == nullptr);
	CHECK(s.doc.First(nullptr) == nullptr);
	CHECK(s.doc.Next(nullptr) == nullptr);
	CHECK(s.doc.Find(nullptr, "a") == nullptr);
	CHECK(s.doc.Find(s.Root(), "a") == nullptr);

	/* a node of another document is refused, not followed */
	CHECK(s.doc.First(root) == nullptr);
	CHECK(s.doc.Find(root, "k") == nullptr);
	const char *out = nullptr;
	size_t len = 7;
	CHECK(!s.doc.Serialize(root, &out, &len) && out == nullptr && len == 0);
	CHECK(!s.doc.Owns(root) && p.doc.Owns(root) && !s.doc.Owns(nullptr));
	CHECK(!s.doc.Serialize(nullptr, &out, &len));

	/* whitespace everywhere it is allowed */
	CHECK_EQ(RoundTrip(" \t\r\n{ \"a\" :\n[ 1 ,\t2 ] , \"b\" : { } }\r\n "), "{\"a\":[1,2],\"b\":{}}");
	/* the documented noexcept guarantees */
	static_assert(noexcept(p.doc.Parse(nullptr, 0)), "Parse must be noexcept");
	static_assert(noexcept(p.doc.Serialize(nullptr, nullptr, nullptr)), "Serialize must be noexcept");
	static_assert(noexcept(p.doc.SourceText(nullptr, nullptr, nullptr)), "SourceText must be noexcept");
	static_assert(noexcept(p.doc.FindPath(nullptr, "")), "FindPath must be noexcept");
	static_assert(noexcept(p.doc.FindBadString(nullptr)), "FindBadString must be noexcept");
	static_assert(noexcept(json::ParseInt64(nullptr, nullptr)), "ParseInt64 must be noexcept");
}

void
TestNumbers()
{
	Parsed p(R"([12345678901234567890,-0.5e-10,1.000000000000000000001,0,-0,1E+2,1e-400,-42,
		99999999999999999999999999999999999999.5,18446744073709551616,-9223372036854775809])");
	CHECK(p.ok);
	const char *want[] = {"12345678901234567890", "-0.5e-10", "1.000000000000000000001", "0", "-0",
						  "1E+2", "1e-400", "-42", "99999999999999999999999999999999999999.5",
						  "18446744073709551616", "-9223372036854775809"};
	size_t i = 0;
	for (const Node *n = p.doc.First(p.Root()); n != nullptr; n = p.doc.Next(n), i++) {
		CHECK(n->IsNumber());
		if (i < 11)
			CHECK_EQ(n->Str(), want[i]);
	}
	CHECK(i == 11);
	/* raw text survives a round trip unchanged */
	CHECK_EQ(RoundTrip("{\"a\":1.000000000000000000001,\"b\":[-0.5e-10,12345678901234567890]}"),
			 "{\"a\":1.000000000000000000001,\"b\":[-0.5e-10,12345678901234567890]}");
	/* numbers ending at every kind of delimiter */
	CHECK_EQ(RoundTrip("[1,2 ]"), "[1,2]");
	CHECK_EQ(RoundTrip("{\"a\":1}"), "{\"a\":1}");
	CHECK_EQ(RoundTrip("{\"a\":1 }"), "{\"a\":1}");
	CHECK_EQ(RoundTrip("3.25e+7\n"), "3.25e+7");

	/* IsIntegerText */
	Parsed q("[123,-5,-0,1.0,1e3,-1.5,\"12\",0]");
	const Node *n = p.doc.First(q.Root()); /* foreign node */
	CHECK(n == nullptr);
	bool want_int[] = {true, true, true, false, false, false, false, true};
	i = 0;
	for (n = q.doc.First(q.Root()); n != nullptr; n = q.doc.Next(n), i++)
		CHECK(n->IsIntegerText() == want_int[i]);
	CHECK(i == 8);
	Node empty_node;
	CHECK(!empty_node.IsIntegerText());

	/* malformed numbers */
	CHECK_EQ(ErrorOf("-"), "invalid value");
	CHECK_EQ(ErrorOf("+1"), "invalid value");
	CHECK_EQ(ErrorOf(".5"), "invalid value");
	CHECK_EQ(ErrorOf("1."), "missing digits after the decimal point");
	CHECK_EQ(ErrorOf("[1.]"), "missing digits after the decimal point");
	CHECK_EQ(ErrorOf("1e"), "missing digits in the exponent");
	CHECK_EQ(ErrorOf("1e+"), "missing digits in the exponent");
	CHECK_EQ(ErrorOf("01"), "text after the end of the document");
	CHECK_EQ(ErrorOf("[01]"), "missing comma or closing bracket in array");
	CHECK_EQ(ErrorOf("0x10"), "text after the end of the document");

	/* Beyond a double: RapidJSON 1.1 would fail the document; the text is set aside instead */
	CHECK_EQ(RoundTrip(std::string(400, '9')), std::string(400, '9'));
	CHECK_EQ(RoundTrip("1e309"), "1e309");
	CHECK_EQ(RoundTrip("1e308"), "1e308");
	CHECK_EQ(RoundTrip("1e-99999"), "1e-99999");
	CHECK_EQ(RoundTrip(std::string(300, '9')), std::string(300, '9'));

	/* NaN and Infinity are not JSON */
	const char *nonfinite[] = {"NaN", "Infinity", "-Infinity", "[NaN]", "{\"a\":Infinity}", "nan",
							   "inf", "-inf", "[-NaN]"};
	for (const char *s : nonfinite) {
		Parsed bad(s);
		CHECK(!bad.ok && bad.Root() == nullptr);
		CHECK_EQ(bad.Error(), "invalid value");
	}
}

void
TestStrings()
{
	Parsed p(R"(["a\"b\\c\/d\b\f\n\r\t", "\u0000", "a\u0000b", "\ud83d\ude00", "\u00e9", "é😀", "", "\u0041\u20ac"])");
	CHECK(p.ok);
	const Node *n = p.doc.First(p.Root());
	CHECK_EQ(n->Str(), std::string_view("a\"b\\c/d\b\f\n\r\t"));
	n = p.doc.Next(n);
	CHECK(n->len == 1 && n->str[0] == '\0');
	n = p.doc.Next(n);
	CHECK_EQ(n->Str(), std::string_view("a\0b", 3));
	n = p.doc.Next(n);
	CHECK_EQ(n->Str(), "\xF0\x9F\x98\x80");
	n = p.doc.Next(n);
	CHECK_EQ(n->Str(), "\xC3\xA9");
	n = p.doc.Next(n);
	CHECK_EQ(n->Str(), "\xC3\xA9\xF0\x9F\x98\x80");
	n = p.doc.Next(n);
	CHECK(n->IsString() && n->len == 0);
	n = p.doc.Next(n);
	CHECK_EQ(n->Str(), "A\xE2\x82\xAC");

	/* keys are decoded too (in place) */
	Parsed k(R"({"a\"b":1,"\u00e9":2,"\u0000":3,"":4})");
	CHECK(k.ok);
	CHECK(k.doc.Find(k.Root(), "a\"b") != nullptr);
	CHECK(k.doc.Find(k.Root(), "\xC3\xA9") != nullptr);
	CHECK(k.doc.Find(k.Root(), std::string_view("\0", 1)) != nullptr);
	const Node *e = k.doc.Find(k.Root(), "");
	CHECK(e != nullptr && e->Str() == "4");
	CHECK_EQ(Serialize(k.doc, k.Root()), "{\"a\\\"b\":1,\"\xC3\xA9\":2,\"\\u0000\":3,\"\":4}");

	/*
	 * Lone surrogates: not an error (one bad value must not cost a whole reply) but a bad string
	 * at the escape, its text made valid (U+FFFD for the escape); a pair is fine.
	 */
	CHECK_EQ(BadStringsOf(R"("\ud800")"), "invalid unicode surrogate pair in string @1 [0]");
	CHECK_EQ(BadStringsOf(R"("\ud800x")"), "invalid unicode surrogate pair in string @1 [0]");
	CHECK_EQ(BadStringsOf(R"("\ud800\u0041")"), "invalid unicode surrogate pair in string @1 [0]");
	CHECK_EQ(BadStringsOf(R"("\ud800\ud800")"), "invalid unicode surrogate pair in string @1 [0]");
	CHECK_EQ(BadStringsOf(R"("\udc00")"), "invalid unicode surrogate pair in string @1 [0]");
	CHECK_EQ(BadStringsOf(R"({"\udfff":1})"), "invalid unicode surrogate pair in string @2 [1]");
	CHECK_EQ(BadStringsOf(R"(["ok","x\udc00y"])"), "invalid unicode surrogate pair in string @8 [2]");
	CHECK_EQ(BadStringsOf(R"(["\ud83d\ude00","\uD83D\uDE00"])"), "");
	{
		Parsed s(R"(["ok","x\udc00y","\ud800\ud800z\udbff"])");
		CHECK(s.ok);
		const Node *second = s.doc.Next(s.doc.First(s.Root()));
		CHECK_EQ(second->Str(), "x\xEF\xBF\xBDy");
		CHECK_EQ(s.doc.Next(second)->Str(), "\xEF\xBF\xBD\xEF\xBF\xBDz\xEF\xBF\xBD");
		CHECK(s.doc.BadStrings().size() == 2); /* one entry per string */
		CHECK(s.doc.FindBadString(s.doc.First(s.Root())) == nullptr);
		CHECK(s.doc.FindBadString(second) == &s.doc.BadStrings()[0]);
		CHECK(s.doc.FindBadString(s.Root()) == &s.doc.BadStrings()[0]);
	}
	CHECK_EQ(ErrorOf(R"("\u12G4")"), "invalid \\u escape in string");
	CHECK_EQ(ErrorOf(R"("\u12")"), "invalid \\u escape in string");
	CHECK_EQ(ErrorOf(R"("\x")"), "invalid escape or control character in string");
	CHECK_EQ(ErrorOf(R"("\')"), "invalid escape or control character in string");
	CHECK_EQ(ErrorOf("\"a\tb\""), "invalid escape or control character in string");
	CHECK_EQ(ErrorOf("\"a\nb\""), "invalid escape or control character in string");
	CHECK_EQ(ErrorOf("\"abc"), "unterminated string");
	CHECK_EQ(ErrorOf("\"abc\\"), "unterminated string");
	CHECK_EQ(ErrorOf("'abc'"), "invalid value");
}

void
TestUtf8()
{
	/* valid multi-byte UTF-8 passes through unchanged */
	CHECK_EQ(RoundTrip("[\"\xE2\x82\xAC\",\"\xF4\x8F\xBF\xBF\",\"\xED\x9F\xBF\"]"),
			 "[\"\xE2\x82\xAC\",\"\xF4\x8F\xBF\xBF\",\"\xED\x9F\xBF\"]");

	/* invalid UTF-8 in strings: stray bytes, overlong forms, surrogates, > U+10FFFF, cut short */
	const char *bad[] = {
		"\"\xFF\"", "\"\xFE\"", "\"\x80\"", "\"\xC0\x80\"", "\"\xC1\xBF\"", "\"\xE0\x80\x80\"",
		"\"\xED\xA0\x80\"", "\"\xED\xBF\xBF\"", "\"\xF4\x90\x80\x80\"", "\"\xF5\x80\x80\x80\"",
		"\"\xE2\x82\"", "\"\xE2\"", "\"\xC3\"", "\"a\xF0\x9F\x98\"", "{\"\xFF\":1}",
	};
	for (const char *s : bad) {
		/* parsed, listed, and made valid: each bad byte becomes '?' */
		Parsed p(s);
		CHECK(p.ok && p.doc.BadStrings().size() == 1);
		if (p.ok && p.doc.BadStrings().size() == 1)
			CHECK_EQ(p.doc.BadStrings()[0].message, "invalid UTF-8 in string");
	}
	{
		Parsed p("[\"ok\",\"ab\xFF\"]");
		CHECK(p.ok && p.doc.BadStrings().size() == 1 && p.doc.BadStrings()[0].offset == 9);
		CHECK_EQ(Serialize(p.doc, p.Root()), "[\"ok\",\"ab?\"]");
		Parsed q("{\"\xC0\xAF\":\"\xE2\x82\",\"ok\":\"\xE2\x82\xAC\"}");
		CHECK_EQ(Serialize(q.doc, q.Root()), "{\"??\":\"??\",\"ok\":\"\xE2\x82\xAC\"}");
		CHECK_EQ(BadStringsOf("{\"\xC0\xAF\":\"\xE2\x82\",\"ok\":\"\xE2\x82\xAC\"}"),
				 "invalid UTF-8 in string @2 [1]\ninvalid UTF-8 in string @7 [1]");
	}

	/* a multi-byte sequence cut off by the end of the buffer (nothing after it, no quote) */
	const char *cut[] = {"\"\xF0", "\"\xF0\x9F", "\"\xF0\x9F\x98", "\"\xE2", "\"\xE2\x82", "\"\xC3",
						 "[\"\xF0\x9F\x98"};
	for (const char *s : cut) {
		Parsed p(s);
		CHECK(!p.ok);
		CHECK(p.Error() == "invalid UTF-8 in string" || p.Error() == "unterminated string");
	}

	/* outside strings */
	CHECK_EQ(ErrorOf("\xFF"), "invalid value");
	CHECK_EQ(ErrorOf("[1]\xFF"), "text after the end of the document");
	CHECK_EQ(ErrorOf("[\xC3\xA9]"), "invalid value");
}

void
TestBom()
{
	Parsed p("\xEF\xBB\xBF{\"a\":1}");
	CHECK(p.ok);
	CHECK_EQ(Serialize(p.doc, p.Root()), "{\"a\":1}");
	CHECK_EQ(ErrorOf("\xEF\xBB\xBF"), "the document is empty");
	CHECK_EQ(ErrorOf("\xEF\xBB\xBF  "), "the document is empty");
	CHECK_EQ(ErrorOf("\xEF\xBB\xBF\xEF\xBB\xBF{}"), "invalid value");
	CHECK_EQ(ErrorOf("{}\xEF\xBB\xBF"), "text after the end of the document");
	CHECK_EQ(ErrorOf("\xEF\xBB"), "invalid value");
	Parsed off("\xEF\xBB\xBF[1,]");
	CHECK(!off.ok && off.doc.ErrorOffset() == 6); /* offsets count the BOM */
}

void
TestStructureErrors()
{
	struct Case {
		const char *text;
		const char *message;
		size_t offset;
	} cases[] = {
		{"", "the document is empty", 0},
		{"   \n\t\r ", "the document is empty", 7},
		{"{} x", "text after the end of the document", 3},
		{"[1] [2]", "text after the end of the document", 4},
		{"1 2", "text after the end of the document", 2},
		{"{}}", "text after the end of the document", 2},
		{"nulll", "text after the end of the document", 4},
		{"tru", "invalid value", 3},
		{"nul", "invalid value", 3},
		{"[1,2", "missing comma or closing bracket in array", 4},
		{"[1 2]", "missing comma or closing bracket in array", 3},
		{"[1,]", "invalid value", 3},
		{"[", "invalid value", 1},
		{"]", "invalid value", 0},
		{"}", "invalid value", 0},
		{" ,", "invalid value", 1},
		{":", "invalid value", 0},
		{"{\"a\":1", "missing comma or closing brace in object", 6},
		{"{\"a\":1,}", "missing member name in object", 7},
		{"{\"a\"", "missing colon after member name in object", 4},
		{"{\"a\" 1}", "missing colon after member name in object", 5},
		{"{\"a\":", "invalid value", 5},
		{"{,}", "missing member name in object", 1},
		{"{1:2}", "missing member name in object", 1},
		{"{a:1}", "missing member name in object", 1},
		{"[1] // comment", "text after the end of the document", 4},
		{"/* c */ 1", "invalid value", 0},
		{"{}\0", "unexpected NUL byte", 2},
	};
	for (const Case &c : cases) {
		/* strlen would stop at the NUL of the last case */
		size_t len = std::strlen(c.text) + (std::strcmp(c.message, "unexpected NUL byte") == 0 ? 1 : 0);
		Parsed p(std::string_view(c.text, len));
		CHECK(!p.ok);
		CHECK(p.Root() == nullptr);
		CHECK_EQ(p.Error(), c.message);
		if (p.doc.ErrorOffset() != c.offset) {
			std::printf("    (input %s: offset %zu, want %zu)\n", Show(std::string_view(c.text, len)).c_str(),
						p.doc.ErrorOffset(), c.offset);
			CHECK(p.doc.ErrorOffset() == c.offset);
		} else
			passed++;
	}

	/* raw NUL bytes: never valid, and must not end the document early */
	struct NulCase {
		std::string_view text;
		const char *message;
		size_t offset;
	} nuls[] = {
		{std::string_view("[1,\0]", 5), "unexpected NUL byte", 3},
		{std::string_view("\"a\0b\"", 5), "unexpected NUL byte", 2},
		{std::string_view("1\0", 2), "unexpected NUL byte", 1},
		{std::string_view("\0", 1), "unexpected NUL byte", 0},
		{std::string_view("[x\0]", 4), "invalid value", 1},
		{std::string_view("\xEF\xBB\xBF{}\0{}", 8), "unexpected NUL byte", 5},
	};
	for (const NulCase &c : nuls) {
		Parsed p(c.text);
		CHECK(!p.ok);
		CHECK_EQ(p.Error(), c.message);
		CHECK(p.doc.ErrorOffset() == c.offset);
	}

	Document d;
	CHECK(!d.Parse(nullptr, 0));
	CHECK_EQ(std::string(d.ErrorMessage()), "the document is empty");
	CHECK(d.Root() == nullptr);
	CHECK(!d.Parse(nullptr, 5));
}

void
TestDuplicateKeys()
{
	Parsed p(R"({"a":1,"b":true,"a":2})");
	CHECK(p.ok);
	const Node *a = p.doc.Find(p.Root(), "a");
	CHECK(a != nullptr && a->Str() == "2");
	CHECK(p.Root()->len == 3);
	CHECK_EQ(Serialize(p.doc, p.Root()), "{\"a\":1,\"b\":true,\"a\":2}");
	CHECK(p.doc.Find(p.Root(), "c") == nullptr);
	CHECK(p.doc.Find(p.Root(), "A") == nullptr);
	CHECK(p.doc.Find(p.Root(), "ab") == nullptr);
}

void
TestReuse()
{
	Document d;
	std::string a = "{\"x\":[1,2,3]}";
	std::string b = "[\"y\"]";
	std::string bad = "[1,";
	CHECK(d.Parse(a.data(), a.size()));
	CHECK(d.Root()->IsObject() && d.NodeCount() == 5);
	CHECK(d.Parse(b.data(), b.size()));
	CHECK(d.Root()->IsArray() && d.NodeCount() == 2);
	CHECK(!d.Parse(bad.data(), bad.size()));
	CHECK(d.Root() == nullptr && d.NodeCount() == 0);
	std::string c = "{}";
	CHECK(d.Parse(c.data(), c.size()));
	CHECK(d.Root() != nullptr && std::string(d.ErrorMessage()).empty());
}

/* 100,000 levels: parsing, serializing and array literals must not recurse. */
void
TestDeepNesting()
{
	const size_t depth = 100000;
	std::string arrays = DeepArrays(depth);
	{
		Parsed p(arrays);
		CHECK(p.ok);
		CHECK(p.doc.NodeCount() == depth);
		CHECK(Serialize(p.doc, p.Root()) == arrays);
	}

	std::string objects = DeepObjects(depth);
	{
		Parsed p(objects);
		CHECK(p.ok);
		CHECK(p.doc.NodeCount() == depth + 1);
		CHECK(Serialize(p.doc, p.Root()) == objects);
		const Node *n = p.doc.FindPath(p.Root(), "a.a.a.a");
		CHECK(n != nullptr && n->IsObject());
	}

	/* mixed, with siblings at every level */
	std::string mixed = DeepMixed(depth);
	{
		Parsed p(mixed);
		CHECK(p.ok);
		CHECK(Serialize(p.doc, p.Root()) == mixed);
	}

	/* deep and unterminated: an error, not a crash */
	CHECK_EQ(ErrorOf(std::string(depth, '[')), "invalid value");
	CHECK_EQ(ErrorOf(std::string(depth, '[') + "1"), "missing comma or closing bracket in array");
	std::string open_objects;
	for (size_t i = 0; i < depth; i++)
		open_objects += "{\"a\":";
	CHECK_EQ(ErrorOf(open_objects), "invalid value");
	CHECK_EQ(ErrorOf(std::string(depth, '[') + std::string(depth - 1, ']') + "}"),
			 "missing comma or closing bracket in array");
}

void
TestLargeString()
{
	const size_t size = 10 * 1024 * 1024;
	std::string body;
	body.reserve(size + 64);
	while (body.size() < size / 2)
		body += "0123456789abcdef";
	body += "\\n\\u00e9\\\"";
	while (body.size() < size)
		body += "fedcba9876543210";
	std::string text = "{\"big\":\"" + body + "\"}";

	Parsed p(text);
	CHECK(p.ok);
	const Node *big = p.doc.Find(p.Root(), "big");
	CHECK(big != nullptr && big->IsString());
	/* the three escapes (2 + 6 + 2 bytes) decode to 1 + 2 + 1 bytes */
	CHECK(big != nullptr && big->len == body.size() - 6);
	CHECK(big != nullptr && big->Str().substr(size / 2, 4) == "\n\xC3\xA9\"");
	std::string out = Serialize(p.doc, p.Root());
	CHECK(out == "{\"big\":\"" + body.substr(0, size / 2) + "\\n\xC3\xA9\\\"" + body.substr(size / 2 + 10) + "\"}");
	CHECK(RoundTrip(out) == out);
}

void
TestTruncation(const char *fixture)
{
	std::string full = ReadFixture(fixture);
	while (!full.empty() && (full.back() == '\n' || full.back() == ' ' || full.back() == '\r'))
		full.pop_back();
	CHECK(full.size() > 100);

	Document d; /* one document for all: re-use must work too */
	int bad = 0;
	for (size_t len = 0; len < full.size(); len++) {
		std::unique_ptr<char[]> buf(new char[len]);
		if (len)
			std::memcpy(buf.get(), full.data(), len);
		bool ok = d.Parse(buf.get(), len);
		if (ok || d.Root() != nullptr || d.ErrorMessage()[0] == '\0' || d.ErrorOffset() > len) {
			if (bad++ < 5)
				std::printf("    truncated %s at %zu: ok=%d error=\"%s\" offset=%zu\n", fixture, len, ok,
							d.ErrorMessage(), d.ErrorOffset());
		}
	}
	CHECK(bad == 0);
	std::unique_ptr<char[]> buf(new char[full.size()]);
	std::memcpy(buf.get(), full.data(), full.size());
	CHECK(d.Parse(buf.get(), full.size()));
}

/* parse(serialize(x)) serializes identically, and serialization is compact and stable. */
void
TestRoundTrip()
{
	const char *fixtures[] = {"next-response.json", "sample_records.json", "strings.json", "numbers.json"};
	for (const char *f : fixtures) {
		std::string text = ReadFixture(f);
		Parsed p(text);
		CHECK(p.ok);
		std::string once = Serialize(p.doc, p.Root());
		CHECK(once.find('\n') == std::string::npos);
		CHECK_EQ(RoundTrip(once), once);
	}

	CHECK_EQ(RoundTrip("{ \"a\" : [ 1 , \"x\\ny\" , null ] }"), "{\"a\":[1,\"x\\ny\",null]}");
	CHECK_EQ(RoundTrip("\"\\u0001\\u001f\\u007f\\u0000\\b\\f\\n\\r\\t\\/\""),
			 "\"\\u0001\\u001f\x7f\\u0000\\b\\f\\n\\r\\t/\"");
	CHECK_EQ(RoundTrip("\"\\u00e9\\u4e2d\\ud83d\\ude00\""), "\"\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80\"");
	CHECK_EQ(RoundTrip("{\"k\\u0000\\\"\":\"v\\\\\"}"), "{\"k\\u0000\\\"\":\"v\\\\\"}");
	CHECK_EQ(RoundTrip("[[],{},[[]],{\"a\":{}}]"), "[[],{},[[]],{\"a\":{}}]");

	/* a sub-node serializes alone, without its siblings */
	Parsed p("{\"a\":{\"x\":[1,2]},\"b\":3}");
	CHECK_EQ(Serialize(p.doc, p.doc.Find(p.Root(), "a")), "{\"x\":[1,2]}");
	CHECK_EQ(Serialize(p.doc, p.doc.FindPath(p.Root(), "a.x")), "[1,2]");
	CHECK_EQ(Serialize(p.doc, p.doc.First(p.doc.FindPath(p.Root(), "a.x"))), "1");
	CHECK_EQ(Serialize(p.doc, p.doc.Find(p.Root(), "b")), "3");
}

void
TestFindPath()
{
	std::string text = ReadFixture("sample_records.json");
	Parsed p(text);
	CHECK(p.ok);
	const Node *rec = p.doc.First(p.Root());
	CHECK(rec != nullptr && rec->IsObject());
	const Node *n = p.doc.FindPath(rec, "data.metadata.tier");
	CHECK(n != nullptr && n->Str() == "gold");
	n = p.doc.FindPath(rec, "sync.external_id");
	CHECK(n != nullptr && n->Str() == "org_42");
	n = p.doc.FindPath(rec, "updated_idx");
	CHECK(n != nullptr && n->IsIntegerText() && n->Str() == "2745327036");
	n = p.doc.FindPath(rec, "sync.metadata");
	CHECK(n != nullptr && n->IsObject());
	CHECK(p.doc.FindPath(rec, "") == nullptr);
	CHECK(p.doc.FindPath(rec, ".") == nullptr);
	CHECK(p.doc.FindPath(rec, "data.") == nullptr);
	CHECK(p.doc.FindPath(rec, ".data") == nullptr);
	CHECK(p.doc.FindPath(rec, "data..id") == nullptr);
	CHECK(p.doc.FindPath(rec, "data.id.x") == nullptr);
	CHECK(p.doc.FindPath(rec, "data.missing") == nullptr);
	CHECK(p.doc.FindPath(rec, "missing") == nullptr);
	CHECK(p.doc.FindPath(nullptr, "data") == nullptr);
	CHECK(p.doc.FindPath(p.Root(), "data") == nullptr); /* the root is an array */

	/* keys with dots cannot be reached through a path, only through Find */
	Parsed d(R"({"a.b":1,"a":{"b":2}})");
	CHECK(d.doc.FindPath(d.Root(), "a.b")->Str() == "2");
	CHECK(d.doc.Find(d.Root(), "a.b")->Str() == "1");

	/* the Salesforce record: a 20-digit number (its PascalCase names: record_test) */
	const Node *sf = nullptr;
	for (const Node *r = p.doc.First(p.Root()); r != nullptr; r = p.doc.Next(r)) {
		const Node *c = p.doc.Find(r, "collection_id");
		if (c != nullptr && c->Str() == "salesforce:contact") {
			sf = r;
			break;
		}
	}
	CHECK(sf != nullptr);
	if (sf != nullptr) {
		const Node *big = p.doc.FindPath(sf, "data.AnnualRevenue__c");
		CHECK(big != nullptr && big->IsNumber() && big->Str() == "12345678901234567890");
		int64_t v = 0;
		CHECK(!json::ParseInt64(big, &v) && v == 0); /* beyond int64 */
	}
}

void
TestNextReply()
{
	std::string text = ReadFixture("next-response.json");
	Parsed p(text);
	CHECK(p.ok);
	NextReply reply;
	std::string error;
	CHECK(DecodeNextReply(p.doc, &reply, &error));
	CHECK_EQ(error, "");
	CHECK(reply.items.size() == 2);
	if (reply.items.size() == 2) {
		CHECK_EQ(reply.items[0].ack_token, "MTYyeJ7abUjl1pO");
		CHECK_EQ(reply.items[1].ack_token, "MTYyeJ7abUjl1pP");
		const Node *id = p.doc.Find(reply.items[0].record, "id");
		CHECK(id != nullptr && id->Str() == "0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11");
		const Node *col = p.doc.Find(reply.items[1].record, "collection_id");
		CHECK(col != nullptr && col->Str() == "salesforce:contact");
	}
	CHECK(reply.has_pending && reply.num_pending == 100);
	CHECK(reply.has_ack_pending && reply.num_ack_pending == 2);

	std::vector<std::string_view> tokens;
	for (const NextReplyItem &item : reply.items)
		tokens.push_back(item.ack_token);
	std::string body;
	CHECK(AckBody(tokens, &body));
	CHECK_EQ(body, "{\"ack_tokens\":[\"MTYyeJ7abUjl1pO\",\"MTYyeJ7abUjl1pP\"]}");

	struct Case {
		const char *json;
		const char *error; /* nullptr: decodes */
	} cases[] = {
		{"[]", "reply is not a JSON object"},
		{"\"data\"", "reply is not a JSON object"},
		{"{}", "reply has no \"data\" array"},
		{"{\"info\":{}}", "reply has no \"data\" array"},
		{"{\"data\":{}}", "reply has no \"data\" array"},
		{"{\"data\":null}", "reply has no \"data\" array"},
		{"{\"data\":\"[]\"}", "reply has no \"data\" array"},
		{"{\"data\":[]}", nullptr},
		{"{\"data\":[1]}", "item 0 is not an object"},
		{"{\"data\":[null]}", "item 0 is not an object"},
		{"{\"data\":[{\"record\":{}}]}", "item 0 has no \"ack_token\" string"},
		{"{\"data\":[{\"ack_token\":5,\"record\":{}}]}", "item 0 has no \"ack_token\" string"},
		{"{\"data\":[{\"ack_token\":null,\"record\":{}}]}", "item 0 has no \"ack_token\" string"},
		{"{\"data\":[{\"ack_token\":[\"t\"],\"record\":{}}]}", "item 0 has no \"ack_token\" string"},
		{"{\"data\":[{\"ack_token\":\"\",\"record\":{}}]}", "item 0 has an empty \"ack_token\""},
		/* what the record holds is the record's: these are items, parked by the engine */
		{"{\"data\":[{\"ack_token\":\"t\"}]}", nullptr},
		{"{\"data\":[{\"ack_token\":\"t\",\"record\":null}]}", nullptr},
		{"{\"data\":[{\"ack_token\":\"t\",\"record\":[]}]}", nullptr},
		{"{\"data\":[{\"ack_token\":\"t\",\"record\":\"{}\"}]}", nullptr},
		{"{\"data\":[{\"ack_token\":\"t\",\"event\":{}}]}",
		 "item 0 has an \"event\" instead of a \"record\": the consumer is an event consumer, not a record consumer"},
		{"{\"data\":[{\"ack_token\":\"a\",\"record\":{}},{\"ack_token\":\"b\",\"record\":{}},"
		 "{\"ack_token\":\"c\",\"record\":{}},{\"ack_token\":\"d\"}]}",
		 nullptr},
		{"{\"data\":[{\"ack_token\":\"a\",\"record\":{}},{\"ack_token\":\"b\",\"record\":{}},"
		 "{\"ack_token\":\"c\",\"record\":{}},{\"record\":{}}]}",
		 "item 3 has no \"ack_token\" string"},
		{"{\"data\":[{\"ack_token\":\"t\",\"record\":{}}],\"info\":\"x\"}", nullptr},
		{"{\"data\":{},\"data\":[]}", nullptr},    /* duplicate: the last one counts */
		{"{\"data\":[],\"data\":{}}", "reply has no \"data\" array"},
	};
	for (const Case &c : cases) {
		Parsed q(c.json);
		CHECK(q.ok);
		NextReply r;
		r.items.push_back(NextReplyItem{"stale", nullptr});
		r.has_pending = true;
		std::string err = "stale";
		bool ok = DecodeNextReply(q.doc, &r, &err);
		if (c.error == nullptr) {
			CHECK(ok);
			CHECK_EQ(err, "");
		} else {
			CHECK(!ok);
			CHECK_EQ(err, c.error);
			CHECK(r.items.empty());
		}
		CHECK(!r.has_pending || ok);
	}

	/* a failed parse has no root */
	Parsed broken("{\"data\":[");
	NextReply r;
	CHECK(!DecodeNextReply(broken.doc, &r, &error));
	CHECK_EQ(error, "reply is not a JSON object");
	CHECK(!DecodeNextReply(broken.doc, nullptr, nullptr));
	CHECK(!DecodeNextReply(p.doc, nullptr, &error));
	CHECK(DecodeNextReply(p.doc, &r, nullptr));

	/* info: missing, non-integer, out of range, negative, extremes */
	struct InfoCase {
		const char *info;
		bool has_pending;
		int64_t pending;
		bool has_ack;
		int64_t ack;
	} infos[] = {
		{"", false, 0, false, 0},
		{",\"info\":{}", false, 0, false, 0},
		{",\"info\":null", false, 0, false, 0},
		{",\"info\":[1,2]", false, 0, false, 0},
		{",\"info\":{\"num_pending\":\"100\",\"num_ack_pending\":1.5}", false, 0, false, 0},
		{",\"info\":{\"num_pending\":1e3,\"num_ack_pending\":null}", false, 0, false, 0},
		{",\"info\":{\"num_pending\":true,\"num_ack_pending\":{}}", false, 0, false, 0},
		{",\"info\":{\"num_pending\":99999999999999999999,\"num_ack_pending\":9223372036854775808}", false, 0, false, 0},
		{",\"info\":{\"num_pending\":9223372036854775807,\"num_ack_pending\":-9223372036854775808}", true,
		 INT64_MAX, true, INT64_MIN},
		{",\"info\":{\"num_pending\":-5,\"num_ack_pending\":0}", true, -5, true, 0},
		{",\"info\":{\"num_pending\":7}", true, 7, false, 0},
		{",\"info\":{\"num_ack_pending\":-0}", false, 0, true, 0},
		{",\"info\":{\"num_pending\":-9223372036854775809}", false, 0, false, 0},
	};
	for (const InfoCase &c : infos) {
		std::string json = std::string("{\"data\":[]") + c.info + "}";
		Parsed q(json);
		CHECK(q.ok);
		NextReply nr;
		CHECK(DecodeNextReply(q.doc, &nr, &error));
		bool good = nr.has_pending == c.has_pending && nr.num_pending == c.pending &&
					nr.has_ack_pending == c.has_ack && nr.num_ack_pending == c.ack;
		if (!good)
			std::printf("    info %s: %d %lld %d %lld\n", c.info, nr.has_pending, (long long) nr.num_pending,
						nr.has_ack_pending, (long long) nr.num_ack_pending);
		CHECK(good);
	}

	/* tokens are decoded JSON strings */
	Parsed esc("{\"data\":[{\"ack_token\":\"a\\\"b\\u00e9\",\"record\":{\"id\":\"x\"}}]}");
	NextReply er;
	CHECK(DecodeNextReply(esc.doc, &er, &error));
	CHECK(er.items.size() == 1 && er.items[0].ack_token == "a\"b\xC3\xA9");
}

/*
 * One undecodable item costs only itself (issue 9): a record holding invalid UTF-8 or a lone
 * surrogate, or that is null or missing, is still an item with its token, and the bad string is
 * found inside that record only.  A bad string anywhere else is the reply's: refused whole.
 */
void
TestUndecodableItems()
{
	std::string reply = "{\"data\":["
						"{\"ack_token\":\"t0\",\"record\":{\"id\":\"a\",\"data\":{\"email\":\"x\xFFy\"}}},"
						"{\"ack_token\":\"t1\",\"record\":{\"id\":\"b\",\"data\":{\"email\":\"ok\"}}},"
						"{\"ack_token\":\"t2\",\"record\":{\"id\":\"c\",\"data\":{\"n\\udc00\":1}}},"
						"{\"ack_token\":\"t3\",\"record\":null},"
						"{\"ack_token\":\"t4\"},"
						"{\"record\":{\"id\":\"e\"},\"ack_token\":\"t5\"}],\"info\":{\"num_pending\":3}}";
	Parsed p(reply);
	CHECK(p.ok);
	NextReply r;
	std::string error;
	CHECK(DecodeNextReply(p.doc, &r, &error));
	CHECK_EQ(error, "");
	CHECK(r.items.size() == 6 && r.has_pending && r.num_pending == 3);
	if (r.items.size() == 6) {
		const char *tokens[] = {"t0", "t1", "t2", "t3", "t4", "t5"};
		for (size_t i = 0; i < 6; i++)
			CHECK_EQ(r.items[i].ack_token, tokens[i]);
		const json::BadString *b0 = p.doc.FindBadString(r.items[0].record);
		CHECK(b0 != nullptr && std::string_view(b0->message) == "invalid UTF-8 in string" &&
			  b0->offset == reply.find('\xFF'));
		CHECK(p.doc.FindBadString(r.items[1].record) == nullptr);
		const json::BadString *b2 = p.doc.FindBadString(r.items[2].record);
		CHECK(b2 != nullptr && std::string_view(b2->message) == "invalid unicode surrogate pair in string" &&
			  b2->offset == reply.find("\\udc00"));
		CHECK(r.items[3].record != nullptr && r.items[3].record->IsNull());
		CHECK(p.doc.FindBadString(r.items[3].record) == nullptr);
		CHECK(r.items[4].record == nullptr);
		CHECK(r.items[5].record != nullptr && r.items[5].record->IsObject());
		/* the good record's text is untouched, the bad one made valid */
		CHECK_EQ(Serialize(p.doc, r.items[1].record), "{\"id\":\"b\",\"data\":{\"email\":\"ok\"}}");
		CHECK_EQ(Serialize(p.doc, r.items[0].record), "{\"id\":\"a\",\"data\":{\"email\":\"x?y\"}}");
	}

	/* outside the records: the reply's structure, refused whole, with where it is */
	struct Case {
		std::string json;
		std::string error;
	} cases[] = {
		{"{\"data\":[{\"ack_token\":\"t\\ud800\",\"record\":{}}]}",
		 "invalid JSON at byte 24: invalid unicode surrogate pair in string"},
		{"{\"data\":[{\"ack_token\":\"t\xFF\",\"record\":{}}]}", "invalid JSON at byte 24: invalid UTF-8 in string"},
		{"{\"data\":[{\"ack_token\":\"t\",\"record\":{},\"x\":\"\xFF\"}]}",
		 "invalid JSON at byte 43: invalid UTF-8 in string"},
		{"{\"data\":[],\"\xFF\":1}", "invalid JSON at byte 12: invalid UTF-8 in string"},
		{"{\"data\":[],\"info\":{\"num_pending\":\"\xFF\"}}", "invalid JSON at byte 34: invalid UTF-8 in string"},
		/* a second "record" member: only the last is the record */
		{"{\"data\":[{\"ack_token\":\"t\",\"record\":\"\xFF\",\"record\":{}}]}",
		 "invalid JSON at byte 36: invalid UTF-8 in string"},
		/* the next item's record is not this one's */
		{"{\"data\":[{\"ack_token\":\"t\",\"x\":\"\xFF\"},{\"ack_token\":\"u\",\"record\":{}}]}",
		 "invalid JSON at byte 31: invalid UTF-8 in string"},
	};
	for (const Case &c : cases) {
		Parsed q(c.json);
		CHECK(q.ok);
		NextReply nr;
		CHECK(!DecodeNextReply(q.doc, &nr, &error));
		CHECK_EQ(error, c.error);
		CHECK(nr.items.empty());
		CHECK(!DecodeNextReply(q.doc, &nr, nullptr)); /* no message wanted: still refused */
	}
	/* a string record, a record in an array: bad strings inside them are theirs */
	Parsed q("{\"data\":[{\"ack_token\":\"t\",\"record\":\"\xFF\"},{\"ack_token\":\"u\",\"record\":[\"\\udfff\"]}]}");
	CHECK(DecodeNextReply(q.doc, &r, &error) && r.items.size() == 2);

	/* FindBadStringOutside on its own: subtrees in document order, nullptr entries skipped */
	Parsed d("[\"\xFF\",[\"ok\"],{\"k\":\"\xFE\"},\"\xFD\"]");
	CHECK(d.ok && d.doc.BadStrings().size() == 3);
	const Node *e0 = d.doc.First(d.Root());
	const Node *e1 = d.doc.Next(e0);
	const Node *e2 = d.doc.Next(e1);
	const Node *e3 = d.doc.Next(e2);
	const Node *all[] = {e0, nullptr, e1, e2, e3};
	CHECK(d.doc.FindBadStringOutside(all, 5) == nullptr);
	const Node *some[] = {e0, e2};
	CHECK(d.doc.FindBadStringOutside(some, 2) == &d.doc.BadStrings()[2]);
	const Node *later[] = {e2, e3};
	CHECK(d.doc.FindBadStringOutside(later, 2) == &d.doc.BadStrings()[0]);
	CHECK(d.doc.FindBadStringOutside(nullptr, 0) == &d.doc.BadStrings()[0]);
	const Node *root[] = {d.Root()};
	CHECK(d.doc.FindBadStringOutside(root, 1) == nullptr);
	CHECK(d.doc.FindBadString(e1) == nullptr && d.doc.FindBadString(e2) == &d.doc.BadStrings()[1]);
	CHECK(d.doc.FindBadString(nullptr) == nullptr);
	/* re-parsing forgets them */
	std::string clean = "[1]";
	CHECK(d.doc.Parse(clean.data(), clean.size()) && d.doc.BadStrings().empty());
}

/*
 * What a dead letter keeps of an undecodable record: its text as received, bytes that are not
 * UTF-8 as \udcXX escapes; parsing that text again finds the same strings bad.
 */
void
TestSourceText()
{
	std::string text = "{\"data\":[{\"ack_token\":\"t\",\"record\":{ \"id\" : \"a\\u00e9\" ,\"n\":1e400,"
					   "\"e\":\"x\xFF\xC3\xA9\xE2\x82\",\"s\":\"\\ud800\"}}]}";
	Parsed p(text);
	CHECK(p.ok);
	NextReply r;
	std::string error;
	CHECK(DecodeNextReply(p.doc, &r, &error) && r.items.size() == 1);
	if (r.items.size() != 1)
		return;
	const Node *rec = r.items[0].record;
	const char *out = nullptr;
	size_t len = 0;
	CHECK(p.doc.SourceText(rec, &out, &len) && out[len] == '\0');
	std::string source(out, len);
	CHECK_EQ(source, "{ \"id\" : \"a\\u00e9\" ,\"n\":1e400,\"e\":\"x\\udcff\xC3\xA9\\udce2\\udc82\",\"s\":\"\\ud800\"}");
	Parsed again(source);
	CHECK(again.ok && again.doc.BadStrings().size() == 2);
	CHECK(again.doc.FindBadString(again.Root()) != nullptr);
	/* scalars, and documents without bad strings: Serialize */
	CHECK(p.doc.SourceText(p.doc.Find(rec, "id"), &out, &len));
	CHECK_EQ(std::string(out, len), "\"a\xC3\xA9\"");
	Parsed clean("{ \"a\" : [1, 2] }");
	CHECK(clean.doc.SourceText(clean.Root(), &out, &len));
	CHECK_EQ(std::string(out, len), "{\"a\":[1,2]}");
	CHECK(!clean.doc.SourceText(nullptr, &out, &len));
	CHECK(!clean.doc.SourceText(rec, &out, &len)); /* another document's node */
	/* the whole reply's root, nested containers too */
	CHECK(p.doc.SourceText(p.Root(), &out, &len));
	CHECK(std::string(out, len).compare(0, 10, "{\"data\":[{") == 0 && out[len - 1] == '}');
}

void
TestAckBody()
{
	std::string body = "garbage";
	CHECK(!AckBody({}, &body));
	CHECK(body.empty());
	CHECK(!AckBody({"a"}, nullptr));
	CHECK(AckBody({"a"}, &body));
	CHECK_EQ(body, "{\"ack_tokens\":[\"a\"]}");
	CHECK(AckBody({"a", "b"}, &body));
	CHECK_EQ(body, "{\"ack_tokens\":[\"a\",\"b\"]}");

	std::string_view nasty("q\"b\\s/\n\t\x01\0\xC3\xA9", 12);
	CHECK(AckBody({nasty, ""}, &body));
	CHECK_EQ(body, "{\"ack_tokens\":[\"q\\\"b\\\\s/\\n\\t\\u0001\\u0000\xC3\xA9\",\"\"]}");

	/* the body parses back to the same tokens */
	Parsed p(body);
	CHECK(p.ok);
	const Node *list = p.doc.Find(p.Root(), "ack_tokens");
	CHECK(list != nullptr && list->IsArray() && list->len == 2);
	CHECK(list != nullptr && p.doc.First(list)->Str() == nasty);

	std::string s = "x";
	CHECK(json::AppendJsonString(&s, "a\"b"));
	CHECK_EQ(s, "x\"a\\\"b\"");
	CHECK(json::AppendJsonString(&s, std::string_view()));
	CHECK_EQ(s, "x\"a\\\"b\"\"\"");
	CHECK(!json::AppendJsonString(nullptr, "a"));
}

/* The keys of n's members (or "#" for array elements), walked with FirstSorted/NextSorted. */
std::string
SortedWalk(const Document &doc, const Node *n)
{
	std::string out;
	for (const Node *c = doc.FirstSorted(n); c != nullptr; c = doc.NextSorted(c)) {
		out += c == doc.FirstSorted(n) ? "" : ",";
		bool container = c->IsObject() || c->IsArray();
		out += n->IsObject() ? std::string(c->Key()) : "#" + (container ? std::string() : std::string(c->Str()));
		if (c->IsObject() || c->IsArray())
			out += "{" + SortedWalk(doc, c) + "}";
	}
	return out;
}

/* SortMembers: jsonb's key order (length, then bytes; equal keys in input order). */
void
TestSortMembers()
{
	Parsed p(R"({"bb":1,"a":{"zz":1,"y":2,"":3},"ccc":[{"q":1,"p":2},3],"a":4,"B":5,"é":6})");
	CHECK(p.ok);
	/* Before: input order. */
	CHECK_EQ(SortedWalk(p.doc, p.Root()), "bb,a{zz,y,},ccc{#{q,p},#3},a,B,é");
	CHECK(p.doc.SortMembers());
	/* "é" is two bytes; duplicates keep their order (Postgres keeps the last); arrays stay. */
	CHECK_EQ(SortedWalk(p.doc, p.Root()), "B,a{,y,zz},a,bb,é,ccc{#{p,q},#3}");
	/* Serialize, Find and First/Next still see the input. */
	CHECK_EQ(Serialize(p.doc, p.Root()),
			 "{\"bb\":1,\"a\":{\"zz\":1,\"y\":2,\"\":3},\"ccc\":[{\"q\":1,\"p\":2},3],\"a\":4,\"B\":5,\"é\":6}");
	CHECK(p.doc.First(p.Root())->Key() == "bb");
	const Node *a = p.doc.Find(p.Root(), "a");
	CHECK(a != nullptr && a->Str() == "4");
	/* Scalars and empty containers have no members. */
	CHECK(p.doc.FirstSorted(p.doc.Find(p.Root(), "bb")) == nullptr);
	CHECK(p.doc.FirstSorted(nullptr) == nullptr);
	CHECK(p.doc.NextSorted(nullptr) == nullptr);

	/* The next Parse forgets the order until SortMembers runs again. */
	std::string text = R"({"b":1,"a":2})";
	CHECK(p.doc.Parse(text.data(), text.size()));
	CHECK_EQ(SortedWalk(p.doc, p.doc.Root()), "b,a");
	CHECK(p.doc.SortMembers());
	CHECK_EQ(SortedWalk(p.doc, p.doc.Root()), "a,b");
	/* Nodes of another document are nobody's members. */
	Parsed other(R"({"x":1})");
	CHECK(p.doc.FirstSorted(other.Root()) == nullptr);
}

} /* namespace */

/* Numbers too big for a double keep their text instead of failing the whole document. */
void
TestBigNumbers()
{
	std::string big_int(400, '7');
	std::string text = "{\"a\": 1e400, \"b\": -" + big_int + ", \"c\": [1.5E-999, 2e+0300, 12], \"d\": \"1e400 in a string\"}";
	std::vector<char> buf(text.begin(), text.end());
	Document doc;
	CHECK(doc.Parse(buf.data(), buf.size()));
	if (doc.Root() == nullptr)
		return;
	const Node *a = doc.Find(doc.Root(), "a");
	CHECK(a && a->IsNumber() && a->Str() == "1e400");
	const Node *b = doc.Find(doc.Root(), "b");
	CHECK(b && b->IsNumber() && b->Str() == "-" + big_int && b->IsIntegerText());
	const Node *c = doc.Find(doc.Root(), "c");
	const Node *c0 = c ? doc.First(c) : nullptr;
	const Node *c1 = c0 ? doc.Next(c0) : nullptr;
	const Node *c2 = c1 ? doc.Next(c1) : nullptr;
	CHECK(c0 && c0->Str() == "1.5E-999");
	CHECK(c1 && c1->Str() == "2e+0300");
	CHECK(c2 && c2->Str() == "12");
	const Node *d = doc.Find(doc.Root(), "d");
	CHECK(d && d->IsString() && d->Str() == "1e400 in a string");
	const char *out;
	size_t out_len;
	CHECK(doc.Serialize(doc.Root(), &out, &out_len));
	CHECK(std::string(out, out_len).find("-" + big_int) != std::string::npos);

	/* Not numbers: left to RapidJSON, which rejects them. */
	for (const char *bad : {"[1e--5000]", "[01e400]", "[1.e400]", "[-e400]"}) {
		std::string t(bad);
		std::vector<char> b2(t.begin(), t.end());
		Document d2;
		CHECK(!d2.Parse(b2.data(), b2.size()));
	}
	/* A re-used document forgets the previous set-aside numbers. */
	std::string small = "[1, 2]";
	std::vector<char> b3(small.begin(), small.end());
	CHECK(doc.Parse(b3.data(), b3.size()));
	CHECK(doc.First(doc.Root()) && doc.First(doc.Root())->Str() == "1");
}

int
main(int argc, char **argv)
{
	if (argc > 1)
		fixture_dir = argv[1];

	TestKinds();
	TestNumbers();
	TestStrings();
	TestUtf8();
	TestBom();
	TestStructureErrors();
	TestDuplicateKeys();
	TestReuse();
	TestDeepNesting();
	TestLargeString();
	TestTruncation("next-response.json");
	TestTruncation("sample_records.json");
	TestRoundTrip();
	TestFindPath();
	TestNextReply();
	TestUndecodableItems();
	TestSourceText();
	TestAckBody();
	TestBigNumbers();
	TestSortMembers();

	return Summary();
}
