/*
 * pull_session.cpp - see pull_session.hpp.
 */
#include "core/pull_session.hpp"

#include <chrono>
#include <cstring>
#include <new>
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

PullSession::~PullSession() = default;

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

void
PullSession::Fail(const HttpResult &r, const char *what) noexcept
{
	try {
		last_status_ = r.http_status;
		last_retry_after_ = r.retry_after;
		last_error_ = what;
		last_error_ += ": ";
		if (r.outcome == HttpOutcome::HttpError) {
			last_error_ += "HTTP " + std::to_string(r.http_status);
			if (!r.summary.empty())
				last_error_ += ": " + r.summary;
			else if (!r.error.empty())
				last_error_ += ": " + r.error;
		} else {
			last_error_ += r.error.empty() ? HttpOutcomeName(r.outcome) : r.error;
		}
	} catch (...) {
		last_error_.clear();
	}
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
}

/* Checks the received reply and decodes it, in place, into its batch. */
PullStatus
PullSession::Decode(Batch *b) noexcept
{
	if (!b->result.Ok()) {
		Fail(b->result, "receive failed");
		return StatusOf(b->result.outcome);
	}
	last_status_ = b->result.http_status;
	try {
		if (b->result.body.empty()) {
			last_error_ = "bad reply: the body is empty";
			return PullStatus::BadReply;
		}
		if (!b->doc.Parse(&b->result.body[0], b->result.body.size())) {
			last_error_ = std::string("bad reply: invalid JSON at byte ") + std::to_string(b->doc.ErrorOffset()) +
						  ": " + b->doc.ErrorMessage();
			return PullStatus::BadReply;
		}
		/* The protocol's decoder; the engine sees only (record or message, token) pairs. */
		std::string err;
		bool stream = protocol_ == Protocol::Stream;
		if (!(stream ? DecodeStreamReply(b->doc, &b->stream_reply, &err) : DecodeNextReply(b->doc, &b->reply, &err))) {
			last_error_ = "bad reply: " + err;
			return PullStatus::BadReply;
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
		last_error_ = "bad reply: out of memory";
		return PullStatus::BadReply;
	}
	return PullStatus::Ok;
}

PullStatus
PullSession::TakePrefetched() noexcept
{
	client_->FinishReceive();
	prefetching_ = false;
	cur_ ^= 1;
	return Decode(&cur());
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
	Batch &next = batches_[cur_ ^ 1];
	Clear(&next);
	/*
	 * A prefetch does not long-poll, so it is short; like an ack, it is not cut off by what ends a
	 * long poll (a configuration change): its messages would otherwise wait for the consumer's
	 * visibility timeout.  The check is taken when the request starts.
	 */
	client_->SetAbortCheck(ack_abort_fn_, ack_abort_arg_);
	client_->StartReceive(batch_size, 0, &next.result);
	RestoreAbortChecks();
	prefetching_ = true;
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
