#!/usr/bin/env bash
# Side-by-side benchmark: our server (PostgreSQL + Redis, every write durable) against npm
# `oidc-provider` (OpenID-certified, everything in memory), on this machine, in one run.
#
#   bash benchmarks/run.sh            # BENCH_SECONDS=10 BENCH_ROUNDS=2 BENCH_CONNECTIONS=64
#   BENCH_BACKEND=sqlite bash benchmarks/run.sh   # ours on SQLite and the in-process cache
#
# Needs wrk (`apt-get install wrk`), Node.js and the PostgreSQL and Redis of TEST_DATABASE_URL
# and TEST_REDIS_URL (defaults: the local ones). Installs the peer into benchmarks/node_modules
# (git-ignored), builds the release load tool, then runs wrk against each path, alternating
# ours and the peer's (A-B-A-B), whole consent flows with benchmarks/flows.mjs (the same driver
# for both; BENCH_FLOW_CONCURRENCY=16), counts the database statements of one flow (PostgreSQL),
# and prints the ratios first, then the absolute figures, then memory. Scratch files go to
# benchmarks/out (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

S=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-2}
C=${BENCH_CONNECTIONS:-64}
FLOW_C=${BENCH_FLOW_CONCURRENCY:-16}
BACKEND=${BENCH_BACKEND:-postgres}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
command -v node >/dev/null || { echo "Node.js is needed for the peer" >&2; exit 1; }
[ -d benchmarks/node_modules/oidc-provider ] ||
    npm ci --prefix benchmarks --no-audit --no-fund --loglevel=error
cargo build --release --locked -q -p e2e-tests --bin consent-load -p consent --bin consent
. benchmarks/lib.sh

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# Idle memory first, alone: `consent serve --demo` on its embedded defaults (SQLite).
idle_dir=$(mktemp -d)
CONSENT_SERVER__BIND=127.0.0.1:0 CONSENT_SERVER__DATA_DIR="$idle_dir" \
    target/release/consent serve --demo >"$OUT/idle.log" 2>&1 &
idle=$!
pids+=("$idle")
node -e 'setTimeout(() => {}, 1)' # (node warm in the page cache for the peer below)
sleep 5
idle_rss=$(rss_kb "$idle")
kill "$idle"; wait "$idle" 2>/dev/null || true
rm -rf "$idle_dir"

# Tokens per refresh run: enough one-use tokens for the fastest rate seen, every round.
N=$((S * ROUNDS * 12000))
ours_env=()
[ "$BACKEND" = sqlite ] && ours_env=(-u TEST_DATABASE_URL -u TEST_REDIS_URL)
# Under the malloc setting `consent serve` gives itself (lib.sh).
env "${ours_env[@]}" "$SERVE_MALLOC" target/release/consent-load --scenario hold --seconds 3600 --concurrency "$N" \
    >"$OUT/ours.log" 2>&1 &
ours=$!
pids+=("$ours")
node benchmarks/peer.mjs --port 3100 --refresh-tokens "$N" --codes "$((N / 2))" --out "$OUT" >"$OUT/peer.log" 2>&1 &
peer=$!
pids+=("$peer")
OURS=$(hold_ready "$ours" "$OUT/ours.log")
wait_for "$peer" "$OUT/peer.log" "ready"
PEER=http://127.0.0.1:3100
# Refresh tokens and codes are single use (both servers rotate refresh tokens, and a replay ends
# the grant): each round starts at its own slice of the list (PER_ROUND tokens a second).
one_use() { # SCRIPT ROUND OUT PER_ROUND
    sed -e 's/NTHREADS/2/' -e "s/i = tid end/i = tid + $((($2 - 1) * S * $4)) end/" "$1" >"$3"
}
ours_idle_rss=$(rss_kb "$ours")
peer_idle_rss=$(rss_kb "$peer")

declare -A rate
declare -A rss
# run NAME URL [SCRIPT] [PID]: one wrk run; adds its rate to NAME's list.
run() {
    local name=$1 url=$2 script=${3:-} pid=${4:-}
    local args=(-t2 "-c$C" "-d${S}s" --latency)
    [ -n "$script" ] && args+=(-s "$script")
    wrk "${args[@]}" "$url" >"$OUT/wrk.txt" 2>&1
    local r bad
    r=$(rate "$OUT/wrk.txt")
    bad=$(grep -o 'non2xx=[0-9]*' "$OUT/wrk.txt" | cut -d= -f2 || true)
    if [ -n "$bad" ] && [ "$bad" != 0 ]; then
        echo "  $name: $bad non-2xx answers (not counted as a result)" >&2
        grep -E 'non2xx|Non-2xx' "$OUT/wrk.txt" >&2 || true
        r=0
    fi
    rate[$name]="${rate[$name]:-} $r"
    [ -n "$pid" ] && rss[$name]="${rss[$name]:-} $(rss_kb "$pid")"
    printf '  %-34s %10s/s\n' "$name" "$r" >&2
}
# flows NAME CONFIG URL: whole consent flows for S seconds; adds flows/s to NAME's list.
flows() {
    local name=$1 r
    node benchmarks/flows.mjs --config "$2" --url "$3" --seconds "$S" --concurrency "$FLOW_C" >"$OUT/flows.txt" 2>&1
    r=$(grep -o 'rate=[0-9.]*' "$OUT/flows.txt" | cut -d= -f2)
    if grep -q '^first failure' "$OUT/flows.txt"; then
        echo "  $name: failed flows (not counted as a result)" >&2
        cat "$OUT/flows.txt" >&2
        r=0
    fi
    rate[$name]="${rate[$name]:-} ${r:-0}"
    printf '  %-34s %10s/s\n' "$name" "${r:-0}" >&2
}

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS (wrk -t2 -c$C -d${S}s each)" >&2
    one_use target/wrk/refresh.lua "$round" "$OUT/ours_refresh.lua" 12000
    one_use "$OUT/peer_refresh.lua" "$round" "$OUT/peer_refresh2.lua" 12000
    one_use target/wrk/code.lua "$round" "$OUT/ours_code.lua" 6000
    one_use "$OUT/peer_code.lua" "$round" "$OUT/peer_code2.lua" 6000
    run healthz "$OURS/healthz"
    run refresh "$OURS" "$OUT/ours_refresh.lua" "$ours"
    run peer_refresh "$PEER" "$OUT/peer_refresh2.lua" "$peer"
    run peer_client_credentials "$PEER/token" "$OUT/peer_client_credentials.lua" "$peer"
    run introspection "$OURS" target/wrk/introspect-many.lua
    run peer_introspection "$PEER" "$OUT/peer_introspect_many.lua"
    run code "$OURS" "$OUT/ours_code.lua"
    run peer_code "$PEER" "$OUT/peer_code2.lua"
    run sandbox_two_blocks "$OURS" target/wrk/sandbox.lua
    flows flow target/wrk/flow.json "$OURS"
    flows peer_flow "$OUT/peer_flow.json" "$PEER"
done

# The database statements of one whole flow (PostgreSQL only), on a fresh server of its own.
statements=
if [ "$BACKEND" = postgres ]; then
    target/release/consent-load --scenario statements --concurrency 30 >"$OUT/statements.txt" 2>&1
    statements=$(grep -o 'statements_per_flow=[0-9.]*' "$OUT/statements.txt" | cut -d= -f2)
fi

# Ratios round by round (each pair measured minutes apart at most), then the lowest and highest.
ratio() {
    paste <(tr ' ' '\n' <<<"${rate[$1]}" | grep -v '^$') <(tr ' ' '\n' <<<"${rate[$2]}" | grep -v '^$') |
        awk '{ r = ($2 > 0) ? $1 / $2 : 0; printf "%s%.2fx", (NR > 1 ? ", " : ""), r }'
}
maxrss() { tr ' ' '\n' <<<"${rss[$1]:-}" | grep -v '^$' | sort -n | tail -1; }

echo
echo "machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB;" \
    "$([ "$BACKEND" = postgres ] && echo "PostgreSQL $(psql "$TEST_DATABASE_URL" -Atc 'show server_version' 2>/dev/null || echo '?'),")" \
    "Node $(node --version), oidc-provider $(node -p 'require("./benchmarks/node_modules/oidc-provider/package.json").version')"
echo "ours on $BACKEND; wrk -t2 -c$C -d${S}s, $ROUNDS rounds interleaved; ratios per round"
echo
echo "| ratio | by round | target |"
echo "|---|---|---|"
echo "| our refresh (durable) / peer client_credentials (memory) | $(ratio refresh peer_client_credentials) | >= 1.5x |"
echo "| our refresh (durable) / peer refresh (memory) | $(ratio refresh peer_refresh) | |"
echo "| our code exchange / peer code exchange | $(ratio code peer_code) | |"
echo "| our code exchange / our refresh | $(ratio code refresh) | >= 1x |"
echo "| our whole consent flows / peer's (flows/s, $FLOW_C at once) | $(ratio flow peer_flow) | >= 2x |"
echo "| our introspection / peer introspection (2,000 distinct tokens) | $(ratio introspection peer_introspection) | >= 8x |"
echo "| our introspection / our /healthz | $(ratio introspection healthz) | >= 0.60 |"
echo "| sandbox API, 2-block token / our /healthz | $(ratio sandbox_two_blocks healthz) | |"
[ -n "$statements" ] && echo "| database statements of one whole flow (ours, counted) | $statements | <= 12 |"
echo
echo "| path | rates per round (req/s) |"
echo "|---|---|"
for k in healthz refresh peer_refresh peer_client_credentials code peer_code introspection peer_introspection sandbox_two_blocks flow peer_flow; do
    echo "| $k |${rate[$k]} |"
done
echo
echo "| memory (RSS) | ours | peer |"
echo "|---|---|---|"
echo "| idle, \`consent serve --demo\` (SQLite) | $((idle_rss / 1024)) MiB | |"
echo "| idle, tokens prepared (ours: the load tool's process, server in it) | $((ours_idle_rss / 1024)) MiB | $((peer_idle_rss / 1024)) MiB |"
echo "| after the refresh load | $(($(maxrss refresh) / 1024)) MiB | $(($(maxrss peer_refresh) / 1024)) MiB |"
