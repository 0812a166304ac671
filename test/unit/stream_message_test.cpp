/*
 * stream_message_test.cpp - unit test of the Sequin Stream change-message checks
 * (src/core/stream_message.cpp): every MessageError and its dead-letter text, the order of the
 * checks, the version (commit_lsn, commit_idx) at its limits and every number that is not one,
 * reads with and without versions, the table names, DecimalText and IsUnchangedToast; and every
 * message of test/fixtures/stream_messages.json is valid.
 *
 *   g++ -std=c++17 -Isrc src/core/json_doc.cpp src/core/stream_message.cpp \
 *       test/unit/stream_message_test.cpp -o /tmp/stream_message_test && /tmp/stream_message_test
 */
#include "core/stream_message.hpp"

#include <string>
#include <vector>

#include "unit_check.hpp"

using namespace sequin_sync;
using stream::Action;
using stream::Message;
using stream::MessageError;

namespace {

/* A message as Sequin sends it, with each part given as raw JSON text ("" leaves it out). */
std::string
Msg(const std::string &action, const std::string &lsn, const std::string &idx,
	const std::string &record = "{\"id\":1}", const std::string &changes = "null",
	const std::string &schema = "\"public\"", const std::string &table = "\"orders\"")
{
	std::string md = "{";
	auto add = [&](const char *key, const std::string &v) {
		if (v.empty())
			return;
		if (md.size() > 1)
			md += ",";
		md += std::string("\"") + key + "\":" + v;
	};
	add("table_schema", schema);
	add("table_name", table);
	add("commit_timestamp", "\"2025-03-01T12:00:01.000100Z\"");
	add("commit_lsn", lsn);
	add("commit_idx", idx);
	md += "}";
	std::string out = "{";
	auto put = [&](const char *key, const std::string &v) {
		if (v.empty())
			return;
		if (out.size() > 1)
			out += ",";
		out += std::string("\"") + key + "\":" + v;
	};
	put("record", record);
	put("changes", changes);
	put("action", action);
	put("metadata", md);
	out += "}";
	return out;
}

/* Validates `text` (which must parse); the error, and the message in *out. */
MessageError
Check(const std::string &text, Message *out, int line)
{
	Parsed p(text);
	if (!p.ok) {
		std::printf("FAILED line %d: does not parse: %s (%s)\n", line, Show(text).c_str(), p.Error().c_str());
		failed++;
		return MessageError::None;
	}
	MessageError err = stream::ValidateMessage(p.doc, p.Root(), out);
	/* the views point into the parsed buffer: copy what the caller compares into stable storage */
	static std::string schema, table, ts;
	schema.assign(out->schema);
	table.assign(out->table);
	ts.assign(out->commit_timestamp);
	out->schema = schema;
	out->table = table;
	out->commit_timestamp = ts;
	out->record = out->record != nullptr ? reinterpret_cast<const json::Node *>(1) : nullptr;
	out->changes = out->changes != nullptr ? reinterpret_cast<const json::Node *>(1) : nullptr;
	return err;
}

#define ERR_OF(text) ([&] { Message m_; return Check((text), &m_, __LINE__); }())

std::string
Dec(unsigned __int128 v)
{
	char buf[40];
	size_t n = stream::DecimalText(v, buf);
	CHECK(n == std::strlen(buf));
	return std::string(buf, n);
}

void
TestMessages()
{
	const std::pair<MessageError, const char *> texts[] = {
		{MessageError::None, ""},
		{MessageError::NotObject, "message is not a JSON object"},
		{MessageError::Transformed,
		 "message has no \"action\" and no \"metadata\": the Sequin Stream sink has a transform, and sequin_sync needs the messages as Sequin sends them without one"},
		{MessageError::NoAction, "message has no \"action\""},
		{MessageError::BadAction, "message field \"action\" must be \"insert\", \"update\", \"delete\" or \"read\""},
		{MessageError::NoMetadata, "message has no \"metadata\" object"},
		{MessageError::BadTable, "message metadata must have \"table_schema\" and \"table_name\" strings"},
		{MessageError::NoVersion,
		 "message has no version: metadata.commit_lsn and metadata.commit_idx are null in a change (Sequin 0.9 or later sends them)"},
		{MessageError::BadVersion,
		 "message metadata \"commit_lsn\" must be an integer between 0 and 18446744073709551615 and \"commit_idx\" one between 0 and 4294967295"},
		{MessageError::ReadVersion,
		 "read message has a commit_lsn or commit_idx: Sequin sends backfill reads without a version"},
		{MessageError::NoRecord, "message has no \"record\" object"},
		{MessageError::BadChanges, "message field \"changes\" must be an object or null"},
	};
	for (const auto &t : texts)
		CHECK_EQ(stream::MessageErrorMessage(t.first), t.second);
	CHECK_EQ(stream::MessageErrorMessage(static_cast<MessageError>(200)), "invalid message");
}

void
TestValid()
{
	Message m;
	CHECK(Check(Msg("\"insert\"", "23002360", "3", "{\"id\":1,\"note\":\"x\"}"), &m, __LINE__) == MessageError::None);
	CHECK(m.action == Action::Insert && m.has_version && m.commit_lsn == 23002360 && m.commit_idx == 3);
	CHECK_EQ(m.schema, "public");
	CHECK_EQ(m.table, "orders");
	CHECK_EQ(m.commit_timestamp, "2025-03-01T12:00:01.000100Z");
	CHECK(m.record != nullptr && m.changes == nullptr);

	CHECK(Check(Msg("\"update\"", "1", "0", "{\"id\":1}", "{\"id\":2}"), &m, __LINE__) == MessageError::None);
	CHECK(m.action == Action::Update && m.changes != nullptr);
	CHECK(Check(Msg("\"update\"", "1", "0", "{\"id\":1}", "{}"), &m, __LINE__) == MessageError::None);
	CHECK(m.changes != nullptr);
	CHECK(Check(Msg("\"delete\"", "0", "0"), &m, __LINE__) == MessageError::None);
	CHECK(m.action == Action::Delete && m.has_version && m.commit_lsn == 0 && m.commit_idx == 0);
	/* "changes" absent is the same as null */
	CHECK(Check(Msg("\"insert\"", "5", "6", "{}", ""), &m, __LINE__) == MessageError::None);
	CHECK(m.changes == nullptr);

	/* reads: no version, both null or both absent */
	CHECK(Check(Msg("\"read\"", "null", "null"), &m, __LINE__) == MessageError::None);
	CHECK(m.action == Action::Read && !m.has_version && m.commit_lsn == 0 && m.commit_idx == 0);
	CHECK(Check(Msg("\"read\"", "", ""), &m, __LINE__) == MessageError::None);
	CHECK(Check(Msg("\"read\"", "null", ""), &m, __LINE__) == MessageError::None);

	/* commit_timestamp that is not a string is left empty, not an error */
	CHECK(ERR_OF("{\"record\":{},\"action\":\"insert\",\"metadata\":{\"table_schema\":\"s\",\"table_name\":\"t\","
				 "\"commit_lsn\":1,\"commit_idx\":2,\"commit_timestamp\":12}}") == MessageError::None);
	Check("{\"record\":{},\"action\":\"insert\",\"metadata\":{\"table_schema\":\"s\",\"table_name\":\"t\","
		  "\"commit_lsn\":1,\"commit_idx\":2,\"commit_timestamp\":12}}", &m, __LINE__);
	CHECK(m.commit_timestamp.empty());

	/* other members are ignored; the last of duplicate keys counts (as jsonb) */
	CHECK(ERR_OF("{\"record\":{},\"action\":\"bogus\",\"action\":\"insert\",\"extra\":[1],\"metadata\":"
				 "{\"table_schema\":\"s\",\"table_name\":\"t\",\"commit_lsn\":1,\"commit_idx\":2}}") == MessageError::None);
	CHECK(ERR_OF("{\"record\":{},\"action\":\"insert\",\"action\":\"bogus\",\"metadata\":"
				 "{\"table_schema\":\"s\",\"table_name\":\"t\",\"commit_lsn\":1,\"commit_idx\":2}}") == MessageError::BadAction);

	/* every message of the fixture is valid and names its table */
	std::string fixture = ReadFixture("stream_messages.json");
	Parsed all(fixture);
	CHECK(all.ok && all.Root() != nullptr && all.Root()->IsArray());
	int n = 0, reads = 0;
	for (const json::Node *e = all.doc.First(all.Root()); e != nullptr; e = all.doc.Next(e), n++) {
		Message fm;
		MessageError err = stream::ValidateMessage(all.doc, e, &fm);
		CHECK(err == MessageError::None);
		CHECK(!fm.schema.empty() && !fm.table.empty());
		CHECK(fm.has_version == (fm.action != Action::Read));
		reads += fm.action == Action::Read;
	}
	CHECK(n == 20);
	CHECK(reads > 0 && reads < n);
}

void
TestErrors()
{
	/* not an object; nothing at all */
	const char *not_objects[] = {"[]", "null", "1", "\"insert\"", "true", "[{\"action\":\"insert\"}]"};
	for (const char *t : not_objects)
		CHECK(ERR_OF(t) == MessageError::NotObject);
	json::Document empty;
	Message m;
	CHECK(stream::ValidateMessage(empty, nullptr, &m) == MessageError::NotObject);
	CHECK(stream::ValidateMessage(empty, empty.Root(), &m) == MessageError::NotObject);

	/* a transform's output: neither action nor metadata */
	CHECK(ERR_OF("{}") == MessageError::Transformed);
	CHECK(ERR_OF("{\"record\":{\"id\":1}}") == MessageError::Transformed);
	CHECK(ERR_OF("{\"id\":1,\"name\":\"x\"}") == MessageError::Transformed);
	/* ... but an action or a metadata that is there, even null, says it is not */
	CHECK(ERR_OF("{\"record\":{},\"action\":null}") == MessageError::NoAction);
	CHECK(ERR_OF("{\"record\":{},\"metadata\":null}") == MessageError::NoAction);

	/* action */
	CHECK(ERR_OF(Msg("", "1", "2")) == MessageError::NoAction);
	CHECK(ERR_OF(Msg("null", "1", "2")) == MessageError::NoAction);
	const char *bad_actions[] = {"\"INSERT\"", "\"Insert\"", "\"upsert\"", "\"\"", "\" insert\"", "\"insert\\u0000\"",
								 "1", "true", "[\"insert\"]", "{\"insert\":1}", "\"truncate\""};
	for (const char *a : bad_actions)
		CHECK(ERR_OF(Msg(a, "1", "2")) == MessageError::BadAction);
	/* the table is captured before the action is judged: the dead letter names it */
	CHECK(Check(Msg("\"upsert\"", "1", "2"), &m, __LINE__) == MessageError::BadAction);
	CHECK_EQ(m.schema, "public");
	CHECK_EQ(m.table, "orders");

	/* metadata */
	const char *bad_metadata[] = {"null", "1", "\"public.orders\"", "[]", "true"};
	for (const char *md : bad_metadata) {
		std::string t = std::string("{\"record\":{},\"action\":\"insert\",\"metadata\":") + md + "}";
		CHECK(ERR_OF(t) == MessageError::NoMetadata);
	}
	CHECK(ERR_OF("{\"record\":{},\"action\":\"insert\"}") == MessageError::NoMetadata);
	/* the action is judged before the metadata */
	CHECK(ERR_OF("{\"record\":{},\"action\":\"bogus\",\"metadata\":1}") == MessageError::BadAction);

	/* table names: non-empty strings without NUL, both of them */
	const char *bad_names[] = {"", "null", "\"\"", "\"a\\u0000b\"", "\"\\u0000\"", "1", "[\"public\"]", "{}", "true"};
	for (const char *b : bad_names) {
		CHECK(ERR_OF(Msg("\"insert\"", "1", "2", "{}", "null", b, "\"orders\"")) == MessageError::BadTable);
		CHECK(ERR_OF(Msg("\"insert\"", "1", "2", "{}", "null", "\"public\"", b)) == MessageError::BadTable);
		Check(Msg("\"insert\"", "1", "2", "{}", "null", "\"public\"", b), &m, __LINE__);
		CHECK(m.schema.empty() && m.table.empty());
	}
	CHECK(ERR_OF(Msg("\"read\"", "null", "null", "{}", "null", "\"\"", "\"\"")) == MessageError::BadTable);
	/* odd but usable names are kept exactly: quoting is the Postgres side's */
	CHECK(Check(Msg("\"insert\"", "1", "2", "{}", "null", "\"My Schema\"", "\"t\\\"; DROP TABLE x; --\""), &m,
				__LINE__) == MessageError::None);
	CHECK_EQ(m.schema, "My Schema");
	CHECK_EQ(m.table, "t\"; DROP TABLE x; --");
	CHECK(Check(Msg("\"insert\"", "1", "2", "{}", "null", "\" \"", "\"\xc3\xa9t\xc3\xa9\""), &m, __LINE__) ==
		  MessageError::None);
	CHECK_EQ(m.table, "\xc3\xa9t\xc3\xa9");
	/* the table is checked before the version */
	CHECK(ERR_OF(Msg("\"insert\"", "\"x\"", "-1", "{}", "null", "1")) == MessageError::BadTable);

	/* record */
	const char *bad_records[] = {"", "null", "[]", "[{\"id\":1}]", "\"{}\"", "1", "true"};
	for (const char *r : bad_records) {
		CHECK(ERR_OF(Msg("\"insert\"", "1", "2", r)) == MessageError::NoRecord);
		CHECK(ERR_OF(Msg("\"delete\"", "1", "2", r)) == MessageError::NoRecord);
		CHECK(ERR_OF(Msg("\"read\"", "null", "null", r)) == MessageError::NoRecord);
	}
	/* the version is checked before the record */
	CHECK(ERR_OF(Msg("\"insert\"", "null", "2", "[]")) == MessageError::NoVersion);
	CHECK(ERR_OF(Msg("\"insert\"", "1.5", "2", "[]")) == MessageError::BadVersion);

	/* changes */
	const char *bad_changes[] = {"[]", "\"{}\"", "1", "false", "[{\"id\":1}]"};
	for (const char *c : bad_changes)
		CHECK(ERR_OF(Msg("\"update\"", "1", "2", "{}", c)) == MessageError::BadChanges);
	/* ... after the record */
	CHECK(ERR_OF(Msg("\"update\"", "1", "2", "[]", "[]")) == MessageError::NoRecord);
}

void
TestVersions()
{
	Message m;
	/* the limits, exactly */
	CHECK(Check(Msg("\"insert\"", "18446744073709551615", "4294967295"), &m, __LINE__) == MessageError::None);
	CHECK(m.has_version && m.commit_lsn == UINT64_MAX && m.commit_idx == UINT32_MAX);
	CHECK_EQ(Dec(stream::Version(m.commit_lsn, m.commit_idx)), "79228162514264337593543950335");
	CHECK(Check(Msg("\"update\"", "0", "4294967295"), &m, __LINE__) == MessageError::None);
	CHECK(m.commit_lsn == 0 && m.commit_idx == UINT32_MAX);
	CHECK(Check(Msg("\"delete\"", "18446744073709551615", "0"), &m, __LINE__) == MessageError::None);
	CHECK(m.commit_lsn == UINT64_MAX && m.commit_idx == 0);

	/* one past, and far past */
	CHECK(ERR_OF(Msg("\"insert\"", "18446744073709551616", "0")) == MessageError::BadVersion);
	CHECK(ERR_OF(Msg("\"insert\"", "99999999999999999999999999999999999999999", "0")) == MessageError::BadVersion);
	CHECK(ERR_OF(Msg("\"insert\"", "1", "4294967296")) == MessageError::BadVersion);
	CHECK(ERR_OF(Msg("\"insert\"", "1", "18446744073709551615")) == MessageError::BadVersion);
	CHECK(ERR_OF(Msg("\"insert\"", "1", "18446744073709551616")) == MessageError::BadVersion);
	/* negative, -0 included */
	const char *negatives[] = {"-1", "-0", "-18446744073709551615", "-9223372036854775808"};
	for (const char *v : negatives) {
		CHECK(ERR_OF(Msg("\"insert\"", v, "0")) == MessageError::BadVersion);
		CHECK(ERR_OF(Msg("\"insert\"", "0", v)) == MessageError::BadVersion);
	}
	/* fractional and exponent forms, even of whole numbers */
	const char *not_integers[] = {"1.5", "1.0", "0.0", "1e3", "1E3", "1e+3", "10e-1", "1.8446744073709552e19", "0e0"};
	for (const char *v : not_integers) {
		CHECK(ERR_OF(Msg("\"update\"", v, "0")) == MessageError::BadVersion);
		CHECK(ERR_OF(Msg("\"update\"", "0", v)) == MessageError::BadVersion);
	}
	/* numbers as strings, and other kinds */
	const char *not_numbers[] = {"\"23002360\"", "\"0\"", "\"\"", "true", "[1]", "{\"lsn\":1}", "\"0/15F0A48\""};
	for (const char *v : not_numbers) {
		CHECK(ERR_OF(Msg("\"insert\"", v, "0")) == MessageError::BadVersion);
		CHECK(ERR_OF(Msg("\"insert\"", "1", v)) == MessageError::BadVersion);
	}

	/* a change without a version, or half of one */
	CHECK(ERR_OF(Msg("\"insert\"", "null", "null")) == MessageError::NoVersion);
	CHECK(ERR_OF(Msg("\"update\"", "", "")) == MessageError::NoVersion);
	CHECK(ERR_OF(Msg("\"delete\"", "1", "null")) == MessageError::NoVersion);
	CHECK(ERR_OF(Msg("\"insert\"", "null", "1")) == MessageError::NoVersion);
	CHECK(ERR_OF(Msg("\"insert\"", "1", "")) == MessageError::NoVersion);
	/* absent beats bad: null idx with a string lsn is "no version" */
	CHECK(ERR_OF(Msg("\"insert\"", "\"1\"", "null")) == MessageError::NoVersion);

	/* a read with a version, or a part of one, of any kind */
	const char *anything[] = {"0", "1", "18446744073709551615", "\"1\"", "-1", "1.5", "false", "{}"};
	for (const char *v : anything) {
		CHECK(ERR_OF(Msg("\"read\"", v, "null")) == MessageError::ReadVersion);
		CHECK(ERR_OF(Msg("\"read\"", "null", v)) == MessageError::ReadVersion);
		CHECK(ERR_OF(Msg("\"read\"", v, "")) == MessageError::ReadVersion);
	}
	CHECK(ERR_OF(Msg("\"read\"", "5", "6")) == MessageError::ReadVersion);
}

void
TestVersionArithmetic()
{
	CHECK(stream::Version(0, 0) == 0);
	CHECK(stream::Version(0, 7) == 7);
	CHECK(stream::Version(1, 0) == (static_cast<unsigned __int128>(1) << 32));
	CHECK(stream::Version(23002360, 3) == static_cast<unsigned __int128>(23002360) * 4294967296u + 3);
	/* ordered by lsn first, then idx */
	CHECK(stream::Version(1, 0) > stream::Version(0, UINT32_MAX));
	CHECK(stream::Version(5, 2) > stream::Version(5, 1));
	CHECK(stream::Version(UINT64_MAX, UINT32_MAX) > stream::Version(UINT64_MAX, UINT32_MAX - 1));
	CHECK(stream::Version(UINT64_MAX, 0) > stream::Version(UINT64_MAX - 1, UINT32_MAX));

	CHECK_EQ(Dec(0), "0");
	CHECK_EQ(Dec(9), "9");
	CHECK_EQ(Dec(10), "10");
	CHECK_EQ(Dec(4294967295u), "4294967295");
	CHECK_EQ(Dec(stream::Version(1, 0)), "4294967296");
	CHECK_EQ(Dec(stream::Version(23002360, 0)), "98794383930818560");
	CHECK_EQ(Dec(stream::Version(23818721, 1)), "102300627727548417");
	CHECK_EQ(Dec(UINT64_MAX), "18446744073709551615");
	CHECK_EQ(Dec(static_cast<unsigned __int128>(UINT64_MAX) + 1), "18446744073709551616");
	CHECK_EQ(Dec(stream::Version(UINT64_MAX, 0)), "79228162514264337589248983040");
	CHECK_EQ(Dec(stream::Version(UINT64_MAX, UINT32_MAX)), "79228162514264337593543950335");
	/* the widest number the buffer takes: 2^128 - 1, 39 digits */
	CHECK_EQ(Dec(~static_cast<unsigned __int128>(0)), "340282366920938463463374607431768211455");
	/* powers of ten are exact at every length */
	unsigned __int128 p = 1;
	std::string want = "1";
	for (int i = 0; i < 38; i++) {
		CHECK_EQ(Dec(p), want);
		CHECK_EQ(Dec(p - 1), i == 0 ? "0" : std::string(static_cast<size_t>(i), '9'));
		p *= 10;
		want += "0";
	}
	/* the buffer holds exactly the digits and a NUL, nothing more is written */
	char buf[48];
	std::memset(buf, 'x', sizeof(buf));
	size_t n = stream::DecimalText(12345, buf);
	CHECK(n == 5 && buf[5] == '\0' && buf[6] == 'x');
}

void
TestUnchangedToast()
{
	Parsed p("[\"unchanged_toast\",\"Unchanged_toast\",\"unchanged_toast \",\"\",null,1,{\"unchanged_toast\":1},"
			 "[\"unchanged_toast\"],\"unchanged_toast\\u0000\",true]");
	CHECK(p.ok);
	const json::Node *e = p.doc.First(p.Root());
	CHECK(stream::IsUnchangedToast(e));
	int count = 0;
	for (e = p.doc.Next(e); e != nullptr; e = p.doc.Next(e), count++)
		CHECK(!stream::IsUnchangedToast(e));
	CHECK(count == 9);
	CHECK(!stream::IsUnchangedToast(nullptr));
	/* the marker in a record, as the apply engine meets it */
	Parsed r("{\"id\":1,\"note\":\"unchanged_toast\",\"other\":\"unchanged_toast?\"}");
	CHECK(r.ok);
	CHECK(stream::IsUnchangedToast(r.doc.Find(r.Root(), "note")));
	CHECK(!stream::IsUnchangedToast(r.doc.Find(r.Root(), "other")));
	CHECK(!stream::IsUnchangedToast(r.doc.Find(r.Root(), "id")));
}

} /* namespace */

int
main()
{
	TestMessages();
	TestValid();
	TestErrors();
	TestVersions();
	TestVersionArithmetic();
	TestUnchangedToast();
	return Summary();
}
