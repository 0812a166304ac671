/*
 * protocol.hpp - the two consumer protocols sequin_sync speaks, and how an endpoint names one.
 *
 *  - v1: Sequin's Generation 1 record consumers, "<endpoint>/next", "/ack", "/nack", records
 *    with "updated_idx" (sequin-consumer-api.md);
 *  - stream: today's Sequin's HTTP pull consumers ("Sequin Stream"), "<endpoint>/receive",
 *    "/ack", "/nack", change messages versioned by (commit_lsn, commit_idx).
 *
 * Postgres-free; every function is noexcept.
 */
#ifndef SEQUIN_SYNC_PROTOCOL_HPP
#define SEQUIN_SYNC_PROTOCOL_HPP

#ifdef POSTGRES_H
#error "protocol.hpp must stay free of Postgres headers"
#endif

#include <cstdint>
#include <string_view>

namespace sequin_sync {

enum class Protocol : uint8_t {
	V1,
	Stream,
};

/* "v1" or "stream": the name create_consumer takes and the catalog stores. */
const char *ProtocolName(Protocol protocol) noexcept;

/* The protocol of that name ("v1", "stream"; exact, lower case); false for any other text. */
bool ParseProtocol(std::string_view name, Protocol *out) noexcept;

/*
 * The protocol an endpoint URL's path names, for create_consumer(protocol => NULL):
 * ".../api/sequin_streams/<id-or-name>" and ".../api/http_pull_consumers/<id-or-name>" (the
 * legacy alias) are stream, ".../v1/http-consumers/<id>" is v1.  Whatever comes before "/api" or
 * "/v1" is allowed (a self-hosted Sequin behind a path prefix).  The URL is one ValidateEndpoint
 * accepted (normalized, no query, no trailing '/').  False when the path is neither form.
 */
bool DetectProtocol(std::string_view url, Protocol *out) noexcept;

} /* namespace sequin_sync */

#endif
