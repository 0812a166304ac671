#!/usr/bin/env bash
# test/demo.sh - a throwaway sequin_sync demo: what `make demo` runs after building and installing.
#
#   bash test/demo.sh          start (stopping a previous demo of this clone first)
#   bash test/demo.sh stop     stop the server and the fake consumer, remove the demo's directory
#
# Starts a Postgres cluster with sequin_sync preloaded and the fake Sequin consumer
# (test/fake_sequin.py) loaded with the sample records plus a few thousand generated ones (Stripe
# customers and subscriptions, Salesforce contacts, HubSpot deals, with updates and deletes, out of
# order); creates four tables, a consumer and its mappings through the SQL API, shows the sync's
# progress, then a few synced rows and sequin_sync.status.
# Next to it, a Sequin Stream consumer (today's Sequin: change messages from a source database's
# WAL) mirrors a source table public.orders, keyed by (tenant, id), into orders_mirror: the fake
# serves a short history of that table - a backfill of the rows it held, then inserts, updates
# (one with an "unchanged_toast" column), a delete and a primary-key change - and the demo shows
# the mirror's rows, their sequin_version and the consumer's status (protocol, source_lag).
# As root, the servers run as the ordinary user "sequin_test" (created if missing).  They run in a
# new directory under ${TMPDIR:-/tmp} that the servers' user owns, not in the clone: a clone may sit
# where that user cannot even look (/root, a mode-700 directory).  The clone's .demo-dir file
# names that directory, for `stop`.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
pointer="$repo/.demo-dir"
demo=
bindir=$("${PG_CONFIG:-pg_config}" --bindir)
user=sequin_test
consumer=demo
token="demo-token"
stream_consumer=orders
stream_sink=orders_feed          # the Sequin Stream sink's name in (fake) Sequin
stream_token="demo-stream-token"

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

as_user() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$user" -- "$@"
	else
		"$@"
	fi
}

psql_demo() {
	PGCLIENTENCODING=UTF8 as_user "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -P pager=off \
		-h "$(cat "$demo/socket_dir")" -p "$(cat "$demo/port")" -U postgres -d postgres "$@"
}

# Is pid (from our pid file) still the fake server we started?
fake_alive() {
	[ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q fake_sequin.py
}

# The running demo's directory, from .demo-dir; only a directory this script made is trusted.
find_demo() {
	demo=
	[ -f "$pointer" ] || return 1
	demo=$(cat "$pointer")
	case "$demo" in */sequin_sync_demo.*) ;; *) demo= ;; esac
	[ -n "$demo" ] && [ -d "$demo" ]
}

stop_demo() {
	if ! find_demo; then
		rm -f "$pointer"
		return 1
	fi
	if [ -f "$demo/data/postmaster.pid" ]; then
		(cd "$demo" && as_user "$bindir/pg_ctl" -D "$demo/data" stop -m fast -w -t 30 >/dev/null 2>&1) ||
			(cd "$demo" && as_user "$bindir/pg_ctl" -D "$demo/data" stop -m immediate -w >/dev/null 2>&1) || true
	fi
	if [ -f "$demo/fake.pid" ]; then
		local pid
		pid=$(cat "$demo/fake.pid")
		if fake_alive "$pid"; then
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 50); do fake_alive "$pid" || break; sleep 0.1; done
			if fake_alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
		fi
	fi
	if [ -f "$demo/socket_dir" ]; then
		local sock
		sock=$(cat "$demo/socket_dir")
		case "$sock" in /tmp/sequin_demo.*) rm -rf "$sock" ;; esac
	fi
	rm -rf "$demo"
	rm -f "$pointer"
}

if [ "${1:-start}" = stop ]; then
	if stop_demo; then
		say "demo stopped; $demo removed."
	else
		say "no demo is running."
	fi
	exit 0
fi
[ "${1:-start}" = start ] || die "usage: bash test/demo.sh [start|stop]"

[ -f "$("${PG_CONFIG:-pg_config}" --sharedir)/extension/sequin_sync.control" ] ||
	die "sequin_sync is not installed: run 'make demo' (or 'make && make install' as root) first."

if find_demo; then
	say "Stopping the previous demo..."
	stop_demo
fi

# --- a directory the server's user owns, outside the clone ------------------------------------
demo=$(mktemp -d "${TMPDIR:-/tmp}/sequin_sync_demo.XXXXXX")
echo "$demo" >"$pointer"
if [ "$(id -u)" -eq 0 ]; then
	id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
	chown "$user:" "$demo"
	runuser -u "$user" -- test -w "$demo" ||
		die "user $user cannot write $demo (a parent directory is not searchable by others? set TMPDIR)"
fi
cd "$demo"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
socket_dir="$demo"
if [ ${#socket_dir} -gt 80 ]; then   # a unix socket path must stay under 108 bytes
	socket_dir=$(mktemp -d /tmp/sequin_demo.XXXXXX)
	if [ "$(id -u)" -eq 0 ]; then chown "$user:" "$socket_dir"; fi
fi
echo "$port" >port
echo "$socket_dir" >socket_dir

say "sequin_sync demo, in $demo"
say "  * generating records..."
python3 "$repo/test/gen_records.py" --collection stripe:customer,stripe:subscription,salesforce:contact,hubspot:deal \
	--count 3000 --versions 3 --delete-fraction 0.1 --slug-fraction 0.05 --seed 42 --shuffle --out generated.json
python3 - "$repo/test/fixtures/sample_records.json" generated.json records.json <<'EOF'
import json, random, sys
records = json.load(open(sys.argv[1], encoding="utf-8")) + json.load(open(sys.argv[2], encoding="utf-8"))
random.Random(7).shuffle(records)          # out of order: versions of one id arrive in any order
with open(sys.argv[3], "w", encoding="utf-8") as f:
    json.dump(records, f, ensure_ascii=False)
EOF
rm -f generated.json
cp "$repo/test/fake_sequin.py" .
if [ "$(id -u)" -eq 0 ]; then chown -R "$user:" "$demo"; fi
total=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' records.json)

say "  * starting the fake Sequin consumer with $total records..."
# Detached (setsid): it outlives this script until `bash test/demo.sh stop`.  The pid file holds
# the python process itself (sh execs it).
runner=()
if [ "$(id -u)" -eq 0 ]; then runner=(runuser -u "$user" --); fi
# shellcheck disable=SC2016
setsid "${runner[@]}" sh -c 'echo $$ >fake.pid; exec python3 fake_sequin.py --port 0 --port-file fake.port --quiet --consumer "$1" --publish records.json' \
	sh "$consumer:$token" >fake.log 2>&1 </dev/null &
for _ in $(seq 200); do [ -s fake.port ] && break; sleep 0.1; done
[ -s fake.port ] || { cat fake.log >&2; die "the fake consumer did not start (see $demo/fake.log)"; }
fake_port=$(cat fake.port)

say "  * creating a Sequin Stream sink $stream_sink for public.orders on the fake, with its history..."
# The source table's history as Sequin serves it: a backfill read of each row the table held when
# the sink was created (commit_lsn/commit_idx null), then changes in commit order (commit_lsn,
# commit_idx).  Default replica identity: an update sends a TOASTed column it did not change as
# the string "unchanged_toast", a delete only the key, a key change the old key in "changes".
python3 - "http://127.0.0.1:$fake_port" "$stream_sink" "$stream_token" <<'PYEOF' || die "could not publish the stream's messages (see $demo/fake.log)"
import json, sys, urllib.request
base, sink, token = sys.argv[1:]

def call(path, doc):
    req = urllib.request.Request(base + path, data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")

def msg(action, lsn, idx, record, changes=None):
    pks = [record["tenant"], record["id"]]
    return {"record": record, "changes": changes, "action": action,
            "metadata": {"table_schema": "public", "table_name": "orders", "commit_lsn": lsn,
                         "commit_idx": idx, "record_pks": pks, "database_name": "shop"}}

def order(tenant, oid, customer, total, status, note):
    return {"tenant": tenant, "id": oid, "customer": customer, "total": total, "status": status, "note": note}

gift = "Gift wrap, please. " * 150            # ~2.8 kB: stored TOASTed at the source
lsn = 0x16B3748
messages = [
    # the backfill: three rows that existed before the sink
    msg("read", None, None, order("acme", 1, "Ada Lovelace", "120.00", "new", gift)),
    msg("read", None, None, order("acme", 2, "Bob Babbage", "75.50", "new", None)),
    msg("read", None, None, order("globex", 1, "Cy Hopper", "300.00", "paid", "leave at the door")),
    # changes, in commit order
    msg("insert", lsn + 0x100, 0, order("globex", 2, "Dee Knuth", "42.00", "new", None)),
    msg("update", lsn + 0x200, 0, order("acme", 1, "Ada Lovelace", "120.00", "paid", "unchanged_toast"), {}),
    msg("update", lsn + 0x200, 3, order("globex", 2, "Dee Knuth", "42.00", "paid", None), {}),
    msg("delete", lsn + 0x300, 0, order("acme", 2, None, None, None, None)),
    msg("update", lsn + 0x400, 0, order("globex", 10, "Cy Hopper", "300.00", "shipped", "leave at the door"),
        {"id": 1}),
    msg("insert", lsn + 0x500, 1, order("acme", 3, "Eve Liskov", "9.99", "new", None)),
]
call("/admin/consumers", {"id": sink, "token": token, "protocol": "stream", "purge": True})
got = call("/admin/consumers/%s/publish" % sink, messages)
assert got["published"] == len(messages), got
PYEOF

say "  * creating a Postgres cluster in $demo/data (port $port)..."
as_user "$bindir/initdb" -D "$demo/data" -U postgres -A trust --no-locale -E UTF8 --no-sync >initdb.log 2>&1 ||
	{ cat initdb.log >&2; die "initdb failed"; }
cat >>"$demo/data/postgresql.conf" <<EOF

# sequin_sync demo
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$socket_dir'
shared_preload_libraries = 'sequin_sync'
sequin_sync.database = 'postgres'
sequin_sync.backoff_max = '5s'
max_worker_processes = 16
EOF
as_user "$bindir/pg_ctl" -D "$demo/data" -l "$demo/server.log" -w -t 60 start >/dev/null ||
	{ tail -20 server.log >&2; die "the server did not start (see $demo/server.log)"; }

say "  * creating tables, the consumer and its mappings..."
psql_demo >/dev/null <<EOF
CREATE EXTENSION sequin_sync;

-- Stripe customers: soft deletes (a deleted customer stays, with deleted = true).
CREATE TABLE stripe_customers (
    id           text PRIMARY KEY,      -- Sequin's record id
    upstream_id  text,                  -- cus_...  (a standard field)
    updated_idx  bigint,
    deleted      boolean,
    name         text,                  -- data.name
    email        text,                  -- data.email
    balance      integer,               -- data.balance, in cents
    currency     text,
    created      timestamptz,           -- data.created, epoch seconds
    metadata     jsonb,
    city         text                   -- data.address.city
);

-- Stripe subscriptions: hard deletes (a deleted subscription's row goes away).
CREATE TABLE stripe_subscriptions (
    id                 text PRIMARY KEY,
    upstream_id        text,
    updated_idx        bigint,
    customer           text,
    status             text,
    quantity           integer,
    plan_amount        integer,         -- data.plan.amount
    plan_interval      text,            -- data.plan.interval
    current_period_end timestamptz
);

-- Salesforce contacts: PascalCase fields land in snake_case columns.
CREATE TABLE salesforce_contacts (
    id             text PRIMARY KEY,
    upstream_id    text,
    updated_idx    bigint,
    deleted        boolean,
    first_name     text,                -- data.FirstName
    last_name      text,
    email          text,
    title          text,
    mailing_city   text,                -- data.MailingAddress.city
    annual_revenue numeric,             -- data.AnnualRevenue__c (20 digits)
    score          numeric              -- data.Score__c
);

-- HubSpot deals: everything is under data.properties.
CREATE TABLE hubspot_deals (
    id          text PRIMARY KEY,
    updated_idx bigint,
    deleted     boolean,
    dealname    text,
    amount      numeric,                -- a string in the API: "1500000.50"
    dealstage   text,
    closedate   timestamptz
);

BEGIN;   -- one transaction: the workers start when it commits, with every mapping in place
SELECT sequin_sync.create_consumer('$consumer', 'http://127.0.0.1:$fake_port/v1/http-consumers/$consumer', '$token',
                                   batch_size => 500, wait_for => '2 seconds', workers => 2);
SELECT sequin_sync.map_collection('$consumer', 'stripe:customer', 'stripe_customers',
                                  columns => '{"city": "data.address.city"}');
SELECT sequin_sync.map_collection('$consumer', 'stripe:subscription', 'stripe_subscriptions', delete_mode => 'hard',
                                  columns => '{"plan_amount": "data.plan.amount", "plan_interval": "data.plan.interval"}');
SELECT sequin_sync.map_collection('$consumer', 'salesforce:contact', 'salesforce_contacts',
                                  columns => '{"mailing_city": "data.MailingAddress.city",
                                               "annual_revenue": "data.AnnualRevenue__c", "score": "data.Score__c"}');
SELECT sequin_sync.map_collection('$consumer', 'hubspot:deal', 'hubspot_deals',
                                  columns => '{"dealname": "data.properties.dealname", "amount": "data.properties.amount",
                                               "dealstage": "data.properties.dealstage", "closedate": "data.properties.closedate"}');
COMMIT;

-- Sequin Stream: the mirror of the source table public.orders.  Its primary key is the source's,
-- every other column takes the record's field of the same name, and sequin_version holds the
-- version of the change that wrote the row (commit_lsn * 2^32 + commit_idx).
CREATE TABLE orders_mirror (
    tenant         text,
    id             integer,
    customer       text,
    total          numeric(12,2),       -- a JSON string in the message: "120.00"
    status         text,
    note           text,                -- TOASTed at the source when long
    sequin_version numeric,
    PRIMARY KEY (tenant, id)
);

BEGIN;
-- The endpoint's path (/api/sequin_streams/<sink>) makes it a Sequin Stream consumer.
SELECT sequin_sync.create_consumer('$stream_consumer', 'http://127.0.0.1:$fake_port/api/sequin_streams/$stream_sink',
                                   '$stream_token', wait_for => '2 seconds');
SELECT sequin_sync.map_collection('$stream_consumer', 'public.orders', 'orders_mirror');   -- hard deletes
COMMIT;
EOF

# --- progress: one line a second until the fake has every message acknowledged ---------------
say "  * syncing ($total records, 2 workers):"
fake_outstanding() {   # the fake's messages not yet acknowledged, of consumer $1
	python3 -c 'import json, sys, urllib.request
print(json.load(urllib.request.urlopen(sys.argv[1], timeout=5))["outstanding"])' \
		"http://127.0.0.1:$fake_port/admin/consumers/$1/stats" 2>/dev/null || echo "?"
}
synced=no
for i in $(seq 120); do
	line=$(psql_demo -A -t -F ' ' -c "SELECT state, received, inserted + updated + deleted, skipped, dead_lettered,
		acked, COALESCE(pending::text, '-') FROM sequin_sync.status WHERE consumer = '$consumer'")
	outstanding=$(fake_outstanding "$consumer")
	read -r state received applied skipped parked acked pending <<<"$line"
	printf '    %3ss  %-8s received %5s  applied %5s  skipped %5s  parked %s  acked %5s  pending %s\n' \
		"$i" "$state" "$received" "$applied" "$skipped" "$parked" "$acked" "$pending"
	if [ "$outstanding" = 0 ] && [ "$state" = idle ]; then
		synced=yes
		break
	fi
	sleep 1
done
if [ $synced = yes ]; then
	say "  * synced: every record is applied and acknowledged."
else
	say "  * not fully synced after 2 minutes; see sequin_sync.status.last_error and $demo/server.log"
fi

# --- what landed --------------------------------------------------------------------------------
say
say "A few synced rows:"
psql_demo <<'EOF'
\pset footer off
SELECT 'stripe_customers' AS "table", count(*) AS rows, count(*) FILTER (WHERE deleted) AS "soft-deleted"
  FROM stripe_customers
UNION ALL SELECT 'stripe_subscriptions (hard deletes)', count(*), NULL FROM stripe_subscriptions
UNION ALL SELECT 'salesforce_contacts', count(*), count(*) FILTER (WHERE deleted) FROM salesforce_contacts
UNION ALL SELECT 'hubspot_deals', count(*), count(*) FILTER (WHERE deleted) FROM hubspot_deals;
\echo stripe_customers
SELECT upstream_id, name, email, balance, currency, created::date, metadata->>'tier' AS tier, deleted
  FROM stripe_customers ORDER BY updated_idx DESC LIMIT 4;
\echo stripe_subscriptions
SELECT upstream_id, customer, status, quantity, plan_amount, plan_interval, current_period_end::date
  FROM stripe_subscriptions ORDER BY updated_idx DESC LIMIT 4;
\echo salesforce_contacts
SELECT first_name, last_name, email, title, mailing_city, annual_revenue, score
  FROM salesforce_contacts ORDER BY updated_idx DESC LIMIT 4;
\echo hubspot_deals
SELECT dealname, amount, dealstage, closedate::date, deleted
  FROM hubspot_deals ORDER BY closedate IS NULL, updated_idx DESC LIMIT 4;
\echo sequin_sync.status
SELECT consumer, state, workers, received, inserted, updated, deleted, skipped, dead_lettered, acked, pending
  FROM sequin_sync.status;
EOF

# --- the Sequin Stream consumer ------------------------------------------------------------------
say
say "Sequin Stream: consumer $stream_consumer mirrors public.orders (a backfill of 3 rows, then 6 changes) into orders_mirror"
stream_synced=no
for _ in $(seq 60); do
	state=$(psql_demo -A -t -c "SELECT state FROM sequin_sync.status WHERE consumer = '$stream_consumer'")
	if [ "$(fake_outstanding "$stream_sink")" = 0 ] && [ "$state" = idle ]; then
		stream_synced=yes
		break
	fi
	sleep 1
done
if [ $stream_synced = yes ]; then
	say "  * stream synced: every message is applied and acknowledged."
else
	say "  * the stream is not synced after a minute; see sequin_sync.status.last_error and $demo/server.log"
fi
psql_demo <<'EOF'
\pset footer off
\echo orders_mirror
SELECT tenant, id, customer, total, status,
       CASE WHEN length(note) > 30 THEN left(note, 18) || '... (' || length(note) || ' chars)' ELSE note END AS note,
       sequin_version
  FROM orders_mirror ORDER BY tenant, id;
\echo sequin_sync.status (stream consumer)
SELECT consumer, protocol, state, received, inserted, updated, deleted, skipped, dead_lettered, acked,
       source_commit_at, date_trunc('milliseconds', source_lag) AS source_lag
  FROM sequin_sync.status WHERE protocol = 'stream';
EOF
say "What you see: orders_mirror holds the source table's current rows.  acme/1 was backfilled (a read,"
say "  no version), then paid: its update sent the long note as \"unchanged_toast\", and the mirror kept the"
say "  stored note.  acme/2 was deleted (hard delete; a tombstone keeps its version), globex/1 became globex/10"
say "  (a key change moves the row), and every row a change wrote carries that change's sequin_version."
say "  source_lag is how long ago the newest applied change was committed at the source."
say

psql_cmd=psql
command -v psql >/dev/null 2>&1 || psql_cmd="$bindir/psql"
say "The demo is running."
say "  connect:  $psql_cmd -h $socket_dir -p $port -U postgres postgres"
say "            (or: $psql_cmd -h 127.0.0.1 -p $port -U postgres postgres)"
say "  try:      SELECT * FROM sequin_sync.status;  SELECT * FROM sequin_sync.dead_letters;"
say "            SELECT * FROM orders_mirror;"
say "  more:     publish records to the fake consumer (JSON array) with"
say "            curl -X POST --data-binary @FILE http://127.0.0.1:$fake_port/admin/consumers/$consumer/publish"
say "            and change messages ({record, changes, action, metadata}) to the stream the same way, at"
say "            http://127.0.0.1:$fake_port/admin/consumers/$stream_sink/publish"
say "  logs:     $demo/server.log"
say "  stop:     bash test/demo.sh stop"
