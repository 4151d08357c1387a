#!/usr/bin/env bash
# Introspection after a mass revocation, two builds interleaved A-B-A-B: each on a fresh
# `consent-load --scenario hold` server whose revocation feed is given ROWS more rows (half a
# grant's own row, half a token's, none of them about the tokens asked; as a sweep or a suspended
# client leaves them until their tokens expire), then wrk on 2,000 distinct access tokens.
# ROWS=0 is the same run without them. Prints each rate.
#
#   bash benchmarks/mass-revocation.sh BASE_DIR NEW_DIR   # directories holding consent-load
#   ROWS=200000 S=10 ROUNDS=2 WAIT=75 bash benchmarks/mass-revocation.sh ...
#
# Run from the repository root. Needs wrk, psql and the PostgreSQL and Redis of TEST_DATABASE_URL
# and TEST_REDIS_URL (defaults: the local ones); the feed rows are written with psql into the
# newest `consent_test_*` database, the one the hold server made.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 BASE_DIR NEW_DIR" >&2; exit 2; }
ROWS=${ROWS:-200000}
S=${S:-10}
ROUNDS=${ROUNDS:-2}
WAIT=${WAIT:-75}
. benchmarks/lib.sh
psql_at() { psql "$TEST_DATABASE_URL" -qAt "$@"; }
for round in $(seq 1 "$ROUNDS"); do
    order="base new"
    [ $((round % 2)) -eq 0 ] && order="new base"
    for side in $order; do
        dir=$1
        [ "$side" = new ] && dir=$2
        start=$(date +%s)
        env "$SERVE_MALLOC" "$dir/consent-load" --scenario hold --seconds 900 --concurrency 60000 >"$OUT/mr-hold.log" 2>&1 &
        pid=$!
        url=$(hold_ready "$pid" "$OUT/mr-hold.log")
        db=$(psql_at -c "SELECT datname FROM pg_database WHERE datname LIKE 'consent_test_%' ORDER BY oid DESC LIMIT 1")
        if [ "$ROWS" -gt 0 ]; then
            psql "${TEST_DATABASE_URL%/*}/$db" -qAt \
                -c "INSERT INTO revocations (grant_id, revocation_id, reason, revoked_at, expires_at) \
                    SELECT 'g_gone_' || (i / 2), CASE WHEN i % 2 = 1 THEN 'rid_gone_' || i END, 'suspended', \
                    LOCALTIMESTAMP, LOCALTIMESTAMP + interval '1 hour' FROM generate_series(1, $ROWS) i" \
                -c "ANALYZE revocations" >/dev/null
        fi
        while [ $(($(date +%s) - start)) -lt "$WAIT" ]; do sleep 1; done
        wrk -t2 -c64 "-d${S}s" -s target/wrk/introspect-many.lua "$url" >"$OUT/mr-introspect.txt"
        echo "round $round $side feed_rows_added=$ROWS introspection=$(rate "$OUT/mr-introspect.txt")"
        grep -h "Non-2xx" "$OUT/mr-introspect.txt" >&2 || true
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
