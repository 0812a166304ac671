/*
 * fuzz_replay.cpp - runs a libFuzzer target over saved inputs without libFuzzer, so `make test`
 * replays the committed corpus with any compiler.  Usage: fuzz_replay FILE|DIR...
 * Prints "N passed, 0 failed" (a crash or sanitizer report fails the run by itself).  A replay
 * that replayed nothing proves nothing: a path that does not exist or cannot be read, or no
 * input at all (an empty corpus directory, no arguments), fails with a message and exit code 1.
 */
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

namespace {

/* Replays one file; false (with a message) when it cannot be read. */
bool
RunFile(const std::filesystem::path &path)
{
	std::ifstream in(path, std::ios::binary);
	if (!in) {
		std::fprintf(stderr, "fuzz_replay: cannot read %s\n", path.c_str());
		return false;
	}
	std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
	if (in.bad()) {
		std::fprintf(stderr, "fuzz_replay: cannot read %s\n", path.c_str());
		return false;
	}
	LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
	return true;
}

} /* namespace */

int
main(int argc, char **argv)
{
	int passed = 0;
	bool ok = true;
	for (int i = 1; i < argc; i++) {
		std::filesystem::path p(argv[i]);
		std::error_code ec;
		if (std::filesystem::is_directory(p, ec)) {
			for (const auto &entry : std::filesystem::directory_iterator(p, ec))
				if (entry.is_regular_file()) {
					if (RunFile(entry.path()))
						passed++;
					else
						ok = false;
				}
			if (ec) {
				std::fprintf(stderr, "fuzz_replay: cannot list %s: %s\n", argv[i], ec.message().c_str());
				ok = false;
			}
		} else if (std::filesystem::is_regular_file(p, ec)) {
			if (RunFile(p))
				passed++;
			else
				ok = false;
		} else {
			std::fprintf(stderr, "fuzz_replay: %s is neither a file nor a directory\n", argv[i]);
			ok = false;
		}
	}
	if (passed == 0) {
		std::fprintf(stderr, "fuzz_replay: no input was replayed (an empty corpus proves nothing)\n");
		return 1;
	}
	if (!ok)
		return 1;
	printf("%d passed, 0 failed\n", passed);
	return 0;
}
