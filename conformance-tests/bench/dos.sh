#!/usr/bin/env bash
# Directory of Services benchmark (issue: DoS performance).
#   conformance-tests/bench/dos.sh sqlite|postgres [SERVICES] [SLOTS] [CLIENTS] [SECONDS]
# Loads SERVICES synthetic services and SLOTS slots (default 10000 and 1000000) into a fresh
# database, starts a release server on it, and runs ers-load's dos-patient-search scenario
# (postcode-centred search with specialty, priority, 25-mile radius and free slots) with
# CLIENTS closed-loop clients (default 8) for SECONDS (default 60). Appends one JSON line per
# run to docs/benchmarks/dos.jsonl and prints it. Needs ../shared/geo/uk-outcodes.csv (or
# ERS_OUTCODES=FILE).
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance-tests/bench/lib.sh
BACKEND="${1:?sqlite or postgres}"
SERVICES="${2:-10000}"
SLOTS="${3:-1000000}"
CLIENTS="${4:-8}"
SECONDS_="${5:-60}"
OUTCODES="${ERS_OUTCODES:-../shared/geo/uk-outcodes.csv}"
PORT=18490
cargo build --release --locked --bins -q
# ERS_BENCH_REUSE=1 keeps the database of the last run (same size) and only measures.
REUSE="${ERS_BENCH_REUSE:-0}"
case "$BACKEND" in
  sqlite)
    DB_FILE="/var/tmp/ers-bench-dos.db"
    [ "$REUSE" = 1 ] || rm -f "$DB_FILE" "$DB_FILE-wal" "$DB_FILE-shm"
    URL="sqlite://$DB_FILE" ;;
  postgres)
    [ "$REUSE" = 1 ] || psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS ers_bench_dos" -c "CREATE DATABASE ers_bench_dos"
    URL="$PG_BASE/ers_bench_dos" ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 2 ;;
esac
export ERS_DATABASE_URL="$URL" RUST_LOG=warn
LOAD_S=reused
if [ "$REUSE" != 1 ]; then
    "$BIN/ers-server" import-postcodes "$OUTCODES"
    "$BIN/ers-server" seed
    START=$(date +%s)
    RUST_LOG=info "$BIN/ers-server" generate-directory "$SERVICES" "$SLOTS" 2>&1 | tail -1
    LOAD_S="$(( $(date +%s) - START ))s"
fi
# Steady state: the database in the OS page cache (a national directory is read all day),
# as after a server has run a while; a cold first read of each area costs disk reads instead.
if [ "$BACKEND" = sqlite ]; then
    cat "$DB_FILE" > /dev/null
else
    psql "$URL" -qAtc "SELECT count(*) FROM resources" -c "SELECT count(*) FROM search_tokens" \
        -c "SELECT count(*) FROM search_refs" -c "SELECT count(*) FROM search_dates" -c "SELECT count(*) FROM search_geo" \
        -c "SELECT count(*) FROM report_slots" >/dev/null
fi
ERS_BIND="127.0.0.1:$PORT" ERS_SEED=none ERS_RATE_LIMIT_PER_SEC=0 "$BIN/ers-server" > /var/tmp/ers-bench-dos-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
wait_ready "$PORT"
mkdir -p docs/benchmarks
"$BIN/ers-load" --base-url "http://127.0.0.1:$PORT/FHIR/R4" --scenario dos-patient-search \
    --sandbox-user 021600556514 --postcodes "$OUTCODES" --clients "$CLIENTS" --seconds "$SECONDS_" --warmup 10 \
    --label "$BACKEND commit=$(git rev-parse --short HEAD) services=$SERVICES slots=$SLOTS load=${LOAD_S} machine=[$MACHINE]$(pg_via) $(date -u +%FT%TZ)" \
    --json docs/benchmarks/dos.jsonl
