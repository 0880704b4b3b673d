#!/usr/bin/env bash
# Fuzzes the HTTP API from its OpenAPI document with Schemathesis (PyPI): every operation,
# positive and negative inputs, as a referring clinician of the sandbox. A 5xx (or a dropped
# connection: a panic) fails the run, and so does any answer that breaks the document or HTTP:
# an undocumented status code, content type, header or body shape, a 405 without the right
# `Allow`, schema-invalid input accepted, an unauthenticated request answered. Not checked:
# that every schema-valid input is accepted (the API's business rules refuse most generated
# resources, with a 4xx that says why).
#
#   conformance-tests/fuzz/api.sh [MAX_EXAMPLES_PER_OPERATION] [SEED]
#
# Starts its own server (the debug build) on a fresh SQLite sandbox, or
# uses ERS_DATABASE_URL. Reports go to $CARGO_TARGET_DIR/fuzz-api/ (JUnit XML, NDJSON events);
# the last long run is recorded in docs/BENCHMARKS.md ("API fuzzing").
set -euo pipefail
cd "$(dirname "$0")/../.."
EXAMPLES="${1:-25}"
SEED="${2:-20261201}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ers-target}"
OUT="$CARGO_TARGET_DIR/fuzz-api"
mkdir -p "$OUT"
rm -f "$OUT"/*.ndjson "$OUT"/*.xml
if ! command -v schemathesis >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi
# The debug build of this checkout (debug assertions on; cargo does nothing if it is current).
cargo build --bin ers-server --locked --quiet
BIN="$CARGO_TARGET_DIR/debug/ers-server"
PORT="${ERS_FUZZ_PORT:-18490}"
DB="${ERS_DATABASE_URL:-sqlite://$(mktemp -d)/fuzz.db}"
ERS_DATABASE_URL="$DB" ERS_BIND="127.0.0.1:$PORT" ERS_SEED=sandbox ERS_RATE_LIMIT_PER_SEC=0 \
    ERS_DELIVERY=false RUST_LOG=warn "$BIN" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/_ping" >/dev/null && break; sleep 0.5; done
TOKEN=$(curl -sf -X POST -d user_id=021600556514 "http://127.0.0.1:$PORT/oauth2/sandbox/token" \
    | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
set +e
schemathesis run "http://127.0.0.1:$PORT/FHIR/R4/openapi.json" \
    --url "http://127.0.0.1:$PORT" \
    --checks all --exclude-checks positive_data_acceptance \
    --header "Authorization: Bearer $TOKEN" \
    --header "NHSD-eRS-Business-Function: REFERRING_CLINICIAN" \
    --header "NHSD-End-User-Organisation-ODS: R69" \
    --max-examples "$EXAMPLES" --seed "$SEED" --workers 2 \
    --phases examples,coverage,fuzzing \
    --suppress-health-check all --generation-database none \
    --request-timeout 30 --no-color \
    --report junit,ndjson --report-dir "$OUT" 2>&1 | tee "$OUT/summary.txt"
STATUS=${PIPESTATUS[0]}
set -e
# Requests sent, from the event stream.
REQUESTS=$(grep -o '"elapsed"' "$OUT"/*.ndjson 2>/dev/null | wc -l || true)
PANICS=$(grep -c "panicked" "$OUT/server.log" || true)
echo "fuzz-api: exit $STATUS, about $REQUESTS requests, $PANICS panics in the server log"
if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "fuzz-api: the server died" >&2
    exit 1
fi
[ "$PANICS" -eq 0 ] || exit 1
exit "$STATUS"
