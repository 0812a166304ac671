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

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/batch_prep.hpp"
#include "core/http_client.hpp"
#include "core/json_doc.hpp"
#include "core/next_reply.hpp"
#include "core/protocol.hpp"
#include "core/stream_reply.hpp"

namespace sequin_sync {

struct SessionConfig {
	const char *endpoint;
	const char *token;
	long connect_timeout_ms;
	long poll_margin_ms;
	size_t max_response_size;
	const char *ca_file;
	/* Which client and which reply decoder (set it: a worker built before Sequin Stream leaves
	 * it at v1). */
	Protocol protocol = Protocol::V1;
};

/*
 * The shortest time a stream receive that came back empty should take, in ms.  Sequin's long
 * poll returns at once while any message of the consumer is in flight (its count includes
 * them), so an empty reply may come back in a millisecond however long wait_for is; the
 * worker pauses for the rest of this before it polls again (see PullSession::EmptyPauseMs).
 */
constexpr long kStreamEmptyCycleMs = 500;

enum class PullStatus {
	Ok,			/* a batch (maybe empty) was received and decoded */
	HttpError,	/* the server answered with an error status */
	NetworkError,
	Timeout,
	TooLarge,
	Aborted,	/* the abort check asked to stop (SIGTERM, configuration change) */
	BadReply,	/* not JSON, cut short, or not the documented shape: not acked, not applied */
};

/*
 * Overlap.  While a batch is applied, the next one is received and decoded on a second core
 * (Prefetch: a thread of this session that runs only this file's Postgres-free code - the
 * receive request on the first connection, the JSON parse, the protocol's decoder - and
 * never a Postgres function, so the worker's own thread is left with Postgres' work), and an
 * acknowledgement travels on the second connection while the loop goes on (StartAck): the loop
 * never waits for the server between two full batches.  Nothing is acknowledged before the
 * caller says so, i.e. after its commit.  Two batch buffers take turns; while the thread runs
 * it owns the other buffer and the first connection, and the caller's thread touches neither.
 * The thread blocks every signal (Postgres' handlers run in the worker's thread only), throws
 * nothing, and is joined before its batch is used and before the session ends.
 */
class PullSession {
public:
	/* nullptr on failure, with the reason copied into error (size errlen). */
	static PullSession *Create(const SessionConfig &config, char *error, size_t errlen) noexcept;
	~PullSession();

	/* fn is asked during long polls; ack_fn during acks, nacks and prefetches, which are short
	 * and whose loss would cost a redelivery (see ConsumerClient::SetAckAbortCheck). */
	void SetAbortCheck(ShouldAbortFn fn, void *arg, ShouldAbortFn ack_fn, void *ack_arg) noexcept;

	/* Long-polls for up to batch_size messages; takes the prefetched reply instead if one is on
	 * its way. */
	PullStatus Pull(int batch_size, int wait_for_ms) noexcept;

	/* Whether the consumer has more right now: the last batch was full, or it says so. */
	bool MoreWaiting(int batch_size) const noexcept;
	/*
	 * Receives the next batch (without a long poll) and decodes it on the session's thread
	 * while the caller applies the current one; Pull takes it.  Does nothing when a thread
	 * cannot be started (Pull then receives as usual).
	 */
	void Prefetch(int batch_size) noexcept;

	/*
	 * The current batch: its records (v1: each item's "record"; stream: each item's "data",
	 * the change message; nullptr where an item has none) and its document (valid until the
	 * Pull after next).
	 */
	int Count() const noexcept { return (int) cur().records.size(); }
	const json::Node **Records() noexcept { return cur().records.data(); }
	json::Document *Doc() noexcept { return &cur().doc; }
	/* What the prefetch thread found in the current batch's records (Ready() false when
	 * nothing: a batch that was not prefetched). */
	const prep::Prepared *Prepared() const noexcept { return &cur().prepared; }
	/* The locators the next prefetch prepares records with; the engine adds its mappings'
	 * after each batch (ApplyBatch::locators_out).  The caller's thread only. */
	prep::LocatorSet *Locators() noexcept { return &locators_; }
	/* The consumer's count of waiting messages; v1 only (a stream reply has none: false). */
	bool HasPending() const noexcept { return cur().reply.has_pending; }
	int64_t Pending() const noexcept { return cur().reply.num_pending; }

	Protocol GetProtocol() const noexcept { return protocol_; }
	/* Wall time of the current batch's receive request, in ms (a prefetch's: from its start). */
	long ReceiveElapsedMs() const noexcept { return cur().result.elapsed_ms; }
	/*
	 * How long to wait before the next Pull, in ms: for a stream consumer whose last batch was
	 * empty, what its receive took short of kStreamEmptyCycleMs (so a poll that returns empty
	 * at once cannot become a hot loop); 0 otherwise, and always for v1, whose long poll holds
	 * an empty reply for wait_for.
	 */
	long EmptyPauseMs() const noexcept;

	/*
	 * Acknowledges every message of the current batch without waiting for the answer.  An
	 * earlier acknowledgement still in flight is awaited first.  Whatever goes wrong with it
	 * (the messages are then simply delivered again) is reported by TakeAckError.
	 */
	void StartAck() noexcept;
	/* Waits for the answer to the acknowledgement in flight, if any, and records its outcome. */
	void AwaitAck() noexcept;
	/* AwaitAck if that answer is already in; never waits. */
	void PollAck() noexcept;
	/* Messages whose acknowledgement the server confirmed since the last call. */
	int64_t TakeConfirmedAcks() noexcept;
	/* The error of an acknowledgement that failed since the last call, or nullptr. */
	const char *TakeAckError() noexcept;

	/* Gives back every message of the current batch, and of a prefetched one. */
	bool NackAll() noexcept;

	/*
	 * Before the session is deleted: finishes what is in flight within grace_ms, ignoring the
	 * abort check, and gives back the messages of a prefetched reply, so they come again at
	 * once instead of after the consumer's visibility timeout.
	 */
	void Drain(long grace_ms) noexcept;

	/*
	 * Stops a prefetch on its way at once and joins its thread; its messages are not given back
	 * (they come again after the consumer's visibility timeout).  For a process that exits
	 * without Drain: no thread may outlive the worker's exit handlers.
	 */
	void CancelPrefetch() noexcept;

	/* Details of the last failed call. */
	long HttpStatus() const noexcept { return last_status_; }
	long RetryAfter() const noexcept { return last_retry_after_; }
	const char *LastError() const noexcept { return last_error_.c_str(); }

private:
	struct Batch {
		HttpResult result;
		json::Document doc;
		NextReply reply;          /* v1 */
		StreamReply stream_reply; /* stream */
		std::vector<const json::Node *> records;
		std::vector<std::string_view> tokens;
		prep::Prepared prepared;            /* by the prefetch thread (batch_prep.hpp) */
		PullStatus status = PullStatus::Ok; /* of the receive and decode */
		std::string error;                  /* why, when status is not Ok */
	};

	PullSession() noexcept = default;
	Batch &cur() noexcept { return batches_[cur_]; }
	const Batch &cur() const noexcept { return batches_[cur_]; }
	/* Decodes b's reply into b (status and error included); touches nothing else. */
	void DecodeInto(Batch *b) const noexcept;
	/* DecodeInto, then b's outcome becomes the session's (LastError, HttpStatus ...). */
	PullStatus Decode(Batch *b) noexcept;
	/* The prefetch thread's body: receive into, and decode, the other buffer. */
	void RunPrefetch(int batch_size) noexcept;
	/* Waits for the prefetch thread, asking stop (may be nullptr) every 100 ms - true tells the
	 * thread to give up - and joins it. */
	void JoinPrefetch(ShouldAbortFn stop, void *arg) noexcept;
	/* b's outcome becomes the session's (LastError, HttpStatus, RetryAfter); returns it. */
	PullStatus Publish(const Batch &b) noexcept;
	static bool PrefetchCancelled(void *arg);
	bool GiveBack(bool report) noexcept;
	void RestoreAbortChecks() noexcept;
	static void Clear(Batch *b) noexcept;
	void Fail(const HttpResult &r, const char *what) noexcept;
	/* Reads the prefetched reply into the other buffer, which becomes the current one. */
	PullStatus TakePrefetched() noexcept;

	std::unique_ptr<ConsumerClient> client_;
	Protocol protocol_ = Protocol::V1;
	ShouldAbortFn abort_fn_ = nullptr;
	void *abort_arg_ = nullptr;
	ShouldAbortFn ack_abort_fn_ = nullptr;
	void *ack_abort_arg_ = nullptr;
	Batch batches_[2];
	int cur_ = 0;
	bool prefetching_ = false;
	std::thread prefetcher_;
	std::mutex prefetch_mutex_;
	std::condition_variable prefetch_cv_;
	bool prefetch_done_ = false;              /* guarded by prefetch_mutex_ */
	std::atomic<bool> prefetch_cancel_{false}; /* asked by the thread's transfer */
	prep::LocatorSet locators_;          /* the caller's (Locators) */
	prep::LocatorSet prefetch_locators_; /* the thread's copy, taken when it starts */
	bool ack_in_flight_ = false;
	int64_t ack_count_ = 0;         /* messages in the acknowledgement in flight */
	HttpResult ack_result_;
	int64_t acked_ = 0;
	bool ack_failed_ = false;
	std::string ack_error_;
	std::string last_error_;
	long last_status_ = 0;
	long last_retry_after_ = -1;
};

} /* namespace sequin_sync */

#endif
