/*
 * protocol_test.cpp - unit test of the consumer protocols' names and their detection from an
 * endpoint (src/core/protocol.cpp): what create_consumer(protocol => NULL) decides.
 *
 *   g++ -std=c++17 -Isrc src/core/protocol.cpp test/unit/protocol_test.cpp -o /tmp/protocol_test
 */
#include "core/protocol.hpp"

#include "unit_check.hpp"

using namespace sequin_sync;

namespace {

void
TestNames()
{
	CHECK_EQ(ProtocolName(Protocol::V1), "v1");
	CHECK_EQ(ProtocolName(Protocol::Stream), "stream");

	Protocol p = Protocol::Stream;
	CHECK(ParseProtocol("v1", &p));
	CHECK(p == Protocol::V1);
	CHECK(ParseProtocol("stream", &p));
	CHECK(p == Protocol::Stream);
	/* Exact and lower case only; a refused name leaves *out alone. */
	const char *bad[] = {"", "V1", "Stream", "STREAM", " v1", "v1 ", "v2", "sequin_stream", "http"};
	for (const char *name : bad) {
		p = Protocol::Stream;
		CHECK(!ParseProtocol(name, &p));
		CHECK(p == Protocol::Stream);
	}
	CHECK(!ParseProtocol(std::string_view("v1\0", 3), &p));
	/* Every name round-trips. */
	for (Protocol q : {Protocol::V1, Protocol::Stream}) {
		Protocol back = q == Protocol::V1 ? Protocol::Stream : Protocol::V1;
		CHECK(ParseProtocol(ProtocolName(q), &back));
		CHECK(back == q);
	}
}

void
TestDetect()
{
	struct Case {
		const char *url;
		int want; /* 0 v1, 1 stream, -1 neither */
	} cases[] = {
		/* cloud, by name and by id */
		{"https://api.sequinstream.com/api/sequin_streams/orders", 1},
		{"https://api.sequinstream.com/api/sequin_streams/0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11", 1},
		/* self-hosted, the legacy alias, the default port */
		{"http://localhost:7376/api/http_pull_consumers/0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11", 1},
		{"http://localhost:7376/api/sequin_streams/orders_feed", 1},
		/* behind a path prefix */
		{"https://proxy.example/sequin/api/sequin_streams/orders", 1},
		{"https://proxy.example/a/b/api/http_pull_consumers/orders", 1},
		{"https://proxy.example/sequin/v1/http-consumers/c1", 0},
		/* Generation 1 */
		{"https://api.sequin.io/v1/http-consumers/c1", 0},
		{"http://127.0.0.1:8080/v1/http-consumers/0f0c9a1e-2b7b-4c1e-9a5e-6a7f1f0d9b11", 0},
		/* the trailing segment missing */
		{"https://api.sequinstream.com/api/sequin_streams", -1},
		{"https://api.sequinstream.com/api/sequin_streams/", -1},
		{"http://localhost:7376/api/http_pull_consumers", -1},
		{"https://api.sequin.io/v1/http-consumers", -1},
		{"https://api.sequin.io/v1/http-consumers/", -1},
		/* a segment too many: "receive" is what the client appends, not part of the endpoint */
		{"https://api.sequinstream.com/api/sequin_streams/orders/receive", -1},
		{"https://api.sequin.io/v1/http-consumers/c1/next", -1},
		/* neither form */
		{"https://api.sequinstream.com/", -1},
		{"https://api.sequinstream.com", -1},
		{"https://api.sequinstream.com/api/sinks/orders", -1},
		{"https://api.sequinstream.com/orders", -1},
		{"https://api.sequin.io/v2/http-consumers/c1", -1},
		/* the prefix must start a segment */
		{"https://x.example/xapi/sequin_streams/orders", -1},
		{"https://x.example/xv1/http-consumers/c1", -1},
		/* the form in the host, not the path */
		{"https://api.sequin_streams.example/orders", -1},
		/* not a URL */
		{"api/sequin_streams/orders", -1},
		{"", -1},
	};
	for (const Case &c : cases) {
		Protocol p = Protocol::V1;
		bool ok = DetectProtocol(c.url, &p);
		int got = !ok ? -1 : (p == Protocol::Stream ? 1 : 0);
		if (got != c.want)
			std::printf("    %s: got %d, want %d\n", c.url, got, c.want);
		CHECK(got == c.want);
	}
	/* A refused endpoint leaves *out alone. */
	Protocol p = Protocol::Stream;
	CHECK(!DetectProtocol("https://api.sequinstream.com/", &p));
	CHECK(p == Protocol::Stream);
}

} /* namespace */

int
main()
{
	TestNames();
	TestDetect();
	return Summary();
}
