/*
 * pull_session.cpp - see pull_session.hpp.
 */
#include "core/pull_session.hpp"

#include <chrono>
#include <csignal>
#include <cstring>
#include <new>

#include <pthread.h>
#include "core/cpp_only.hpp" // must be the last include

namespace sequin_sync {

namespace {

void
CopyError(const std::string &text, char *error, size_t errlen) noexcept
{
	if (errlen == 0)
		return;
	size_t n = text.size() < errlen - 1 ? text.size() : errlen - 1;
	memcpy(error, text.data(), n);
	error[n] = '\0';
}

PullStatus
StatusOf(HttpOutcome outcome) noexcept
{
	switch (outcome) {
		case HttpOutcome::Ok:
			return PullStatus::Ok;
		case HttpOutcome::HttpError:
			return PullStatus::HttpError;
		case HttpOutcome::NetworkError:
			return PullStatus::NetworkError;
		case HttpOutcome::Timeout:
			return PullStatus::Timeout;
		case HttpOutcome::TooLarge:
			return PullStatus::TooLarge;
		case HttpOutcome::Aborted:
			return PullStatus::Aborted;
	}
	return PullStatus::NetworkError;
}

} /* namespace */

PullSession *
PullSession::Create(const SessionConfig &config, char *error, size_t errlen) noexcept
{
	try {
		std::unique_ptr<PullSession> s(new PullSession());
		HttpSettings settings;
		settings.connect_timeout_ms = config.connect_timeout_ms;
		settings.poll_margin_ms = config.poll_margin_ms;
		settings.max_response_size = config.max_response_size;
		if (config.ca_file != nullptr)
			settings.ca_file = config.ca_file;
		std::string err;
		s->protocol_ = config.protocol;
		s->client_ = CreateConsumerClient(config.protocol, config.endpoint, config.token, settings, &err);
		if (!s->client_) {
			CopyError(err, error, errlen);
			return nullptr;
		}
		return s.release();
	} catch (...) {
		CopyError("out of memory", error, errlen);
		return nullptr;
	}
}

PullSession::~PullSession()
{
	/* Never destroy a joinable thread (std::terminate): stop it first. */
	CancelPrefetch();
}

void
PullSession::CancelPrefetch() noexcept
{
	if (!prefetcher_.joinable())
		return;
	prefetch_cancel_.store(true, std::memory_order_relaxed);
	try {
		prefetcher_.join();
	} catch (...) {
	}
	prefetching_ = false;
	Clear(&batches_[cur_ ^ 1]);
	RestoreAbortChecks();
}

void
PullSession::SetAbortCheck(ShouldAbortFn fn, void *arg, ShouldAbortFn ack_fn, void *ack_arg) noexcept
{
	abort_fn_ = fn;
	abort_arg_ = arg;
	ack_abort_fn_ = ack_fn;
	ack_abort_arg_ = ack_arg;
	client_->SetAbortCheck(fn, arg);
	client_->SetAckAbortCheck(ack_fn, ack_arg);
}

namespace {

/* "<what>: HTTP 503: <summary>", "<what>: timeout" ... into *out (cleared when memory runs out). */
void
FailureText(const HttpResult &r, const char *what, std::string *out) noexcept
{
	try {
		*out = what;
		*out += ": ";
		if (r.outcome == HttpOutcome::HttpError) {
			*out += "HTTP " + std::to_string(r.http_status);
			if (!r.summary.empty())
				*out += ": " + r.summary;
			else if (!r.error.empty())
				*out += ": " + r.error;
		} else {
			*out += r.error.empty() ? HttpOutcomeName(r.outcome) : r.error;
		}
	} catch (...) {
		out->clear();
	}
}

} /* namespace */

void
PullSession::Fail(const HttpResult &r, const char *what) noexcept
{
	last_status_ = r.http_status;
	last_retry_after_ = r.retry_after;
	FailureText(r, what, &last_error_);
}

/* The checks SetAbortCheck gave, after a request that needed another one. */
void
PullSession::RestoreAbortChecks() noexcept
{
	client_->SetAbortCheck(abort_fn_, abort_arg_);
	client_->SetAckAbortCheck(ack_abort_fn_, ack_abort_arg_);
}

void
PullSession::Clear(Batch *b) noexcept
{
	b->records.clear();
	b->tokens.clear();
	b->reply.items.clear();
	b->reply.has_pending = false;
	b->reply.num_pending = 0;
	b->stream_reply.items.clear();
	b->prepared.Clear();
}

/* Checks the received reply and decodes it, in place, into its batch. */
void
PullSession::DecodeInto(Batch *b) const noexcept
{
	b->status = PullStatus::Ok;
	if (!b->result.Ok()) {
		FailureText(b->result, "receive failed", &b->error);
		b->status = StatusOf(b->result.outcome);
		return;
	}
	b->status = PullStatus::BadReply;
	try {
		if (b->result.body.empty()) {
			b->error = "bad reply: the body is empty";
			return;
		}
		if (!b->doc.Parse(&b->result.body[0], b->result.body.size())) {
			b->error = std::string("bad reply: invalid JSON at byte ") + std::to_string(b->doc.ErrorOffset()) + ": " +
					   b->doc.ErrorMessage();
			return;
		}
		/* The protocol's decoder; the engine sees only (record or message, token) pairs. */
		std::string err;
		bool stream = protocol_ == Protocol::Stream;
		if (!(stream ? DecodeStreamReply(b->doc, &b->stream_reply, &err) : DecodeNextReply(b->doc, &b->reply, &err))) {
			b->error = "bad reply: " + err;
			return;
		}
		size_t n = stream ? b->stream_reply.items.size() : b->reply.items.size();
		b->records.reserve(n);
		b->tokens.reserve(n);
		for (size_t i = 0; i < n; i++) {
			b->records.push_back(stream ? b->stream_reply.items[i].message : b->reply.items[i].record);
			b->tokens.push_back(stream ? b->stream_reply.items[i].ack_id : b->reply.items[i].ack_token);
		}
	} catch (...) {
		b->records.clear();
		b->tokens.clear();
		b->error = "bad reply: out of memory";
		return;
	}
	b->status = PullStatus::Ok;
}

PullStatus
PullSession::Publish(const Batch &b) noexcept
{
	last_status_ = b.result.http_status;
	if (!b.result.Ok())
		last_retry_after_ = b.result.retry_after;
	if (b.status != PullStatus::Ok) {
		try {
			last_error_ = b.error;
		} catch (...) {
			last_error_.clear();
		}
	}
	return b.status;
}

PullStatus
PullSession::Decode(Batch *b) noexcept
{
	DecodeInto(b);
	return Publish(*b);
}

bool
PullSession::PrefetchCancelled(void *arg)
{
	return static_cast<PullSession *>(arg)->prefetch_cancel_.load(std::memory_order_relaxed);
}

void
PullSession::RunPrefetch(int batch_size) noexcept
{
	Batch &next = batches_[cur_ ^ 1];
	next.result = client_->Receive(batch_size, 0);
	DecodeInto(&next);
	/* Work taken off the applying thread: objects in the order jsonb wants them, and each
	 * record's fields and its columns' values (batch_prep.hpp). */
	if (next.status == PullStatus::Ok) {
		(void) next.doc.SortMembers();
		if (protocol_ == Protocol::Stream)
			next.prepared.PrepareStream(next.doc, next.records.data(), next.records.size(), prefetch_locators_);
		else
			next.prepared.PrepareV1(next.doc, next.records.data(), next.records.size(), prefetch_locators_);
	}
	{
		std::lock_guard<std::mutex> lock(prefetch_mutex_);
		prefetch_done_ = true;
	}
	prefetch_cv_.notify_one();
}

void
PullSession::JoinPrefetch(ShouldAbortFn stop, void *arg) noexcept
{
	if (!prefetcher_.joinable())
		return;
	try {
		std::unique_lock<std::mutex> lock(prefetch_mutex_);
		while (!prefetch_done_) {
			if (stop != nullptr && stop(arg))
				prefetch_cancel_.store(true, std::memory_order_relaxed);
			prefetch_cv_.wait_for(lock, std::chrono::milliseconds(100));
		}
	} catch (...) {
		/* a lock that cannot be taken: join() below waits for the thread anyway */
	}
	try {
		prefetcher_.join();
	} catch (...) {
	}
	/* The thread's receive ran with its own check; the connection gets the session's back. */
	RestoreAbortChecks();
}

PullStatus
PullSession::TakePrefetched() noexcept
{
	JoinPrefetch(ack_abort_fn_, ack_abort_arg_);
	prefetching_ = false;
	cur_ ^= 1;
	return Publish(cur());
}

PullStatus
PullSession::Pull(int batch_size, int wait_for_ms) noexcept
{
	last_status_ = 0;
	last_retry_after_ = -1;
	if (prefetching_)
		return TakePrefetched();
	Batch &b = cur();
	Clear(&b);
	b.result = client_->Receive(batch_size, wait_for_ms);
	return Decode(&b);
}

long
PullSession::EmptyPauseMs() const noexcept
{
	if (protocol_ != Protocol::Stream || Count() > 0)
		return 0;
	long elapsed = cur().result.elapsed_ms < 0 ? 0 : cur().result.elapsed_ms;
	return elapsed >= kStreamEmptyCycleMs ? 0 : kStreamEmptyCycleMs - elapsed;
}

bool
PullSession::MoreWaiting(int batch_size) const noexcept
{
	return Count() >= batch_size || (HasPending() && Pending() > 0);
}

void
PullSession::Prefetch(int batch_size) noexcept
{
	if (prefetching_)
		return;
	/* The other buffer is free: its batch was applied and its tokens are in the ack's body. */
	Clear(&batches_[cur_ ^ 1]);
	/*
	 * A prefetch does not long-poll, so it is short; like an ack, it is not cut off by what ends a
	 * long poll (a configuration change): its messages would otherwise wait for the consumer's
	 * visibility timeout.  The thread cannot ask the worker's checks (they read Postgres' state):
	 * it asks prefetch_cancel_, which JoinPrefetch sets when the ack check says stop.
	 */
	prefetch_cancel_.store(false, std::memory_order_relaxed);
	prefetch_done_ = false;
	try {
		prefetch_locators_ = locators_;
	} catch (...) {
		prefetch_locators_.Clear(); /* nothing prepared beyond the fields: harmless */
	}
	client_->SetAbortCheck(PrefetchCancelled, this);
	client_->SetAckAbortCheck(ack_abort_fn_, ack_abort_arg_);
	/* Every signal blocked while the thread is created, so it inherits a full mask. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	try {
		prefetcher_ = std::thread(&PullSession::RunPrefetch, this, batch_size);
		prefetching_ = true;
	} catch (...) {
		/* no thread: Pull receives the next batch itself */
	}
	pthread_sigmask(SIG_SETMASK, &old, nullptr);
	if (!prefetching_)
		RestoreAbortChecks();
}

void
PullSession::AwaitAck() noexcept
{
	if (!ack_in_flight_)
		return;
	client_->FinishAck();
	ack_in_flight_ = false;
	if (ack_result_.Ok())
		acked_ += ack_count_;
	else {
		Fail(ack_result_, "ack failed");
		try {
			ack_error_ = last_error_;
		} catch (...) {
			ack_error_.clear();
		}
		ack_failed_ = true;
	}
	ack_count_ = 0;
}

void
PullSession::PollAck() noexcept
{
	if (ack_in_flight_ && client_->AckDone())
		AwaitAck();
}

void
PullSession::StartAck() noexcept
{
	AwaitAck();
	Batch &b = cur();
	if (b.tokens.empty())
		return; /* never an empty ack */
	client_->StartAck(b.tokens, &ack_result_);
	ack_in_flight_ = true;
	ack_count_ = (int64_t) b.tokens.size();
}

int64_t
PullSession::TakeConfirmedAcks() noexcept
{
	int64_t n = acked_;
	acked_ = 0;
	return n;
}

const char *
PullSession::TakeAckError() noexcept
{
	if (!ack_failed_)
		return nullptr;
	ack_failed_ = false;
	return ack_error_.c_str();
}

/* Gives back the current batch's messages; a failure is recorded as LastError when report. */
bool
PullSession::GiveBack(bool report) noexcept
{
	if (cur().tokens.empty())
		return true;
	HttpResult r = client_->Nack(cur().tokens);
	if (r.Ok())
		return true;
	if (report)
		Fail(r, "nack failed");
	return false;
}

bool
PullSession::NackAll() noexcept
{
	AwaitAck();
	bool ok = GiveBack(true);
	/* A prefetched batch was not applied either: give it back too (the first failure is kept). */
	if (prefetching_ && TakePrefetched() == PullStatus::Ok)
		ok = GiveBack(ok) && ok;
	Clear(&cur());
	return ok;
}

namespace {

struct Grace {
	std::chrono::steady_clock::time_point until;
};

bool
GraceOver(void *arg)
{
	return std::chrono::steady_clock::now() >= static_cast<Grace *>(arg)->until;
}

} /* namespace */

void
PullSession::Drain(long grace_ms) noexcept
{
	Grace grace{std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms)};
	/* The prefetch thread first: until it is joined the receive connection is its. */
	JoinPrefetch(GraceOver, &grace);
	client_->FinishWithin(GraceOver, &grace);
	AwaitAck();
	if (prefetching_) {
		if (TakePrefetched() == PullStatus::Ok) {
			client_->SetAbortCheck(GraceOver, &grace);
			GiveBack(true);
			RestoreAbortChecks();
		}
		Clear(&cur());
	}
}

} /* namespace sequin_sync */
