# sequin_sync - PGXS build.  `make test` is the one command that installs what is missing, builds,
# installs and runs every test; `make demo` starts a throwaway cluster synced from a fake consumer.

EXTENSION    = sequin_sync
EXTVERSION   = $(shell grep default_version $(EXTENSION).control | sed -e "s/default_version[[:space:]]*=[[:space:]]*'\([^']*\)'/\1/")
MODULE_big   = sequin_sync

# The C++/Postgres boundary is a folder: src/pg/ holds the code that includes Postgres headers
# (built with -fno-exceptions, so a throw cannot even compile there), src/core/ the Postgres-free
# C++ (HTTP, JSON, records, the pull session), which may throw inside and ends its includes with
# core/cpp_only.hpp.  Flags and lint are derived from the folders.
PG_SRCS   = $(sort $(wildcard src/pg/*.cpp))
CORE_SRCS = $(sort $(wildcard src/core/*.cpp))
OBJS      = $(PG_SRCS:.cpp=.o) $(CORE_SRCS:.cpp=.o)

# The current install script, every upgrade script, and the first released version's install
# script (frozen), so the upgrade path from it can be tested (sql/upgrade.sql).
DATA         = $(EXTENSION)--$(EXTVERSION).sql $(wildcard sql/$(EXTENSION)--*--*.sql) sql/$(EXTENSION)--0.1.0.sql
EXTRA_CLEAN  = $(EXTENSION)--$(EXTVERSION).sql

# `make installcheck`, against a running server that preloads sequin_sync with
# sequin_sync.database at its default, empty (test/installcheck_prep.sh checks, then drops the
# regression database WITH (FORCE), in case a session of an earlier run is left).  Every test
# creates the extension itself.  pg_regress: sql/*.sql with expected/*.out, all but the live
# worker test, which needs the fake consumer `make test` starts; then the isolation tests,
# test/isolation/specs/*.spec with test/isolation/expected/*.out, in the same database.
TESTS        = $(wildcard sql/*.sql)
REGRESS      = $(sort $(filter-out $(EXTENSION)% worker,$(patsubst sql/%.sql,%,$(TESTS))))
REGRESS_PREP = installcheck-prep
ISOLATION    = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --use-existing

PG_CONFIG ?= pg_config
# `make test PG_CONFIG=/path/to/pg_config` tests against that installation: the scripts read it too.
export PG_CONFIG

# C++17; warnings are errors; Postgres' own CXXFLAGS come from pg_config.
PG_CPPFLAGS  = -I$(srcdir)/src -DSEQUIN_SYNC_VERSION='"$(EXTVERSION)"'
PG_CXXFLAGS  = -std=c++17 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
               -Wno-register -Werror
SHLIB_LINK   = -lcurl -lstdc++

# `make SANITIZE=1` (what `make test-sanitize` uses): UndefinedBehaviorSanitizer inside the server,
# plus a planted canary function (src/pg/module.cpp).  AddressSanitizer is for the unit tests and
# fuzzers only, which are built with it whole: inside Debian's server it could not intercept
# malloc (libc comes first in the global scope) and missed a planted stack overflow.
ifdef SANITIZE
PG_CXXFLAGS += -fsanitize=undefined -fno-omit-frame-pointer -DSEQUIN_SYNC_SANITIZE
SHLIB_LINK  += -fsanitize=undefined
endif

# No LLVM bitcode: the JIT gains nothing from this code, and it would need clang at build time.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The isolation tests run in the regression database (see installcheck above).
ISOLATION_TESTDB = $(CONTRIB_TESTDB)

# Postgres-side files never throw: built without exceptions.
$(PG_SRCS:.cpp=.o): override CXXFLAGS += -fno-exceptions

# Rebuild an object when a header it includes changes (shared structs must agree everywhere), and
# every object when the PostgreSQL it is built for or the sanitizer flag changes: the stamp file
# holds both, and is rewritten only when they differ from the last build's.
override CXXFLAGS += -MMD -MP
-include $(OBJS:.o=.d)
BUILD_STAMP := .build-stamp
BUILD_ID := $(shell $(PG_CONFIG) --version) $(shell $(PG_CONFIG) --includedir-server) SANITIZE=$(SANITIZE)
$(shell [ "$$(cat $(BUILD_STAMP) 2>/dev/null)" = "$(BUILD_ID)" ] || echo "$(BUILD_ID)" > $(BUILD_STAMP))
$(OBJS): $(BUILD_STAMP)
EXTRA_CLEAN += $(OBJS:.o=.d) $(BUILD_STAMP)

# The install script is kept as sql/sequin_sync.sql and copied to the versioned name at build time.
all: $(EXTENSION)--$(EXTVERSION).sql

$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql
	cp $< $@

.PHONY: test test-sanitize lint format format-check demo deps fuzz bench installcheck-prep

deps:
	@bash test/ensure_deps.sh

# The README's test command: dependencies, build, install, then every suite as an ordinary user.
test: deps
	$(MAKE) all
	bash test/install.sh
	bash test/run_tests.sh

# The whole suite again with the extension built with UBSan (the unit tests and fuzz replays with
# ASan + UBSan); any sanitizer report fails it.  Then the static checks.  It leaves the normal
# build installed.  SANITIZE=1 must reach the install's make too: the build stamp would otherwise
# see the flag change and rebuild without it.
test-sanitize:
	@bash test/ensure_deps.sh sanitize
	$(MAKE) clean
	$(MAKE) all SANITIZE=1
	SANITIZE=1 bash test/install.sh
	SANITIZE=1 bash test/run_tests.sh; rc=$$?; \
		$(MAKE) clean && $(MAKE) all && bash test/install.sh && exit $$rc
	$(MAKE) lint

# Static checks, both clean: clang-tidy with the checks in .clang-tidy, cppcheck with the
# suppressions in .cppcheck-suppressions.  Postgres-side files are checked against the server
# headers, the others without them.
lint:
	@command -v clang-tidy >/dev/null && command -v cppcheck >/dev/null || \
		{ echo "make lint needs clang-tidy and cppcheck (apt-get install clang-tidy cppcheck)" >&2; exit 1; }
	cppcheck --quiet --error-exitcode=1 --enable=warning,style,performance,portability --std=c++17 \
		--language=c++ --inline-suppr --suppressions-list=.cppcheck-suppressions -Isrc $(PG_SRCS) $(CORE_SRCS)
	clang-tidy --quiet $(CORE_SRCS) -- -std=c++17 -Isrc
	clang-tidy --quiet $(PG_SRCS) -- -std=c++17 -Wno-register -fno-exceptions -D_GNU_SOURCE -Isrc \
		-I$(shell $(PG_CONFIG) --includedir-server)

# The layout in .clang-format, applied to src/ (`make format`) or only checked (`make format-check`,
# which fails on the first file that would change).
FORMAT_FILES = $(PG_SRCS) $(CORE_SRCS) $(sort $(wildcard src/pg/*.hpp src/core/*.hpp))
CLANG_FORMAT ?= clang-format
format:
	@command -v $(CLANG_FORMAT) >/dev/null || { echo "make format needs clang-format (apt-get install clang-format)" >&2; exit 1; }
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check:
	@command -v $(CLANG_FORMAT) >/dev/null || { echo "make format-check needs clang-format (apt-get install clang-format)" >&2; exit 1; }
	$(CLANG_FORMAT) --dry-run --Werror $(FORMAT_FILES)

demo: deps
	$(MAKE) all
	bash test/install.sh
	bash test/demo.sh

installcheck-prep:
	@bash test/installcheck_prep.sh '$(bindir)/psql' '$(CONTRIB_TESTDB)'

# The benchmark: sequin_sync against Postgres' own set-based upsert and an external Python
# worker, on the same records, in one run (see README, Performance).  BENCH_ARGS=--quick for a
# short run.
bench: deps
	$(MAKE) all
	bash test/install.sh
	python3 test/bench.py $(BENCH_ARGS)

# libFuzzer (clang from Debian's packages) on the reply decoders (fuzz_json_doc, seeded with
# test/fixtures too) and on the record-to-row layer and the Sequin Stream message checks (fuzz_record,
# seeded with test/unit/corpus/stream_message too), FUZZ_SECONDS each; new inputs
# go to test/unit/bin/corpus/, crashing ones to test/unit/bin/crash-*.  Fix the crash, then add
# its input to test/unit/corpus/json_doc/ or test/unit/corpus/record/: `make test` replays both.
FUZZ_SECONDS ?= 60
FUZZ_CXX = clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Isrc
fuzz:
	@command -v clang++ >/dev/null || { echo "make fuzz needs clang (apt-get install clang)" >&2; exit 1; }
	mkdir -p test/unit/bin/corpus/json_doc test/unit/bin/corpus/record
	$(FUZZ_CXX) src/core/json_doc.cpp src/core/next_reply.cpp src/core/stream_reply.cpp src/core/record.cpp \
		test/unit/fuzz_json_doc.cpp -o test/unit/bin/fuzz_json_doc
	$(FUZZ_CXX) src/core/json_doc.cpp src/core/next_reply.cpp src/core/record.cpp src/core/stream_reply.cpp \
		src/core/stream_message.cpp test/unit/fuzz_record.cpp -o test/unit/bin/fuzz_record
	test/unit/bin/fuzz_json_doc -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=test/unit/bin/ \
		test/unit/bin/corpus/json_doc test/unit/corpus/json_doc test/fixtures
	test/unit/bin/fuzz_record -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=test/unit/bin/ \
		test/unit/bin/corpus/record test/unit/corpus/record test/unit/corpus/json_doc test/unit/corpus/stream_message
