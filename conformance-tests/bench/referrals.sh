#!/usr/bin/env bash
# Referral benchmark (issue: referrals performance).
#   conformance-tests/bench/referrals.sh sqlite|postgres [SECONDS]
# A fresh sandbox database, a release server, then ers-load's create-referral scenario at 1, 8
# and 32 closed-loop clients, and the worklist scenario at 8 clients over the referrals just
# made. Appends one JSON line per run to docs/benchmarks/referrals.jsonl.
# ERS_BENCH_IDEMPOTENCY=1: every create carries an Idempotency-Key of its own (what a client
# that retries safely sends; the runs' JSON lines say so).
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance-tests/bench/lib.sh
BACKEND="${1:?sqlite or postgres}"
SECONDS_="${2:-30}"
PORT=18491
cargo build --release --locked --bins -q
fresh_database "$BACKEND" referrals
export ERS_DATABASE_URL="$URL" RUST_LOG=warn
ERS_BIND="127.0.0.1:$PORT" ERS_SEED=sandbox ERS_RATE_LIMIT_PER_SEC=0 ERS_DB_POOL_SIZE="${ERS_BENCH_POOL:-8}" "$BIN/ers-server" > /var/tmp/ers-bench-referrals-server.log 2>&1 &
SERVER=$!
analyze_while_running "$BACKEND" "$URL"
trap 'kill $SERVER $ANALYZER 2>/dev/null || true' EXIT
wait_ready "$PORT"
mkdir -p docs/benchmarks
for CLIENTS in 1 8 32; do
  "$BIN/ers-load" --base-url "http://127.0.0.1:$PORT/FHIR/R4" --scenario create-referral \
      ${ERS_BENCH_IDEMPOTENCY:+--idempotency-keys} \
      --sandbox-user 021600556514 --clients "$CLIENTS" --seconds "$SECONDS_" --warmup 3 \
      --label "$BACKEND commit=$(git rev-parse --short HEAD) machine=[$MACHINE]$(pg_via) $(date -u +%FT%TZ)" --json docs/benchmarks/referrals.jsonl
done
"$BIN/ers-load" --base-url "http://127.0.0.1:$PORT/FHIR/R4" --scenario worklist \
    --sandbox-user 021600556514 --clients 8 --seconds "$SECONDS_" --warmup 3 \
    --label "$BACKEND commit=$(git rev-parse --short HEAD) machine=[$MACHINE]$(pg_via) $(date -u +%FT%TZ)" --json docs/benchmarks/referrals.jsonl
