/*
 * endpoint.cpp - validation of a Sequin consumer endpoint URL (see endpoint.hpp).
 *
 * The URL is checked twice: first as text (characters, scheme, authority, '?', '#'), then with
 * curl_url, the parser libcurl itself uses for the request.  The textual pass exists because
 * libcurl 7.88 is lenient where an endpoint must not be: it reads "http:///x" and "http:/x" as
 * host "x", silently drops an empty query ("...?") or fragment ("...#"), keeps an empty user
 * ("http://@host/") and accepts raw non-ASCII bytes in the path.
 *
 * No Postgres headers; no exception leaves this file.
 */
#include "core/endpoint.hpp"

#include <curl/curl.h>

#include <memory>
#include <new>
#include "core/cpp_only.hpp" // must be the last include

namespace sequin_sync {

namespace {

struct CurlUrlDeleter {
	void operator()(CURLU *u) const noexcept { curl_url_cleanup(u); }
};
using CurlUrlPtr = std::unique_ptr<CURLU, CurlUrlDeleter>;

char
AsciiLower(char c) noexcept
{
	return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool
IsSchemeChar(char c, bool first) noexcept
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	if (first)
		return false;
	return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
}

/*
 * One part of a parsed URL.  Returns false when the part is absent (libcurl answers "no such
 * part" for it); an empty but present part (the user in "http://@host/") returns true.
 */
bool
GetPart(CURLU *u, CURLUPart part, std::string *out)
{
	char *s = nullptr;
	if (curl_url_get(u, part, &s, 0) != CURLUE_OK || s == nullptr)
		return false;
	/* Free the libcurl string even if the copy throws std::bad_alloc. */
	std::unique_ptr<char, void (*)(void *)> holder(s, curl_free);
	out->assign(s);
	return true;
}

/*
 * The reason a libcurl URL parse failed, in the module's message style.  libcurl's own text
 * ("Port number was not a decimal number between 0 and 65535") is capitalized and talks about
 * libcurl's internals, so the common cases are worded here.
 */
std::string
ParseErrorText(CURLUcode rc)
{
	switch (rc) {
	case CURLUE_NO_HOST:
		return "the URL has no host";
	case CURLUE_BAD_PORT_NUMBER:
	case CURLUE_NO_PORT:
		return "the URL has an invalid port number";
	case CURLUE_BAD_HOSTNAME:
	case CURLUE_BAD_IPV6:
		return "the URL has an invalid host name";
	case CURLUE_BAD_LOGIN:
	case CURLUE_BAD_USER:
	case CURLUE_BAD_PASSWORD:
		return "the URL must not contain a user name or password";
	case CURLUE_BAD_SCHEME:
	case CURLUE_BAD_SLASHES:
		return "the URL must start with http:// or https://";
	case CURLUE_OUT_OF_MEMORY:
		return "out of memory";
	default:
		break;
	}
	std::string text = "invalid URL";
	const char *why = curl_url_strerror(rc);
	if (why != nullptr && *why != '\0') {
		text += ": ";
		for (const char *p = why; *p; p++)
			text += AsciiLower(*p);
	}
	return text;
}

/* The body of ValidateEndpoint; may throw std::bad_alloc, which the caller turns into an error. */
bool
Validate(std::string_view url, std::string *normalized, std::string *error)
{
	if (url.empty()) {
		*error = "the URL is empty";
		return false;
	}
	if (url.size() > kMaxEndpointLength) {
		*error = "the URL is longer than " + std::to_string(kMaxEndpointLength) + " bytes";
		return false;
	}
	for (char ch : url) {
		unsigned char c = static_cast<unsigned char>(ch);
		if (c <= 0x20 || c == 0x7f) {
			*error = "the URL must not contain whitespace or control characters";
			return false;
		}
		if (c >= 0x80) {
			*error = "the URL must contain only ASCII characters";
			return false;
		}
	}

	/* scheme "://" authority [path]: anything else is refused before libcurl can guess. */
	size_t colon = 0;
	while (colon < url.size() && IsSchemeChar(url[colon], colon == 0))
		colon++;
	if (colon == 0 || colon >= url.size() || url[colon] != ':' ||
		url.substr(colon + 1, 2) != "//") {
		*error = "the URL must start with http:// or https://";
		return false;
	}
	std::string scheme;
	for (size_t i = 0; i < colon; i++)
		scheme += AsciiLower(url[i]);
	if (scheme != "http" && scheme != "https") {
		*error = "scheme \"" + std::string(url.substr(0, colon)) + "\" is not allowed";
		return false;
	}
	std::string_view rest = url.substr(colon + 3);
	std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
	if (authority.empty()) {
		*error = "the URL has no host";
		return false;
	}
	if (authority.find('@') != std::string_view::npos) {
		*error = "the URL must not contain a user name or password";
		return false;
	}
	size_t delim = url.find_first_of("?#");
	if (delim != std::string_view::npos) {
		*error = url[delim] == '?' ? "the URL must not have a query string"
								   : "the URL must not have a fragment";
		return false;
	}

	CurlUrlPtr u(curl_url());
	if (!u) {
		*error = "out of memory";
		return false;
	}
	std::string text(url);
	CURLUcode rc = curl_url_set(u.get(), CURLUPART_URL, text.c_str(), 0);
	if (rc != CURLUE_OK) {
		*error = ParseErrorText(rc);
		return false;
	}

	/* The textual checks should have caught these; libcurl's view is what the request uses. */
	std::string part;
	if (GetPart(u.get(), CURLUPART_USER, &part) || GetPart(u.get(), CURLUPART_PASSWORD, &part) ||
		GetPart(u.get(), CURLUPART_OPTIONS, &part)) {
		*error = "the URL must not contain a user name or password";
		return false;
	}
	if (GetPart(u.get(), CURLUPART_QUERY, &part)) {
		*error = "the URL must not have a query string";
		return false;
	}
	if (GetPart(u.get(), CURLUPART_FRAGMENT, &part)) {
		*error = "the URL must not have a fragment";
		return false;
	}
	std::string host;
	if (!GetPart(u.get(), CURLUPART_HOST, &host) || host.empty()) {
		*error = "the URL has no host";
		return false;
	}
	if (GetPart(u.get(), CURLUPART_PORT, &part) && part == "0") {
		*error = "the URL has an invalid port number";
		return false;
	}

	/* libcurl lower-cases the scheme but keeps the host as typed; host names are case-blind. */
	std::string lower_host;
	for (char c : host)
		lower_host += AsciiLower(c);
	if (lower_host != host) {
		/* Setting the host drops an IPv6 zone id ("[fe80::1%25eth0]") in 7.88: put it back. */
		std::string zone_id;
		bool has_zone = GetPart(u.get(), CURLUPART_ZONEID, &zone_id);
		rc = curl_url_set(u.get(), CURLUPART_HOST, lower_host.c_str(), 0);
		if (rc == CURLUE_OK && has_zone)
			rc = curl_url_set(u.get(), CURLUPART_ZONEID, zone_id.c_str(), 0);
		if (rc != CURLUE_OK) {
			*error = ParseErrorText(rc);
			return false;
		}
	}

	std::string full;
	if (!GetPart(u.get(), CURLUPART_URL, &full)) {
		*error = "the URL cannot be reassembled";
		return false;
	}
	while (!full.empty() && full.back() == '/')
		full.pop_back();
	if (normalized != nullptr)
		*normalized = std::move(full);
	return true;
}

} /* namespace */

bool
ValidateEndpoint(std::string_view url, std::string *normalized, std::string *error) noexcept
{
	std::string local_error;
	try {
		if (Validate(url, normalized, &local_error))
			return true;
	} catch (const std::bad_alloc &) {
		local_error = "out of memory";
	} catch (...) {
		local_error = "unexpected error while validating the URL";
	}
	if (error != nullptr) {
		try {
			*error = std::move(local_error);
		} catch (...) {
			/* Moving into an existing string cannot really fail; nothing more to report. */
		}
	}
	return false;
}

bool
EndpointHost(std::string_view url, std::string *host) noexcept
{
	try {
		CurlUrlPtr u(curl_url());
		if (!u)
			return false;
		std::string text(url);
		if (curl_url_set(u.get(), CURLUPART_URL, text.c_str(), 0) != CURLUE_OK)
			return false;
		std::string h;
		if (!GetPart(u.get(), CURLUPART_HOST, &h) || h.empty())
			return false;
		for (char &c : h)
			c = AsciiLower(c);
		if (host != nullptr)
			*host = std::move(h);
		return true;
	} catch (...) {
		return false;
	}
}

bool
EndpointHostAllowed(std::string_view url, std::string_view allowed) noexcept
{
	try {
		bool any_entry = false;
		std::string host;
		bool have_host = EndpointHost(url, &host);
		size_t start = 0;
		while (start <= allowed.size()) {
			size_t comma = allowed.find(',', start);
			if (comma == std::string_view::npos)
				comma = allowed.size();
			std::string entry(allowed.substr(start, comma - start));
			start = comma + 1;
			/* trim and lower-case */
			size_t b = entry.find_first_not_of(" \t");
			size_t e = entry.find_last_not_of(" \t");
			entry = b == std::string::npos ? std::string() : entry.substr(b, e - b + 1);
			for (char &c : entry)
				c = AsciiLower(c);
			if (entry.empty())
				continue;
			any_entry = true;
			if (!have_host)
				continue;
			if (entry == host)
				return true;
			if (entry.rfind("*.", 0) == 0)
				entry.erase(0, 1);
			if (entry[0] == '.' && host.size() > entry.size() &&
				host.compare(host.size() - entry.size(), entry.size(), entry) == 0)
				return true;
		}
		return !any_entry;
	} catch (...) {
		return false;
	}
}

} /* namespace sequin_sync */
