#!/usr/bin/env bash
# Referral benchmark (issue: referrals performance).
#   conformance-tests/bench/referrals.sh sqlite|postgres [SECONDS]
# A fresh sandbox database, a release server, then ers-load's create-referral scenario at 1, 8
# and 32 closed-loop clients, and the worklist scenario at 8 clients over the referrals just
# made. Appends one JSON line per run to docs/benchmarks/referrals.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
BACKEND="${1:?sqlite or postgres}"
SECONDS_="${2:-30}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ers-target}"
PG_ADMIN_URL="${ERS_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PORT=18491
cargo build --release --locked --bins -q
BIN="$CARGO_TARGET_DIR/release"
case "$BACKEND" in
  sqlite)
    DB_FILE="/var/tmp/ers-bench-referrals.db"
    rm -f "$DB_FILE" "$DB_FILE-wal" "$DB_FILE-shm"
    URL="sqlite://$DB_FILE" ;;
  postgres)
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS ers_bench_referrals" -c "CREATE DATABASE ers_bench_referrals"
    URL="${PG_ADMIN_URL%/*}/ers_bench_referrals" ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 2 ;;
esac
export ERS_DATABASE_URL="$URL" RUST_LOG=warn
ERS_BIND="127.0.0.1:$PORT" ERS_SEED=sandbox ERS_RATE_LIMIT_PER_SEC=0 ERS_DB_POOL_SIZE=16 "$BIN/ers-server" > /var/tmp/ers-bench-referrals-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$PORT/_ping" >/dev/null && break; sleep 0.5; done
MACHINE="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
mkdir -p docs/benchmarks
for CLIENTS in 1 8 32; do
  "$BIN/ers-load" --base-url "http://127.0.0.1:$PORT/FHIR/R4" --scenario create-referral \
      --sandbox-user 021600556514 --clients "$CLIENTS" --seconds "$SECONDS_" --warmup 3 \
      --label "$BACKEND commit=$(git rev-parse --short HEAD) machine=[$MACHINE] $(date -u +%FT%TZ)" --json docs/benchmarks/referrals.jsonl
done
"$BIN/ers-load" --base-url "http://127.0.0.1:$PORT/FHIR/R4" --scenario worklist \
    --sandbox-user 021600556514 --clients 8 --seconds "$SECONDS_" --warmup 3 \
    --label "$BACKEND commit=$(git rev-parse --short HEAD) machine=[$MACHINE] $(date -u +%FT%TZ)" --json docs/benchmarks/referrals.jsonl
