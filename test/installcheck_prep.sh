#!/usr/bin/env bash
# installcheck_prep.sh - what `make installcheck` runs before pg_regress.  The tests need a server
# that preloads sequin_sync with sequin_sync.database empty (the default: consumers run in every
# database with the extension; the install test creates it in a second database too).  pg_regress
# drops the regression database before creating it; sequin_sync's processes leave it for DROP
# DATABASE, and it is dropped here WITH (FORCE) all the same, in case a session of an earlier run
# is left.  The server is the one psql reaches (PGHOST, PGPORT, PGUSER ...), as for pg_regress.
#
#   bash test/installcheck_prep.sh PSQL DBNAME
set -euo pipefail

psql=${1:?usage: installcheck_prep.sh PSQL DBNAME}
db=${2:?usage: installcheck_prep.sh PSQL DBNAME}

q() {
	"$psql" -X -q -A -t -v ON_ERROR_STOP=1 -d postgres -c "$1"
}

if ! found=$(q "SELECT current_setting('shared_preload_libraries') || '|' ||
		COALESCE(current_setting('sequin_sync.database', true), '(not set: sequin_sync is not loaded)')"); then
	echo "make installcheck: cannot reach the server (PGHOST, PGPORT and PGUSER say where, as for psql)" >&2
	exit 1
fi
libraries=${found%|*}
database=${found##*|}

preloaded=
IFS=',' read -r -a names <<<"$libraries"
for name in "${names[@]}"; do
	name=${name//[[:space:]\"]/}
	case "$name" in sequin_sync | '$libdir/sequin_sync') preloaded=yes ;; esac
done

if [ -z "$preloaded" ] || [ -n "$database" ]; then
	cat >&2 <<EOF
make installcheck: the server must preload sequin_sync for the database $db:
    shared_preload_libraries = 'sequin_sync'
    sequin_sync.database = ''        # the default: every database
in its postgresql.conf (then restart it).  It has shared_preload_libraries = '$libraries' and
sequin_sync.database = '$database'.  The tests drop and
create the database $db and roles named regress_*: use a throwaway server.  (\`make test\` needs
no server: it starts its own.)
EOF
	exit 1
fi

q "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
