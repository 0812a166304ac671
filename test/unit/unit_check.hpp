/*
 * unit_check.hpp - the little test harness the C++ unit tests share: CHECK and CHECK_EQ count
 * and print failures, Parsed parses a document from an exact-size heap copy of its text (so
 * AddressSanitizer catches any read past the end), ReadFixture reads test/fixtures/, and
 * Summary prints "N passed, M failed" and gives the exit code.  One test file per program
 * includes it; a program need not use every helper.
 */
#ifndef SEQUIN_SYNC_UNIT_CHECK_HPP
#define SEQUIN_SYNC_UNIT_CHECK_HPP

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>

#include "core/json_doc.hpp"

namespace {

int passed = 0;
int failed = 0;

void
Check(bool ok, const char *what, int line)
{
	if (ok) {
		passed++;
		return;
	}
	failed++;
	std::printf("FAILED line %d: %s\n", line, what);
}

/* Printable form of a byte string for failure messages. */
std::string
Show(std::string_view s)
{
	std::string out;
	size_t limit = s.size() > 300 ? 300 : s.size();
	for (size_t i = 0; i < limit; i++) {
		unsigned char c = static_cast<unsigned char>(s[i]);
		if (c < 0x20 || c >= 0x7F) {
			char buf[8];
			std::snprintf(buf, sizeof(buf), "\\x%02x", c);
			out += buf;
		} else
			out += static_cast<char>(c);
	}
	if (limit < s.size())
		out += "...(" + std::to_string(s.size()) + " bytes)";
	return out;
}

void
CheckEq(std::string_view got, std::string_view want, const char *what, int line)
{
	if (got == want) {
		passed++;
		return;
	}
	failed++;
	std::printf("FAILED line %d: %s\n    got:  %s\n    want: %s\n", line, what, Show(got).c_str(),
				Show(want).c_str());
}

#define CHECK(cond) Check((cond), #cond, __LINE__)
#define CHECK_EQ(got, want) CheckEq((got), (want), #got " == " #want, __LINE__)

/* A document parsed from an exact-size copy of `text` (the buffer must outlive the doc). */
class Parsed {
public:
	explicit Parsed(std::string_view text) : len_(text.size()), buf_(new char[text.size()])
	{
		if (len_ != 0)
			std::memcpy(buf_.get(), text.data(), len_);
		ok = doc.Parse(buf_.get(), len_);
	}
	const sequin_sync::json::Node *Root() const { return doc.Root(); }
	std::string Error() const { return doc.ErrorMessage(); }

	size_t len_;
	std::unique_ptr<char[]> buf_;
	sequin_sync::json::Document doc;
	bool ok = false;
};

/* test/fixtures/, found from this file (test/unit/) as named on the compile command line; a test
 * may set another. */
std::string fixture_dir = [] {
	std::string here = __FILE__;
	size_t slash = here.rfind('/');
	return (slash == std::string::npos ? std::string(".") : here.substr(0, slash)) + "/../fixtures";
}();

[[maybe_unused]] std::string
ReadFixture(const char *name)
{
	std::string path = fixture_dir + "/" + name;
	std::ifstream in(path, std::ios::binary);
	if (!in) {
		std::printf("cannot read fixture %s\n", path.c_str());
		failed++;
		return std::string();
	}
	std::ostringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

/* Deep documents for the tests that nothing recurses: n levels of arrays, of objects
 * ({"a":...{}...}), and of both with siblings at every level. */
[[maybe_unused]] std::string
DeepArrays(size_t n)
{
	return std::string(n, '[') + std::string(n, ']');
}

[[maybe_unused]] std::string
DeepObjects(size_t n)
{
	std::string text;
	text.reserve(n * 7);
	for (size_t i = 0; i < n; i++)
		text += "{\"a\":";
	text += "{}";
	text += std::string(n, '}');
	return text;
}

[[maybe_unused]] std::string
DeepMixed(size_t n)
{
	std::string text;
	for (size_t i = 0; i < n / 2; i++)
		text += "[1,{\"k\":";
	text += "null";
	for (size_t i = 0; i < n / 2; i++)
		text += ",\"z\":2},3]";
	return text;
}

/* Prints the totals; the program's exit code. */
int
Summary()
{
	std::printf("%d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}

} /* namespace */

#endif
