/*
 * record_test.cpp - unit tests for the Postgres-free record-to-row layer (record.cpp): the
 * standard fields and their dead-letter messages, finding a column's value (and the names that
 * match ignoring case and underscores), the plan for each value and column, and the Postgres
 * array literals.  No framework and no Postgres: build and run with
 *
 *   g++ -std=c++17 -O1 -g -Wall -Wextra -Werror -Isrc src/core/json_doc.cpp src/core/record.cpp \
 *       test/unit/record_test.cpp -o /tmp/record_test && /tmp/record_test
 *
 * (add -fsanitize=address,undefined to check memory too).  Prints each failed check, then
 * "N passed, M failed"; exits non-zero on any failure.
 */
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/batch_prep.hpp"
#include "core/json_doc.hpp"
#include "core/record.hpp"
#include "unit_check.hpp"

using namespace sequin_sync;
using json::Document;
using json::Kind;
using json::Node;
using record::FieldError;
using record::Plan;

namespace {

/* The message ValidateFields gives a record ("" when it is valid). */
std::string
MessageOf(std::string_view text)
{
	Parsed p(text);
	if (!p.ok)
		return "<does not parse>";
	record::Fields f;
	return record::FieldErrorMessage(record::ValidateFields(p.doc, p.Root(), &f));
}

void
TestValidFields()
{
	Parsed p(R"({"id":"evt_1","updated_idx":-42,"deleted":true,"collection_id":"c1","collection_slug":"s",)"
			 R"("data":{"a":1}})");
	CHECK(p.ok);
	record::Fields f;
	CHECK(record::ValidateFields(p.doc, p.Root(), &f) == FieldError::None);
	CHECK_EQ(std::string_view(f.id, f.id_len), "evt_1");
	CHECK(f.updated_idx == -42);
	CHECK(f.deleted);
	CHECK(f.data != nullptr && f.data->IsObject() && f.data == p.doc.Find(p.Root(), "data"));
	CHECK_EQ(std::string_view(f.collection, f.collection_len), "c1");
	CHECK_EQ(record::FieldErrorMessage(FieldError::None), "");

	/* the pointers point into the document: nothing is copied */
	CHECK(f.id == p.doc.Find(p.Root(), "id")->str);

	/* optional fields: deleted absent or null; data absent or null in a delete */
	Parsed q(R"({"id":"x","updated_idx":0,"deleted":true,"data":null,"collection_slug":"s"})");
	CHECK(record::ValidateFields(q.doc, q.Root(), &f) == FieldError::None);
	CHECK(f.deleted && f.data == nullptr);
	CHECK_EQ(std::string_view(f.collection, f.collection_len), "s");
	Parsed r(R"({"id":"x","updated_idx":0,"collection_id":null,"collection_slug":"s","deleted":null,"data":{}})");
	CHECK(record::ValidateFields(r.doc, r.Root(), &f) == FieldError::None);
	CHECK(!f.deleted && f.data != nullptr);
	CHECK_EQ(std::string_view(f.collection, f.collection_len), "s");
	Parsed del(R"({"id":"x","updated_idx":0,"collection_id":"c","deleted":true})");
	CHECK(record::ValidateFields(del.doc, del.Root(), &f) == FieldError::None);
	CHECK(f.deleted && f.data == nullptr);
	/* duplicate keys: the last one wins, as in jsonb */
	Parsed d(R"({"id":"a","id":"b","updated_idx":1,"updated_idx":2,"collection_id":"c","data":{}})");
	CHECK(record::ValidateFields(d.doc, d.Root(), &f) == FieldError::None);
	CHECK_EQ(std::string_view(f.id, f.id_len), "b");
	CHECK(f.updated_idx == 2);
}

/* The dead letters' messages are part of the interface (regression outputs show them). */
void
TestFieldMessages()
{
	CHECK_EQ(MessageOf("[1]"), "record is not a JSON object");
	CHECK_EQ(MessageOf("\"x\""), "record is not a JSON object");
	CHECK_EQ(MessageOf("null"), "record is not a JSON object");
	CHECK_EQ(MessageOf(R"({"updated_idx":1,"collection_id":"c"})"), "record has no \"id\"");
	CHECK_EQ(MessageOf(R"({"id":null,"updated_idx":1,"collection_id":"c"})"), "record has no \"id\"");
	CHECK_EQ(MessageOf(R"({"id":1,"updated_idx":1,"collection_id":"c"})"),
			 "record field \"id\" must be a non-empty string");
	CHECK_EQ(MessageOf(R"({"id":"","updated_idx":1,"collection_id":"c"})"),
			 "record field \"id\" must be a non-empty string");
	CHECK_EQ(MessageOf(R"({"id":"a\u0000","updated_idx":1,"collection_id":"c"})"),
			 "record field \"id\" must be a non-empty string");
	CHECK_EQ(MessageOf(R"({"id":"a","collection_id":"c"})"), "record has no \"updated_idx\"");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":null,"collection_id":"c"})"), "record has no \"updated_idx\"");
	const char *idx_range =
		"record field \"updated_idx\" must be an integer between -9223372036854775808 and 9223372036854775807";
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":"1","collection_id":"c"})"), idx_range);
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1.5,"collection_id":"c"})"), idx_range);
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":9223372036854775808,"collection_id":"c"})"), idx_range);
	CHECK_EQ(MessageOf(R"({"id":"a","deleted":1,"updated_idx":1,"collection_id":"c"})"),
			 "record field \"deleted\" must be a boolean");
	CHECK_EQ(MessageOf(R"({"id":"a","data":[],"updated_idx":1,"collection_id":"c"})"),
			 "record field \"data\" must be an object");
	CHECK_EQ(MessageOf(R"({"id":"a","data":"x","updated_idx":1,"collection_id":"c"})"),
			 "record field \"data\" must be an object");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1})"), "record has no \"collection_id\" or \"collection_slug\"");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":null,"collection_slug":null})"),
			 "record has no \"collection_id\" or \"collection_slug\"");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":5})"),
			 "record field \"collection_id\" must be a non-empty string");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_slug":""})"),
			 "record field \"collection_id\" must be a non-empty string");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":"c\u0000"})"),
			 "record field \"collection_id\" must be a non-empty string");
	/* a present but unusable collection_id hides collection_slug */
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":5,"collection_slug":"s"})"),
			 "record field \"collection_id\" must be a non-empty string");
	/* order: the id is checked before updated_idx, updated_idx before deleted, ... */
	CHECK_EQ(MessageOf(R"({"id":1,"updated_idx":"x","deleted":1,"data":1})"),
			 "record field \"id\" must be a non-empty string");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":"x","deleted":1,"data":1})"), idx_range);
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"deleted":1,"data":1})"),
			 "record field \"deleted\" must be a boolean");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"data":1})"), "record field \"data\" must be an object");
	/* a version without data would overwrite good values with NULLs: only a delete may lack it */
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":"c"})"), "record has no \"data\"");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":"c","data":null})"), "record has no \"data\"");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":"c","deleted":false})"), "record has no \"data\"");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":"c","deleted":null,"data":null})"),
			 "record has no \"data\"");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":"c","deleted":true})"), "");
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":"c","deleted":true,"data":null})"), "");
	/* ... and it is the last check: any other error of the record comes first */
	CHECK_EQ(MessageOf(R"({"id":"a","updated_idx":1,"collection_id":5})"),
			 "record field \"collection_id\" must be a non-empty string");
	Parsed p(R"({"id":"a","updated_idx":1,"collection_id":"c"})");
	record::Fields f;
	CHECK(record::ValidateFields(p.doc, p.Root(), &f) == FieldError::NoData);
	CHECK(f.collection != nullptr && f.id != nullptr); /* filled as far as the checks went */
}

/* A record that fails still names its collection (the dead letter shows it). */
void
TestCollectionKeptOnError()
{
	Parsed p(R"({"id":7,"updated_idx":1,"collection_id":"orders"})");
	record::Fields f;
	CHECK(record::ValidateFields(p.doc, p.Root(), &f) == FieldError::BadId);
	CHECK(f.collection != nullptr);
	CHECK_EQ(std::string_view(f.collection, f.collection_len), "orders");
	Parsed q(R"({"id":"a","updated_idx":1,"collection_id":""})");
	CHECK(record::ValidateFields(q.doc, q.Root(), &f) == FieldError::BadCollection);
	CHECK(f.collection == nullptr);
	/* not an object: nothing, and a null record is safe */
	CHECK(record::ValidateFields(q.doc, nullptr, &f) == FieldError::NotObject);
	CHECK(f.collection == nullptr && f.id == nullptr);
}

int64_t
Int64Of(std::string_view text, bool *ok)
{
	Parsed p(text);
	int64_t v = 12345;
	*ok = p.ok && json::ParseInt64(p.Root(), &v);
	return v;
}

void
TestParseInt64()
{
	bool ok;
	CHECK(Int64Of("0", &ok) == 0 && ok);
	CHECK(Int64Of("-0", &ok) == 0 && ok);
	CHECK(Int64Of("17", &ok) == 17 && ok);
	CHECK(Int64Of("-17", &ok) == -17 && ok);
	CHECK(Int64Of("9223372036854775807", &ok) == INT64_MAX && ok);
	CHECK(Int64Of("-9223372036854775808", &ok) == INT64_MIN && ok);
	(void) Int64Of("9223372036854775808", &ok);
	CHECK(!ok);
	(void) Int64Of("-9223372036854775809", &ok);
	CHECK(!ok);
	(void) Int64Of("18446744073709551615", &ok);
	CHECK(!ok);
	(void) Int64Of("18446744073709551616", &ok);
	CHECK(!ok);
	(void) Int64Of("184467440737095516160", &ok);
	CHECK(!ok);
	(void) Int64Of(std::string(400, '9'), &ok);
	CHECK(!ok);
	(void) Int64Of("1.0", &ok);
	CHECK(!ok);
	(void) Int64Of("1e2", &ok);
	CHECK(!ok);
	(void) Int64Of("\"1\"", &ok);
	CHECK(!ok);
	(void) Int64Of("true", &ok);
	CHECK(!ok);
	int64_t v = 5;
	CHECK(!json::ParseInt64(nullptr, &v) && v == 5);
	/* leading '+', spaces, or anything from_chars would stop at: not an integer text */
	(void) Int64Of("[1]", &ok);
	CHECK(!ok);
	(void) Int64Of("-", &ok);
	CHECK(!ok);
}

void
TestFindPathSource()
{
	Parsed p(R"({"id":"a","sync":{"id":"s1","metadata":null},"sync_id":"s2","sync_metadata":{"k":1},)"
			 R"("collection_id":null,"collection_slug":"slug","data":{"a":{"b":3}}})");
	const Node *rec = p.Root();
	const Node *v = record::FindPathSource(p.doc, rec, "sync.id", "sync_id");
	CHECK(v != nullptr && v->Str() == "s1");
	/* null at the first path: the alternative */
	v = record::FindPathSource(p.doc, rec, "sync.metadata", "sync_metadata");
	CHECK(v != nullptr && v->IsObject());
	v = record::FindPathSource(p.doc, rec, "collection_id", "collection_slug");
	CHECK(v != nullptr && v->Str() == "slug");
	/* null with no alternative stays null; absent stays absent */
	v = record::FindPathSource(p.doc, rec, "collection_id", nullptr);
	CHECK(v != nullptr && v->IsNull());
	CHECK(record::FindPathSource(p.doc, rec, "nope", nullptr) == nullptr);
	CHECK(record::FindPathSource(p.doc, rec, "nope", "also.nope") == nullptr);
	v = record::FindPathSource(p.doc, rec, "data.a.b", nullptr);
	CHECK(v != nullptr && v->Str() == "3");
	CHECK(record::FindPathSource(p.doc, rec, "data..a", nullptr) == nullptr);
	CHECK(record::FindPathSource(p.doc, rec, "", "id") != nullptr);
	CHECK(record::FindPathSource(p.doc, nullptr, "id", "id") == nullptr);
}

void
TestFindDataField()
{
	Parsed p(R"({"first_name":"exact","FirstName":"camel","AMOUNT":1,"amount_":2,"x":null})");
	const Node *data = p.Root();
	const Node *v = record::FindDataField(p.doc, data, "first_name");
	CHECK(v != nullptr && v->Str() == "exact");
	v = record::FindDataField(p.doc, data, "firstname");
	CHECK(v != nullptr && v->Str() == "camel"); /* the last of the normalized matches */
	v = record::FindDataField(p.doc, data, "amount");
	CHECK(v != nullptr && v->Str() == "2");
	v = record::FindDataField(p.doc, data, "x");
	CHECK(v != nullptr && v->IsNull());
	CHECK(record::FindDataField(p.doc, data, "y") == nullptr);
	CHECK(record::FindDataField(p.doc, nullptr, "x") == nullptr);

	/* the Salesforce record of the fixtures: PascalCase names */
	std::string text = ReadFixture("sample_records.json");
	Parsed r(text);
	CHECK(r.ok);
	const Node *sf = nullptr;
	for (const Node *rec = r.doc.First(r.Root()); rec != nullptr; rec = r.doc.Next(rec)) {
		const Node *c = r.doc.Find(rec, "collection_id");
		if (c != nullptr && c->Str() == "salesforce:contact")
			sf = rec;
	}
	CHECK(sf != nullptr);
	const Node *match = record::FindDataField(r.doc, r.doc.Find(sf, "data"), "first_name");
	CHECK(match != nullptr && match->Str() == "Paul");
}

/* Whether a matcher over names finds, for every name, what FindDataField finds. */
bool
MatcherAgrees(const Document &doc, const Node *data, const std::vector<std::string> &names)
{
	std::vector<std::string_view> views(names.begin(), names.end());
	record::FieldMatcher m;
	if (!m.Build(views.data(), views.size()) || m.Size() != names.size())
		return false;
	std::vector<const Node *> out(names.size() + 1, nullptr);
	const Node *sentinel = doc.Root();
	out[names.size()] = sentinel;
	m.Match(doc, data, out.data());
	if (out[names.size()] != sentinel)
		return false; /* wrote past its slots */
	for (size_t i = 0; i < names.size(); i++)
		if (out[i] != record::FindDataField(doc, data, names[i]))
			return false;
	return true;
}

void
TestFieldMatcher()
{
	Parsed p(R"({"first_name":"exact","FirstName":"camel","AMOUNT":1,"amount_":2,"x":null})");
	const Node *data = p.Root();
	std::vector<std::string_view> names = {"first_name", "firstname", "amount", "x", "y", "FirstName"};
	record::FieldMatcher m;
	CHECK(m.Build(names.data(), names.size()));
	CHECK(m.Size() == 6);
	const Node *out[6];
	m.Match(p.doc, data, out);
	CHECK(out[0] != nullptr && out[0]->Str() == "exact");	/* an exact match wins */
	CHECK(out[1] != nullptr && out[1]->Str() == "camel");	/* else the last normalized one */
	CHECK(out[2] != nullptr && out[2]->Str() == "2");
	CHECK(out[3] != nullptr && out[3]->IsNull());
	CHECK(out[4] == nullptr);
	CHECK(out[5] != nullptr && out[5]->Str() == "camel");	/* exact, though not the last */
	m.Match(p.doc, nullptr, out);
	for (const Node *v : out)
		CHECK(v == nullptr);

	/* exact before, between and after normalized matches; duplicate exact keys: the last */
	const char *ambiguous[] = {
		R"({"a_b":1,"AB":2,"ab":3})",
		R"({"AB":1,"a_b":2,"ab":3,"A_B":4})",
		R"({"ab":1,"ab":2,"AB":3,"_a_b_":4})",
		R"({"a_b":1,"a_b":2,"__":3,"":4,"_":5})",
		R"({"é":1,"É":2,"e":3,"E":4})",
		R"({"":1,"":2})",
		R"({})",
	};
	std::vector<std::string> anames = {"ab", "a_b", "AB", "A_B", "_a_b_", "abc", "", "_", "__", "é", "e",
									   "ab", "x.y"};
	for (const char *text : ambiguous) {
		Parsed a(text);
		CHECK(a.ok);
		CHECK(MatcherAgrees(a.doc, a.Root(), anames));
	}

	/* not an object of this document, or no names: nothing is found */
	Parsed arr(R"([{"ab":1}, 2])");
	m.Build(names.data(), names.size());
	out[0] = arr.Root();
	m.Match(arr.doc, arr.Root(), out);
	CHECK(out[0] == nullptr);
	m.Match(p.doc, arr.doc.First(arr.Root()), out); /* another document's node */
	CHECK(out[0] == nullptr);
	CHECK(record::FindDataField(arr.doc, arr.Root(), "") == nullptr);
	record::FieldMatcher empty;
	CHECK(empty.Build(nullptr, 0) && empty.Size() == 0);
	empty.Match(p.doc, data, out);

	/* many names (the table grows, probes collide) and the Salesforce record of the fixtures */
	std::string text = ReadFixture("sample_records.json");
	Parsed r(text);
	CHECK(r.ok);
	for (const Node *rec = r.doc.First(r.Root()); rec != nullptr; rec = r.doc.Next(rec)) {
		const Node *d = r.doc.Find(rec, "data");
		std::vector<std::string> keys = {"first_name", "last_name", "email", "id", "amount"};
		for (const Node *f = r.doc.First(d); f != nullptr; f = r.doc.Next(f))
			keys.emplace_back(f->Key());
		CHECK(MatcherAgrees(r.doc, d, keys));
	}

	/* random keys and names over a small alphabet: every kind of near miss */
	uint32_t seed = 12345;
	auto next = [&seed]() { return seed = seed * 1103515245u + 12345u, (seed >> 16) & 0x7fff; };
	const char alphabet[] = {'a', 'A', 'b', '_', 'B'};
	auto word = [&]() {
		std::string w;
		for (uint32_t n = next() % 5; n > 0; n--)
			w.push_back(alphabet[next() % sizeof(alphabet)]);
		return w;
	};
	for (int round = 0; round < 300; round++) {
		std::string json = "{";
		for (uint32_t n = next() % 12; n > 0; n--) {
			if (json.size() > 1)
				json += ",";
			json += "\"" + word() + "\":" + std::to_string(n);
		}
		json += "}";
		std::vector<std::string> rnames;
		for (uint32_t n = next() % 40; n > 0; n--)
			rnames.push_back(word());
		Parsed q(json);
		CHECK(q.ok && MatcherAgrees(q.doc, q.Root(), rnames));
	}
	static_assert(noexcept(m.Match(p.doc, nullptr, out)), "Match must be noexcept");
}

void
TestNormalizedEquals()
{
	CHECK(record::NormalizedEquals("FirstName", "first_name"));
	CHECK(record::NormalizedEquals("first_name", "FIRSTNAME"));
	CHECK(record::NormalizedEquals("AnnualRevenue__c", "annual_revenue_c"));
	CHECK(record::NormalizedEquals("_id_", "ID"));
	CHECK(record::NormalizedEquals("", ""));
	CHECK(record::NormalizedEquals("", "__"));
	CHECK(record::NormalizedEquals("a_", "A"));
	CHECK(!record::NormalizedEquals("a", "b"));
	CHECK(!record::NormalizedEquals("ab", "a"));
	CHECK(!record::NormalizedEquals("a", "ab"));
	CHECK(!record::NormalizedEquals("first-name", "first_name"));
	CHECK(!record::NormalizedEquals("\xC3\xA9", "\xC3\x89")); /* é vs É: ASCII only */
	CHECK(!record::NormalizedEquals("", "x"));
	static_assert(noexcept(record::NormalizedEquals("", "")), "NormalizedEquals must be noexcept");
}

/* The literal of n as a std::string; json_elements: JsonElementsLiteral, else ArrayLiteral. */
std::string
Literal(record::ArrayLiteralWriter &w, Document &doc, const Node *n, bool json_elements = false)
{
	const char *out = nullptr;
	size_t len = 0;
	if (!(json_elements ? w.JsonElementsLiteral(doc, n, &out, &len) : w.ArrayLiteral(doc, n, &out, &len)))
		return "<array literal failed>";
	return std::string(out, len);
}

void
TestArrayLiteral()
{
	record::ArrayLiteralWriter w;
	struct Case {
		const char *json;
		const char *literal;
	} cases[] = {
		{R"(["a", null, 1, true, {"x": 1}, ["b"]])", R"({"a",NULL,"1","true","{\"x\":1}",{"b"}})"},
		{"[]", "{}"},
		{"[[1,2],[3,4]]", R"({{"1","2"},{"3","4"}})"},
		{"[[[]]]", "{{{}}}"},
		{"[[],[]]", "{{},{}}"},
		{R"([["a",["b",null]],[]])", R"({{"a",{"b",NULL}},{}})"},
		{R"(["a\"b", "c\\d", "", "NULL", " sp ", "{x,y}"])", R"({"a\"b","c\\d","","NULL"," sp ","{x,y}"})"},
		{R"([{"k":"v\"q\\"}])", R"({"{\"k\":\"v\\\"q\\\\\"}"})"},
		{"[false, -1.5e3, null, null]", R"({"false","-1.5e3",NULL,NULL})"},
		{R"([{"a":[1,{"b":2}]}, {}])", R"({"{\"a\":[1,{\"b\":2}]}","{}"})"},
		{"[12345678901234567890, 1.000000000000000000001]", R"({"12345678901234567890","1.000000000000000000001"})"},
		{"[\"\xC3\xA9\", \"line\\nbreak\"]", "{\"\xC3\xA9\",\"line\nbreak\"}"},
		{"[null]", "{NULL}"},
		{R"([[null,"x"],[{"y":null}]])", R"({{NULL,"x"},{"{\"y\":null}"}})"},
	};
	for (const Case &c : cases) {
		Parsed p(c.json);
		CHECK(p.ok);
		CHECK_EQ(Literal(w, p.doc, p.Root()), c.literal);
	}

	/* NUL bytes are copied as they are (documented: the caller must check) */
	Parsed nul(R"(["a\u0000b"])");
	CHECK_EQ(Literal(w, nul.doc, nul.Root()), std::string_view("{\"a\0b\"}", 7));

	/* a nested array alone, without its siblings */
	Parsed p("[[1],[2]]");
	CHECK_EQ(Literal(w, p.doc, p.doc.First(p.Root())), "{\"1\"}");
	/* not an array, or not of this document */
	Parsed o("{\"a\":[\"x\"]}");
	const char *out = nullptr;
	size_t len = 0;
	CHECK(!w.ArrayLiteral(o.doc, o.Root(), &out, &len));
	CHECK(!w.ArrayLiteral(o.doc, nullptr, &out, &len));
	CHECK(!w.ArrayLiteral(o.doc, o.Root(), nullptr, nullptr));
	CHECK(!w.ArrayLiteral(o.doc, p.Root(), &out, &len) && out == nullptr && len == 0);
	CHECK_EQ(Literal(w, o.doc, o.doc.Find(o.Root(), "a")), "{\"x\"}");
	/* the result buffer is NUL-terminated and reused */
	CHECK(w.ArrayLiteral(o.doc, o.doc.Find(o.Root(), "a"), &out, &len) && out[len] == '\0');
	static_assert(noexcept(w.ArrayLiteral(o.doc, nullptr, nullptr, nullptr)), "ArrayLiteral must be noexcept");

	/* an array from the sample records */
	std::string text = ReadFixture("sample_records.json");
	Parsed r(text);
	const Node *locales = r.doc.FindPath(r.doc.First(r.Root()), "data.preferred_locales");
	CHECK(locales != nullptr);
	CHECK_EQ(Literal(w, r.doc, locales), "{\"en\",\"fr\"}");

	/* json[]/jsonb[]: one JSON value per element, nested arrays included; null is NULL */
	Parsed j(R"([{"k":"v\"q"}, [1, [2]], "s", 5, null, true])");
	CHECK_EQ(Literal(w, j.doc, j.Root(), true), R"({"{\"k\":\"v\\\"q\"}","[1,[2]]","\"s\"","5",NULL,"true"})");
	Parsed empty("[]");
	CHECK_EQ(Literal(w, empty.doc, empty.Root(), true), "{}");
	CHECK(!w.JsonElementsLiteral(o.doc, o.Root(), &out, &len));
	CHECK(!w.JsonElementsLiteral(o.doc, p.Root(), &out, &len));
	CHECK(w.JsonElementsLiteral(j.doc, j.Root(), &out, &len) && out[len] == '\0');
}

/* 100,000 levels: array literals must not recurse. */
void
TestDeepLiterals()
{
	record::ArrayLiteralWriter w;
	const size_t depth = 100000;
	{
		Parsed p(DeepArrays(depth));
		CHECK(p.ok);
		CHECK(Literal(w, p.doc, p.Root()) == std::string(depth, '{') + std::string(depth, '}'));
	}
	/* an object in an array literal goes through the document's iterative writer */
	std::string objects = DeepObjects(depth);
	{
		Parsed q("[" + objects + "]");
		CHECK(q.ok);
		std::string literal = Literal(w, q.doc, q.Root());
		CHECK(literal.size() > objects.size() && literal.compare(0, 4, "{\"{\\") == 0);
	}
	/* mixed, with siblings at every level */
	{
		Parsed p(DeepMixed(depth));
		CHECK(p.ok);
		CHECK(Literal(w, p.doc, p.Root()) != "<array literal failed>");
	}
}

record::Target
T(ConvertKind convert, bool jsonb_tree = false, bool json_elements = false, bool string_like = false)
{
	record::Target t;
	t.convert = convert;
	t.jsonb_tree = jsonb_tree;
	t.json_elements = json_elements;
	t.string_like = string_like;
	return t;
}

void
TestPlanValue()
{
	Parsed p(R"({"s":"a\u0000b","n":-1.50e3,"t":true,"f":false,"z":null,"a":[1],"o":{"k":1}})");
	const Node *r = p.Root();
	auto at = [&](const char *k) { return p.doc.Find(r, k); };

	record::ValuePlan v = record::PlanValue(nullptr, T(ConvertKind::Scalar));
	CHECK(v.plan == Plan::Null);
	CHECK(record::PlanValue(at("z"), T(ConvertKind::Json)).plan == Plan::Null);

	v = record::PlanValue(at("s"), T(ConvertKind::Scalar));
	CHECK(v.plan == Plan::Text && v.text == at("s")->str && v.text_len == 3);
	CHECK(record::HasNul(v.text, v.text_len));
	CHECK(record::PlanValue(at("s"), T(ConvertKind::Json)).plan == Plan::Serialize);
	CHECK(record::PlanValue(at("s"), T(ConvertKind::Timestamptz)).plan == Plan::Text);

	v = record::PlanValue(at("n"), T(ConvertKind::Scalar));
	CHECK(v.plan == Plan::Text);
	CHECK_EQ(std::string_view(v.text, v.text_len), "-1.50e3");
	CHECK(record::PlanValue(at("n"), T(ConvertKind::Json)).plan == Plan::Text);
	CHECK(record::PlanValue(at("n"), T(ConvertKind::Timestamptz)).plan == Plan::Epoch);
	CHECK(record::PlanValue(at("n"), T(ConvertKind::Timestamp)).plan == Plan::Epoch);
	CHECK(record::PlanValue(at("n"), T(ConvertKind::Date)).plan == Plan::Epoch);

	v = record::PlanValue(at("t"), T(ConvertKind::Scalar));
	CHECK_EQ(std::string_view(v.text, v.text_len), "true");
	v = record::PlanValue(at("f"), T(ConvertKind::Json));
	CHECK_EQ(std::string_view(v.text, v.text_len), "false");

	for (const char *k : {"a", "o"}) {
		CHECK(record::PlanValue(at(k), T(ConvertKind::Json, true)).plan == Plan::JsonbTree);
		CHECK(record::PlanValue(at(k), T(ConvertKind::Json, false)).plan == Plan::Serialize);
		CHECK(record::PlanValue(at(k), T(ConvertKind::Scalar, false, false, true)).plan == Plan::Serialize);
		CHECK(record::PlanValue(at(k), T(ConvertKind::Scalar)).plan == Plan::Mismatch);
		CHECK(record::PlanValue(at(k), T(ConvertKind::Timestamptz)).plan == Plan::Mismatch);
	}
	CHECK(record::PlanValue(at("a"), T(ConvertKind::Array)).plan == Plan::ArrayLiteral);
	CHECK(record::PlanValue(at("a"), T(ConvertKind::Array, false, true)).plan == Plan::JsonElements);
	/* an object for an array column: text[] is category A, so it is the mismatch */
	CHECK(record::PlanValue(at("o"), T(ConvertKind::Array)).plan == Plan::Mismatch);
	CHECK(record::PlanValue(at("o"), T(ConvertKind::Array, false, true)).plan == Plan::Mismatch);

	CHECK_EQ(record::KindName(Kind::Array), "array");
	CHECK_EQ(record::KindName(Kind::Object), "object");
	CHECK_EQ(record::KindName(Kind::True), "boolean");
	CHECK(!record::HasNul(nullptr, 0));
	CHECK(!record::HasNul("abc", 3));
	CHECK(record::HasNul("a\0c", 3));
}

/*
 * batch_prep: what the prefetch thread finds is what the engine would find itself - the fields
 * of record::ValidateFields, FindPathSource for paths, the FieldMatcher for data fields - and a
 * record prepared with one locator is never handed to a mapping that holds another.
 */
void
TestPrepared()
{
	Parsed p(R"([{"id":"a","updated_idx":1,"collection_id":"cust","data":{"Name":"A","email":"a@x","n":{"k":1}}},)"
			 R"({"id":"b","updated_idx":2,"collection_id":"other","data":{"name":"B"}},)"
			 R"({"updated_idx":3,"collection_id":"cust","data":{}},)"
			 R"(7,)"
			 R"({"id":"d","updated_idx":4,"collection_id":"cust","deleted":true,"data":null}])");
	CHECK(p.ok);
	std::vector<const Node *> recs;
	for (const Node *r = p.doc.First(p.Root()); r != nullptr; r = p.doc.Next(r))
		recs.push_back(r);
	recs.push_back(nullptr); /* an item without a record */
	CHECK(recs.size() == 6);

	/* columns: id (a path), name and email (data fields), n.k (a path under data), version */
	std::vector<std::string_view> names = {"name", "email"};
	prep::ColumnSpec cols[5];
	cols[0].source = prep::Source::Path;
	cols[0].path = "id";
	cols[1].source = prep::Source::DataField;
	cols[1].field_slot = 0;
	cols[2].source = prep::Source::DataField;
	cols[2].field_slot = 1;
	cols[3].source = prep::Source::Path;
	cols[3].path = "data.n.k";
	cols[3].alt_path = "data.missing";
	cols[4].source = prep::Source::Other;
	prep::LocatorRef ref, other_ref;
	CHECK(prep::MakeLocator(cols, 5, names.data(), names.size(), &ref));
	CHECK(prep::MakeLocator(cols, 5, names.data(), names.size(), &other_ref));
	prep::LocatorSet set;
	CHECK(set.Add("cust", ref));
	CHECK(set.Find("cust") == ref.locator.get());
	CHECK(set.Find("other") == nullptr);
	CHECK(!set.Add("empty", prep::LocatorRef()));

	prep::Prepared pre;
	CHECK(!pre.Ready());
	pre.PrepareV1(p.doc, recs.data(), recs.size(), set);
	CHECK(pre.Ready() && pre.Count() == 6);
	record::FieldMatcher matcher;
	CHECK(matcher.Build(names.data(), names.size()));
	for (size_t i = 0; i < recs.size(); i++) {
		if (recs[i] == nullptr) {
			CHECK(pre.Error(i) == FieldError::NotObject);
			CHECK(pre.Sources(i, ref.locator.get()) == nullptr);
			continue;
		}
		record::Fields f;
		FieldError err = record::ValidateFields(p.doc, recs[i], &f);
		CHECK(pre.Error(i) == err);
		CHECK(pre.Fields(i).id == f.id && pre.Fields(i).id_len == f.id_len);
		CHECK(pre.Fields(i).updated_idx == f.updated_idx && pre.Fields(i).deleted == f.deleted);
		CHECK(pre.Fields(i).data == f.data && pre.Fields(i).collection == f.collection);
		const Node *const *src = pre.Sources(i, ref.locator.get());
		bool located = err == FieldError::None && f.collection != nullptr &&
					   std::string_view(f.collection, f.collection_len) == "cust";
		CHECK((src != nullptr) == located);
		/* another locator, even an identical one: not these nodes */
		CHECK(pre.Sources(i, other_ref.locator.get()) == nullptr);
		if (src == nullptr)
			continue;
		const Node *fields[2];
		matcher.Match(p.doc, f.data, fields);
		CHECK(src[0] == record::FindPathSource(p.doc, recs[i], "id", nullptr));
		CHECK(src[1] == fields[0] && src[2] == fields[1]);
		CHECK(src[3] == record::FindPathSource(p.doc, recs[i], "data.n.k", "data.missing"));
		CHECK(src[4] == nullptr);
	}
	const Node *const *a = pre.Sources(0, ref.locator.get());
	CHECK(a != nullptr && a[1] != nullptr && a[1]->Str() == "A" && a[3] != nullptr && a[3]->Str() == "1");
	CHECK(pre.Sources(99, ref.locator.get()) == nullptr);
	CHECK(pre.Sources(0, nullptr) == nullptr);

	/* The prepared batch keeps its locators: the set may change (or go) meanwhile. */
	const prep::Locator *kept = ref.locator.get();
	set.Clear();
	ref.locator.reset();
	CHECK(pre.Sources(0, kept) != nullptr);
	pre.Clear();
	CHECK(!pre.Ready() && pre.Sources(0, kept) == nullptr);
}

/* PrepareStream: stream::ValidateMessage's answer, and the columns of "schema.table". */
void
TestPreparedStream()
{
	const char *md = R"("metadata":{"table_schema":"public","table_name":"orders","commit_timestamp":"2025-03-01T12:00:01Z",)";
	std::string text = std::string("[") +
					   R"({"record":{"id":1,"Total":5},"changes":null,"action":"insert",)" + md +
					   R"("commit_lsn":10,"commit_idx":1}},)" +
					   R"({"record":{"id":1},"changes":null,"action":"delete",)" + md + R"("commit_lsn":11,"commit_idx":0}},)" +
					   R"({"record":{"id":2},"action":"bogus",)" + md + R"("commit_lsn":12,"commit_idx":0}}])";
	Parsed p(text);
	CHECK(p.ok);
	std::vector<const Node *> msgs;
	for (const Node *m = p.doc.First(p.Root()); m != nullptr; m = p.doc.Next(m))
		msgs.push_back(m);
	msgs.push_back(nullptr);
	std::vector<std::string_view> names = {"total"};
	prep::ColumnSpec cols[2];
	cols[0].source = prep::Source::DataField;
	cols[0].field_slot = 0;
	cols[1].source = prep::Source::Path;
	cols[1].path = "metadata.commit_timestamp";
	prep::LocatorRef ref;
	CHECK(prep::MakeLocator(cols, 2, names.data(), names.size(), &ref));
	prep::LocatorSet set;
	CHECK(set.Add("public.orders", ref));
	prep::Prepared pre;
	pre.PrepareStream(p.doc, msgs.data(), msgs.size(), set);
	CHECK(pre.Ready() && pre.Stream() && pre.Count() == 4);
	for (size_t i = 0; i + 1 < msgs.size(); i++) {
		stream::Message m;
		CHECK(pre.MessageError(i) == stream::ValidateMessage(p.doc, msgs[i], &m));
		CHECK(pre.Message(i).record == m.record && pre.Message(i).commit_lsn == m.commit_lsn &&
			  pre.Message(i).action == m.action && pre.Message(i).table == m.table);
	}
	CHECK(pre.MessageError(3) == stream::MessageError::NotObject);
	const Node *const *ins = pre.Sources(0, ref.locator.get());
	CHECK(ins != nullptr && ins[0] != nullptr && ins[0]->Str() == "5" && ins[1] != nullptr);
	/* a delete's data fields are none (its row goes); its paths are still found */
	const Node *const *del = pre.Sources(1, ref.locator.get());
	CHECK(del != nullptr && del[0] == nullptr && del[1] != nullptr);
	CHECK(pre.Sources(2, ref.locator.get()) == nullptr); /* invalid: not located */
	/* v1 and stream answers are not mixed up */
	prep::Prepared v1;
	v1.PrepareV1(p.doc, msgs.data(), msgs.size(), set);
	CHECK(v1.Ready() && !v1.Stream());
}

} /* namespace */

int
main()
{
	TestValidFields();
	TestFieldMessages();
	TestCollectionKeptOnError();
	TestParseInt64();
	TestFindPathSource();
	TestFindDataField();
	TestNormalizedEquals();
	TestFieldMatcher();
	TestPlanValue();
	TestArrayLiteral();
	TestDeepLiterals();
	TestPrepared();
	TestPreparedStream();
	return Summary();
}
