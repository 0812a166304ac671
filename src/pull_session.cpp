/*
 * pull_session.cpp - see pull_session.hpp.
 */
#include "pull_session.hpp"

#include <cstring>
#include <new>

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
		s->client_ = V1Client::Create(config.endpoint, config.token, settings, &err);
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
PullSession::SetAbortCheck(ShouldAbortFn fn, void *arg) noexcept
{
	client_->SetAbortCheck(fn, arg);
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

PullStatus
PullSession::Pull(int batch_size, int wait_for_ms) noexcept
{
	records_.clear();
	tokens_.clear();
	reply_.items.clear();
	reply_.has_pending = false;
	last_status_ = 0;
	last_retry_after_ = -1;
	result_ = client_->Receive(batch_size, wait_for_ms);
	if (!result_.Ok()) {
		Fail(result_, "receive failed");
		return StatusOf(result_.outcome);
	}
	last_status_ = result_.http_status;
	try {
		if (result_.body.empty()) {
			last_error_ = "bad reply: the body is empty";
			return PullStatus::BadReply;
		}
		if (!doc_.Parse(&result_.body[0], result_.body.size())) {
			last_error_ = std::string("bad reply: invalid JSON at byte ") + std::to_string(doc_.ErrorOffset()) +
						  ": " + doc_.ErrorMessage();
			return PullStatus::BadReply;
		}
		std::string err;
		if (!DecodeNextReply(doc_, &reply_, &err)) {
			last_error_ = "bad reply: " + err;
			return PullStatus::BadReply;
		}
		records_.reserve(reply_.items.size());
		tokens_.reserve(reply_.items.size());
		for (const NextReplyItem &item : reply_.items) {
			records_.push_back(item.record);
			tokens_.push_back(item.ack_token);
		}
	} catch (...) {
		records_.clear();
		tokens_.clear();
		last_error_ = "bad reply: out of memory";
		return PullStatus::BadReply;
	}
	return PullStatus::Ok;
}

bool
PullSession::Send(bool ack) noexcept
{
	if (tokens_.empty())
		return true; /* never an empty ack */
	HttpResult r = ack ? client_->Ack(tokens_) : client_->Nack(tokens_);
	if (r.Ok())
		return true;
	Fail(r, ack ? "ack failed" : "nack failed");
	return false;
}

bool
PullSession::AckAll() noexcept
{
	return Send(true);
}

bool
PullSession::NackAll() noexcept
{
	return Send(false);
}

} /* namespace sequin_sync */
