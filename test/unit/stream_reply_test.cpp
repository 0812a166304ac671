/*
 * stream_reply_test.cpp - unit test of the Sequin Stream reply decoder and ack body
 * (src/core/stream_reply.cpp) and of the one list writer both protocols' ack bodies use
 * (json::StringListObject).
 *
 *   g++ -std=c++17 -Isrc src/core/json_doc.cpp src/core/next_reply.cpp src/core/stream_reply.cpp \
 *       test/unit/stream_reply_test.cpp -o /tmp/stream_reply_test && /tmp/stream_reply_test
 */
#include "core/next_reply.hpp"
#include "core/stream_reply.hpp"

#include <vector>

#include "unit_check.hpp"

using namespace sequin_sync;
using json::Node;

namespace {

const char *const kId1 = "0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11";
const char *const kId2 = "6F9619FF-8B86-D011-B42D-00C04FC964FF";

/* {"data":[<items>]} with each item {"ack_id":"<kId1>", <member>}. */
std::string
Reply(const std::string &items)
{
	return "{\"data\":[" + items + "]}";
}

std::string
Item(const std::string &rest, const char *id = kId1)
{
	return std::string("{\"ack_id\":\"") + id + "\"" + (rest.empty() ? "" : "," + rest) + "}";
}

void
TestIsUuid()
{
	const char *good[] = {kId1, kId2, "00000000-0000-0000-0000-000000000000",
						  "ffffffff-FFFF-aBcD-0000-123456789abc"};
	for (const char *id : good)
		CHECK(IsUuid(id));
	const char *bad[] = {
		"",
		"MTYyeJ7abUjl1pO",
		"0f0c9a1e2b7b4c1e9a5e6a7f1f0d9b11",      /* no dashes */
		"{0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11}",  /* braces */
		"urn:uuid:0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11",
		"0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b1",     /* one short */
		"0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b111",   /* one long */
		"0f0c9a1e-2b7b-4c1e-9a5e_6a7f1f0d9b11",    /* a dash replaced */
		"0f0c9a1e2-b7b-4c1e-9a5e-6a7f1f0d9b11",    /* a dash moved */
		"0f0c9a1g-2b7b-4c1e-9a5e-6a7f1f0d9b11",    /* not hex */
		" 0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b1",
		"0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b1\xC3",
	};
	for (const char *id : bad) {
		CHECK(!IsUuid(id));
		if (IsUuid(id))
			std::printf("    accepted \"%s\"\n", Show(id).c_str());
	}
	CHECK(!IsUuid(std::string_view("0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b1\0", 36)));
}

/* A real reply, as pull_json.ex writes it (test/fixtures/stream_reply.json). */
void
TestFixture()
{
	std::string text = ReadFixture("stream_reply.json");
	Parsed p(text);
	CHECK(p.ok);
	StreamReply reply;
	std::string error = "stale";
	CHECK(DecodeStreamReply(p.doc, &reply, &error));
	CHECK_EQ(error, "");
	CHECK(reply.items.size() == 3);
	if (reply.items.size() != 3)
		return;
	CHECK_EQ(reply.items[0].ack_id, "8b5e1bd2-6f2e-4d4c-9c1f-1c4f5a0e7a01");
	CHECK_EQ(reply.items[2].ack_id, "8b5e1bd2-6f2e-4d4c-9c1f-1c4f5a0e7a03");
	const Node *m = reply.items[0].message;
	CHECK(m != nullptr && m->IsObject());
	const Node *action = p.doc.Find(m, "action");
	CHECK(action != nullptr && action->Str() == "insert");
	const Node *lsn = p.doc.FindPath(m, "metadata.commit_lsn");
	CHECK(lsn != nullptr && lsn->IsNumber() && lsn->Str() == "25962568");
	const Node *total = p.doc.FindPath(m, "record.total");
	CHECK(total != nullptr && total->IsString() && total->Str() == "1234567890.123456789");
	/* a backfill read: null versions, still an item */
	const Node *read_lsn = p.doc.FindPath(reply.items[2].message, "metadata.commit_lsn");
	CHECK(read_lsn != nullptr && read_lsn->IsNull());

	std::vector<std::string_view> ids;
	for (const StreamReplyItem &item : reply.items)
		ids.push_back(item.ack_id);
	std::string body;
	CHECK(StreamAckBody(ids, &body));
	CHECK_EQ(body, "{\"ack_ids\":[\"8b5e1bd2-6f2e-4d4c-9c1f-1c4f5a0e7a01\",\"8b5e1bd2-6f2e-4d4c-9c1f-1c4f5a0e7a02\","
				   "\"8b5e1bd2-6f2e-4d4c-9c1f-1c4f5a0e7a03\"]}");
}

void
TestDecode()
{
	struct Case {
		std::string json;
		const char *error; /* nullptr: decodes */
		size_t items;
	} cases[] = {
		{"[]", "reply is not a JSON object", 0},
		{"\"data\"", "reply is not a JSON object", 0},
		{"null", "reply is not a JSON object", 0},
		{"{}", "reply has no \"data\" array", 0},
		{"{\"data\":{}}", "reply has no \"data\" array", 0},
		{"{\"data\":null}", "reply has no \"data\" array", 0},
		{"{\"data\":\"[]\"}", "reply has no \"data\" array", 0},
		{"{\"messages\":[]}", "reply has no \"data\" array", 0},
		{"{\"data\":[]}", nullptr, 0},
		{"{\"data\":[],\"extra\":{\"x\":1}}", nullptr, 0},
		{Reply("1"), "item 0 is not an object", 0},
		{Reply("null"), "item 0 is not an object", 0},
		{Reply("[]"), "item 0 is not an object", 0},
		{Reply("\"" + std::string(kId1) + "\""), "item 0 is not an object", 0},
		{Reply("{\"data\":{}}"), "item 0 has no \"ack_id\" string", 0},
		{Reply("{\"ack_id\":null,\"data\":{}}"), "item 0 has no \"ack_id\" string", 0},
		{Reply("{\"ack_id\":5,\"data\":{}}"), "item 0 has no \"ack_id\" string", 0},
		{Reply("{\"ack_id\":[\"" + std::string(kId1) + "\"],\"data\":{}}"), "item 0 has no \"ack_id\" string", 0},
		/* a v1 item: its ack_token is no ack_id */
		{Reply("{\"ack_token\":\"MTYyeJ7abUjl1pO\",\"record\":{}}"), "item 0 has no \"ack_id\" string", 0},
		{Reply("{\"ack_id\":\"\",\"data\":{}}"), "item 0 has an \"ack_id\" that is not a UUID", 0},
		{Reply("{\"ack_id\":\"MTYyeJ7abUjl1pO\",\"data\":{}}"), "item 0 has an \"ack_id\" that is not a UUID", 0},
		{Reply("{\"ack_id\":\"0f0c9a1e2b7b4c1e9a5e6a7f1f0d9b11\",\"data\":{}}"),
		 "item 0 has an \"ack_id\" that is not a UUID", 0},
		/* a UUID written with escapes is the same UUID */
		{Reply("{\"ack_id\":\"\\u0030f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11\",\"data\":{}}"), nullptr, 1},
		/* what the message holds is the message's: these are items, parked by the engine */
		{Reply(Item("")), nullptr, 1},
		{Reply(Item("\"data\":null")), nullptr, 1},
		{Reply(Item("\"data\":[]")), nullptr, 1},
		{Reply(Item("\"data\":\"{}\"")), nullptr, 1},
		{Reply(Item("\"data\":{\"id\":1,\"name\":\"a record without action or metadata\"}")), nullptr, 1},
		{Reply(Item("\"data\":{\"record\":{\"s\":\"\\ud800\"}}")), nullptr, 1},
		{Reply(Item("\"data\":{\"record\":{\"s\":\"\xFF\"}}")), nullptr, 1},
		{Reply(Item("\"data\":{\"\xC0\xAF\":1}")), nullptr, 1},
		/* the later item is named by its index */
		{Reply(Item("\"data\":{}") + "," + Item("\"data\":{}", kId2) + "," + Item("\"data\":{}") + "," +
			   "{\"data\":{}}"),
		 "item 3 has no \"ack_id\" string", 0},
		{Reply(Item("\"data\":{}") + "," + Item("\"data\":{}", kId2) + ",7"), "item 2 is not an object", 0},
		{Reply(Item("\"data\":{}") + ",{\"ack_id\":\"x\"}"), "item 1 has an \"ack_id\" that is not a UUID", 0},
		{Reply(Item("\"data\":{}") + "," + Item("\"data\":{}", kId2) + "," + Item("")), nullptr, 3},
		/* duplicate keys: the last one counts, as for jsonb */
		{"{\"data\":{},\"data\":[]}", nullptr, 0},
		{"{\"data\":[],\"data\":{}}", "reply has no \"data\" array", 0},
		{Reply("{\"ack_id\":\"x\",\"ack_id\":\"" + std::string(kId1) + "\"}"), nullptr, 1},
		/* a bad string outside the messages is the reply's */
		{Reply("{\"ack_id\":\"" + std::string(kId1) + "\",\"data\":{},\"note\":\"\xFF\"}"),
		 "invalid JSON at byte 76: invalid UTF-8 in string", 0},
		{Reply(Item("\"data\":{}")).substr(0, 9) + Item("\"d\xFF\":1") + "]}",
		 "invalid JSON at byte 60: invalid UTF-8 in string", 0},
		{"{\"data\":[],\"x\\ud800\":1}", "invalid JSON at byte 13: invalid unicode surrogate pair in string", 0},
		{"{\"data\":[" + Item("\"data\":{}") + "],\"x\":\"\\udc00\"}",
		 "invalid JSON at byte 75: invalid unicode surrogate pair in string", 0},
	};
	for (const Case &c : cases) {
		Parsed q(c.json);
		CHECK(q.ok);
		if (!q.ok)
			std::printf("    does not parse: %s\n", Show(c.json).c_str());
		StreamReply r;
		r.items.push_back(StreamReplyItem{"stale", nullptr});
		std::string err = "stale";
		bool ok = DecodeStreamReply(q.doc, &r, &err);
		if (c.error == nullptr) {
			CHECK(ok);
			CHECK_EQ(err, "");
			CHECK(r.items.size() == c.items);
			if (!ok)
				std::printf("    %s\n", Show(c.json).c_str());
		} else {
			CHECK(!ok);
			CHECK_EQ(err, c.error);
			CHECK(r.items.empty());
		}
	}

	/* Missing "data" is nullptr, a present one its node; every item keeps its id. */
	Parsed p(Reply(Item("\"data\":{\"action\":\"delete\"}") + "," + Item("", kId2)));
	StreamReply r;
	std::string error;
	CHECK(DecodeStreamReply(p.doc, &r, &error));
	CHECK(r.items.size() == 2);
	if (r.items.size() == 2) {
		CHECK_EQ(r.items[0].ack_id, kId1);
		CHECK_EQ(r.items[1].ack_id, kId2);
		CHECK(r.items[0].message != nullptr && p.doc.Find(r.items[0].message, "action") != nullptr);
		CHECK(r.items[1].message == nullptr);
	}
	/* A message with a bad string stays an item; the bad string is found inside it. */
	Parsed bad(Reply(Item("\"data\":{\"record\":{\"s\":\"\xFF\"}}") + "," + Item("\"data\":{}", kId2)));
	CHECK(DecodeStreamReply(bad.doc, &r, &error));
	CHECK(r.items.size() == 2);
	if (r.items.size() == 2) {
		CHECK(bad.doc.FindBadString(r.items[0].message) != nullptr);
		CHECK(bad.doc.FindBadString(r.items[1].message) == nullptr);
	}

	/* A failed parse has no root; no output; no error wanted. */
	Parsed broken("{\"data\":[");
	CHECK(!DecodeStreamReply(broken.doc, &r, &error));
	CHECK_EQ(error, "reply is not a JSON object");
	CHECK(!DecodeStreamReply(broken.doc, nullptr, nullptr));
	CHECK(!DecodeStreamReply(p.doc, nullptr, &error));
	CHECK_EQ(error, "no output for the reply");
	CHECK(DecodeStreamReply(p.doc, &r, nullptr));

	/* Deep messages are only messages: nothing recurses, and they cost nothing else. */
	for (const std::string &deep : {DeepArrays(100000), DeepObjects(100000), DeepMixed(100000)}) {
		Parsed d(Reply(Item("\"data\":" + deep) + "," + Item("\"data\":{}", kId2)));
		CHECK(d.ok);
		CHECK(DecodeStreamReply(d.doc, &r, &error));
		CHECK(r.items.size() == 2);
	}
	/* Many items. */
	std::string many;
	for (int i = 0; i < 1000; i++)
		many += (i ? "," : "") + Item("\"data\":{\"record\":{\"id\":" + std::to_string(i) + "}}");
	Parsed m(Reply(many));
	CHECK(DecodeStreamReply(m.doc, &r, &error));
	CHECK(r.items.size() == 1000);
}

void
TestAckBodies()
{
	std::string body = "garbage";
	CHECK(!StreamAckBody({}, &body));
	CHECK(body.empty());
	CHECK(!StreamAckBody({kId1}, nullptr));
	CHECK(StreamAckBody({kId1}, &body));
	CHECK_EQ(body, std::string("{\"ack_ids\":[\"") + kId1 + "\"]}");
	CHECK(StreamAckBody({kId1, kId2}, &body));
	CHECK_EQ(body, std::string("{\"ack_ids\":[\"") + kId1 + "\",\"" + kId2 + "\"]}");

	/* One writer, one escaper, for both protocols: what it escapes, it escapes alike. */
	std::string_view nasty("q\"b\\s/\n\t\x01\0\xC3\xA9", 12);
	std::string v1, stream, list;
	CHECK(AckBody({nasty, ""}, &v1));
	CHECK(StreamAckBody({nasty, ""}, &stream));
	CHECK(json::StringListObject("k", {nasty, ""}, &list));
	const std::string escaped = "[\"q\\\"b\\\\s/\\n\\t\\u0001\\u0000\xC3\xA9\",\"\"]}";
	CHECK_EQ(v1, "{\"ack_tokens\":" + escaped);
	CHECK_EQ(stream, "{\"ack_ids\":" + escaped);
	CHECK_EQ(list, "{\"k\":" + escaped);
	Parsed p(stream);
	CHECK(p.ok);
	const Node *ids = p.doc.Find(p.Root(), "ack_ids");
	CHECK(ids != nullptr && ids->IsArray() && ids->len == 2);
	CHECK(ids != nullptr && p.doc.First(ids)->Str() == nasty);

	list = "garbage";
	CHECK(!json::StringListObject("k", {}, &list));
	CHECK(list.empty());
	CHECK(!json::StringListObject("k", {"a"}, nullptr));
	/* Big lists: one reservation, every id. */
	std::vector<std::string> many(5000, kId1);
	std::vector<std::string_view> views(many.begin(), many.end());
	CHECK(StreamAckBody(views, &body));
	CHECK(body.size() == 12 + 5000 * 39 - 1 + 2);
}

} /* namespace */

int
main()
{
	TestIsUuid();
	TestFixture();
	TestDecode();
	TestAckBodies();
	return Summary();
}
