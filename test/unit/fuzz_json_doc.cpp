/*
 * fuzz_json_doc.cpp - libFuzzer target for json_doc.cpp, next_reply.cpp and stream_reply.cpp (and
 * the array literals of record.cpp, which walk whole trees).  Build and run:
 *
 *   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc src/core/json_doc.cpp \
 *       src/core/next_reply.cpp src/core/stream_reply.cpp src/core/record.cpp test/unit/fuzz_json_doc.cpp \
 *       -o /tmp/fuzz_json
 *   mkdir -p /tmp/fuzz_json_corpus
 *   /tmp/fuzz_json -max_total_time=60 /tmp/fuzz_json_corpus test/unit/corpus/json_doc test/fixtures
 *
 * (libFuzzer writes new inputs into the first directory, so keep a scratch one first.)
 * Beyond "no crash": a document that parses must serialize to JSON that parses again and
 * serializes to the same bytes, and every accessor must be safe on whatever came out.  Every
 * string of a parsed document is valid UTF-8 (bad ones are listed and made valid), the source
 * text kept for a bad record parses again, neither protocol's decoder fails with an internal
 * error or lets through what it must refuse (a bad string outside the records; for Sequin
 * Stream an ack id that is not a UUID), and the ack bodies are built by the same AckBody and
 * StreamAckBody that the HTTP clients send.
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
#include "core/record.hpp"
#include "core/stream_reply.hpp"

using namespace sequin_sync;

namespace {

/* A broken invariant: report it and abort, which libFuzzer records as a crash. */
[[noreturn]] void
Die(const char *why)
{
	std::fprintf(stderr, "fuzz_json_doc: %s\n", why);
	std::abort();
}

/* Whether s is well-formed UTF-8 without surrogates (Unicode Table 3-7), checked byte by byte. */
bool
ValidUtf8(std::string_view s)
{
	size_t i = 0;
	while (i < s.size()) {
		unsigned char c = static_cast<unsigned char>(s[i]);
		size_t n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
		if (n == 0 || i + n > s.size())
			return false;
		unsigned cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
		for (size_t k = 1; k < n; k++) {
			unsigned char d = static_cast<unsigned char>(s[i + k]);
			if ((d & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (d & 0x3F);
		}
		unsigned min = n == 2 ? 0x80 : n == 3 ? 0x800 : n == 4 ? 0x10000 : 0;
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n;
	}
	return true;
}

/* Walks every node without recursion, exercising the accessors and the array literal. */
void
Visit(json::Document &doc)
{
	record::ArrayLiteralWriter writer;
	std::vector<const json::Node *> todo;
	todo.push_back(doc.Root());
	size_t seen = 0;
	int literals = 0;
	while (!todo.empty()) {
		const json::Node *n = todo.back();
		todo.pop_back();
		seen++;
		(void) n->IsIntegerText();
		if (n->IsString() && !ValidUtf8(n->Str()))
			Die("a string is not UTF-8");
		if (!ValidUtf8(n->Key()))
			Die("a key is not UTF-8");
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
			if (!writer.ArrayLiteral(doc, n, &out, &len) || len < 2 || out[0] != '{' || out[len - 1] != '}')
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
		if (std::strncmp(doc.ErrorMessage(), "internal error", 14) == 0)
			Die(doc.ErrorMessage());
		return 0;
	}

	Visit(doc);
	for (const json::BadString &b : doc.BadStrings())
		if (b.node >= doc.NodeCount() || b.offset >= size)
			Die("bad string out of range");

	NextReply reply;
	std::string error;
	if (DecodeNextReply(doc, &reply, &error)) {
		std::vector<std::string_view> tokens;
		std::vector<const json::Node *> records;
		for (const NextReplyItem &item : reply.items) {
			if (item.ack_token.empty())
				Die("bad reply item");
			tokens.push_back(item.ack_token);
			records.push_back(item.record);
			/* what a dead letter would keep of an undecodable record parses again, as bad */
			if (item.record != nullptr && doc.FindBadString(item.record) != nullptr) {
				const char *text = nullptr;
				size_t len = 0;
				if (!doc.SourceText(item.record, &text, &len) || !ValidUtf8(std::string_view(text, len)))
					Die("source text");
				std::string copy(text, len);
				json::Document kept;
				if (!kept.Parse(copy.data(), copy.size()))
					Die("source text does not parse");
				if (item.record->IsObject() && kept.FindBadString(kept.Root()) == nullptr)
					Die("source text lost its bad string");
			}
		}
		if (doc.FindBadStringOutside(records.data(), records.size()) != nullptr)
			Die("a bad string outside the records was accepted");
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

	/* the same document as a Sequin Stream reply */
	StreamReply stream;
	if (DecodeStreamReply(doc, &stream, &error)) {
		std::vector<std::string_view> ids;
		std::vector<const json::Node *> messages;
		for (const StreamReplyItem &item : stream.items) {
			if (!IsUuid(item.ack_id))
				Die("an ack id that is not a UUID was accepted");
			ids.push_back(item.ack_id);
			messages.push_back(item.message);
		}
		if (doc.FindBadStringOutside(messages.data(), messages.size()) != nullptr)
			Die("a bad string outside the messages was accepted");
		std::string body;
		if (StreamAckBody(ids, &body) != !ids.empty())
			Die("stream ack body");
		if (!body.empty()) {
			json::Document ack;
			if (!ack.Parse(body.data(), body.size()))
				Die("stream ack body does not parse");
			const json::Node *list = ack.Find(ack.Root(), "ack_ids");
			if (list == nullptr || list->len != ids.size())
				Die("stream ack body lost ids");
		}
	} else if (error.empty() || !stream.items.empty()) {
		Die("stream decode failed without a message, or kept items");
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
