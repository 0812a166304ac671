/*
 * protocol.cpp - the consumer protocols' names and their detection from an endpoint (see
 * protocol.hpp).
 */
#include "core/protocol.hpp"

#include "core/cpp_only.hpp" // must be the last include

namespace sequin_sync {

namespace {

/* The path of a URL: from the first '/' after "scheme://authority", or empty. */
std::string_view
PathOf(std::string_view url) noexcept
{
	size_t scheme = url.find("://");
	if (scheme == std::string_view::npos)
		return {};
	size_t slash = url.find('/', scheme + 3);
	if (slash == std::string_view::npos)
		return {};
	return url.substr(slash);
}

/*
 * Whether path ends in "<prefix><one non-empty segment>", with prefix starting at a segment
 * boundary: "/x/api/sequin_streams/orders" ends in "/api/sequin_streams/" + "orders".
 */
bool
EndsWithResource(std::string_view path, std::string_view prefix) noexcept
{
	size_t last = path.rfind('/');
	if (last == std::string_view::npos || last + 1 >= path.size())
		return false;
	std::string_view head = path.substr(0, last + 1);
	return head.size() >= prefix.size() && head.substr(head.size() - prefix.size()) == prefix;
}

} /* namespace */

const char *
ProtocolName(Protocol protocol) noexcept
{
	return protocol == Protocol::Stream ? "stream" : "v1";
}

bool
ParseProtocol(std::string_view name, Protocol *out) noexcept
{
	if (name == "v1")
		*out = Protocol::V1;
	else if (name == "stream")
		*out = Protocol::Stream;
	else
		return false;
	return true;
}

bool
DetectProtocol(std::string_view url, Protocol *out) noexcept
{
	std::string_view path = PathOf(url);
	if (EndsWithResource(path, "/api/sequin_streams/") || EndsWithResource(path, "/api/http_pull_consumers/"))
		*out = Protocol::Stream;
	else if (EndsWithResource(path, "/v1/http-consumers/"))
		*out = Protocol::V1;
	else
		return false;
	return true;
}

} /* namespace sequin_sync */
