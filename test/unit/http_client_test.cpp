/*
 * http_client_test.cpp - unit test of the endpoint validation (src/core/endpoint.cpp) and the
 * Sequin consumer HTTP clients (src/core/http_client.cpp, which sends next_reply.cpp's and
 * stream_reply.cpp's ack bodies), against the fake consumer (test/fake_sequin.py) misbehaving as
 * test/fixtures/http_client_consumers.json scripts it (one consumer per scenario, named for it;
 * for Sequin Stream, the fake's stream sinks there, one sink name per scenario); then the pull
 * session (src/core/pull_session.cpp) of each protocol.  No Postgres needed.
 *
 *   g++ -std=c++17 -O1 -g -Wall -Wextra -Werror -Isrc src/core/endpoint.cpp src/core/http_client.cpp \
 *       src/core/next_reply.cpp src/core/stream_reply.cpp src/core/protocol.cpp src/core/json_doc.cpp \
 *       src/core/pull_session.cpp test/unit/http_client_test.cpp -lcurl -o /tmp/http_client_test
 *   bash test/unit/run_http_client_test.sh /tmp/http_client_test
 *
 * The wrapper starts the fake, runs the test with "--port N" (its port on 127.0.0.1) and stops
 * it.  Prints "N passed, M failed"; exits 1 on failure.
 */
#include "core/endpoint.hpp"
#include "core/http_client.hpp"
#include "core/pull_session.hpp"
#include "core/stream_reply.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <pthread.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <vector>

using namespace sequin_sync;
using Clock = std::chrono::steady_clock;

namespace {

int passed = 0;
int failed = 0;

#define CHECK(cond)                                                                        \
	do {                                                                                   \
		if (cond)                                                                          \
			passed++;                                                                      \
		else {                                                                             \
			failed++;                                                                      \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
		}                                                                                  \
	} while (0)

/* Like CHECK, and prints both strings when they differ. */
#define CHECK_STR(actual, expected)                                                        \
	do {                                                                                   \
		std::string a_ = (actual), e_ = (expected);                                        \
		if (a_ == e_)                                                                      \
			passed++;                                                                      \
		else {                                                                             \
			failed++;                                                                      \
			fprintf(stderr, "%s:%d: CHECK failed: %s == %s\n    got:      \"%s\"\n"        \
					"    expected: \"%s\"\n",                                              \
					__FILE__, __LINE__, #actual, #expected, a_.c_str(), e_.c_str());       \
		}                                                                                  \
	} while (0)

const char *const kToken = "sekret-T0KEN-4242";

int port = 0;
int stream_port = 0; /* the same fake: its Sequin Stream sinks are under /api/sequin_streams/ */
/* Every error and summary the client produced, checked for the token at the end. */
std::vector<std::string> messages;

long
MsSince(Clock::time_point start)
{
	return static_cast<long>(
		std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
}

std::string
Base()
{
	return "http://127.0.0.1:" + std::to_string(port) + "/v1/http-consumers/";
}

/* Records a result's messages for TestTokenNeverInErrors and hands the result back. */
HttpResult
Track(HttpResult r)
{
	messages.push_back(r.error);
	messages.push_back(r.summary);
	if (getenv("HTTP_CLIENT_TEST_VERBOSE"))
		fprintf(stderr, "    [%s] %ld %s | %s | retry_after=%ld body=%zu elapsed=%ld\n",
				HttpOutcomeName(r.outcome), r.http_status, r.error.c_str(), r.summary.c_str(),
				r.retry_after, r.body.size(), r.elapsed_ms);
	return r;
}

void
Show(const char *what, const HttpResult &r)
{
	fprintf(stderr, "    %s: outcome=%s status=%ld retry_after=%ld body=%zu bytes elapsed=%ld ms "
					"error=\"%s\" summary=\"%s\"\n",
			what, HttpOutcomeName(r.outcome), r.http_status, r.retry_after, r.body.size(),
			r.elapsed_ms, r.error.c_str(), r.summary.c_str());
}

/* ---- the test's own access to the fake's record of requests, with a plain libcurl handle ---- */

size_t
AppendToString(char *data, size_t size, size_t nmemb, void *arg)
{
	static_cast<std::string *>(arg)->append(data, size * nmemb);
	return size * nmemb;
}

/* An admin request to the fake, or to the server on port `at`. */
std::string
Side(const char *path, bool post = false, int at = 0)
{
	std::string out;
	CURL *curl = curl_easy_init();
	std::string url = "http://127.0.0.1:" + std::to_string(at != 0 ? at : port) + path;
	curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendToString);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out);
	if (post)
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
	CURLcode rc = curl_easy_perform(curl);
	curl_easy_cleanup(curl);
	if (rc != CURLE_OK)
		fprintf(stderr, "    admin request %s failed: %s\n", path, curl_easy_strerror(rc));
	return out;
}

struct LastRequest {
	std::string method, path, body;
	std::map<std::string, std::string> headers;
	bool Has(const std::string &h) const { return headers.count(h) > 0; }
	std::string Header(const std::string &h) const
	{
		auto it = headers.find(h);
		return it == headers.end() ? "<absent>" : it->second;
	}
};

LastRequest
Last(int at = 0)
{
	LastRequest last;
	std::string text = Side("/admin/requests.txt", false, at);
	size_t split = text.find("\n\n");
	if (split == std::string::npos)
		return last;
	last.body = text.substr(split + 2);
	size_t pos = 0;
	while (pos < split) {
		size_t eol = text.find('\n', pos);
		if (eol == std::string::npos || eol > split)
			eol = split;
		std::string line = text.substr(pos, eol - pos);
		pos = eol + 1;
		size_t colon = line.find(": ");
		if (colon == std::string::npos)
			continue;
		std::string name = line.substr(0, colon), value = line.substr(colon + 2);
		if (name == "method")
			last.method = value;
		else if (name == "path")
			last.path = value;
		else if (name.rfind("h-", 0) == 0)
			last.headers[name.substr(2)] = value;
	}
	return last;
}

struct Stats {
	int connections = -1, requests = -1;
};

Stats
GetStats()
{
	Stats s;
	std::string text = Side("/admin/requests.txt");
	if (sscanf(text.c_str(), "connections: %d\nrequests: %d", &s.connections, &s.requests) != 2)
		fprintf(stderr, "    bad /admin/requests.txt reply \"%s\"\n", text.c_str());
	return s;
}

void
Reset(int at = 0)
{
	Side("/admin/requests/reset", true, at);
}

std::unique_ptr<V1Client>
Client(const std::string &scenario, const HttpSettings &settings = HttpSettings())
{
	std::string error;
	auto client = V1Client::Create(Base() + scenario, kToken, settings, &error);
	if (!client)
		fprintf(stderr, "    cannot create client for %s: %s\n", scenario.c_str(), error.c_str());
	return client;
}

/* ---- tests ---- */

void
TestEndpointHostAllowed()
{
	CHECK(EndpointHostAllowed("https://api.sequin.io/v1/http-consumers/a", ""));
	CHECK(EndpointHostAllowed("https://API.Sequin.io/v1/http-consumers/a", "api.sequin.io"));
	CHECK(EndpointHostAllowed("http://localhost:9/x", "127.0.0.1, localhost"));
	CHECK(!EndpointHostAllowed("http://evil.example/x", "127.0.0.1, localhost"));
	CHECK(EndpointHostAllowed("https://eu.api.sequin.io/x", "*.sequin.io"));
	CHECK(EndpointHostAllowed("https://eu.api.sequin.io/x", ".sequin.io"));
	CHECK(!EndpointHostAllowed("https://sequin.io/x", "*.sequin.io"));
	CHECK(!EndpointHostAllowed("https://notsequin.io/x", "*.sequin.io"));
	CHECK(!EndpointHostAllowed("https://sequin.io.evil.example/x", "sequin.io"));
	CHECK(EndpointHostAllowed("http://[::1]:8/x", "[::1]"));
	CHECK(EndpointHostAllowed("http://10.0.0.1/x", " , "));
	CHECK(!EndpointHostAllowed("not a url", "localhost"));
}

void
TestValidateEndpoint()
{
	struct Good {
		const char *url, *normalized;
	} good[] = {
		{"https://api.sequin.io/v1/http-consumers/abc", "https://api.sequin.io/v1/http-consumers/abc"},
		{"https://api.sequin.io/v1/http-consumers/abc/", "https://api.sequin.io/v1/http-consumers/abc"},
		{"https://api.sequin.io/v1/http-consumers/abc//", "https://api.sequin.io/v1/http-consumers/abc"},
		{"HTTPS://API.Sequin.IO/v1/x", "https://api.sequin.io/v1/x"},
		{"http://localhost:7376/", "http://localhost:7376"},
		{"http://localhost:7376", "http://localhost:7376"},
		{"http://[::1]:8080/v1/http-consumers/c1", "http://[::1]:8080/v1/http-consumers/c1"},
		{"http://[2001:DB8::1]/c/", "http://[2001:db8::1]/c"},
		{"http://127.0.0.1/a/./b/../c", "http://127.0.0.1/a/c"},
	};
	for (const Good &g : good) {
		std::string normalized, error;
		bool ok = ValidateEndpoint(g.url, &normalized, &error);
		CHECK(ok);
		if (!ok)
			fprintf(stderr, "    %s rejected: %s\n", g.url, error.c_str());
		CHECK_STR(normalized, g.normalized);
	}

	struct Bad {
		const char *url, *error;
	} bad[] = {
		{"ftp://api.sequin.io/x", "scheme \"ftp\" is not allowed"},
		{"file:///etc/passwd", "scheme \"file\" is not allowed"},
		{"http://", "the URL has no host"},
		{"http:///v1/http-consumers/abc", "the URL has no host"},
		{"https://:443/x", "the URL has no host"},
		{"https://user:pass@api.sequin.io/x", "the URL must not contain a user name or password"},
		{"https://user@api.sequin.io/x", "the URL must not contain a user name or password"},
		{"https://@api.sequin.io/x", "the URL must not contain a user name or password"},
		{"https://api.sequin.io/x?token=1", "the URL must not have a query string"},
		{"https://api.sequin.io/x?", "the URL must not have a query string"},
		{"https://api.sequin.io/x#frag", "the URL must not have a fragment"},
		{"https://api.sequin.io/x#", "the URL must not have a fragment"},
		{"https://api.sequin.io/a b", "the URL must not contain whitespace or control characters"},
		{" https://api.sequin.io/x", "the URL must not contain whitespace or control characters"},
		{"https://api.sequin.io/x\n", "the URL must not contain whitespace or control characters"},
		{"https://api.sequin.io/\xc3\xa9", "the URL must contain only ASCII characters"},
		{"api.sequin.io/v1/http-consumers/abc", "the URL must start with http:// or https://"},
		{"http:/api.sequin.io/x", "the URL must start with http:// or https://"},
		{"https://api.sequin.io:99999/x", "the URL has an invalid port number"},
		{"https://api.sequin.io:0/x", "the URL has an invalid port number"},
		{"", "the URL is empty"},
	};
	for (const Bad &b : bad) {
		std::string normalized = "unchanged", error;
		CHECK(!ValidateEndpoint(b.url, &normalized, &error));
		CHECK_STR(error, b.error);
		CHECK_STR(normalized, "unchanged");
	}
	CHECK(!ValidateEndpoint(std::string(5000, 'a'), nullptr, nullptr));
	/* An embedded NUL must not cut the check short. */
	CHECK(!ValidateEndpoint(std::string_view("http://h/x\0y", 12), nullptr, nullptr));

	std::string host;
	CHECK(EndpointHost("https://API.Sequin.io/v1/x", &host));
	CHECK_STR(host, "api.sequin.io");
	CHECK(EndpointHost("http://[::1]:8080/x", &host));
	CHECK_STR(host, "[::1]");
	CHECK(!EndpointHost("not a url", &host));
}

void
TestCreate()
{
	std::string error;
	CHECK(!V1Client::Create("ftp://127.0.0.1/x", kToken, HttpSettings(), &error));
	CHECK_STR(error, "invalid consumer endpoint: scheme \"ftp\" is not allowed");
	std::string bad_token = std::string(kToken) + "\r\nX-Injected: 1";
	CHECK(!V1Client::Create(Base() + "ok", bad_token, HttpSettings(), &error));
	CHECK(error.find("token") != std::string::npos);
	CHECK(error.find(kToken) == std::string::npos);
	CHECK(!V1Client::Create(Base() + "ok", "", HttpSettings(), &error));
	CHECK_STR(error, "the API token is empty");
	auto client = Client("ok");
	CHECK(client != nullptr);
	if (client)
		CHECK_STR(client->ProtocolName(), "v1");
}

void
TestReceiveRequest()
{
	Reset();
	auto client = Client("ok/");
	if (!client)
		return;
	HttpResult r = Track(client->Receive(7, 250));
	CHECK(r.outcome == HttpOutcome::Ok);
	CHECK(r.Ok());
	CHECK(r.http_status == 200);
	CHECK(r.body.find("\"ack_token\": \"MTYyeJ7abUjl1pO\"") != std::string::npos);
	CHECK(r.error.empty());
	CHECK(r.retry_after == -1);
	LastRequest last = Last();
	CHECK_STR(last.method, "POST");
	CHECK_STR(last.path, "/v1/http-consumers/ok/next");
	CHECK_STR(last.Header("authorization"), std::string("Bearer ") + kToken);
	CHECK_STR(last.Header("content-type"), "application/json");
	CHECK_STR(last.Header("accept"), "application/json");
	CHECK_STR(last.Header("user-agent"), HttpDefaultUserAgent());
	CHECK(std::string(HttpDefaultUserAgent()).rfind("sequin_sync/", 0) == 0);
	CHECK(!last.Has("expect"));
	CHECK_STR(last.body, "{\"batch_size\":7,\"wait_for\":250}");

	/* Out-of-range arguments are clamped, not sent. */
	Track(client->Receive(0, -5));
	CHECK_STR(Last().body, "{\"batch_size\":1,\"wait_for\":0}");

	/* A custom user agent. */
	HttpSettings settings;
	settings.user_agent = "sequin_sync/test";
	std::string error;
	CHECK(client->UpdateSettings(settings, &error));
	CHECK(Track(client->Receive(1, 0)).Ok());
	CHECK_STR(Last().Header("user-agent"), "sequin_sync/test");
}

void
TestAckNack()
{
	Reset();
	auto client = Client("ok");
	if (!client)
		return;
	std::string t2 = "b\"2\\";
	std::vector<std::string_view> tokens = {"a1", t2};
	HttpResult r = Track(client->Ack(tokens));
	CHECK(r.Ok());
	CHECK(r.http_status == 204);
	CHECK(r.body.empty());
	LastRequest last = Last();
	CHECK_STR(last.path, "/v1/http-consumers/ok/ack");
	CHECK_STR(last.body, "{\"ack_tokens\":[\"a1\",\"b\\\"2\\\\\"]}");
	CHECK_STR(last.Header("content-type"), "application/json");
	CHECK_STR(last.Header("authorization"), std::string("Bearer ") + kToken);

	r = Track(client->Nack({"MTYyeJ7abUjl1pO"}));
	CHECK(r.Ok());
	last = Last();
	CHECK_STR(last.path, "/v1/http-consumers/ok/nack");
	CHECK_STR(last.body, "{\"ack_tokens\":[\"MTYyeJ7abUjl1pO\"]}");

	/* 200 (with an empty body) counts as success for an ack too. */
	auto client200 = Client("ok200");
	if (client200) {
		r = Track(client200->Ack({"x"}));
		CHECK(r.Ok());
		CHECK(r.http_status == 200);
	}

	/* No tokens: success without a request (the API wants a non-empty array). */
	int before = GetStats().requests;
	CHECK(Track(client->Ack({})).Ok());
	CHECK(Track(client->Nack({})).Ok());
	CHECK(GetStats().requests == before);

	/* A big ack (would get "Expect: 100-continue" by default) is sent at once. */
	std::vector<std::string> many(2000, "MTYyeJ7abUjl1pOMTYyeJ7abUjl1pO");
	std::vector<std::string_view> views(many.begin(), many.end());
	auto start = Clock::now();
	CHECK(Track(client->Ack(views)).Ok());
	CHECK(MsSince(start) < 900);
	last = Last();
	CHECK(!last.Has("expect"));
	CHECK(last.body.size() > 60000);
}

void
TestKeepAlive()
{
	Reset();
	auto client = Client("ok");
	auto client401 = Client("unauthorized");
	if (!client || !client401)
		return;
	for (int i = 0; i < 5; i++) {
		CHECK(Track(client->Receive(10, 0)).Ok());
		CHECK(Track(client->Ack({"t"})).Ok());
	}
	/* Two connections, each kept: one for /next, one for /ack and /nack. */
	Stats s = GetStats();
	CHECK(s.requests == 10);
	CHECK(s.connections == 2);
	if (s.connections != 2)
		fprintf(stderr, "    connections=%d requests=%d\n", s.connections, s.requests);

	/* Overlapped: an ack travels while a receive is in flight, on the same two connections. */
	Reset();
	for (int i = 0; i < 3; i++) {
		HttpResult next, ack;
		client->StartReceive(10, 0, &next);
		client->StartAck({"t1", "t2"}, &ack);
		client->FinishAck();
		client->FinishReceive();
		CHECK(Track(next).Ok());
		CHECK(Track(ack).Ok());
		CHECK(next.body.find("\"data\"") != std::string::npos);
	}
	/* Finishing twice, or with nothing in flight, is harmless. */
	client->FinishReceive();
	client->FinishAck();
	/* (connections counts those not seen before the reset: both were kept) */
	s = GetStats();
	CHECK(s.requests == 6);
	CHECK(s.connections == 0);
	if (s.connections != 0)
		fprintf(stderr, "    overlapped: connections=%d requests=%d\n", s.connections, s.requests);

	/* An error reply with a complete body keeps the connection too. */
	Reset();
	for (int i = 0; i < 3; i++)
		CHECK(Track(client401->Receive(1, 0)).outcome == HttpOutcome::HttpError);
	CHECK(GetStats().connections == 1);
}

void
TestHttpErrors()
{
	auto c401 = Client("unauthorized");
	auto c422 = Client("validation");
	auto c429 = Client("ratelimited");
	auto c429d = Client("ratelimiteddate");
	auto c500 = Client("servererror");
	auto c404 = Client("nosuchscenario");
	if (!c401 || !c422 || !c429 || !c429d || !c500 || !c404)
		return;

	HttpResult r = Track(c401->Receive(1, 0));
	CHECK(r.outcome == HttpOutcome::HttpError);
	CHECK(r.http_status == 401);
	CHECK_STR(r.summary, "Invalid API token");
	CHECK_STR(r.error, "the server returned HTTP status 401: Invalid API token");
	CHECK(r.retry_after == -1);
	CHECK(r.body.find("Invalid API token") != std::string::npos);

	/* summary after a nested member, with escapes, non-ASCII and a trailing newline (dropped). */
	r = Track(c422->Receive(1, 0));
	CHECK(r.http_status == 422);
	CHECK_STR(r.summary, "Validation failed: \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80");

	r = Track(c429->Receive(1, 0));
	CHECK(r.outcome == HttpOutcome::HttpError);
	CHECK(r.http_status == 429);
	CHECK(r.retry_after == 7);
	CHECK_STR(r.summary, "Too many requests");

	r = Track(c429d->Receive(1, 0));
	CHECK(r.http_status == 429);
	CHECK(r.retry_after >= 110 && r.retry_after <= 121);
	if (!(r.retry_after >= 110 && r.retry_after <= 121))
		Show("429 with a date", r);

	r = Track(c500->Ack({"t"}));
	CHECK(r.outcome == HttpOutcome::HttpError);
	CHECK(r.http_status == 500);
	CHECK(r.summary.empty());
	CHECK_STR(r.body, "internal error");
	CHECK_STR(r.error, "the server returned HTTP status 500");
	/* the next request on the same client is unaffected */
	CHECK(Track(c500->Receive(1, 0)).http_status == 500);

	r = Track(c404->Receive(1, 0));
	CHECK(r.http_status == 404);
	CHECK_STR(r.summary, "Not found: no consumer with id nosuchscenario");
}

void
TestRedirect()
{
	Reset();
	auto client = Client("redirect");
	if (!client)
		return;
	HttpResult r = Track(client->Receive(1, 0));
	CHECK(r.outcome == HttpOutcome::HttpError);
	CHECK(r.http_status == 302);
	CHECK_STR(r.error, "the server returned HTTP status 302; the redirect to "
					   "\"https://elsewhere.example/v1/http-consumers/x/next\" was not followed");
	CHECK(GetStats().requests == 1);
}

void
TestTooLarge()
{
	HttpSettings settings;
	settings.max_response_size = 1024 * 1024;
	const char *scenarios[] = {"huge", "hugechunked", "gzipbomb"};
	for (const char *scenario : scenarios) {
		auto client = Client(scenario, settings);
		if (!client)
			return;
		auto start = Clock::now();
		HttpResult r = Track(client->Receive(1, 0));
		CHECK(r.outcome == HttpOutcome::TooLarge);
		CHECK(r.body.size() <= settings.max_response_size);
		CHECK_STR(r.error, "the response is larger than the limit of 1048576 bytes");
		CHECK(MsSince(start) < 5000);
		if (r.outcome != HttpOutcome::TooLarge)
			Show(scenario, r);
		/* The client recovers: the next request works (on a new connection). */
		auto ok = Client("ok", settings);
		if (ok)
			CHECK(Track(ok->Receive(1, 0)).Ok());
	}
	/* Exactly at the limit is fine: the 10 MB reply with a 10 MB limit. */
	settings.max_response_size = 10 * 1024 * 1024;
	auto client = Client("hugechunked", settings);
	if (client) {
		HttpResult r = Track(client->Receive(1, 0));
		CHECK(r.Ok());
		CHECK(r.body.size() == 10 * 1024 * 1024);
	}
	/* gzip is decoded. */
	client = Client("gzip");
	if (client) {
		HttpResult r = Track(client->Receive(1, 0));
		CHECK(r.Ok());
		CHECK(r.body.rfind("{\"data\": []", 0) == 0);
	}
}

void
TestSlowServer()
{
	HttpSettings settings;
	settings.poll_margin_ms = 2000;
	auto client = Client("slow", settings);
	if (!client)
		return;
	auto start = Clock::now();
	HttpResult r = Track(client->Receive(1, 0));
	long ms = MsSince(start);
	CHECK(r.outcome == HttpOutcome::Timeout);
	CHECK(ms >= 1800 && ms < 4000);
	CHECK(!r.error.empty());
	if (r.outcome != HttpOutcome::Timeout || ms >= 4000)
		Show("slow", r);

	/* The total timeout is wait_for + margin: a long poll of 1 s with a 1 s margin. */
	settings.poll_margin_ms = 1000;
	client = Client("longpoll", settings);
	if (!client)
		return;
	start = Clock::now();
	r = Track(client->Receive(1, 1000));
	ms = MsSince(start);
	CHECK(r.outcome == HttpOutcome::Timeout);
	CHECK(ms >= 1900 && ms < 3500);
	if (r.outcome != HttpOutcome::Timeout)
		Show("longpoll timeout", r);
}

void
TestNetworkErrors()
{
	const char *scenarios[] = {"cut", "cutchunked"};
	for (const char *scenario : scenarios) {
		auto client = Client(scenario);
		if (!client)
			return;
		HttpResult r = Track(client->Receive(1, 0));
		CHECK(r.outcome == HttpOutcome::NetworkError);
		CHECK(!r.error.empty());
		CHECK(r.error[0] >= 'a' && r.error[0] <= 'z');
		if (r.outcome != HttpOutcome::NetworkError)
			Show(scenario, r);
	}

	/* Nothing listening: take a free port from the kernel, close it, connect to it. */
	std::string error;
	int closed_port = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	sockaddr_in addr = {};
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(addr);
	if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0 &&
		getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) == 0)
		closed_port = ntohs(addr.sin_port);
	if (fd >= 0)
		close(fd);
	auto client = V1Client::Create("http://127.0.0.1:" + std::to_string(closed_port) + "/x",
								   kToken, HttpSettings(), &error);
	CHECK(client != nullptr);
	if (client) {
		HttpResult r = Track(client->Receive(1, 0));
		CHECK(r.outcome == HttpOutcome::NetworkError);
		CHECK(r.error.find("connect") != std::string::npos);
		if (r.outcome != HttpOutcome::NetworkError)
			Show("refused", r);
	}

	/* TLS to a plain HTTP server: the handshake fails, an error and no body. */
	client = V1Client::Create("https://127.0.0.1:" + std::to_string(port) + "/v1/http-consumers/ok",
							  kToken, HttpSettings(), &error);
	if (client) {
		HttpResult r = Track(client->Receive(1, 0));
		CHECK(r.outcome == HttpOutcome::NetworkError);
		CHECK(r.body.empty());
	}
}

void
TestEmptyBody()
{
	auto client = Client("empty");
	if (!client)
		return;
	HttpResult r = Track(client->Receive(1, 0));
	CHECK(r.outcome == HttpOutcome::Ok);
	CHECK(r.http_status == 200);
	CHECK(r.body.empty());
	CHECK(r.error.empty());
}

struct AbortState {
	Clock::time_point at;
	int calls = 0;
};

bool
AbortWhenDue(void *arg)
{
	AbortState *s = static_cast<AbortState *>(arg);
	s->calls++;
	return Clock::now() >= s->at;
}

void
TestAbort()
{
	auto client = Client("longpoll");
	if (!client)
		return;
	AbortState state;
	state.at = Clock::now() + std::chrono::milliseconds(500);
	client->SetAbortCheck(AbortWhenDue, &state);
	auto start = Clock::now();
	HttpResult r = Track(client->Receive(100, 30000));
	long ms = MsSince(start);
	CHECK(r.outcome == HttpOutcome::Aborted);
	CHECK_STR(r.error, "the request was aborted");
	/* Due at 500 ms; the client asks every 100 ms, so it ends well within a second of that. */
	CHECK(ms >= 450 && ms < 1000);
	CHECK(state.calls >= 3);
	if (r.outcome != HttpOutcome::Aborted || ms >= 1000)
		Show("abort", r);

	/* Already due: no request is made at all. */
	Reset();
	r = Track(client->Receive(1, 0));
	CHECK(r.outcome == HttpOutcome::Aborted);
	CHECK(GetStats().requests == 0);

	/* Cleared: the client works again. */
	client->SetAbortCheck(nullptr, nullptr);
	auto ok = Client("ok");
	if (ok) {
		ok->SetAbortCheck(AbortWhenDue, &state);
		state.at = Clock::now() + std::chrono::hours(1);
		CHECK(Track(ok->Receive(1, 0)).Ok());
	}
}

void
TestTokenNeverInErrors()
{
	auto echo = Client("tokenecho");
	auto redirect = Client("redirecttoken");
	if (!echo || !redirect)
		return;
	HttpResult r = Track(echo->Receive(1, 0));
	CHECK(r.http_status == 401);
	CHECK_STR(r.summary, "token [redacted] is not valid");
	CHECK(r.body.find(kToken) != std::string::npos); /* the raw body is the caller's business */
	r = Track(redirect->Receive(1, 0));
	CHECK(r.http_status == 307);
	CHECK(r.error.find("[redacted]") != std::string::npos);

	/* A one-letter token is not scrubbed (it is no secret, and every "t" of every message would
	 * go): the fake's own 401 for it, "Unauthorized: the API token is invalid", stays readable. */
	std::string error;
	auto tiny = V1Client::Create(Base() + "tokenecho", "t", HttpSettings(), &error);
	CHECK(tiny != nullptr);
	if (tiny) {
		HttpResult t = tiny->Receive(1, 0);
		CHECK(t.http_status == 401);
		CHECK(t.summary.find("[redacted]") == std::string::npos);
		CHECK(t.summary.find("token") != std::string::npos);
	}


	size_t leaks = 0;
	for (const std::string &m : messages)
		if (m.find(kToken) != std::string::npos) {
			leaks++;
			fprintf(stderr, "    token in message: %s\n", m.c_str());
		}
	CHECK(leaks == 0);
	CHECK(messages.size() > 50);
}

void
TestOutcomeNames()
{
	CHECK_STR(HttpOutcomeName(HttpOutcome::Ok), "ok");
	CHECK_STR(HttpOutcomeName(HttpOutcome::TooLarge), "too large");
	CHECK_STR(HttpOutcomeName(HttpOutcome::Aborted), "aborted");
}

/* ---- Sequin Stream, against the fake's stream sinks (http_client_consumers.json) ---- */

const char *const kId1 = "0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11";
const char *const kId2 = "6F9619FF-8B86-D011-B42D-00C04FC964FF";

std::string
StreamBase()
{
	return "http://127.0.0.1:" + std::to_string(stream_port) + "/api/sequin_streams/";
}

std::unique_ptr<StreamClient>
Stream(const std::string &sink, const std::string &token = kToken)
{
	std::string error;
	auto client = StreamClient::Create(StreamBase() + sink, token, HttpSettings(), &error);
	if (!client)
		fprintf(stderr, "    cannot create stream client for %s: %s\n", sink.c_str(), error.c_str());
	return client;
}

void
TestStreamCreate()
{
	std::string error;
	CHECK(!StreamClient::Create("ftp://127.0.0.1/x", kToken, HttpSettings(), &error));
	CHECK_STR(error, "invalid consumer endpoint: scheme \"ftp\" is not allowed");
	CHECK(!StreamClient::Create(StreamBase() + "orders", "", HttpSettings(), &error));
	CHECK_STR(error, "the API token is empty");
	auto client = Stream("orders");
	CHECK(client != nullptr);
	if (client)
		CHECK_STR(client->ProtocolName(), "stream");

	/* The factory: the client of the protocol asked for, whatever the endpoint's path says. */
	auto s = CreateConsumerClient(Protocol::Stream, Base() + "ok", kToken, HttpSettings(), &error);
	CHECK(s != nullptr && std::string(s->ProtocolName()) == "stream");
	auto v = CreateConsumerClient(Protocol::V1, StreamBase() + "orders", kToken, HttpSettings(), &error);
	CHECK(v != nullptr && std::string(v->ProtocolName()) == "v1");
	CHECK(!CreateConsumerClient(Protocol::Stream, "nope", kToken, HttpSettings(), &error));
	CHECK_STR(error, "invalid consumer endpoint: the URL must start with http:// or https://");
}

void
TestStreamReceiveRequest()
{
	Reset(stream_port);
	auto client = Stream("orders/");
	if (!client)
		return;
	HttpResult r = Track(client->Receive(7, 600));
	CHECK(r.Ok());
	CHECK(r.http_status == 200);
	CHECK(r.retry_after == -1);
	LastRequest last = Last(stream_port);
	CHECK_STR(last.method, "POST");
	CHECK_STR(last.path, "/api/sequin_streams/orders/receive");
	CHECK_STR(last.Header("authorization"), std::string("Bearer ") + kToken);
	CHECK_STR(last.Header("content-type"), "application/json");
	CHECK_STR(last.Header("accept"), "application/json");
	CHECK(!last.Has("expect"));
	CHECK_STR(last.body, "{\"max_batch_size\":7,\"wait_for\":600}");

	/* The reply decodes: two items, the second without a message. */
	std::string body = r.body;
	json::Document doc;
	StreamReply reply;
	std::string error;
	CHECK(doc.Parse(&body[0], body.size()));
	CHECK(DecodeStreamReply(doc, &reply, &error));
	CHECK(reply.items.size() == 2);
	if (reply.items.size() == 2) {
		CHECK_STR(std::string(reply.items[0].ack_id), kId1);
		CHECK_STR(std::string(reply.items[1].ack_id), kId2);
		const json::Node *action = doc.Find(reply.items[0].message, "action");
		CHECK(action != nullptr && action->Str() == "insert");
		CHECK(reply.items[1].message == nullptr);
	}

	/* No wait: no "wait_for" at all (Sequin refuses 0, and the fake does too). */
	CHECK(Track(client->Receive(7, 0)).Ok());
	CHECK_STR(Last(stream_port).body, "{\"max_batch_size\":7}");
	/* Out-of-range arguments are clamped to what Sequin takes, not sent. */
	CHECK(Track(client->Receive(0, -5)).Ok());
	CHECK_STR(Last(stream_port).body, "{\"max_batch_size\":1}");
	CHECK(Track(client->Receive(5000, 0)).Ok());
	CHECK_STR(Last(stream_port).body, "{\"max_batch_size\":1000}");
	/* A wait_for under Sequin's 500 ms is sent as given: the fake answers as Sequin would. */
	r = Track(client->Receive(1, 200));
	CHECK(r.http_status == 400);
	CHECK(r.summary.find("Invalid `wait_for`") == 0);

	/* The legacy alias of the path works the same. */
	std::string legacy = "http://127.0.0.1:" + std::to_string(stream_port) +
						 "/api/http_pull_consumers/orders";
	auto alias = StreamClient::Create(legacy, kToken, HttpSettings(), &error);
	if (alias) {
		CHECK(Track(alias->Receive(2, 0)).Ok());
		CHECK_STR(Last(stream_port).path, "/api/http_pull_consumers/orders/receive");
	}

	/* Overlapped: an ack travels while a receive is in flight. */
	HttpResult next, ack;
	client->StartReceive(3, 0, &next);
	client->StartAck({kId1}, &ack);
	client->FinishAck();
	client->FinishReceive();
	CHECK(Track(next).Ok());
	CHECK(Track(ack).Ok());
	CHECK(next.body.find(kId2) != std::string::npos);
}

void
TestStreamAckNack()
{
	Reset(stream_port);
	auto client = Stream("orders");
	if (!client)
		return;
	HttpResult r = Track(client->Ack({kId1, kId2}));
	CHECK(r.Ok());
	CHECK(r.http_status == 200);
	LastRequest last = Last(stream_port);
	CHECK_STR(last.path, "/api/sequin_streams/orders/ack");
	CHECK_STR(last.body, std::string("{\"ack_ids\":[\"") + kId1 + "\",\"" + kId2 + "\"]}");
	CHECK_STR(last.Header("content-type"), "application/json");
	CHECK_STR(last.Header("accept"), "application/json");

	r = Track(client->Nack({kId2}));
	CHECK(r.Ok());
	last = Last(stream_port);
	CHECK_STR(last.path, "/api/sequin_streams/orders/nack");
	CHECK_STR(last.body, std::string("{\"ack_ids\":[\"") + kId2 + "\"]}");

	/* An id that is not a UUID makes Sequin refuse the whole list (the decoder never lets one
	 * through; this shows why). */
	r = Track(client->Ack({kId1, "MTYyeJ7abUjl1pO"}));
	CHECK(r.http_status == 400);
	CHECK(r.summary.find("Invalid ack_ids.") == 0);

	/* No ids: success without a request. */
	Reset(stream_port);
	CHECK(Track(client->Ack({})).Ok());
	CHECK(Track(client->Nack({})).Ok());
	CHECK_STR(Last(stream_port).path, "");
}

void
TestStreamErrors()
{
	auto missing = Stream("nosuchsink");
	auto badtoken = Stream("orders", "not-the-token");
	if (!missing || !badtoken)
		return;
	HttpResult r = Track(missing->Receive(1, 0));
	CHECK(r.outcome == HttpOutcome::HttpError);
	CHECK(r.http_status == 404);
	CHECK_STR(r.summary, "Not found: No `consumer` found matching the provided ID or name");
	CHECK_STR(r.error, "the server returned HTTP status 404: Not found: No `consumer` found matching the provided ID or name");
	r = Track(badtoken->Receive(1, 0));
	CHECK(r.http_status == 401);
	CHECK_STR(r.summary, "The API token you provided is invalid or has expired.");
	r = Track(badtoken->Ack({kId1}));
	CHECK(r.http_status == 401);

	/* Retry-After as libcurl reads it (CURLINFO_RETRY_AFTER): seconds, a date ahead, a date
	 * past (0), 0, and neither form (-1: the caller backs off as usual). */
	struct Case {
		const char *sink;
		long low, high;
	} cases[] = {
		{"ratelimited", 3, 3},   {"ratelimiteddate", 110, 121}, {"ratelimitedpast", 0, 0},
		{"ratelimitedzero", 0, 0}, {"ratelimitedjunk", -1, -1},
	};
	for (const Case &c : cases) {
		auto client = Stream(c.sink);
		if (!client)
			continue;
		r = Track(client->Receive(1, 0));
		CHECK(r.http_status == 429);
		CHECK_STR(r.summary, "Too many requests");
		CHECK(r.retry_after >= c.low && r.retry_after <= c.high);
		if (!(r.retry_after >= c.low && r.retry_after <= c.high))
			Show(c.sink, r);
	}

	/* One handle, a 429 with Retry-After, then a reply without: libcurl's remembered value is
	 * not reported again. */
	HttpConnection connection;
	std::string error;
	CHECK(connection.Init(kToken, HttpSettings(), &error));
	r = Track(connection.Post(StreamBase() + "ratelimited/receive", "{}", 0));
	CHECK(r.http_status == 429 && r.retry_after == 3);
	r = Track(connection.Post(StreamBase() + "orders/receive", "{}", 0));
	CHECK(r.Ok());
	CHECK(r.retry_after == -1);
}

SessionConfig
Config(const std::string &endpoint, Protocol protocol)
{
	SessionConfig sc;
	sc.endpoint = endpoint.c_str();
	sc.token = kToken;
	sc.connect_timeout_ms = 5000;
	sc.poll_margin_ms = 5000;
	sc.max_response_size = 1024 * 1024;
	sc.ca_file = nullptr;
	sc.protocol = protocol;
	return sc;
}

void
TestStreamSession()
{
	char error[256];
	std::string endpoint = StreamBase() + "orders";
	std::unique_ptr<PullSession> s(PullSession::Create(Config(endpoint, Protocol::Stream), error, sizeof(error)));
	CHECK(s != nullptr);
	if (!s) {
		fprintf(stderr, "    %s\n", error);
		return;
	}
	CHECK(s->GetProtocol() == Protocol::Stream);
	Reset(stream_port);
	CHECK(s->Pull(10, 600) == PullStatus::Ok);
	CHECK_STR(Last(stream_port).body, "{\"max_batch_size\":10,\"wait_for\":600}");
	CHECK(s->Count() == 2);
	CHECK(!s->HasPending());
	CHECK(s->EmptyPauseMs() == 0);
	CHECK(s->ReceiveElapsedMs() >= 0 && s->ReceiveElapsedMs() < 5000);
	if (s->Count() == 2) {
		/* Records are the messages: the item's "data", nullptr where it has none. */
		const json::Node *action = s->Doc()->Find(s->Records()[0], "action");
		CHECK(action != nullptr && action->Str() == "insert");
		CHECK(s->Records()[1] == nullptr);
	}
	s->StartAck();
	s->AwaitAck();
	CHECK(s->TakeConfirmedAcks() == 2);
	CHECK(s->TakeAckError() == nullptr);
	LastRequest last = Last(stream_port);
	CHECK_STR(last.path, "/api/sequin_streams/orders/ack");
	CHECK_STR(last.body, std::string("{\"ack_ids\":[\"") + kId1 + "\",\"" + kId2 + "\"]}");

	/* A prefetch asks without waiting (no "wait_for"), and Pull takes its reply. */
	CHECK(!s->MoreWaiting(10));
	CHECK(s->MoreWaiting(2));
	s->Prefetch(2);
	CHECK(s->Pull(2, 600) == PullStatus::Ok);
	CHECK(s->Count() == 2);
	CHECK_STR(Last(stream_port).body, "{\"max_batch_size\":2}");
	/* Given back: a nack with the ack ids. */
	CHECK(s->NackAll());
	last = Last(stream_port);
	CHECK_STR(last.path, "/api/sequin_streams/orders/nack");
	CHECK_STR(last.body, std::string("{\"ack_ids\":[\"") + kId1 + "\",\"" + kId2 + "\"]}");

	/* An empty reply that came back at once: the worker is told to pause, not to poll again. */
	std::string empty_endpoint = StreamBase() + "empty";
	std::unique_ptr<PullSession> e(PullSession::Create(Config(empty_endpoint, Protocol::Stream), error, sizeof(error)));
	if (e) {
		CHECK(e->Pull(10, 0) == PullStatus::Ok);
		CHECK(e->Count() == 0);
		long pause = e->EmptyPauseMs();
		CHECK(pause > 0 && pause <= kStreamEmptyCycleMs);
		CHECK(pause + e->ReceiveElapsedMs() == kStreamEmptyCycleMs);
	}

	/* A stream session asks for /receive whatever the endpoint's path says (the fake's v1
	 * consumer has none: 404). */
	std::string v1_as_stream = "http://127.0.0.1:" + std::to_string(port) + "/v1/http-consumers/ok";
	std::unique_ptr<PullSession> w(PullSession::Create(Config(v1_as_stream, Protocol::Stream), error, sizeof(error)));
	if (w) {
		CHECK(w->Pull(1, 0) == PullStatus::HttpError);
		CHECK(w->HttpStatus() == 404);
	}

	/* v1 is unchanged: the fake's "ok" consumer, its counters, no pause. */
	std::string v1 = Base() + "ok";
	SessionConfig v1_config = Config(v1, Protocol::V1);
	std::unique_ptr<PullSession> o(PullSession::Create(v1_config, error, sizeof(error)));
	CHECK(o != nullptr);
	if (o) {
		CHECK(o->GetProtocol() == Protocol::V1);
		CHECK(o->Pull(1, 0) == PullStatus::Ok);
		CHECK(o->Count() == 1);
		CHECK(o->HasPending() && o->Pending() == 0);
		CHECK(o->EmptyPauseMs() == 0);
	}
	/* A SessionConfig that never sets protocol is v1 (a worker built before Sequin Stream). */
	SessionConfig defaulted;
	CHECK(defaulted.protocol == Protocol::V1);
}


pthread_t signal_seen_by;
volatile sig_atomic_t signal_seen = 0;

void
NoteSignal(int)
{
	signal_seen_by = pthread_self();
	signal_seen = 1;
}

/*
 * The prefetch runs on a thread of the session (pull_session.hpp): its outcome is the session's
 * once Pull takes it, it is joined every time, ended within the grace of Drain or by the
 * destructor, and it never runs a signal handler (Postgres' handlers are the worker thread's).
 */
void
TestPrefetchThread()
{
	char error[256];
	/* A failed prefetch reads as the same failure as a Pull of its own. */
	std::unique_ptr<PullSession> u(PullSession::Create(Config(Base() + "unauthorized", Protocol::V1), error,
													   sizeof(error)));
	CHECK(u != nullptr);
	if (u) {
		CHECK(u->Pull(1, 0) == PullStatus::HttpError);
		std::string direct = u->LastError();
		u->Prefetch(1);
		CHECK(u->Pull(1, 0) == PullStatus::HttpError);
		CHECK(u->HttpStatus() == 401);
		CHECK_STR(std::string(u->LastError()), direct);
		CHECK_STR(direct, "receive failed: HTTP 401: Invalid API token");
	}

	/* PollAck takes an ack's answer once it is in, and never waits for it. */
	std::unique_ptr<PullSession> k(PullSession::Create(Config(Base() + "ok", Protocol::V1), error, sizeof(error)));
	if (k) {
		CHECK(k->Pull(1, 0) == PullStatus::Ok && k->Count() == 1);
		k->StartAck();
		int64_t confirmed = 0;
		long longest = 0;
		auto start = Clock::now();
		while (confirmed == 0 && MsSince(start) < 5000) {
			auto poll = Clock::now();
			k->PollAck();
			longest = std::max(longest, MsSince(poll));
			confirmed = k->TakeConfirmedAcks();
			if (confirmed == 0)
				usleep(1000);
		}
		CHECK(confirmed == 1);
		CHECK(longest < 100);
		CHECK(k->TakeAckError() == nullptr);
		k->PollAck(); /* nothing in flight: nothing happens */
		CHECK(k->TakeConfirmedAcks() == 0);
	}

	/* A prefetch per batch, many times: each is started, taken and joined. */
	std::unique_ptr<PullSession> o(PullSession::Create(Config(Base() + "ok", Protocol::V1), error, sizeof(error)));
	CHECK(o != nullptr);
	if (o) {
		int ok = 0;
		for (int i = 0; i < 50; i++) {
			o->Prefetch(1);
			o->Prefetch(1); /* a second call while one is on its way does nothing */
			if (o->Pull(1, 0) == PullStatus::Ok && o->Count() == 1 && o->Records()[0] != nullptr)
				ok++;
		}
		CHECK(ok == 50);
	}

	/* A prefetch stuck on a slow server: Drain gives it its grace, then stops it. */
	std::string slow_endpoint = Base() + "slow"; /* Config keeps a pointer to it */
	SessionConfig slow = Config(slow_endpoint, Protocol::V1);
	slow.poll_margin_ms = 20000;
	std::unique_ptr<PullSession> d(PullSession::Create(slow, error, sizeof(error)));
	CHECK(d != nullptr);
	if (d) {
		d->Prefetch(1);
		auto start = Clock::now();
		d->Drain(300);
		long ms = MsSince(start);
		CHECK(ms >= 250 && ms < 1500);
		if (ms >= 1500)
			fprintf(stderr, "    drain took %ld ms\n", ms);
	}
	/* ... and a session deleted with one on its way stops and joins it. */
	d.reset(PullSession::Create(slow, error, sizeof(error)));
	if (d) {
		d->Prefetch(1);
		auto start = Clock::now();
		d.reset();
		CHECK(MsSince(start) < 1500);
	}

	/* Drain gives back the messages of a prefetch that arrived. */
	std::unique_ptr<PullSession> g(PullSession::Create(Config(StreamBase() + "orders", Protocol::Stream), error,
													   sizeof(error)));
	if (g) {
		g->Prefetch(2);
		g->Drain(2000);
		LastRequest last = Last(stream_port);
		CHECK_STR(last.path, "/api/sequin_streams/orders/nack");
		CHECK_STR(last.body, std::string("{\"ack_ids\":[\"") + kId1 + "\",\"" + kId2 + "\"]}");
	}

	/*
	 * Signals: with SIGUSR1 blocked in this thread, one sent to the process while a prefetch is
	 * on its way stays pending (the thread blocks every signal), and runs here once unblocked.
	 */
	std::unique_ptr<PullSession> t(PullSession::Create(slow, error, sizeof(error)));
	if (t) {
		struct sigaction sa = {}, old_sa = {};
		sa.sa_handler = NoteSignal;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGUSR1, &sa, &old_sa);
		sigset_t usr1, old_mask;
		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
		t->Prefetch(1);
		signal_seen = 0;
		kill(getpid(), SIGUSR1);
		usleep(200 * 1000);
		CHECK(signal_seen == 0);
		pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
		CHECK(signal_seen == 1 && pthread_equal(signal_seen_by, pthread_self()));
		t->Drain(0);
		sigaction(SIGUSR1, &old_sa, nullptr);
	}
}

} /* namespace */

int
main(int argc, char **argv)
{
	/* A proxy from the environment would swallow requests to 127.0.0.1. */
	const char *proxies[] = {"http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
							 "ALL_PROXY"};
	for (const char *p : proxies)
		unsetenv(p);

	std::string error;
	if (!HttpGlobalInit(&error) || !HttpGlobalInit(&error)) {
		fprintf(stderr, "HttpGlobalInit failed: %s\n", error.c_str());
		return 1;
	}

	TestValidateEndpoint();
	TestEndpointHostAllowed();
	TestOutcomeNames();

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--port") == 0)
			port = atoi(argv[i + 1]);
	}
	if (port <= 0) {
		fprintf(stderr, "usage: %s --port N (the fake consumer's port; test/unit/run_http_client_test.sh "
						"starts it)\n",
				argv[0]);
		return 2;
	}
	stream_port = port;

	TestCreate();
	TestReceiveRequest();
	TestAckNack();
	TestKeepAlive();
	TestHttpErrors();
	TestRedirect();
	TestTooLarge();
	TestSlowServer();
	TestNetworkErrors();
	TestEmptyBody();
	TestAbort();
	TestStreamCreate();
	TestStreamReceiveRequest();
	TestStreamAckNack();
	TestStreamErrors();
	TestStreamSession();
	TestPrefetchThread();
	TestTokenNeverInErrors();

	curl_global_cleanup();
	printf("%d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
