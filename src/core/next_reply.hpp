/*
 * next_reply.hpp - the Generation 1 consumer protocol's JSON shapes: decoding a `/next` reply
 * (parsed into a json::Document) and encoding the `/ack` and `/nack` body.
 *
 * Postgres-free like json_doc.hpp: unit-tested and fuzzed alone (test/unit/).
 */
#ifndef SEQUIN_SYNC_NEXT_REPLY_HPP
#define SEQUIN_SYNC_NEXT_REPLY_HPP

#ifdef POSTGRES_H
#error "next_reply.hpp must stay free of Postgres headers"
#endif

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/json_doc.hpp"

namespace sequin_sync {

/* One delivered message; both point into the Document (and so into its buffer). */
struct NextReplyItem {
	std::string_view ack_token;
	/*
	 * The item's "record": any JSON value, nullptr when the item has none.  Whether it is a
	 * usable record (an object, with valid text: Document::FindBadString) is the apply
	 * engine's to judge; one that is not is parked and acknowledged with the others.
	 */
	const json::Node *record;
};

struct NextReply {
	std::vector<NextReplyItem> items;
	bool has_pending = false; /* info.num_pending was present and an int64 */
	int64_t num_pending = 0;
	bool has_ack_pending = false; /* info.num_ack_pending was present and an int64 */
	int64_t num_ack_pending = 0;
};

/*
 * Decode {"data": [{"ack_token": "...", "record": {...}}, ...], "info": {...}}.
 *
 * What a record holds costs only that record: a record that is null, not an object, missing,
 * or holds a string that is not Unicode text (Document::BadStrings) is still an item, to be
 * parked and acknowledged.  What makes the reply's own structure untrustworthy rejects it
 * whole, because the caller must not ack (or apply) part of a reply it could not understand:
 * not an object, no "data" array, an item that is not an object or has no usable "ack_token",
 * an "event" instead of a "record" (an event consumer), or a bad string outside the records.
 * On false, *error says why in lower case without a trailing period, naming items by their
 * 0-based index in "data" (e.g. `item 3 has no "ack_token" string`), and *out is left empty.
 * "info" is optional and its counters are ignored unless they are integers that fit in int64.
 */
bool DecodeNextReply(const json::Document &doc, NextReply *out, std::string *error) noexcept;

/*
 * The ack/nack body, {"ack_tokens":["a","b"]}, tokens JSON-escaped, into *out (replaced).
 * False for an empty list (the API wants a non-empty array) or when memory runs out.
 */
bool AckBody(const std::vector<std::string_view> &tokens, std::string *out) noexcept;

} /* namespace sequin_sync */

#endif
