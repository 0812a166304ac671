/*
 * stream_message.hpp - a Sequin Stream change message, checked: what the apply engine needs
 * from one message's "data" object, decided from the parsed JSON alone (the Postgres-free half,
 * unit-tested in test/unit/stream_message_test.cpp).
 *
 * A message is {"record": {...}, "changes": {...} | null, "action": "insert" | "update" |
 * "delete" | "read", "metadata": {"table_schema", "table_name", "commit_lsn", "commit_idx",
 * "commit_timestamp", ...}} (sequin-stream-api.md section 2).  Its version is
 * commit_lsn * 2^32 + commit_idx; backfill reads have none (both null).
 *
 * Like record.hpp: no Postgres headers, every function noexcept, pointers into the Document.
 */
#ifndef SEQUIN_SYNC_STREAM_MESSAGE_HPP
#define SEQUIN_SYNC_STREAM_MESSAGE_HPP

#ifdef POSTGRES_H
#error "stream_message.hpp must stay free of Postgres headers"
#endif

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/json_doc.hpp"

namespace sequin_sync {
namespace stream {

enum class Action : uint8_t { Insert, Update, Delete, Read };

/* Why a message is unusable; every one is SQLSTATE 22023 on the Postgres side. */
enum class MessageError : uint8_t {
	None,
	NotObject,		/* the message is not a JSON object */
	Transformed,	/* neither "action" nor "metadata": the sink has a transform */
	NoAction,		/* "action" absent or null */
	BadAction,		/* "action" not one of the four */
	NoMetadata,		/* "metadata" absent, null or not an object */
	BadTable,		/* table_schema / table_name not non-empty strings without \u0000 */
	NoVersion,		/* a change without commit_lsn / commit_idx (Sequin before 0.9) */
	BadVersion,		/* commit_lsn not a uint64, commit_idx not a uint32 */
	ReadVersion,	/* a read with a commit_lsn or commit_idx: not what Sequin sends */
	NoRecord,		/* "record" absent, null or not an object */
	BadChanges,		/* "changes" neither an object nor null */
};

/* The dead letter's message for an error ("" for None); static text. */
const char *MessageErrorMessage(MessageError err) noexcept;

struct Message {
	Action action = Action::Insert;
	/* "schema.table" is the collection; both point into the Document, not NUL-terminated */
	std::string_view schema;
	std::string_view table;
	bool has_version = false;	/* false only for reads */
	uint64_t commit_lsn = 0;
	uint32_t commit_idx = 0;
	const json::Node *record = nullptr;		/* an object */
	const json::Node *changes = nullptr;	/* an object, or nullptr when null or absent */
	/* metadata.commit_timestamp when it is a string (ISO 8601), else empty */
	std::string_view commit_timestamp;
};

/*
 * Checks one message and fills *out.  The checks run in a fixed order (object, transform,
 * action, metadata, table, version, record, changes) and the first failure is returned; the
 * table is captured as soon as it is valid, so a dead letter still names its collection.
 */
MessageError ValidateMessage(const json::Document &doc, const json::Node *msg, Message *out) noexcept;

/* The version as a 128-bit number: commit_lsn * 2^32 + commit_idx (at most 96 bits). */
inline unsigned __int128
Version(uint64_t commit_lsn, uint32_t commit_idx) noexcept
{
	return (static_cast<unsigned __int128>(commit_lsn) << 32) | commit_idx;
}

/* The decimal digits of a 128-bit number into buf (at least 40 bytes), NUL-terminated; the length. */
size_t DecimalText(unsigned __int128 value, char *buf) noexcept;

/* Whether a record value is Sequin's marker for an unchanged TOASTed column of an update. */
bool IsUnchangedToast(const json::Node *value) noexcept;

} /* namespace stream */
} /* namespace sequin_sync */

#endif
