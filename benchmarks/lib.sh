# Shared by the benchmark scripts (sourced from the repository root).

# The PostgreSQL and Redis the load tool uses (the local ones unless set), and the git-ignored
# folder for scratch files.
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export TEST_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379}
OUT=benchmarks/out
mkdir -p "$OUT"

# rate FILE: the requests per second of a wrk report.
rate() { awk '/^Requests\/sec:/ {print $2}' "$1"; }

# The malloc setting `consent serve` gives itself (consent/src/main.rs, with_fixed_mmap_threshold).
# The load tool runs the server in its own process; started with this, it is the server as
# deployed rather than under glibc's defaults.
SERVE_MALLOC=MALLOC_MMAP_THRESHOLD_=131072

# wait_for PID LOG TEXT: waits until LOG holds TEXT; fails, showing LOG, if PID exits first.
wait_for() {
    until grep -q "$3" "$2" 2>/dev/null; do
        kill -0 "$1" 2>/dev/null || { cat "$2" >&2; return 1; }
        sleep 1
    done
}

# hold_ready PID LOG: waits for a `consent-load --scenario hold` server to have seeded its tokens
# and prints its address.
hold_ready() {
    wait_for "$1" "$2" "one-use refresh tokens and" || return 1
    grep -o 'server http://[0-9.:]*' "$2" | head -1 | cut -d' ' -f2
}
