/*
 * pull_session.hpp - one worker's conversation with its consumer: pull a batch, decode it,
 * acknowledge or give it back.  Postgres-free and exception-free.
 *
 * The worker (Postgres-side, where an ereport may longjmp) holds only a PullSession pointer and
 * plain values; every C++ object with a destructor - the HTTP client, the reply body, the parsed
 * document, the token list - lives inside the session.
 */
#ifndef SEQUIN_SYNC_PULL_SESSION_HPP
#define SEQUIN_SYNC_PULL_SESSION_HPP

#ifdef POSTGRES_H
#error "pull_session.hpp must stay free of Postgres headers"
#endif

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "http_client.hpp"
#include "json_doc.hpp"
#include "next_reply.hpp"

namespace sequin_sync {

struct SessionConfig {
	const char *endpoint;
	const char *token;
	long connect_timeout_ms;
	long poll_margin_ms;
	size_t max_response_size;
	const char *ca_file;
};

enum class PullStatus {
	Ok,			/* a batch (maybe empty) was received and decoded */
	HttpError,	/* the server answered with an error status */
	NetworkError,
	Timeout,
	TooLarge,
	Aborted,	/* the abort check asked to stop (SIGTERM, configuration change) */
	BadReply,	/* not JSON, cut short, or not the documented shape: not acked, not applied */
};

class PullSession {
public:
	/* nullptr on failure, with the reason copied into error (size errlen). */
	static PullSession *Create(const SessionConfig &config, char *error, size_t errlen) noexcept;
	~PullSession();

	void SetAbortCheck(ShouldAbortFn fn, void *arg) noexcept;

	/* Long-polls for up to batch_size messages. */
	PullStatus Pull(int batch_size, int wait_for_ms) noexcept;

	/* The last batch: its records and its document (valid until the next Pull). */
	int Count() const noexcept { return (int) records_.size(); }
	const json::Node **Records() noexcept { return records_.data(); }
	json::Document *Doc() noexcept { return &doc_; }
	bool HasPending() const noexcept { return reply_.has_pending; }
	int64_t Pending() const noexcept { return reply_.num_pending; }

	/* Acknowledges / gives back every message of the last batch.  False + LastError on failure. */
	bool AckAll() noexcept;
	bool NackAll() noexcept;

	/* Details of the last failed call. */
	long HttpStatus() const noexcept { return last_status_; }
	long RetryAfter() const noexcept { return last_retry_after_; }
	const char *LastError() const noexcept { return last_error_.c_str(); }

private:
	PullSession() noexcept = default;
	bool Send(bool ack) noexcept;
	void Fail(const HttpResult &r, const char *what) noexcept;

	std::unique_ptr<ConsumerClient> client_;
	HttpResult result_;
	json::Document doc_;
	NextReply reply_;
	std::vector<const json::Node *> records_;
	std::vector<std::string_view> tokens_;
	std::string last_error_;
	long last_status_ = 0;
	long last_retry_after_ = -1;
};

} /* namespace sequin_sync */

#endif
