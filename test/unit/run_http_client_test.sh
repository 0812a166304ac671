#!/usr/bin/env bash
# run_http_client_test.sh - runs the HTTP client unit test (http_client_test.cpp) against the fake
# consumer (test/fake_sequin.py) with the consumers of test/fixtures/http_client_consumers.json
# (v1 consumers and Sequin Stream sinks): starts it on a free 127.0.0.1 port, passes the port to
# the test binary, stops it whatever happens, and exits with the test's status.
#
#   bash test/unit/run_http_client_test.sh /tmp/http_client_test
set -euo pipefail

bin=${1:?usage: run_http_client_test.sh <http_client_test binary>}
test_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/http_client_test.XXXXXX")
fake_pid=

cleanup() {
	local pid
	for pid in $fake_pid; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

# A proxy from the environment would swallow the requests to 127.0.0.1.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

python3 "$test_dir/fake_sequin.py" --port 0 --port-file "$work/port" --quiet \
	--setup "$test_dir/fixtures/http_client_consumers.json" >/dev/null &
fake_pid=$!

# wait_port <file> <pid> <what>
wait_port() {
	for _ in $(seq 1 200); do
		[[ -s $1 ]] && return 0
		if ! kill -0 "$2" 2>/dev/null; then
			echo "run_http_client_test.sh: $3 exited before listening" >&2
			exit 1
		fi
		sleep 0.05
	done
	echo "run_http_client_test.sh: $3 did not write its port" >&2
	exit 1
}
wait_port "$work/port" "$fake_pid" "the fake consumer"

set +e
"$bin" --port "$(cat "$work/port")"
status=$?
set -e
exit $status
