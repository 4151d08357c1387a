#!/usr/bin/env bash
# Two builds of our server side by side, interleaved A-B-A-B: `/healthz`, introspection (2,000
# distinct tokens), refresh and code exchange, each on a fresh `consent-load --scenario hold`
# server, run under the malloc setting `consent serve` runs under (see run.sh). Prints each rate,
# and the server process's CPU per request for `/healthz` and introspection.
#
#   bash benchmarks/ab.sh BASE_DIR NEW_DIR     # directories holding each build's consent-load
#   S=10 ROUNDS=2 WAIT=75 bash benchmarks/ab.sh ...
#
# WAIT is how old each server is (seconds) before its runs: the client-authentication failure
# watch trusts its subscription only after a whole window (60 s). Run from the repository root
# (the hold server writes its wrk scripts to target/wrk). Needs wrk and the PostgreSQL and Redis of
# TEST_DATABASE_URL and TEST_REDIS_URL (defaults: the local ones).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 BASE_DIR NEW_DIR" >&2; exit 2; }
S=${S:-10}
ROUNDS=${ROUNDS:-2}
WAIT=${WAIT:-75}
. benchmarks/lib.sh
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# wrk_cpu PID OUT ARGS...: one wrk run into OUT; prints the server's CPU per request (microseconds,
# user + system; steadier than the rate on a machine whose speed moves between runs).
wrk_cpu() {
    local pid=$1 out=$2 t0 t1
    shift 2
    t0=$(ticks "$pid")
    wrk "$@" >"$out"
    t1=$(ticks "$pid")
    awk -v t=$((t1 - t0)) -v hz="$hz" '/requests in/ {printf "%.1f", t * 1e6 / hz / $1}' "$out"
}
for round in $(seq 1 "$ROUNDS"); do
    for side in base new; do
        dir=$1
        [ "$side" = new ] && dir=$2
        start=$(date +%s)
        env "$SERVE_MALLOC" "$dir/consent-load" --scenario hold --seconds 900 --concurrency $((S * 12000)) >"$OUT/ab-hold.log" 2>&1 &
        pid=$!
        url=$(hold_ready "$pid" "$OUT/ab-hold.log")
        while [ $(($(date +%s) - start)) -lt "$WAIT" ]; do sleep 1; done
        sed 's/NTHREADS/2/' target/wrk/refresh.lua >"$OUT/ab-refresh.lua"
        sed 's/NTHREADS/2/' target/wrk/code.lua >"$OUT/ab-code.lua"
        hc=$(wrk_cpu "$pid" "$OUT/ab-healthz.txt" -t2 -c64 "-d${S}s" "$url/healthz")
        ic=$(wrk_cpu "$pid" "$OUT/ab-introspect.txt" -t2 -c64 "-d${S}s" -s target/wrk/introspect-many.lua "$url")
        wrk -t2 -c64 "-d${S}s" -s "$OUT/ab-refresh.lua" "$url" >"$OUT/ab-refresh.txt"
        wrk -t2 -c64 "-d${S}s" -s "$OUT/ab-code.lua" "$url" >"$OUT/ab-code.txt"
        h=$(rate "$OUT/ab-healthz.txt") i=$(rate "$OUT/ab-introspect.txt") r=$(rate "$OUT/ab-refresh.txt")
        x=$(rate "$OUT/ab-code.txt")
        echo "round $round $side healthz=$h introspection=$i refresh=$r code=$x" \
            "introspection/healthz=$(awk "BEGIN {printf \"%.3f\", $i / $h}")" \
            "code/refresh=$(awk "BEGIN {printf \"%.3f\", $x / $r}")" \
            "server_cpu_us_per_request: healthz=$hc introspection=$ic"
        grep -h "Non-2xx" "$OUT"/ab-*.txt >&2 || true
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
