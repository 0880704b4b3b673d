#!/usr/bin/env bash
# The national day (issue: performance harness, scenario 7).
#   conformance-tests/bench/national.sh sqlite|postgres [SCALE] [CLIENTS]
# A fresh database with the sandbox, the outward codes of ../shared/geo and a synthetic
# directory (1,000 services, 400,000 slots), a release server, then ers-load's national-day:
# 70,000 referrals × SCALE (default 1) with their DoS searches, 50,000 × SCALE of them booked
# after a slot search, 5,000 × SCALE A&G conversations, replayed by CLIENTS (default 32) clients
# as fast as the server takes them. Appends one JSON line to docs/benchmarks/national.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance-tests/bench/lib.sh
BACKEND="${1:?sqlite or postgres}"
SCALE="${2:-1}"
CLIENTS="${3:-32}"
OUTCODES="${ERS_OUTCODES:-../shared/geo/uk-outcodes.csv}"
PORT=18494
cargo build --release --locked --bins -q
fresh_database "$BACKEND" national
export ERS_DATABASE_URL="$URL" RUST_LOG=warn
"$BIN/ers-server" import-postcodes "$OUTCODES"
"$BIN/ers-server" seed
RUST_LOG=info "$BIN/ers-server" generate-directory 1000 400000 2>&1 | tail -1
ERS_BIND="127.0.0.1:$PORT" ERS_SEED=none ERS_RATE_LIMIT_PER_SEC=0 ERS_DB_POOL_SIZE="${ERS_BENCH_POOL:-8}" "$BIN/ers-server" > /var/tmp/ers-bench-national-server.log 2>&1 &
SERVER=$!
analyze_while_running "$BACKEND" "$URL"
trap 'kill $SERVER $ANALYZER 2>/dev/null || true' EXIT
wait_ready "$PORT"
mkdir -p docs/benchmarks
"$BIN/ers-load" --base-url "http://127.0.0.1:$PORT/FHIR/R4" --scenario national-day \
    --sandbox-user 021600556514 --postcodes "$OUTCODES" --scale "$SCALE" --clients "$CLIENTS" \
    --label "$BACKEND commit=$(git rev-parse --short HEAD) machine=[$MACHINE]$(pg_via) $(date -u +%FT%TZ)" \
    --json docs/benchmarks/national.jsonl
echo "server RSS at the end: $(ps -o rss= -p "$SERVER" | awk '{printf "%.0f MB", $1 / 1024}')"
