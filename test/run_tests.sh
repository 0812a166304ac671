#!/usr/bin/env bash
# Runs every sequin_sync test suite: the C++ unit tests, pg_regress, the isolation tests and the
# Python tests.  initdb and postgres refuse to run as root, so as root the suites run as the
# ordinary user "sequin_test" (created if missing) in a scratch copy of the test files.
#
# Usage: test/run_tests.sh            (after make && make install; `make test` does all of it)
#        SUITES="pg_regress fault" test/run_tests.sh    only those suites
#        SUITES=hostile PYTEST_ADDOPTS="-k utf8" test/run_tests.sh    only some pytest cases
# Keeps going after a failing suite and ends with "N passed, M failed" over the suites.
# The Python suites are the pytest modules test/test_*.py (fixtures in test/conftest.py), one
# suite each.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
pg_config=${PG_CONFIG:-pg_config}
bindir=$("$pg_config" --bindir)
pgxs_dir=$(dirname "$(dirname "$(dirname "$("$pg_config" --pgxs)")")")
pg_regress="$pgxs_dir/src/test/regress/pg_regress"
pg_isolation_regress="$pgxs_dir/src/test/isolation/pg_isolation_regress"

work=$(mktemp -d /tmp/sequin_sync_test.XXXXXX)
cp -r "$repo/sql" "$repo/expected" "$repo/test" "$work/"
mkdir -p "$work/isolation"
chmod -R a+rX "$work"

run_as_tester() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u sequin_test -- "$@"
	else
		"$@"
	fi
}

if [ "$(id -u)" -eq 0 ]; then
	id sequin_test >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin sequin_test
	chown -R sequin_test "$work"
fi

# SANITIZE=1 (make test-sanitize): the extension was built with UBSan, whose runtime comes in with
# the library; the unit tests are built here with ASan + UBSan.  Every report goes under
# $work/sanitizer, which the last suite requires to stay empty.  Leak detection is off in the unit
# tests' ASan: they keep a few process-lifetime allocations on purpose.
sanitizer_dir="$work/sanitizer"
unit_cxxflags="-std=c++17 -O1 -g -Wall -Wextra -Werror"
if [ -n "${SANITIZE:-}" ]; then
	unit_cxxflags="$unit_cxxflags -fsanitize=address,undefined -fno-omit-frame-pointer"
	mkdir -p "$sanitizer_dir"
	chmod 777 "$sanitizer_dir"
	export ASAN_OPTIONS="verify_asan_link_order=0:detect_leaks=0:log_path=$sanitizer_dir/asan"
	# UndefinedBehaviorSanitizer reports inside the server go to its log: make them fatal, so
	# they end the backend and the suite that caused them fails; the logs are searched too.
	export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$sanitizer_dir/ubsan"
fi

# Compiles a unit test (with the sanitizers under SANITIZE=1).
build_unit() {
	# shellcheck disable=SC2086
	g++ $unit_cxxflags "$@"
}

sanitizer_reports() {
	local reports
	reports=$(find "$sanitizer_dir" -type f 2>/dev/null;
		grep -l -s -E "runtime error:|ERROR: AddressSanitizer" "$work"/log/*.log "$work"/isolation/log/*.log)
	if [ -n "$reports" ]; then
		echo "sanitizer reports:"
		for r in $reports; do
			echo "--- $r"
			head -60 "$r"
		done
		return 1
	fi
	echo "no sanitizer reports"
}

passed=0
failed=0
failures=()
# SUITES="pg_regress isolation" runs only the suites whose names contain one of those words.
suite() {
	local name=$1
	shift
	if [ -n "${SUITES:-}" ]; then
		local want match=
		for want in $SUITES; do
			case "$name" in *"$want"*) match=1 ;; esac
		done
		[ -n "$match" ] || return 0
	fi
	echo "=== $name"
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$name")
	fi
}

unit_tests() {
	local out="$work/unit"
	mkdir -p "$out"
	build_unit -I"$repo/src" "$repo/src/core/json_doc.cpp" "$repo/src/core/next_reply.cpp" \
		"$repo/test/unit/json_doc_test.cpp" -o "$out/json_doc_test" &&
		"$out/json_doc_test" "$repo/test/fixtures" &&
		echo "replaying the fuzz corpus:" &&
		build_unit -I"$repo/src" "$repo/src/core/json_doc.cpp" "$repo/src/core/next_reply.cpp" "$repo/src/core/record.cpp" \
			"$repo/src/core/stream_reply.cpp" "$repo/test/unit/fuzz_json_doc.cpp" "$repo/test/unit/fuzz_replay.cpp" \
			-o "$out/fuzz_replay" &&
		"$out/fuzz_replay" "$repo/test/unit/corpus/json_doc" "$repo/test/fixtures" &&
		mkdir -p "$out/empty_corpus" &&
		if "$out/fuzz_replay" "$out/empty_corpus" >/dev/null 2>&1; then
			echo "FAIL: fuzz_replay passed an empty corpus"
			false
		else
			echo "an empty corpus fails the replay: ok"
		fi &&
		echo "record layer:" &&
		build_unit -I"$repo/src" "$repo/src/core/json_doc.cpp" "$repo/src/core/record.cpp" \
			"$repo/src/core/batch_prep.cpp" "$repo/src/core/stream_message.cpp" "$repo/test/unit/record_test.cpp" \
			-o "$out/record_test" &&
		"$out/record_test" &&
		echo "Sequin Stream messages:" &&
		build_unit -I"$repo/src" "$repo/src/core/json_doc.cpp" "$repo/src/core/stream_message.cpp" \
			"$repo/test/unit/stream_message_test.cpp" -o "$out/stream_message_test" &&
		"$out/stream_message_test" &&
		echo "replaying the record fuzz corpus:" &&
		build_unit -I"$repo/src" "$repo/src/core/json_doc.cpp" "$repo/src/core/next_reply.cpp" \
			"$repo/src/core/record.cpp" "$repo/src/core/stream_reply.cpp" "$repo/src/core/stream_message.cpp" \
			"$repo/test/unit/fuzz_record.cpp" "$repo/test/unit/fuzz_replay.cpp" -o "$out/fuzz_record_replay" &&
		"$out/fuzz_record_replay" "$repo/test/unit/corpus/record" "$repo/test/unit/corpus/json_doc" \
			"$repo/test/unit/corpus/stream_message" &&
		echo "consumer protocols:" &&
		build_unit -I"$repo/src" "$repo/src/core/protocol.cpp" "$repo/test/unit/protocol_test.cpp" \
			-o "$out/protocol_test" &&
		"$out/protocol_test" &&
		echo "Sequin Stream replies:" &&
		build_unit -I"$repo/src" "$repo/src/core/json_doc.cpp" "$repo/src/core/next_reply.cpp" \
			"$repo/src/core/stream_reply.cpp" "$repo/test/unit/stream_reply_test.cpp" -o "$out/stream_reply_test" &&
		"$out/stream_reply_test"
}

http_client_test() {
	local out="$work/unit"
	mkdir -p "$out"
	build_unit -I"$repo/src" "$repo/src/core/endpoint.cpp" "$repo/src/core/http_client.cpp" "$repo/src/core/next_reply.cpp" \
		"$repo/src/core/stream_reply.cpp" "$repo/src/core/protocol.cpp" "$repo/src/core/json_doc.cpp" \
		"$repo/src/core/pull_session.cpp" "$repo/src/core/batch_prep.cpp" "$repo/src/core/record.cpp" \
		"$repo/src/core/stream_message.cpp" \
		"$repo/test/unit/http_client_test.cpp" -lcurl -o "$out/http_client_test" &&
		bash "$repo/test/unit/run_http_client_test.sh" "$out/http_client_test"
}

# The fake Sequin consumer for the worker tests; its port reaches SQL as a setting.
start_fake() {
	run_as_tester python3 "$work/test/fake_sequin.py" --port 0 --port-file "$work/fake.port" --quiet >/dev/null &
	fake_pid=$!
	for _ in $(seq 1 100); do
		[ -s "$work/fake.port" ] && break
		sleep 0.1
	done
	[ -s "$work/fake.port" ] || { echo "the fake consumer did not start" >&2; return 1; }
	{
		echo "sequin_sync_test.fake_port = $(cat "$work/fake.port")"
		echo "sequin_sync_test.dir = '$work'"
	} >>"$work/test/regress.conf"
}

stop_fake() {
	# runuser does not pass the signal on: stop the fake itself, found by its path.
	pkill -f "$work/test/fake_sequin.py" 2>/dev/null
	[ -n "${fake_pid:-}" ] && wait "$fake_pid" 2>/dev/null
	fake_pid=
}

regress() {
	start_fake || return 1
	local tests
	tests=$(cd "$work/sql" && ls ./*.sql | sed -e 's|^\./||' -e 's|\.sql$||' | grep -v '^sequin_sync' | sort)
	# shellcheck disable=SC2086
	run_as_tester "$pg_regress" --temp-instance="$work/tmp_check" --temp-config="$work/test/regress.conf" \
		--inputdir="$work" --outputdir="$work" --bindir="$bindir" --encoding=UTF8 --no-locale \
		--dbname=contrib_regression $tests
	local rc=$?
	stop_fake
	[ $rc -eq 0 ] || { [ -f "$work/regression.diffs" ] && cat "$work/regression.diffs"; }
	return $rc
}

# The isolation tests: test/isolation/specs/*.spec, their expected output in test/isolation/expected.
isolation() {
	local specs
	specs=$(cd "$work/test/isolation/specs" && ls ./*.spec | sed -e 's|^\./||' -e 's|\.spec$||' | sort)
	# shellcheck disable=SC2086
	run_as_tester "$pg_isolation_regress" --temp-instance="$work/tmp_check_iso" \
		--temp-config="$work/test/isolation.conf" --inputdir="$work/test/isolation" --outputdir="$work/isolation" \
		--bindir="$bindir" --encoding=UTF8 --no-locale --dbname=isolation_regression $specs
	local rc=$?
	[ $rc -eq 0 ] || { [ -f "$work/isolation/regression.diffs" ] && cat "$work/isolation/regression.diffs"; }
	return $rc
}

# A Python suite: one pytest module of test/, run from the copy in $work (conftest.py gives it
# throwaway clusters, run as sequin_test when we are root, and the fake consumer; SEQUIN_SYNC_REPO
# is the tree itself, for the suites that build or copy it).  Debian's python3, which has
# python3-pytest (another python3 may come first on PATH).  -v: one line per test, so the log
# names every case and check.  PYTEST_ADDOPTS reaches pytest.
pytest_suite() {
	(cd "$work/test" && SEQUIN_SYNC_REPO="$repo" PYTHONDONTWRITEBYTECODE=1 \
		/usr/bin/python3 -m pytest -v -p no:cacheprovider "$1")
}

# The version lives in the control file; the Makefile reads it; META.json must say the same.
metadata() {
	local v
	v=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$repo/sequin_sync.control")
	python3 -c "
import json, sys
m = json.load(open('$repo/META.json'))
ok = m['version'] == '$v' and m['provides']['sequin_sync']['version'] == '$v'
print('META.json version', m['version'], 'control', '$v', 'ok' if ok else 'MISMATCH')
sys.exit(0 if ok else 1)"
}

suite "metadata" metadata
suite "unit tests (json decoder)" unit_tests
suite "unit tests (http client)" http_client_test
suite "pg_regress" regress
suite "isolation" isolation
for module in $(cd "$repo/test" && ls test_*.py | sort); do
	suite "python: ${module%.py}" pytest_suite "$module"
done
[ -n "${SANITIZE:-}" ] && suite "sanitizer reports" sanitizer_reports

echo
if [ $failed -eq 0 ]; then
	echo "all $passed suites passed (outputs in $work)"
	rm -rf "$work"
else
	echo "failed suites: ${failures[*]} (outputs kept in $work)"
fi
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
