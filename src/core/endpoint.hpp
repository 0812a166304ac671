/*
 * endpoint.hpp - validation of a Sequin consumer endpoint URL.
 *
 * create_consumer stores the consumer's full URL (e.g.
 * "https://api.sequin.io/v1/http-consumers/<id>") and the HTTP client appends "/next", "/ack"
 * and "/nack" to it.  Checking the URL once, when it is configured, with the same parser libcurl
 * uses for the request (curl_url), means the worker never meets a URL that libcurl reads
 * differently from what the user was told was accepted.
 *
 * This file and endpoint.cpp never include Postgres headers (they are unit-tested alone), and
 * every function is noexcept.
 */
#ifndef SEQUIN_SYNC_ENDPOINT_HPP
#define SEQUIN_SYNC_ENDPOINT_HPP

#ifdef POSTGRES_H
#error "endpoint.hpp must stay free of Postgres headers"
#endif

#include <string>
#include <string_view>

namespace sequin_sync {

/* Longest endpoint URL accepted, in bytes. */
constexpr size_t kMaxEndpointLength = 2048;

/*
 * Validates a consumer endpoint URL with libcurl's URL API (curl_url).  Only http and https; a
 * host is required; no user:password part (the token goes in the Authorization header); no query
 * string or fragment; no whitespace, control or non-ASCII characters; no port 0.
 *
 * On success *normalized is the URL as libcurl reassembles it (scheme and host lower-cased,
 * "." and ".." path segments resolved) with any trailing '/' removed, so "<endpoint>/next" is
 * well formed: "HTTPS://API.Sequin.io/v1/http-consumers/abc/" ->
 * "https://api.sequin.io/v1/http-consumers/abc".
 *
 * On failure returns false and *error is a short lower-case reason without trailing period,
 * e.g. "scheme \"ftp\" is not allowed", "the URL has no host".  Either pointer may be null.
 */
bool ValidateEndpoint(std::string_view url, std::string *normalized, std::string *error) noexcept;

/*
 * Host of a URL that passed ValidateEndpoint, lower-cased, as libcurl resolves it: an IPv6
 * literal keeps its brackets ("[::1]"), a numeric IPv4 address is in dotted form ("0x7f.1" ->
 * "127.0.0.1").  Used for an allowed-hosts setting.  Returns false if the URL does not parse.
 */
bool EndpointHost(std::string_view url, std::string *host) noexcept;

/*
 * Whether a URL's host is in allowed, a comma-separated list of host names or addresses
 * (case-insensitive; "*.example.com" or ".example.com" also allows every subdomain).  An empty
 * list allows every host.  The host is compared as written in the URL: a name that resolves to
 * another address is not caught here.
 */
bool EndpointHostAllowed(std::string_view url, std::string_view allowed) noexcept;

} /* namespace sequin_sync */

#endif /* SEQUIN_SYNC_ENDPOINT_HPP */
