/*
 * fuzz_json_doc.cpp - libFuzzer target for json_doc.cpp and next_reply.cpp.  Build and run:
 *
 *   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc src/core/json_doc.cpp \
 *       src/core/next_reply.cpp test/unit/fuzz_json_doc.cpp -o /tmp/fuzz_json
 *   mkdir -p /tmp/fuzz_json_corpus
 *   /tmp/fuzz_json -max_total_time=60 /tmp/fuzz_json_corpus test/unit/corpus/json_doc test/fixtures
 *
 * (libFuzzer writes new inputs into the first directory, so keep a scratch one first.)
 * Beyond "no crash": a document that parses must serialize to JSON that parses again and
 * serializes to the same bytes, and every accessor must be safe on whatever came out.
 */
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/json_doc.hpp"
#include "core/next_reply.hpp"

using namespace sequin_sync;

namespace {

/* A broken invariant: report it and abort, which libFuzzer records as a crash. */
[[noreturn]] void
Die(const char *why)
{
	std::fprintf(stderr, "fuzz_json_doc: %s\n", why);
	std::abort();
}

/* Walks every node without recursion, exercising the accessors and the array literal. */
void
Visit(json::Document &doc)
{
	std::vector<const json::Node *> todo;
	todo.push_back(doc.Root());
	size_t seen = 0;
	int literals = 0;
	while (!todo.empty()) {
		const json::Node *n = todo.back();
		todo.pop_back();
		seen++;
		(void) n->IsIntegerText();
		if (n->IsObject() || n->IsArray()) {
			uint32_t children = 0;
			for (const json::Node *c = doc.First(n); c != nullptr; c = doc.Next(c)) {
				todo.push_back(c);
				children++;
				if (n->IsObject() && doc.Find(n, c->Key()) == nullptr)
					Die("member not found by its own key");
			}
			if (children != n->len)
				Die("child count mismatch");
		}
		/* each literal walks the whole sub-tree: a few per input keep deep inputs fast */
		if (n->IsArray() && literals++ < 16) {
			const char *out = nullptr;
			size_t len = 0;
			if (!doc.ArrayLiteral(n, &out, &len) || len < 2 || out[0] != '{' || out[len - 1] != '}')
				Die("array literal failed");
		}
		if (n->IsObject())
			(void) doc.FindPath(n, "data.a.b");
	}
	if (seen != doc.NodeCount())
		Die("node count mismatch");
}

} /* namespace */

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an exact-size copy: Parse writes into it, and ASan sees any access past its end */
	std::unique_ptr<char[]> buf(new char[size]);
	if (size != 0)
		std::memcpy(buf.get(), data, size);

	json::Document doc;
	if (!doc.Parse(buf.get(), size)) {
		if (doc.Root() != nullptr || doc.ErrorMessage()[0] == '\0' || doc.ErrorOffset() > size)
			Die("bad failure state");
		return 0;
	}

	Visit(doc);

	NextReply reply;
	std::string error;
	if (DecodeNextReply(doc, &reply, &error)) {
		std::vector<std::string_view> tokens;
		for (const NextReplyItem &item : reply.items) {
			if (item.ack_token.empty() || item.record == nullptr || !item.record->IsObject())
				Die("bad reply item");
			tokens.push_back(item.ack_token);
		}
		std::string body;
		if (AckBody(tokens, &body) != !tokens.empty())
			Die("ack body");
		if (!body.empty()) {
			json::Document ack;
			if (!ack.Parse(body.data(), body.size()))
				Die("ack body does not parse");
		}
	} else if (error.empty()) {
		Die("decode failed without a message");
	}

	/* serialize, re-parse, serialize again: the same bytes */
	const char *out = nullptr;
	size_t out_len = 0;
	if (!doc.Serialize(doc.Root(), &out, &out_len))
		Die("serialize failed");
	std::unique_ptr<char[]> again(new char[out_len]);
	std::memcpy(again.get(), out, out_len);
	std::string first(out, out_len);

	json::Document doc2;
	if (!doc2.Parse(again.get(), out_len))
		Die("serialized text does not parse");
	if (doc2.NodeCount() != doc.NodeCount())
		Die("node count changed");
	if (!doc2.Serialize(doc2.Root(), &out, &out_len))
		Die("second serialize failed");
	if (std::string_view(out, out_len) != first)
		Die("round trip changed the text");
	return 0;
}
