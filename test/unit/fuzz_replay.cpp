/*
 * fuzz_replay.cpp - runs a libFuzzer target over saved inputs without libFuzzer, so `make test`
 * replays the committed corpus with any compiler.  Usage: fuzz_replay FILE|DIR...
 * Prints "N passed, 0 failed" (a crash or sanitizer report fails the run by itself).  A path
 * that does not exist, or no input at all, fails the run: a replay of nothing proves nothing.
 */
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

namespace {

int
RunFile(const std::filesystem::path &path)
{
	std::ifstream in(path, std::ios::binary);
	std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
	LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
	return 1;
}

} /* namespace */

int
main(int argc, char **argv)
{
	int passed = 0;
	for (int i = 1; i < argc; i++) {
		std::filesystem::path p(argv[i]);
		if (!std::filesystem::exists(p)) {
			fprintf(stderr, "fuzz_replay: %s does not exist\n", argv[i]);
			return 1;
		}
		if (std::filesystem::is_directory(p)) {
			for (const auto &entry : std::filesystem::directory_iterator(p))
				if (entry.is_regular_file())
					passed += RunFile(entry.path());
		} else {
			passed += RunFile(p);
		}
	}
	if (passed == 0) {
		fprintf(stderr, "fuzz_replay: no input to replay (an empty corpus?)\n");
		printf("0 passed, 1 failed\n");
		return 1;
	}
	printf("%d passed, 0 failed\n", passed);
	return 0;
}
