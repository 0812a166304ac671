#!/usr/bin/env bash
# Installs what building and testing sequin_sync needs, from Debian's packages, when it is missing.
# As root it runs apt-get; as another user it says what to install and stops.
set -euo pipefail

# The PostgreSQL under test: $PG_CONFIG (`make test PG_CONFIG=...`), else the one on PATH, else
# Debian's 15.  Debian's own installations come from its packages; any other one (PGDG's, or a
# source build) must already have its server headers and pg_regress, which are checked instead.
pg_config=${PG_CONFIG:-pg_config}
pgver=""
pg_pkgs=()
if command -v "$pg_config" >/dev/null 2>&1; then
	pgver=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
	bindir=$("$pg_config" --bindir)
	if [ "$bindir" != "/usr/lib/postgresql/$pgver/bin" ]; then
		pgxs=$("$pg_config" --pgxs)
		for f in "$("$pg_config" --includedir-server)/postgres.h" \
			"$(dirname "$(dirname "$(dirname "$pgxs")")")/src/test/regress/pg_regress"; do
			[ -e "$f" ] || { echo "$pg_config is missing $f (install its server development files and regression tools)" >&2; exit 1; }
		done
	else
		pg_pkgs=("postgresql-$pgver" "postgresql-server-dev-$pgver")
	fi
else
	pg_pkgs=(postgresql-15 postgresql-server-dev-15)
fi

# `ensure_deps.sh sanitize` (make test-sanitize) also wants the static checkers.
extra=()
if [ "${1:-}" = sanitize ]; then
	extra=(clang-tidy cppcheck)
fi

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in "${pg_pkgs[@]}" libcurl4-openssl-dev rapidjson-dev \
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
