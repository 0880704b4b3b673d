#!/usr/bin/env bash
# The raw floor beside the server (issue: performance harness).
#   conformance-tests/bench/floor.sh sqlite|postgres [SECONDS] [CLIENTS]
# A fresh sandbox database and a release server; ers-load's create-referral and read (a Patient
# by id) at CLIENTS (default 32) against the server; then, with the server stopped, ers-floor's
# same two scenarios on the same database: the rows the server wrote for its latest referral
# (referral, all its index rows, an audit and an outbox event) copied through
# diesel directly, and the Patient read by id, with no HTTP, validation or rules.
# Appends one JSON line per run to docs/benchmarks/floor.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance-tests/bench/lib.sh
BACKEND="${1:?sqlite or postgres}"
SECONDS_="${2:-20}"
CLIENTS="${3:-32}"
PORT=18493
cargo build --release --locked --bins -q
fresh_database "$BACKEND" floor
export ERS_DATABASE_URL="$URL" RUST_LOG=warn
ERS_BIND="127.0.0.1:$PORT" ERS_SEED=sandbox ERS_RATE_LIMIT_PER_SEC=0 ERS_DB_POOL_SIZE="${ERS_BENCH_POOL:-8}" "$BIN/ers-server" > /var/tmp/ers-bench-floor-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
wait_ready "$PORT"
label() { echo "$BACKEND server=$1 commit=$(git rev-parse --short HEAD) machine=[$MACHINE]$(pg_via) $(date -u +%FT%TZ)"; }
mkdir -p docs/benchmarks
OUT=docs/benchmarks/floor.jsonl
BASE="http://127.0.0.1:$PORT/FHIR/R4"
TOKEN=$(curl -s -X POST -d "user_id=021600556514" "http://127.0.0.1:$PORT/oauth2/sandbox/token" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
PATIENT=$(curl -s -H "Authorization: Bearer $TOKEN" -H "NHSD-eRS-Business-Function: REFERRING_CLINICIAN" \
  -H "NHSD-End-User-Organisation-ODS: R69" "$BASE/Patient?_count=1" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["entry"][0]["resource"]["id"])')
"$BIN/ers-load" --base-url "$BASE" --scenario create-referral --sandbox-user 021600556514 \
    --clients "$CLIENTS" --seconds "$SECONDS_" --warmup 3 --label "$(label ers-server)" --json "$OUT" || echo "(errors recorded above)" >&2
"$BIN/ers-load" --base-url "$BASE" --scenario read --path "Patient/$PATIENT" --sandbox-user 021600556514 \
    --clients "$CLIENTS" --seconds "$SECONDS_" --warmup 3 --label "$(label ers-server)" --json "$OUT" || echo "(errors recorded above)" >&2
kill $SERVER; wait $SERVER 2>/dev/null || true
for SCENARIO in create-referral read; do
  "$BIN/ers-floor" --scenario "$SCENARIO" --clients "$CLIENTS" --seconds "$SECONDS_" --warmup 3 \
      --label "$(label diesel)" --json "$OUT"
done
