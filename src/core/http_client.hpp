/*
 * http_client.hpp - the HTTP client that pulls batches from a Sequin consumer and acknowledges
 * them, over libcurl.
 *
 * The worker's loop talks to a ConsumerClient: Receive a batch, apply it, Ack (or Nack) its
 * tokens.  Each protocol is one subclass of HttpConsumerClient, which owns the transport: V1Client
 * speaks the record consumers' "/v1/http-consumers" API, StreamClient Sequin Stream's
 * "/api/sequin_streams" (different paths, bodies and token names); CreateConsumerClient picks
 * one from a Protocol.  Parsing the body of a Receive is the caller's (next_reply.hpp,
 * stream_reply.hpp): Result::body holds the raw bytes, ready to be parsed in place.
 *
 * Rules this module keeps, because it runs inside a Postgres background worker:
 *  - no Postgres headers (it is unit-tested alone, test/unit/http_client_test.cpp);
 *  - every public function is noexcept: std::bad_alloc and friends become an error Result;
 *  - curl_global_init is called by HttpGlobalInit, from the worker, never from a constructor,
 *    a static initializer or _PG_init;
 *  - no signals (CURLOPT_NOSIGNAL), http and https only, redirects never followed, TLS always
 *    verified, bounded response size, bounded time, and a caller-supplied abort check asked
 *    every 100 ms during a transfer, so SIGTERM ends even a long poll at once;
 *  - the API token never appears in an error message.
 *
 * A client is not thread-safe; one client per worker.  It keeps two connections open (keep-alive):
 * one for the receive request (/next, /receive), one for /ack and /nack, so an acknowledgement
 * never waits behind a long poll.  The two connections share no state, so two threads may use
 * them at once, one each (PullSession's prefetch thread receives while the worker acknowledges);
 * SetAbortCheck, UpdateSettings and FinishWithin touch both and need the caller's one thread.
 */
#ifndef SEQUIN_SYNC_HTTP_CLIENT_HPP
#define SEQUIN_SYNC_HTTP_CLIENT_HPP

#ifdef POSTGRES_H
#error "http_client.hpp must stay free of Postgres headers"
#endif

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/protocol.hpp"

namespace sequin_sync {

/*
 * Once per process, before the first client is created (libcurl's global state: TLS library,
 * resolver).  Also checks that the installed libcurl supports http and https.  Safe to call
 * again; only the first call does anything.  On failure *error says why, without a prefix:
 * the caller's message names what failed ("could not initialize libcurl: <why>").
 */
bool HttpGlobalInit(std::string *error) noexcept;

/* "sequin_sync/<version>", what HttpSettings::user_agent defaults to. */
const char *HttpDefaultUserAgent() noexcept;

/* Returns true when the transfer in progress must stop (e.g. SIGTERM arrived). */
using ShouldAbortFn = bool (*)(void *arg);

struct HttpSettings {
	long connect_timeout_ms = 10000;
	/* Total time allowed for a request beyond the long poll's wait_for: a Receive may take
	 * wait_for_ms + poll_margin_ms, an Ack or Nack poll_margin_ms. */
	long poll_margin_ms = 15000;
	/* Largest response body accepted (after any content decoding); above it: TooLarge. */
	size_t max_response_size = size_t{64} * 1024 * 1024;
	/* CA bundle file for TLS verification; empty = the system default. */
	std::string ca_file;
	/* Empty = HttpDefaultUserAgent(). */
	std::string user_agent;
};

enum class HttpOutcome {
	Ok,           /* 2xx */
	HttpError,    /* the server answered with another status (3xx included: never followed) */
	NetworkError, /* resolve, connect, TLS, connection lost, malformed reply, out of memory */
	Timeout,      /* connect timeout or total timeout */
	TooLarge,     /* the body exceeded max_response_size; the transfer was cut off */
	Aborted,      /* the should_abort callback asked to stop */
};

/* "ok", "http error", "network error", "timeout", "too large", "aborted". */
const char *HttpOutcomeName(HttpOutcome outcome) noexcept;

struct HttpResult {
	HttpOutcome outcome = HttpOutcome::NetworkError;
	long http_status = 0;     /* 0 when no status line arrived */
	std::string body;         /* the response bytes (at most max_response_size) */
	long retry_after = -1;    /* Retry-After in seconds (delay or HTTP date, as libcurl reads it:
	                           * floored at 0, capped at a day); -1 absent or unreadable */
	std::string summary;      /* "summary" of a JSON error body {"summary": "..."}, sanitized */
	std::string error;        /* short, lower case, no trailing period; empty when Ok */
	long elapsed_ms = 0;      /* wall time of the request */

	bool Ok() const noexcept { return outcome == HttpOutcome::Ok; }
};

/*
 * One protocol generation of the consumer API.  The worker's loop only sees this interface.
 * Tokens are string_views so the caller can pass them straight from its in-place parse of the
 * Receive body (which must stay alive until Ack/Nack returns).
 */
class ConsumerClient {
public:
	virtual ~ConsumerClient() = default;

	/* Pull up to batch_size messages, waiting at most wait_for_ms for them to arrive (long
	 * poll).  batch_size below 1 is sent as 1, wait_for_ms below 0 as 0. */
	virtual HttpResult Receive(int batch_size, int wait_for_ms) noexcept = 0;
	/* Acknowledge / give back messages.  An empty list succeeds without a request. */
	virtual HttpResult Ack(const std::vector<std::string_view> &tokens) noexcept = 0;
	virtual HttpResult Nack(const std::vector<std::string_view> &tokens) noexcept = 0;

	/*
	 * The overlapped forms (see HttpConnection::Start): a Receive and an Ack can each be in
	 * flight at once, on two connections, while the caller applies a batch.  *out must stay
	 * valid until the matching Finish; the tokens are read before StartAck returns.  Ack and
	 * Nack finish an Ack in flight first.
	 */
	virtual void StartReceive(int batch_size, int wait_for_ms, HttpResult *out) noexcept = 0;
	virtual void FinishReceive() noexcept = 0;
	virtual void StartAck(const std::vector<std::string_view> &tokens, HttpResult *out) noexcept = 0;
	virtual void FinishAck() noexcept = 0;
	/* Whether FinishAck would return at once: no Ack in flight, or its answer is in (moves
	 * the transfer along without waiting). */
	virtual bool AckDone() noexcept = 0;
	/* Finishes whatever is in flight, asking grace_check instead of the abort check. */
	virtual void FinishWithin(ShouldAbortFn grace_check, void *arg) noexcept = 0;

	/* Asked before and during every transfer (every 100 ms while waiting); nullptr = never. */
	virtual void SetAbortCheck(ShouldAbortFn should_abort, void *arg) noexcept = 0;
	/* The same for acks and nacks only, set after SetAbortCheck (which sets both): an ack of a
	 * committed batch should not be dropped for what merely ends a long poll. */
	virtual void SetAckAbortCheck(ShouldAbortFn should_abort, void *arg) noexcept = 0;
	/* New timeouts, limits, CA file (e.g. after SIGHUP).  Takes effect on the next request. */
	virtual bool UpdateSettings(const HttpSettings &settings, std::string *error) noexcept = 0;
	/* The protocol's name, for messages: "v1" or "stream" (ProtocolName of protocol.hpp). */
	virtual const char *ProtocolName() const noexcept = 0;
};

/*
 * A reusable libcurl easy handle with this module's safety options: the part every protocol
 * generation shares.  Post() sends a JSON body and fills an HttpResult.
 */
class HttpConnection {
public:
	HttpConnection() noexcept; /* out of line: InFlight is complete only in http_client.cpp */
	~HttpConnection();
	HttpConnection(const HttpConnection &) = delete;
	HttpConnection &operator=(const HttpConnection &) = delete;

	/* Creates the handle; the token must be visible ASCII (it goes into a header). */
	bool Init(std::string_view token, const HttpSettings &settings, std::string *error) noexcept;
	bool UpdateSettings(const HttpSettings &settings, std::string *error) noexcept;
	void SetAbortCheck(ShouldAbortFn should_abort, void *arg) noexcept;

	/* POST body to url; the total timeout is extra_time_ms + settings.poll_margin_ms. */
	HttpResult Post(const std::string &url, const std::string &body, long extra_time_ms) noexcept;

	/*
	 * The same request in two halves, so a caller can work while the server answers: Start
	 * returns once the request is on the wire (or failed), Finish reads the reply into *result,
	 * which must stay valid until then.  One request at a time; Start while Busy fails.
	 */
	void Start(const std::string &url, const std::string &body, long extra_time_ms,
			   HttpResult *result) noexcept;
	void Finish() noexcept;
	/* Finish, asking grace_check instead of the abort check (a stopping worker's last read). */
	void FinishWithin(ShouldAbortFn grace_check, void *arg) noexcept;
	bool Busy() const noexcept { return in_flight_ != nullptr; }
	/* Whether Finish would return at once (nothing in flight, or the reply is in); moves the
	 * transfer along without waiting. */
	bool Done() noexcept;

private:
	struct InFlight;
	bool ApplySettings(std::string *error);
	void Begin(InFlight *f, long extra_time_ms);
	void Drive(InFlight *f, bool until_sent);
	int Pump(InFlight *f, int *running); /* a CURLMcode */
	void Classify(InFlight *f);
	void Scrub(std::string *text) const;

	void *curl_ = nullptr;           /* CURL *, kept opaque so curl.h stays out of this header */
	void *multi_ = nullptr;          /* CURLM *, drives curl_ and owns the connection cache */
	void *headers_ = nullptr;        /* struct curl_slist * */
	char *error_buffer_ = nullptr;   /* CURL_ERROR_SIZE bytes */
	std::string token_;
	HttpSettings settings_;
	ShouldAbortFn should_abort_ = nullptr;
	void *should_abort_arg_ = nullptr;
	std::unique_ptr<InFlight> in_flight_;
};

/*
 * What both protocols' clients share: the endpoint, two connections (one for the receive
 * request, one for /ack and /nack, so an acknowledgement never waits behind a long poll) and
 * every ConsumerClient method.  A protocol supplies only its paths and bodies.
 */
class HttpConsumerClient : public ConsumerClient {
public:
	HttpResult Receive(int batch_size, int wait_for_ms) noexcept final;
	HttpResult Ack(const std::vector<std::string_view> &tokens) noexcept final;
	HttpResult Nack(const std::vector<std::string_view> &tokens) noexcept final;
	void StartReceive(int batch_size, int wait_for_ms, HttpResult *out) noexcept final;
	void FinishReceive() noexcept final;
	void StartAck(const std::vector<std::string_view> &tokens, HttpResult *out) noexcept final;
	void FinishAck() noexcept final;
	bool AckDone() noexcept final;
	void FinishWithin(ShouldAbortFn grace_check, void *arg) noexcept final;
	void SetAbortCheck(ShouldAbortFn should_abort, void *arg) noexcept final;
	void SetAckAbortCheck(ShouldAbortFn should_abort, void *arg) noexcept final;
	bool UpdateSettings(const HttpSettings &settings, std::string *error) noexcept final;

protected:
	HttpConsumerClient() noexcept = default;
	/* A new client of type Client for endpoint (checked by ValidateEndpoint); nullptr + *error
	 * on failure. */
	template <class Client>
	static std::unique_ptr<Client> Make(std::string_view endpoint, std::string_view token,
										const HttpSettings &settings, std::string *error) noexcept;

	/* The receive request: its path after the endpoint ("/next") and its body. */
	virtual const char *ReceivePath() const noexcept = 0;
	virtual std::string ReceiveBody(int batch_size, int wait_for_ms) const = 0;
	/* The /ack and /nack body for a non-empty list; false when memory runs out. */
	virtual bool TokenBody(const std::vector<std::string_view> &tokens, std::string *out) const noexcept = 0;

private:
	void StartTokens(const char *path, const std::vector<std::string_view> &tokens, HttpResult *out) noexcept;
	HttpResult SendTokens(const char *path, const std::vector<std::string_view> &tokens) noexcept;

	std::string endpoint_;          /* normalized, no trailing '/' */
	HttpConnection connection_;     /* the receive request */
	HttpConnection ack_connection_; /* /ack and /nack */
};

/*
 * Generation 1: the record consumers, "<endpoint>/next", "/ack", "/nack" with
 * {"batch_size": N, "wait_for": ms} and {"ack_tokens": [...]}.
 */
class V1Client final : public HttpConsumerClient {
public:
	/* endpoint as accepted by ValidateEndpoint (checked again here); nullptr + *error on failure. */
	static std::unique_ptr<V1Client> Create(std::string_view endpoint, std::string_view token,
											const HttpSettings &settings,
											std::string *error) noexcept;
	const char *ProtocolName() const noexcept override;

private:
	friend class HttpConsumerClient;
	V1Client() noexcept = default;
	const char *ReceivePath() const noexcept override { return "/next"; }
	std::string ReceiveBody(int batch_size, int wait_for_ms) const override;
	bool TokenBody(const std::vector<std::string_view> &tokens, std::string *out) const noexcept override;
};

/*
 * Sequin Stream (today's Sequin's HTTP pull consumers): "<endpoint>/receive" with
 * {"max_batch_size": N} plus "wait_for": ms only when it is above 0 (Sequin refuses 0; without
 * it the call returns at once), and "/ack", "/nack" with {"ack_ids": [...]}.  batch_size is
 * sent within 1..kStreamMaxBatchSize (stream_reply.hpp).
 */
class StreamClient final : public HttpConsumerClient {
public:
	/* endpoint as accepted by ValidateEndpoint (checked again here); nullptr + *error on failure. */
	static std::unique_ptr<StreamClient> Create(std::string_view endpoint, std::string_view token,
												const HttpSettings &settings,
												std::string *error) noexcept;
	const char *ProtocolName() const noexcept override;

private:
	friend class HttpConsumerClient;
	StreamClient() noexcept = default;
	const char *ReceivePath() const noexcept override { return "/receive"; }
	std::string ReceiveBody(int batch_size, int wait_for_ms) const override;
	bool TokenBody(const std::vector<std::string_view> &tokens, std::string *out) const noexcept override;
};

/* The client of that protocol (V1Client or StreamClient); nullptr + *error on failure. */
std::unique_ptr<ConsumerClient> CreateConsumerClient(Protocol protocol, std::string_view endpoint,
													 std::string_view token, const HttpSettings &settings,
													 std::string *error) noexcept;

} /* namespace sequin_sync */

#endif /* SEQUIN_SYNC_HTTP_CLIENT_HPP */
