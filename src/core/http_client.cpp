/*
 * http_client.cpp - libcurl client for the Sequin consumer API (see http_client.hpp).
 *
 * One easy handle per client (driven by its own multi handle, see Run), reused for every
 * request so the connection stays open between polls (keep-alive).  Every transfer is bounded
 * three ways: in size (a write callback that refuses the byte past max_response_size, plus
 * CURLOPT_MAXFILESIZE_LARGE which refuses a too-large Content-Length before any body arrives),
 * in time (connect timeout, total timeout = wait_for + poll margin), and by the caller's abort
 * check, asked every 100 ms while waiting and from the progress callback while data flows.
 *
 * libcurl is C: none of the callbacks below may let a C++ exception unwind through it, so each
 * one catches everything and reports through the Transfer it is given.
 *
 * No Postgres headers; no exception leaves a public function.
 */
#include "core/http_client.hpp"

#include "core/endpoint.hpp"
#include "core/json_doc.hpp"
#include "core/next_reply.hpp"
#include "core/stream_reply.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include "core/cpp_only.hpp" // must be the last include

#ifndef SEQUIN_SYNC_VERSION
#define SEQUIN_SYNC_VERSION "unknown"
#endif

namespace sequin_sync {

namespace {

/* Longest summary or Location kept in a message, in bytes. */
constexpr size_t kMaxMessageText = 512;
/* Error bodies larger than this are not searched for a summary. */
constexpr size_t kMaxSummaryBody = size_t{256} * 1024;
/* The most response header bytes accepted (every header line of the response, together). */
constexpr size_t kMaxHeaderBytes = size_t{64} * 1024;
/* How often a transfer stops waiting to ask the caller's should_abort, in ms. */
constexpr int kAbortPollMs = 100;
/* Upper bound of any total timeout, so wait_for + margin cannot overflow: one day. */
constexpr long long kMaxTimeoutMs = 24LL * 3600 * 1000;

bool global_init_done = false;

/* State of one transfer, shared with the libcurl callbacks. */
struct Transfer {
	CURL *curl = nullptr;
	HttpResult *result = nullptr;
	size_t max_size = 0;
	ShouldAbortFn should_abort = nullptr;
	void *should_abort_arg = nullptr;
	bool too_large = false;
	size_t header_bytes = 0;
	bool headers_too_large = false;
	bool retry_after_seen = false;  /* the last response's headers hold Retry-After ... */
	bool retry_after_delay = false; /* ... as delay-seconds (see RetryAfterOf) */
	bool aborted = false;
	bool out_of_memory = false;
	const char *run_error = nullptr; /* the multi interface failed (static text) */
};

char
AsciiLower(char c) noexcept
{
	return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

/* Case-blind "does line start with prefix" for header names. */
bool
StartsWithNoCase(std::string_view line, std::string_view prefix) noexcept
{
	if (line.size() < prefix.size())
		return false;
	for (size_t i = 0; i < prefix.size(); i++)
		if (AsciiLower(line[i]) != AsciiLower(prefix[i]))
			return false;
	return true;
}

/* Length of the valid UTF-8 sequence at s[0, n), or 0 when it is not one (overlong forms,
 * surrogates and code points above U+10FFFF are invalid). */
size_t
Utf8SequenceLength(const unsigned char *s, size_t n) noexcept
{
	unsigned char c = s[0];
	size_t len;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
		(cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/*
 * Server-supplied text (a summary, a Location) made safe for a log line and a text column:
 * leading and trailing white space and control characters dropped, the others made spaces,
 * invalid UTF-8 made '?', and it is cut (on a character boundary) at kMaxMessageText bytes
 * with "..." appended.
 */
std::string
SanitizeText(std::string_view text)
{
	while (!text.empty() && static_cast<unsigned char>(text.front()) <= 0x20)
		text.remove_prefix(1);
	while (!text.empty() && static_cast<unsigned char>(text.back()) <= 0x20)
		text.remove_suffix(1);
	std::string out;
	const unsigned char *s = reinterpret_cast<const unsigned char *>(text.data());
	size_t n = text.size();
	size_t i = 0;
	while (i < n) {
		size_t len = Utf8SequenceLength(s + i, n - i);
		if (out.size() + std::max<size_t>(len, 1) > kMaxMessageText) {
			out += "...";
			break;
		}
		if (len == 0) {
			out += '?';
			i++;
		} else if (len == 1) {
			out += (s[i] < 0x20 || s[i] == 0x7f) ? ' ' : static_cast<char>(s[i]);
			i++;
		} else {
			out.append(text.data() + i, len);
			i += len;
		}
	}
	return out;
}

/* A libcurl message ("Failed to connect to ...") in the module's style: a capitalized first
 * word lower-cased (but not "OpenSSL" or "SSL"), no trailing newline or period. */
std::string
CurlMessage(const char *error_buffer, CURLcode rc)
{
	std::string text = (error_buffer != nullptr && error_buffer[0] != '\0')
						   ? std::string(error_buffer)
						   : std::string(curl_easy_strerror(rc));
	while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == '.' ||
							 text.back() == ' '))
		text.pop_back();
	size_t word = 1;
	while (word < text.size() && text[word] >= 'a' && text[word] <= 'z')
		word++;
	bool capitalized_word = word >= 2 && (word == text.size() || text[word] == ' ' ||
										  text[word] == ':' || text[word] == ',');
	if (capitalized_word && text[0] >= 'A' && text[0] <= 'Z')
		text[0] = AsciiLower(text[0]);
	return SanitizeText(text);
}

/*
 * The "summary" string of a JSON error body ({"summary": "...", "validation_errors": {...}}),
 * sanitized; empty when the body is not such an object.  Parsed by the one JSON decoder
 * (json_doc.hpp), on a copy: only error bodies come here, and at most kMaxSummaryBody bytes.
 */
std::string
SummaryOf(const std::string &body)
{
	if (body.empty() || body.size() > kMaxSummaryBody)
		return std::string();
	std::string copy(body);
	json::Document doc;
	if (!doc.Parse(&copy[0], copy.size()))
		return std::string();
	const json::Node *summary = doc.Find(doc.Root(), "summary");
	if (summary == nullptr || !summary->IsString())
		return std::string();
	return SanitizeText(summary->Str());
}

/* Whether a Retry-After value (after "Retry-After:") is delay-seconds: digits only, blanks around. */
bool
IsDelaySeconds(std::string_view value) noexcept
{
	auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
	while (!value.empty() && blank(value.front()))
		value.remove_prefix(1);
	while (!value.empty() && blank(value.back()))
		value.remove_suffix(1);
	return !value.empty() && std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/*
 * Retry-After in seconds, for HttpResult::retry_after.  libcurl reads the header
 * (CURLINFO_RETRY_AFTER: delay-seconds, or an HTTP date made seconds from now), but answers 0
 * alike for "0", for a date it could not read and for no header at all, and keeps a value from
 * an earlier response of the handle.  So the header callback notes whether the final response
 * has the header and whether it is delay-seconds: a 0 that is not a delay means unreadable
 * (-1, so the caller backs off as usual instead of retrying at once).  A date already past is
 * 0; anything is capped at one day.
 */
long
RetryAfterOf(CURL *curl, const Transfer &transfer)
{
	constexpr curl_off_t kCap = 24L * 3600;
	if (!transfer.retry_after_seen)
		return -1;
	curl_off_t seconds = 0;
	if (curl_easy_getinfo(curl, CURLINFO_RETRY_AFTER, &seconds) != CURLE_OK)
		return -1;
	if (seconds == 0 && !transfer.retry_after_delay)
		return -1;
	return static_cast<long>(std::clamp<curl_off_t>(seconds, 0, kCap));
}

/*
 * CURLOPT_HEADERFUNCTION: sees every header line of every response of the transfer (a "100
 * Continue" comes before the real one), so a status line resets what was gathered.
 */
size_t
HeaderCallback(char *data, size_t size, size_t nmemb, void *arg) noexcept
{
	Transfer *t = static_cast<Transfer *>(arg);
	size_t n = size * nmemb;
	/* Our own limit, below libcurl's (which it reports as "out of memory"). */
	t->header_bytes += n;
	if (t->header_bytes > kMaxHeaderBytes) {
		t->headers_too_large = true;
		return 0;
	}
	try {
		std::string_view line(data, n);
		if (StartsWithNoCase(line, "HTTP/"))
			t->retry_after_seen = t->retry_after_delay = false;
		else if (StartsWithNoCase(line, "retry-after:")) {
			t->retry_after_seen = true;
			t->retry_after_delay = IsDelaySeconds(line.substr(12));
		}
	} catch (...) {
		t->out_of_memory = true;
		return 0;
	}
	return n;
}

/*
 * CURLOPT_WRITEFUNCTION: appends body bytes, refusing (which aborts the transfer) the first
 * chunk that would take the body past max_size, so no more than max_size is ever buffered.
 * This is also what limits a chunked reply, which has no Content-Length for
 * CURLOPT_MAXFILESIZE_LARGE to refuse.
 */
size_t
WriteCallback(char *data, size_t size, size_t nmemb, void *arg) noexcept
{
	Transfer *t = static_cast<Transfer *>(arg);
	size_t n = size * nmemb;
	std::string &body = t->result->body;
	if (n > t->max_size - body.size()) {
		t->too_large = true;
		return 0;
	}
	try {
		if (body.empty()) {
			/* Reserve once from Content-Length (capped by the limit) to avoid regrowing. */
			curl_off_t length = -1;
			if (curl_easy_getinfo(t->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) ==
					CURLE_OK &&
				length > 0)
				body.reserve(static_cast<size_t>(
					std::min<curl_off_t>(length, static_cast<curl_off_t>(t->max_size))));
		}
		body.append(data, n);
	} catch (...) {
		t->out_of_memory = true;
		return 0;
	}
	return n;
}

/* Asks the caller's should_abort (a throwing one counts as "stop") and remembers the answer. */
bool
AskAbort(Transfer *t) noexcept
{
	if (t->should_abort == nullptr)
		return false;
	bool stop;
	try {
		stop = t->should_abort(t->should_abort_arg);
	} catch (...) {
		stop = true;
	}
	if (stop)
		t->aborted = true;
	return stop;
}

/*
 * CURLOPT_XFERINFOFUNCTION: libcurl calls it whenever the transfer makes progress, which
 * stops a fast transfer without waiting for Run's next wake-up (Run asks while it waits).
 */
int
XferInfoCallback(void *arg, curl_off_t, curl_off_t, curl_off_t, curl_off_t) noexcept
{
	return AskAbort(static_cast<Transfer *>(arg)) ? 1 : 0;
}

/* The token goes verbatim into a header line: refuse anything that could end or bend it. */
bool
TokenIsValid(std::string_view token) noexcept
{
	if (token.empty())
		return false;
	for (char c : token)
		if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f)
			return false;
	return true;
}

HttpResult
ErrorResult(HttpOutcome outcome, const char *message) noexcept
{
	HttpResult r;
	r.outcome = outcome;
	try {
		r.error = message;
	} catch (...) {
		/* Without memory for the message the outcome still says what happened. */
	}
	return r;
}

} /* namespace */

bool
HttpGlobalInit(std::string *error) noexcept
{
	if (global_init_done)
		return true;
	try {
		CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
		if (rc != CURLE_OK) {
			if (error)
				*error = CurlMessage(nullptr, rc); /* the caller says what failed */
			return false;
		}
		const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
		bool has_http = false, has_https = false;
		for (const char *const *p = info ? info->protocols : nullptr; p && *p; p++) {
			if (strcmp(*p, "http") == 0)
				has_http = true;
			else if (strcmp(*p, "https") == 0)
				has_https = true;
		}
		if (!has_http || !has_https) {
			if (error)
				*error = "the installed libcurl does not support http and https";
			curl_global_cleanup();
			return false;
		}
		global_init_done = true;
		return true;
	} catch (...) {
		if (error) {
			try {
				*error = "out of memory";
			} catch (...) {
			}
		}
		return false;
	}
}

const char *
HttpDefaultUserAgent() noexcept
{
	return "sequin_sync/" SEQUIN_SYNC_VERSION;
}

const char *
HttpOutcomeName(HttpOutcome outcome) noexcept
{
	switch (outcome) {
	case HttpOutcome::Ok: return "ok";
	case HttpOutcome::HttpError: return "http error";
	case HttpOutcome::NetworkError: return "network error";
	case HttpOutcome::Timeout: return "timeout";
	case HttpOutcome::TooLarge: return "too large";
	case HttpOutcome::Aborted: return "aborted";
	}
	return "unknown";
}

/* ---- HttpConnection ---- */

/*
 * What a request in flight needs between Start and Finish: libcurl keeps pointers to the URL,
 * the body (CURLOPT_POSTFIELDS does not copy) and the transfer state.
 */
struct HttpConnection::InFlight {
	Transfer transfer;
	std::string url;
	std::string body;
	HttpResult *result = nullptr;
	bool added = false;     /* the easy handle is in the multi handle */
	bool done = false;      /* the transfer ended; rc holds libcurl's result */
	int rc = CURLE_OK;      /* CURLcode */
	HttpOutcome early = HttpOutcome::Ok; /* failed before the transfer began, with early_error */
	const char *early_error = nullptr;
};

HttpConnection::HttpConnection() noexcept = default;

HttpConnection::~HttpConnection()
{
	/* An unfinished request is dropped: removing it closes its connection. */
	if (in_flight_ && in_flight_->added)
		curl_multi_remove_handle(static_cast<CURLM *>(multi_), static_cast<CURL *>(curl_));
	in_flight_.reset();
	if (curl_ != nullptr)
		curl_easy_cleanup(static_cast<CURL *>(curl_));
	if (multi_ != nullptr)
		curl_multi_cleanup(static_cast<CURLM *>(multi_));
	if (headers_ != nullptr)
		curl_slist_free_all(static_cast<curl_slist *>(headers_));
	delete[] error_buffer_;
}

/*
 * Creates the easy handle and the fixed request headers.  The handle lives as long as the
 * client so libcurl's connection cache keeps the connection to the consumer open.
 */
bool
HttpConnection::Init(std::string_view token, const HttpSettings &settings,
					 std::string *error) noexcept
{
	try {
		if (curl_ != nullptr) {
			*error = "the HTTP connection is already initialized";
			return false;
		}
		if (!TokenIsValid(token)) {
			/* Never echo the token: say only what is wrong with it. */
			*error = token.empty() ? "the API token is empty"
								   : "the API token contains spaces, control or non-ASCII characters";
			return false;
		}
		token_.assign(token);
		settings_ = settings;
		error_buffer_ = new char[CURL_ERROR_SIZE];
		error_buffer_[0] = '\0';

		std::string authorization = "Authorization: Bearer " + token_;
		const char *lines[] = {
			authorization.c_str(),
			"Content-Type: application/json",
			"Accept: application/json",
			/* libcurl would add "Expect: 100-continue" to a large POST (a big Ack) and wait up to
			 * a second for a "100 Continue" that many servers never send. */
			"Expect:",
		};
		curl_slist *list = nullptr;
		for (const char *line : lines) {
			curl_slist *next = curl_slist_append(list, line);
			if (next == nullptr) {
				curl_slist_free_all(list);
				*error = "out of memory";
				return false;
			}
			list = next;
		}
		headers_ = list;

		curl_ = curl_easy_init();
		multi_ = curl_multi_init();
		if (curl_ == nullptr || multi_ == nullptr) {
			*error = "could not create a libcurl handle";
			return false;
		}
		return ApplySettings(error);
	} catch (...) {
		try {
			*error = "out of memory";
		} catch (...) {
		}
		return false;
	}
}

bool
HttpConnection::UpdateSettings(const HttpSettings &settings, std::string *error) noexcept
{
	try {
		if (curl_ == nullptr) {
			*error = "the HTTP client is not initialized";
			return false;
		}
		if (Busy()) {
			*error = "a request is in flight";
			return false;
		}
		settings_ = settings;
		return ApplySettings(error);
	} catch (...) {
		try {
			*error = "out of memory";
		} catch (...) {
		}
		return false;
	}
}

void
HttpConnection::SetAbortCheck(ShouldAbortFn should_abort, void *arg) noexcept
{
	should_abort_ = should_abort;
	should_abort_arg_ = arg;
}

/*
 * Sets every option that does not change from request to request.  It starts from
 * curl_easy_reset, which keeps open connections but forgets options: the only way to return
 * CURLOPT_CAINFO to the system default after a CA file was set.
 */
bool
HttpConnection::ApplySettings(std::string *error)
{
	CURL *curl = static_cast<CURL *>(curl_);
	curl_easy_reset(curl);
	/* libcurl copies the string. */
	const char *user_agent =
		settings_.user_agent.empty() ? HttpDefaultUserAgent() : settings_.user_agent.c_str();
	long connect_timeout = std::clamp<long>(settings_.connect_timeout_ms, 1, kMaxTimeoutMs);
	curl_off_t max_size = static_cast<curl_off_t>(
		std::min<size_t>(settings_.max_response_size,
						 static_cast<size_t>(std::numeric_limits<curl_off_t>::max())));

	CURLcode rc = CURLE_OK;
	auto set = [&rc](CURLcode r) {
		if (rc == CURLE_OK)
			rc = r;
	};
	set(curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L));
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0: the string form; the bitmask one is deprecated */
	set(curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https"));
	set(curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"));
#else
	set(curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS)));
	set(curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS)));
#endif
	set(curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L));
	set(curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout));
	set(curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L));
	set(curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L));
	set(curl_easy_setopt(curl, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2));
	if (!settings_.ca_file.empty())
		set(curl_easy_setopt(curl, CURLOPT_CAINFO, settings_.ca_file.c_str()));
	set(curl_easy_setopt(curl, CURLOPT_USERAGENT, user_agent));
	set(curl_easy_setopt(curl, CURLOPT_HTTPHEADER, static_cast<curl_slist *>(headers_)));
	set(curl_easy_setopt(curl, CURLOPT_POST, 1L));
	/* gzip/deflate if the server offers it; the size limit applies to the decoded body. */
	set(curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, ""));
	set(curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L));
	set(curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, max_size));
	set(curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer_));
	set(curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteCallback));
	set(curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, HeaderCallback));
	set(curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, XferInfoCallback));
	set(curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L));
	if (rc != CURLE_OK) {
		*error = "could not set libcurl options: " + CurlMessage(nullptr, rc);
		return false;
	}
	return true;
}

/*
 * Removes the token from a message, wherever a server or libcurl might have echoed it.  The
 * search resumes after each replacement: "[redacted]" may itself contain a short token (a
 * token "t" once made this loop forever).  A token shorter than kMinScrubbed bytes is left
 * alone: it is no secret worth the message (a token "t" turned "failed to connect" into
 * "failed [redacted]o connec[redacted]"), and Sequin's tokens are far longer.
 */
constexpr size_t kMinScrubbed = 8;

void
HttpConnection::Scrub(std::string *text) const
{
	if (token_.size() < kMinScrubbed)
		return;
	static const char kRedacted[] = "[redacted]";
	size_t pos = 0;
	while ((pos = text->find(token_, pos)) != std::string::npos) {
		text->replace(pos, token_.size(), kRedacted);
		pos += sizeof(kRedacted) - 1;
	}
}

HttpResult
HttpConnection::Post(const std::string &url, const std::string &body, long extra_time_ms) noexcept
{
	if (Busy())
		return ErrorResult(HttpOutcome::NetworkError, "a request is already in flight");
	HttpResult result;
	Start(url, body, extra_time_ms, &result);
	Finish();
	return result;
}


/*
 * Starts a request and returns once it is on the wire (the whole request body was sent) or has
 * ended; the reply is read by Finish.  Between the two the caller may do other work: the
 * server's answer waits in the socket.  Any failure here is reported by Finish.
 */
void
HttpConnection::Start(const std::string &url, const std::string &body, long extra_time_ms,
					  HttpResult *result) noexcept
{
	*result = HttpResult();
	if (in_flight_) {
		/* A caller bug; never two transfers on one handle. */
		*result = ErrorResult(HttpOutcome::NetworkError, "a request is already in flight");
		return;
	}
	try {
		in_flight_.reset(new InFlight());
		InFlight *f = in_flight_.get();
		f->result = result;
		if (curl_ == nullptr) {
			f->early = HttpOutcome::NetworkError;
			f->early_error = "the HTTP client is not initialized";
			return;
		}
		f->transfer.should_abort = should_abort_;
		f->transfer.should_abort_arg = should_abort_arg_;
		/* Already stopping: do not even open a connection. */
		if (AskAbort(&f->transfer)) {
			f->early = HttpOutcome::Aborted;
			f->early_error = "the request was aborted";
			return;
		}
		f->url = url;
		f->body = body;
		Begin(f, extra_time_ms);
		if (f->early == HttpOutcome::Ok && !f->done)
			Drive(f, true);
	} catch (...) {
		/* Only std::bad_alloc can get here. */
		if (in_flight_) {
			in_flight_->early = HttpOutcome::NetworkError;
			in_flight_->early_error = "out of memory";
		} else
			*result = ErrorResult(HttpOutcome::NetworkError, "out of memory");
	}
}

/* Waits for the reply of the request Start began and fills its HttpResult. */
void
HttpConnection::Finish() noexcept
{
	if (!in_flight_)
		return;
	InFlight *f = in_flight_.get();
	HttpResult *result = f->result;
	try {
		if (f->early != HttpOutcome::Ok)
			*result = ErrorResult(f->early, f->early_error);
		else {
			if (!f->done)
				Drive(f, false);
			Classify(f);
			Scrub(&result->error);
			Scrub(&result->summary);
		}
	} catch (...) {
		/* A partial body is worthless. */
		*result = ErrorResult(HttpOutcome::NetworkError, "out of memory");
	}
	if (f->added)
		curl_multi_remove_handle(static_cast<CURLM *>(multi_), static_cast<CURL *>(curl_));
	in_flight_.reset();
}

/*
 * Finishes a request in flight, asking grace_check instead of the usual abort check: used when
 * a worker stops but a reply that is already on its way should still be read (and its
 * messages given back) rather than left to time out at the server.
 */
void
HttpConnection::FinishWithin(ShouldAbortFn grace_check, void *arg) noexcept
{
	if (!in_flight_)
		return;
	in_flight_->transfer.should_abort = grace_check;
	in_flight_->transfer.should_abort_arg = arg;
	in_flight_->transfer.aborted = false;
	Finish();
}

/*
 * Sets the per-request options and hands the easy handle to the multi handle.
 *
 * Why not curl_easy_perform: while nothing arrives (a long poll) it sleeps up to a second
 * between calls of the progress callback, so a SIGTERM could wait more than a second.  Driving
 * the same handle through our own multi handle, we wake every kAbortPollMs to ask
 * should_abort.  The multi handle lives as long as the connection object and owns libcurl's
 * connection cache, so keep-alive works exactly as with curl_easy_perform.
 */
void
HttpConnection::Begin(InFlight *f, long extra_time_ms)
{
	CURL *curl = static_cast<CURL *>(curl_);
	Transfer &transfer = f->transfer;
	transfer.curl = curl;
	transfer.result = f->result;
	transfer.max_size = settings_.max_response_size;

	long long total_ms = std::max<long long>(extra_time_ms, 0) +
						 std::max<long long>(settings_.poll_margin_ms, 0);
	long timeout_ms = static_cast<long>(std::clamp<long long>(total_ms, 1, kMaxTimeoutMs));
	/*
	 * A long poll legitimately receives nothing for wait_for ms, so libcurl's low-speed check
	 * cannot be stricter than the whole budget; it is a backstop.  What ends a server that
	 * trickles a byte a second is CURLOPT_TIMEOUT_MS, which bounds the whole transfer.
	 */
	long low_speed_time = std::max<long>(timeout_ms / 1000, 1);

	error_buffer_[0] = '\0';
	CURLcode rc = CURLE_OK;
	auto set = [&rc](CURLcode r) {
		if (rc == CURLE_OK)
			rc = r;
	};
	set(curl_easy_setopt(curl, CURLOPT_URL, f->url.c_str()));
	set(curl_easy_setopt(curl, CURLOPT_POSTFIELDS, f->body.data()));
	set(curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(f->body.size())));
	set(curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms));
	set(curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L));
	set(curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, low_speed_time));
	set(curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer));
	set(curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer));
	set(curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &transfer));
	if (rc != CURLE_OK) {
		f->done = true;
		f->rc = rc;
		return;
	}
	CURLMcode mc = curl_multi_add_handle(static_cast<CURLM *>(multi_), curl);
	if (mc != CURLM_OK) {
		transfer.run_error = curl_multi_strerror(mc);
		f->done = true;
		f->rc = CURLE_FAILED_INIT;
		return;
	}
	f->added = true;
}

/*
 * Runs the transfer until it ends, or with until_sent only until the whole request is on the
 * wire.  Asks the abort check every kAbortPollMs while it waits.
 */
void
HttpConnection::Drive(InFlight *f, bool until_sent)
{
	Transfer *transfer = &f->transfer;
	CURL *curl = static_cast<CURL *>(curl_);
	CURLM *multi = static_cast<CURLM *>(multi_);
	const curl_off_t body_size = static_cast<curl_off_t>(f->body.size());
	for (;;) {
		int running = 0;
		CURLMcode mc = static_cast<CURLMcode>(Pump(f, &running));
		if (f->done)
			return;
		if (mc != CURLM_OK || running == 0) {
			/* A broken multi handle; should not happen, and must not loop forever. */
			transfer->run_error = mc != CURLM_OK ? curl_multi_strerror(mc)
												 : "the transfer ended without a result";
			f->rc = CURLE_FAILED_INIT;
			f->done = true;
			return;
		}
		if (until_sent) {
			curl_off_t sent = 0;
			if (curl_easy_getinfo(curl, CURLINFO_SIZE_UPLOAD_T, &sent) == CURLE_OK && sent >= body_size)
				return;
		}
		if (AskAbort(transfer)) {
			f->rc = CURLE_ABORTED_BY_CALLBACK;
			f->done = true;
			return;
		}
		mc = curl_multi_poll(multi, nullptr, 0, until_sent ? 5 : kAbortPollMs, nullptr);
		if (mc != CURLM_OK) {
			transfer->run_error = curl_multi_strerror(mc);
			f->rc = CURLE_FAILED_INIT;
			f->done = true;
			return;
		}
	}
}

/* One curl_multi_perform without waiting; marks the transfer done (with its result) when it ended. */
int
HttpConnection::Pump(InFlight *f, int *running)
{
	CURL *curl = static_cast<CURL *>(curl_);
	CURLM *multi = static_cast<CURLM *>(multi_);
	CURLMcode mc = curl_multi_perform(multi, running);
	int left = 0;
	for (CURLMsg *msg; (msg = curl_multi_info_read(multi, &left)) != nullptr;)
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == curl) {
			f->rc = msg->data.result;
			f->done = true;
		}
	return mc;
}

bool
HttpConnection::Done() noexcept
{
	InFlight *f = in_flight_.get();
	if (f == nullptr || f->early != HttpOutcome::Ok || f->done)
		return true;
	int running = 0;
	int mc = Pump(f, &running);
	/* A broken multi handle is Finish's to report. */
	return f->done || mc != CURLM_OK || running == 0;
}

/* Classifies the ended transfer into its HttpResult. */
void
HttpConnection::Classify(InFlight *f)
{
	CURL *curl = static_cast<CURL *>(curl_);
	Transfer &transfer = f->transfer;
	HttpResult *result = f->result;
	CURLcode rc = static_cast<CURLcode>(f->rc);

	long status = 0;
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	result->http_status = status;
	curl_off_t elapsed_us = 0;
	if (curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME_T, &elapsed_us) == CURLE_OK)
		result->elapsed_ms = static_cast<long>(elapsed_us / 1000);
	result->retry_after = RetryAfterOf(curl, transfer);

	/* Our callbacks' reasons first: libcurl reports them all as generic write/abort errors. */
	if (transfer.aborted || rc == CURLE_ABORTED_BY_CALLBACK) {
		result->outcome = HttpOutcome::Aborted;
		result->error = "the request was aborted";
		return;
	}
	if (transfer.run_error != nullptr) {
		result->outcome = HttpOutcome::NetworkError;
		result->error = "libcurl failed: " + CurlMessage(transfer.run_error, rc);
		return;
	}
	if (transfer.headers_too_large) {
		result->outcome = HttpOutcome::NetworkError;
		result->error = "the response headers are larger than the limit of " + std::to_string(kMaxHeaderBytes) +
						" bytes";
		return;
	}
	if (rc == CURLE_OUT_OF_MEMORY && !transfer.out_of_memory) {
		/* libcurl's code for a header line over its 100 KB limit, too (before our callback sees it). */
		result->outcome = HttpOutcome::NetworkError;
		result->error = "a response header line is larger than libcurl's limit of 100 KB (or libcurl ran out of memory)";
		return;
	}
	if (transfer.out_of_memory || rc == CURLE_OUT_OF_MEMORY) {
		result->outcome = HttpOutcome::NetworkError;
		result->error = "out of memory";
		return;
	}
	if (transfer.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
		result->outcome = HttpOutcome::TooLarge;
		result->error = "the response is larger than the limit of " +
						std::to_string(settings_.max_response_size) + " bytes";
		return;
	}
	if (rc == CURLE_OPERATION_TIMEDOUT) {
		result->outcome = HttpOutcome::Timeout;
		result->error = CurlMessage(error_buffer_, rc);
		return;
	}
	if (rc != CURLE_OK) {
		result->outcome = HttpOutcome::NetworkError;
		result->error = CurlMessage(error_buffer_, rc);
		return;
	}

	if (status >= 200 && status <= 299) {
		result->outcome = HttpOutcome::Ok;
		return;
	}
	result->outcome = HttpOutcome::HttpError;
	result->summary = SummaryOf(result->body);
	result->error = "the server returned HTTP status " + std::to_string(status);
	if (status >= 300 && status <= 399) {
		char *location = nullptr;
		if (curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &location) == CURLE_OK &&
			location != nullptr)
			result->error += "; the redirect to \"" + SanitizeText(location) + "\" was not followed";
		else
			result->error += "; redirects are not followed";
	}
	if (!result->summary.empty())
		result->error += ": " + result->summary;
}

/* ---- the clients ---- */

template <class Client>
std::unique_ptr<Client>
HttpConsumerClient::Make(std::string_view endpoint, std::string_view token, const HttpSettings &settings,
						 std::string *error) noexcept
{
	try {
		std::string normalized;
		std::string why;
		if (!ValidateEndpoint(endpoint, &normalized, &why)) {
			*error = "invalid consumer endpoint: " + why;
			return nullptr;
		}
		std::unique_ptr<Client> client(new (std::nothrow) Client());
		if (!client) {
			*error = "out of memory";
			return nullptr;
		}
		client->endpoint_ = std::move(normalized);
		if (!client->connection_.Init(token, settings, error) ||
			!client->ack_connection_.Init(token, settings, error))
			return nullptr;
		return client;
	} catch (...) {
		try {
			*error = "out of memory";
		} catch (...) {
		}
		return nullptr;
	}
}

HttpResult
HttpConsumerClient::Receive(int batch_size, int wait_for_ms) noexcept
{
	try {
		return connection_.Post(endpoint_ + ReceivePath(), ReceiveBody(batch_size, wait_for_ms),
								std::max(wait_for_ms, 0));
	} catch (...) {
		return ErrorResult(HttpOutcome::NetworkError, "out of memory");
	}
}

void
HttpConsumerClient::StartReceive(int batch_size, int wait_for_ms, HttpResult *out) noexcept
{
	try {
		connection_.Start(endpoint_ + ReceivePath(), ReceiveBody(batch_size, wait_for_ms), std::max(wait_for_ms, 0),
						  out);
	} catch (...) {
		*out = ErrorResult(HttpOutcome::NetworkError, "out of memory");
	}
}

void
HttpConsumerClient::FinishReceive() noexcept
{
	connection_.Finish();
}

HttpResult
HttpConsumerClient::Ack(const std::vector<std::string_view> &tokens) noexcept
{
	return SendTokens("/ack", tokens);
}

HttpResult
HttpConsumerClient::Nack(const std::vector<std::string_view> &tokens) noexcept
{
	return SendTokens("/nack", tokens);
}

/* StartTokens, then wait for the answer. */
HttpResult
HttpConsumerClient::SendTokens(const char *path, const std::vector<std::string_view> &tokens) noexcept
{
	HttpResult r;
	StartTokens(path, tokens, &r);
	ack_connection_.Finish();
	return r;
}

void
HttpConsumerClient::StartAck(const std::vector<std::string_view> &tokens, HttpResult *out) noexcept
{
	StartTokens("/ack", tokens, out);
}

void
HttpConsumerClient::FinishAck() noexcept
{
	ack_connection_.Finish();
}

bool
HttpConsumerClient::AckDone() noexcept
{
	return ack_connection_.Done();
}

void
HttpConsumerClient::FinishWithin(ShouldAbortFn grace_check, void *arg) noexcept
{
	ack_connection_.FinishWithin(grace_check, arg);
	connection_.FinishWithin(grace_check, arg);
}

/*
 * The token list to /ack or /nack on the second connection, so acknowledgements never wait
 * behind a receive in flight.  Both APIs want a non-empty array, so none = no call.  The body
 * is built (and the tokens read) before this returns, by the protocol's TokenBody (next_reply's
 * AckBody, stream_reply's StreamAckBody: the ones the unit tests and fuzzers check).  A request
 * still in flight on that connection is finished first.
 */
void
HttpConsumerClient::StartTokens(const char *path, const std::vector<std::string_view> &tokens,
								HttpResult *out) noexcept
{
	ack_connection_.Finish();
	try {
		if (tokens.empty()) {
			*out = HttpResult();
			out->outcome = HttpOutcome::Ok;
			return;
		}
		std::string body;
		if (!TokenBody(tokens, &body)) {
			*out = ErrorResult(HttpOutcome::NetworkError, "out of memory");
			return;
		}
		ack_connection_.Start(endpoint_ + path, body, 0, out);
	} catch (...) {
		*out = ErrorResult(HttpOutcome::NetworkError, "out of memory");
	}
}

void
HttpConsumerClient::SetAbortCheck(ShouldAbortFn should_abort, void *arg) noexcept
{
	connection_.SetAbortCheck(should_abort, arg);
	ack_connection_.SetAbortCheck(should_abort, arg);
}

void
HttpConsumerClient::SetAckAbortCheck(ShouldAbortFn should_abort, void *arg) noexcept
{
	ack_connection_.SetAbortCheck(should_abort, arg);
}

bool
HttpConsumerClient::UpdateSettings(const HttpSettings &settings, std::string *error) noexcept
{
	return connection_.UpdateSettings(settings, error) && ack_connection_.UpdateSettings(settings, error);
}

/* ---- V1Client ---- */

std::unique_ptr<V1Client>
V1Client::Create(std::string_view endpoint, std::string_view token, const HttpSettings &settings,
				 std::string *error) noexcept
{
	return Make<V1Client>(endpoint, token, settings, error);
}

const char *
V1Client::ProtocolName() const noexcept
{
	return sequin_sync::ProtocolName(Protocol::V1);
}

/* {"batch_size": N, "wait_for": ms}: out-of-range values are clamped, not sent. */
std::string
V1Client::ReceiveBody(int batch_size, int wait_for_ms) const
{
	batch_size = std::max(batch_size, 1);
	wait_for_ms = std::max(wait_for_ms, 0);
	return "{\"batch_size\":" + std::to_string(batch_size) + ",\"wait_for\":" + std::to_string(wait_for_ms) + "}";
}

bool
V1Client::TokenBody(const std::vector<std::string_view> &tokens, std::string *out) const noexcept
{
	return AckBody(tokens, out);
}

/* ---- StreamClient ---- */

std::unique_ptr<StreamClient>
StreamClient::Create(std::string_view endpoint, std::string_view token, const HttpSettings &settings,
					 std::string *error) noexcept
{
	return Make<StreamClient>(endpoint, token, settings, error);
}

const char *
StreamClient::ProtocolName() const noexcept
{
	return sequin_sync::ProtocolName(Protocol::Stream);
}

/*
 * {"max_batch_size": N} plus "wait_for": ms only when positive: Sequin answers 400 to a
 * wait_for of 0 (and to a max_batch_size outside 1..1000), and without one it returns at once,
 * which is what a wait of 0 means.
 */
std::string
StreamClient::ReceiveBody(int batch_size, int wait_for_ms) const
{
	batch_size = std::clamp(batch_size, 1, kStreamMaxBatchSize);
	std::string body = "{\"max_batch_size\":" + std::to_string(batch_size);
	if (wait_for_ms > 0)
		body += ",\"wait_for\":" + std::to_string(wait_for_ms);
	body += "}";
	return body;
}

bool
StreamClient::TokenBody(const std::vector<std::string_view> &tokens, std::string *out) const noexcept
{
	return StreamAckBody(tokens, out);
}

std::unique_ptr<ConsumerClient>
CreateConsumerClient(Protocol protocol, std::string_view endpoint, std::string_view token,
					 const HttpSettings &settings, std::string *error) noexcept
{
	if (protocol == Protocol::Stream)
		return StreamClient::Create(endpoint, token, settings, error);
	return V1Client::Create(endpoint, token, settings, error);
}

} /* namespace sequin_sync */
