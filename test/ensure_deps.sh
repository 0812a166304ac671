#!/usr/bin/env bash
# Installs what building and testing sequin_sync needs, from Debian's packages, when it is missing.
# As root it runs apt-get; as another user it says what to install and stops.
set -euo pipefail

pgver=""
if command -v pg_config >/dev/null 2>&1; then
	pgver=$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
fi
pgver=${pgver:-15}

# `ensure_deps.sh sanitize` (make test-sanitize) also wants the static checkers.
extra=()
if [ "${1:-}" = sanitize ]; then
	extra=(clang-tidy cppcheck)
fi

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in "postgresql-$pgver" "postgresql-server-dev-$pgver" libcurl4-openssl-dev rapidjson-dev \
	g++ make python3 python3-pytest ca-certificates "${extra[@]}"; do
	have_pkg "$pkg" || need+=("$pkg")
done

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "sequin_sync needs these Debian packages: ${need[*]}" >&2
	echo "Install them with: sudo apt-get install -y ${need[*]}" >&2
	exit 1
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
