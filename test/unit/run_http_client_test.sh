#!/usr/bin/env bash
# run_http_client_test.sh - runs the HTTP client unit test (http_client_test.cpp) against the fake
# consumer (test/fake_sequin.py) with the consumers of test/fixtures/http_client_consumers.json:
# starts the fake on a free 127.0.0.1 port, passes the port to the test binary, stops the fake
# whatever happens, and exits with the test's status.
#
#   bash test/unit/run_http_client_test.sh /tmp/http_client_test
set -euo pipefail

bin=${1:?usage: run_http_client_test.sh <http_client_test binary>}
test_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/http_client_test.XXXXXX")
fake_pid=

cleanup() {
	if [[ -n $fake_pid ]]; then
		kill "$fake_pid" 2>/dev/null || true
		wait "$fake_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# A proxy from the environment would swallow the requests to 127.0.0.1.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

python3 "$test_dir/fake_sequin.py" --port 0 --port-file "$work/port" --quiet \
	--setup "$test_dir/fixtures/http_client_consumers.json" >/dev/null &
fake_pid=$!

for _ in $(seq 1 200); do
	[[ -s $work/port ]] && break
	if ! kill -0 "$fake_pid" 2>/dev/null; then
		echo "run_http_client_test.sh: the fake consumer exited before listening" >&2
		exit 1
	fi
	sleep 0.05
done
if [[ ! -s $work/port ]]; then
	echo "run_http_client_test.sh: the fake consumer did not write its port" >&2
	exit 1
fi

set +e
"$bin" --port "$(cat "$work/port")"
status=$?
set -e
exit $status
