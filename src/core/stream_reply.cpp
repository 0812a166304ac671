/*
 * stream_reply.cpp - decoding a Sequin Stream `/receive` reply and encoding the ack/nack body
 * (see stream_reply.hpp).
 *
 * Shape checks only: what a change message means (routing, versions, columns) is the apply
 * engine's business.  Postgres-free; no exception leaves these functions.
 */
#include "core/stream_reply.hpp"

#include "core/cpp_only.hpp" // must be the last include

namespace sequin_sync {
namespace {

/* "item <index><rest>" into *error (if wanted), without letting an allocation failure escape. */
void
ItemError(std::string *error, size_t index, const char *rest) noexcept
{
	if (error == nullptr)
		return;
	try {
		*error = "item " + std::to_string(index) + rest;
	} catch (...) {
		error->clear();
	}
}

void
SetError(std::string *error, const char *text) noexcept
{
	if (error == nullptr)
		return;
	try {
		error->assign(text);
	} catch (...) {
		error->clear();
	}
}

bool
IsHex(char c) noexcept
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

} /* namespace */

bool
IsUuid(std::string_view text) noexcept
{
	if (text.size() != 36)
		return false;
	for (size_t i = 0; i < text.size(); i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? text[i] != '-' : !IsHex(text[i]))
			return false;
	}
	return true;
}

/*
 * Why every ack_id is checked here and not left to the server: Sequin answers an ack list with
 * one non-UUID in it by refusing the whole list (400), so a batch holding such an id could be
 * applied but never acknowledged, and would come back forever.  Rejected before it is applied,
 * it costs a bad-reply error instead.
 */
bool
DecodeStreamReply(const json::Document &doc, StreamReply *out, std::string *error) noexcept
{
	if (error != nullptr)
		error->clear();
	if (out == nullptr) {
		SetError(error, "no output for the reply");
		return false;
	}
	out->items.clear();

	const json::Node *root = doc.Root();
	if (root == nullptr || !root->IsObject()) {
		SetError(error, "reply is not a JSON object");
		return false;
	}
	const json::Node *data = doc.Find(root, "data");
	if (data == nullptr || !data->IsArray()) {
		SetError(error, "reply has no \"data\" array");
		return false;
	}

	try {
		out->items.reserve(data->len);
		size_t index = 0;
		for (const json::Node *item = doc.First(data); item != nullptr; item = doc.Next(item), index++) {
			const json::Node *ack_id = item->IsObject() ? doc.Find(item, "ack_id") : nullptr;
			const char *why = nullptr;
			if (!item->IsObject())
				why = " is not an object";
			else if (ack_id == nullptr || !ack_id->IsString())
				why = " has no \"ack_id\" string";
			else if (!IsUuid(ack_id->Str()))
				why = " has an \"ack_id\" that is not a UUID";
			if (why != nullptr || ack_id == nullptr) {
				ItemError(error, index, why);
				out->items.clear();
				return false;
			}
			out->items.push_back(StreamReplyItem{ack_id->Str(), doc.Find(item, "data")});
		}
		/* A bad string in a message is the message's; anywhere else (a key of the reply or of an
		 * item, a member beside "data") it is the reply's. */
		std::vector<const json::Node *> messages;
		messages.reserve(out->items.size());
		for (const StreamReplyItem &item : out->items)
			messages.push_back(item.message);
		const json::BadString *bad = doc.FindBadStringOutside(messages.data(), messages.size());
		if (bad != nullptr) {
			if (error != nullptr)
				*error = "invalid JSON at byte " + std::to_string(bad->offset) + ": " + bad->message;
			out->items.clear();
			return false;
		}
	} catch (...) {
		/* only std::bad_alloc can get here */
		SetError(error, "out of memory");
		out->items.clear();
		return false;
	}
	return true;
}

bool
StreamAckBody(const std::vector<std::string_view> &ack_ids, std::string *out) noexcept
{
	return json::StringListObject("ack_ids", ack_ids, out);
}

} /* namespace sequin_sync */
