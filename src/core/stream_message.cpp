/*
 * stream_message.cpp - checking a Sequin Stream change message (see stream_message.hpp).
 */
#include "core/stream_message.hpp"

#include <charconv>
#include <cstring>

#include "core/cpp_only.hpp" // must be the last include

namespace sequin_sync {
namespace stream {

namespace {

/* A non-empty string without NUL bytes (it becomes part of a collection name). */
bool
UsableName(const json::Node *n) noexcept
{
	return n != nullptr && n->IsString() && n->len > 0 && std::memchr(n->str, '\0', n->len) == nullptr;
}

/* A JSON integer within [0, max]; false for anything else. */
bool
ParseUnsigned(const json::Node *n, uint64_t max, uint64_t *out) noexcept
{
	if (n == nullptr || !n->IsIntegerText() || n->len == 0 || n->str[0] == '-')
		return false;
	uint64_t value = 0;
	std::from_chars_result r = std::from_chars(n->str, n->str + n->len, value);
	if (r.ec != std::errc() || r.ptr != n->str + n->len || value > max)
		return false;
	*out = value;
	return true;
}

bool
Absent(const json::Node *n) noexcept
{
	return n == nullptr || n->IsNull();
}

} /* namespace */

const char *
MessageErrorMessage(MessageError err) noexcept
{
	switch (err) {
		case MessageError::None:
			return "";
		case MessageError::NotObject:
			return "message is not a JSON object";
		case MessageError::Transformed:
			return "message has no \"action\" and no \"metadata\": the Sequin Stream sink has a transform, and sequin_sync needs the messages as Sequin sends them without one";
		case MessageError::NoAction:
			return "message has no \"action\"";
		case MessageError::BadAction:
			return "message field \"action\" must be \"insert\", \"update\", \"delete\" or \"read\"";
		case MessageError::NoMetadata:
			return "message has no \"metadata\" object";
		case MessageError::BadTable:
			return "message metadata must have \"table_schema\" and \"table_name\" strings";
		case MessageError::NoVersion:
			return "message has no version: metadata.commit_lsn and metadata.commit_idx are null in a change (Sequin 0.9 or later sends them)";
		case MessageError::BadVersion:
			return "message metadata \"commit_lsn\" must be an integer between 0 and 18446744073709551615 and \"commit_idx\" one between 0 and 4294967295";
		case MessageError::ReadVersion:
			return "read message has a commit_lsn or commit_idx: Sequin sends backfill reads without a version";
		case MessageError::NoRecord:
			return "message has no \"record\" object";
		case MessageError::BadChanges:
			return "message field \"changes\" must be an object or null";
	}
	return "invalid message";
}

MessageError
ValidateMessage(const json::Document &doc, const json::Node *msg, Message *out) noexcept
{
	*out = Message();
	if (msg == nullptr || !msg->IsObject())
		return MessageError::NotObject;
	const json::Node *action = doc.Find(msg, "action");
	const json::Node *metadata = doc.Find(msg, "metadata");
	if (action == nullptr && metadata == nullptr)
		return MessageError::Transformed;
	/* the table first, so a message with any other fault still names its collection */
	if (metadata != nullptr && metadata->IsObject()) {
		const json::Node *schema = doc.Find(metadata, "table_schema");
		const json::Node *table = doc.Find(metadata, "table_name");
		if (UsableName(schema) && UsableName(table)) {
			out->schema = schema->Str();
			out->table = table->Str();
		}
	}
	if (Absent(action))
		return MessageError::NoAction;
	if (!action->IsString())
		return MessageError::BadAction;
	std::string_view a = action->Str();
	if (a == "insert")
		out->action = Action::Insert;
	else if (a == "update")
		out->action = Action::Update;
	else if (a == "delete")
		out->action = Action::Delete;
	else if (a == "read")
		out->action = Action::Read;
	else
		return MessageError::BadAction;
	if (metadata == nullptr || !metadata->IsObject())
		return MessageError::NoMetadata;
	if (out->schema.empty())
		return MessageError::BadTable;

	const json::Node *lsn = doc.Find(metadata, "commit_lsn");
	const json::Node *idx = doc.Find(metadata, "commit_idx");
	if (out->action == Action::Read) {
		/* reads carry no version; one that has one is not what Sequin sends */
		if (!Absent(lsn) || !Absent(idx))
			return MessageError::ReadVersion;
	} else {
		if (Absent(lsn) || Absent(idx))
			return MessageError::NoVersion;
		uint64_t l, i;
		if (!ParseUnsigned(lsn, UINT64_MAX, &l) || !ParseUnsigned(idx, UINT32_MAX, &i))
			return MessageError::BadVersion;
		out->has_version = true;
		out->commit_lsn = l;
		out->commit_idx = static_cast<uint32_t>(i);
	}

	const json::Node *record = doc.Find(msg, "record");
	if (record == nullptr || !record->IsObject())
		return MessageError::NoRecord;
	out->record = record;
	const json::Node *changes = doc.Find(msg, "changes");
	if (!Absent(changes)) {
		if (!changes->IsObject())
			return MessageError::BadChanges;
		out->changes = changes;
	}
	const json::Node *ts = doc.Find(metadata, "commit_timestamp");
	if (ts != nullptr && ts->IsString())
		out->commit_timestamp = ts->Str();
	return MessageError::None;
}

size_t
DecimalText(unsigned __int128 value, char *buf) noexcept
{
	char tmp[40];
	size_t n = 0;
	do {
		tmp[n++] = static_cast<char>('0' + static_cast<int>(value % 10));
		value /= 10;
	} while (value != 0);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	buf[n] = '\0';
	return n;
}

bool
IsUnchangedToast(const json::Node *value) noexcept
{
	return value != nullptr && value->IsString() && value->Str() == "unchanged_toast";
}

} /* namespace stream */
} /* namespace sequin_sync */
