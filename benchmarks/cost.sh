#!/usr/bin/env bash
# What one refresh and one code exchange write, counted rather than timed: on a machine whose
# throughput moves by 2x between runs, a write's WAL is exact. One `consent-load --scenario hold`
# server (under `consent serve`'s malloc setting), wrk -t2 -c64 on one-use tokens for each path;
# per request: WAL records, full-page images and bytes (`pg_stat_wal`, cluster-wide: run nothing
# else against this PostgreSQL meanwhile), and the CPU of PostgreSQL and of the server (noisy:
# it falls as batches grow). Also the share of HOT updates of the tables the paths update.
#
#   bash benchmarks/cost.sh DIR [LABEL]    # DIR holds a release consent-load
#
# Run from anywhere; needs wrk, psql and the PostgreSQL and Redis of TEST_DATABASE_URL and
# TEST_REDIS_URL (defaults: the local ones).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DIR [LABEL]" >&2; exit 2; }
bin=$(cd "$1" && pwd)
label=${2:-$1}
cd "$(dirname "$0")/.."
. benchmarks/lib.sh
sql() { psql "$TEST_DATABASE_URL" -Atqc "$1"; }
before=$(sql "SELECT coalesce(max(oid::bigint), 0) FROM pg_database")
start=$(date +%s)
env "$SERVE_MALLOC" "$bin/consent-load" --scenario hold --seconds 900 --concurrency 60000 \
    >"$OUT/cost-hold.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
url=$(hold_ready "$pid" "$OUT/cost-hold.log")
# The server's own database: the one created after this script started.
db=$(sql "SELECT datname FROM pg_database WHERE oid::bigint > $before ORDER BY oid DESC LIMIT 1")
dburl=$(sed "s#/[^/]*\$#/$db#" <<<"$TEST_DATABASE_URL")
# As ab.sh: the client-authentication failure watch trusts its subscription after a minute.
while [ $(($(date +%s) - start)) -lt 70 ]; do sleep 1; done
ticks() { # CPU ticks of the given processes
    for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true; done |
        awk '{s += $1} END {print s + 0}'
}
wal() { sql "SELECT wal_records || ' ' || wal_fpi || ' ' || wal_bytes FROM pg_stat_wal"; }
hot() {
    psql "$dburl" -Atqc "SELECT string_agg(relname || ' ' || n_tup_hot_upd || '/' || n_tup_upd, ', '
        ORDER BY relname) FROM pg_stat_user_tables
        WHERE relname IN ('grants', 'authorization_codes', 'refresh_tokens')"
}
hz=$(getconf CLK_TCK)
for what in refresh code; do
    sed 's/NTHREADS/2/' "target/wrk/$what.lua" >"$OUT/cost-$what.lua"
    # Idle backends report their WAL counts within 10 s.
    sleep 11
    read -r r0 f0 b0 <<<"$(wal)"
    pg0=$(ticks $(pgrep -x postgres)) s0=$(ticks "$pid") h0=$(hot)
    wrk -t2 -c64 -d5s -s "$OUT/cost-$what.lua" "$url" >"$OUT/cost-wrk.txt"
    pg1=$(ticks $(pgrep -x postgres)) s1=$(ticks "$pid")
    sleep 11
    read -r r1 f1 b1 <<<"$(wal)"
    h1=$(hot)
    n=$(awk '/requests in/ {print $1}' "$OUT/cost-wrk.txt")
    r=$(rate "$OUT/cost-wrk.txt")
    grep -h 'non2xx' "$OUT/cost-wrk.txt" | grep -v 'non2xx=0 ' >&2 || true
    awk -v l="$label" -v w="$what" -v rate="$r" -v n="$n" -v hz="$hz" \
        -v rec=$((r1 - r0)) -v fpi=$((f1 - f0)) -v bytes=$((b1 - b0)) \
        -v pg=$((pg1 - pg0)) -v srv=$((s1 - s0)) \
        'BEGIN { printf "%s %s: %s/s, %d requests; per request: %.1f WAL records, %.2f full-page images, %.0f WAL bytes, PostgreSQL CPU %.3f ms, server CPU %.3f ms\n",
                 l, w, rate, n, rec / n, fpi / n, bytes / n, pg * 1000 / hz / n, srv * 1000 / hz / n }'
    echo "  HOT updates / updates, before: $h0; after: $h1"
done
