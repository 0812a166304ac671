/*
 * next_reply.cpp - decoding a Generation 1 `/next` reply and encoding the ack/nack body.
 *
 * Shape checks only: what a record means (routing, versions, columns) is the apply engine's
 * business.  Postgres-free; no exception leaves these functions.
 */
#include <new>

#include "core/next_reply.hpp"
#include "core/cpp_only.hpp" // must be the last include

namespace sequin_sync {
namespace {

/* Sets *error (if wanted) without letting an allocation failure escape. */
void
SetError(std::string *error, const char *prefix, size_t item, bool with_item, const char *rest) noexcept
{
	if (error == nullptr)
		return;
	try {
		error->assign(prefix);
		if (with_item) {
			error->append(std::to_string(item));
			error->append(rest);
		}
	} catch (...) {
		error->clear();
	}
}

} /* namespace */

bool
DecodeNextReply(const json::Document &doc, NextReply *out, std::string *error) noexcept
{
	if (error != nullptr)
		error->clear();
	if (out == nullptr) {
		SetError(error, "no output for the reply", 0, false, nullptr);
		return false;
	}
	out->items.clear();
	out->has_pending = false;
	out->num_pending = 0;
	out->has_ack_pending = false;
	out->num_ack_pending = 0;

	const json::Node *root = doc.Root();
	if (root == nullptr || !root->IsObject()) {
		SetError(error, "reply is not a JSON object", 0, false, nullptr);
		return false;
	}
	const json::Node *data = doc.Find(root, "data");
	if (data == nullptr || !data->IsArray()) {
		SetError(error, "reply has no \"data\" array", 0, false, nullptr);
		return false;
	}

	try {
		out->items.reserve(data->len);
		size_t index = 0;
		for (const json::Node *item = doc.First(data); item != nullptr; item = doc.Next(item), index++) {
			if (!item->IsObject()) {
				SetError(error, "item ", index, true, " is not an object");
				out->items.clear();
				return false;
			}
			const json::Node *record = doc.Find(item, "record");
			if (record == nullptr && doc.Find(item, "event") != nullptr) {
				SetError(error, "item ", index, true,
						 " has an \"event\" instead of a \"record\": the consumer is an event "
						 "consumer, not a record consumer");
				out->items.clear();
				return false;
			}
			const json::Node *token = doc.Find(item, "ack_token");
			if (token == nullptr || !token->IsString()) {
				SetError(error, "item ", index, true, " has no \"ack_token\" string");
				out->items.clear();
				return false;
			}
			if (token->len == 0) {
				SetError(error, "item ", index, true, " has an empty \"ack_token\"");
				out->items.clear();
				return false;
			}
			out->items.push_back(NextReplyItem{token->Str(), record});
		}
		/* A bad string in a record is the record's; anywhere else (a token, a key of the reply)
		 * it is the reply's, as it was before records could hold one. */
		std::vector<const json::Node *> records;
		records.reserve(out->items.size());
		for (const NextReplyItem &item : out->items)
			records.push_back(item.record);
		const json::BadString *bad = doc.FindBadStringOutside(records.data(), records.size());
		if (bad != nullptr) {
			std::string where = "invalid JSON at byte " + std::to_string(bad->offset) + ": ";
			SetError(error, where.c_str(), 0, false, nullptr);
			if (error != nullptr)
				error->append(bad->message);
			out->items.clear();
			return false;
		}
	} catch (...) {
		/* only std::bad_alloc can get here */
		SetError(error, "out of memory", 0, false, nullptr);
		out->items.clear();
		return false;
	}

	/*
	 * The counters: only digit text that fits in int64 counts.  Anything else (a string, a
	 * fraction, 1e3, an overflow) is ignored rather than guessed at: they only feed the lag
	 * figures.
	 */
	const json::Node *info = doc.Find(root, "info");
	if (info != nullptr && info->IsObject()) {
		out->has_pending = json::ParseInt64(doc.Find(info, "num_pending"), &out->num_pending);
		if (!out->has_pending)
			out->num_pending = 0;
		out->has_ack_pending = json::ParseInt64(doc.Find(info, "num_ack_pending"), &out->num_ack_pending);
		if (!out->has_ack_pending)
			out->num_ack_pending = 0;
	}
	return true;
}

bool
AckBody(const std::vector<std::string_view> &tokens, std::string *out) noexcept
{
	return json::StringListObject("ack_tokens", tokens, out);
}

} /* namespace sequin_sync */
