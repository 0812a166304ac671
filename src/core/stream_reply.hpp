/*
 * stream_reply.hpp - the Sequin Stream protocol's JSON shapes: decoding a `/receive` reply
 * (parsed into a json::Document) and encoding the `/ack` and `/nack` body.  The Generation 1
 * counterpart is next_reply.hpp; the protocol is described in sequin-stream-api.md.
 *
 * Postgres-free like json_doc.hpp: unit-tested and fuzzed alone (test/unit/).
 */
#ifndef SEQUIN_SYNC_STREAM_REPLY_HPP
#define SEQUIN_SYNC_STREAM_REPLY_HPP

#ifdef POSTGRES_H
#error "stream_reply.hpp must stay free of Postgres headers"
#endif

#include <string>
#include <string_view>
#include <vector>

#include "core/json_doc.hpp"

namespace sequin_sync {

/* Sequin's limit on max_batch_size (a larger one is a 400). */
constexpr int kStreamMaxBatchSize = 1000;

/* One delivered message; both point into the Document (and so into its buffer). */
struct StreamReplyItem {
	/* A UUID (8-4-4-4-12 hex digits), checked: Sequin refuses a whole ack list holding one
	 * that is not. */
	std::string_view ack_id;
	/*
	 * The item's "data": the change message ({"record", "changes", "action", "metadata"}), any
	 * JSON value, nullptr when the item has none.  Whether it is a usable message is the apply
	 * engine's to judge; one that is not is parked and acknowledged with the others.
	 */
	const json::Node *message;
};

struct StreamReply {
	std::vector<StreamReplyItem> items;
};

/*
 * Decode {"data": [{"ack_id": "<uuid>", "data": {...}}, ...]}.
 *
 * What a message holds costs only that message: a "data" that is missing, null, not an object
 * or holds a string that is not Unicode text (Document::BadStrings) is still an item, to be
 * parked and acknowledged.  What makes the reply's own structure untrustworthy rejects it
 * whole, because the caller must not ack (or apply) part of a reply it could not understand:
 * not an object, no "data" array, an item that is not an object, an "ack_id" that is absent,
 * not a string or not a UUID (one such id would make Sequin refuse the whole ack), or a bad
 * string outside the messages.  On false, *error says why in lower case without a trailing
 * period, naming items by their 0-based index in "data" (e.g. `item 3 has no "ack_id"
 * string`), and *out is left empty.  Other members of the reply and of an item are ignored.
 */
bool DecodeStreamReply(const json::Document &doc, StreamReply *out, std::string *error) noexcept;

/* Whether text is a UUID in its 36-character form, 8-4-4-4-12 hex digits of either case. */
bool IsUuid(std::string_view text) noexcept;

/*
 * The ack/nack body, {"ack_ids":["a","b"]}, ids JSON-escaped, into *out (replaced).  False for
 * an empty list (Sequin wants a non-empty array) or when memory runs out.
 */
bool StreamAckBody(const std::vector<std::string_view> &ack_ids, std::string *out) noexcept;

} /* namespace sequin_sync */

#endif
