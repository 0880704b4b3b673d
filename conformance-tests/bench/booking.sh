#!/usr/bin/env bash
# Booking benchmark (issue: booking performance).
#   conformance-tests/bench/booking.sh sqlite|postgres [SECONDS] [SERVICES] [SLOTS]
# A fresh database with the sandbox and a synthetic directory (default 1000 services, 300000
# slots: enough free routine slots for four runs at 1,600 bookings/s), a release server, then
# ers-load's booking scenarios:
#   book            32 clients, each request books its own free routine slot for its own new
#                   referral (the referrals are made first and not measured);
#   book + subscriptions  the same, with 100 rest-hook subscriptions to every referral change
#                   delivered to a receiver in ers-load (delivery lag); runs without, with,
#                   with and without them (the drop: middle runs against the outer two);
#   book-contended  64 clients, 2000 referrals racing for 100 slots.
# Each run also checks that no slot holds two booked appointments. Appends one JSON line per
# run to docs/benchmarks/booking.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance-tests/bench/lib.sh
BACKEND="${1:?sqlite or postgres}"
SECONDS_="${2:-20}"
SERVICES="${3:-1000}"
SLOTS="${4:-300000}"
OUTCODES="${ERS_OUTCODES:-../shared/geo/uk-outcodes.csv}"
PORT=18492
cargo build --release --locked --bins -q
fresh_database "$BACKEND" booking
export ERS_DATABASE_URL="$URL" RUST_LOG=warn
"$BIN/ers-server" import-postcodes "$OUTCODES"
"$BIN/ers-server" seed
RUST_LOG=info "$BIN/ers-server" generate-directory "$SERVICES" "$SLOTS" 2>&1 | tail -1
# After a bulk load autovacuum would vacuum and analyse the new tables (these machines run
# PostgreSQL with it off): the first run then starts where a production database would.
if [ "$BACKEND" = postgres ]; then psql "$URL" -qc "VACUUM ANALYZE"; fi
RUST_LOG="${ERS_BENCH_SERVER_LOG:-warn}" ERS_BIND="127.0.0.1:$PORT" ERS_SEED=none ERS_RATE_LIMIT_PER_SEC=0 ERS_DB_POOL_SIZE="${ERS_BENCH_POOL:-8}" "$BIN/ers-server" > /var/tmp/ers-bench-booking-server.log 2>&1 &
SERVER=$!
analyze_while_running "$BACKEND" "$URL"
trap 'kill $SERVER $ANALYZER 2>/dev/null || true' EXIT
wait_ready "$PORT"
# A pool other than the server's default (ERS_BENCH_POOL) is named in the label.
POOL_LABEL=""
if [ "${ERS_BENCH_POOL:-8}" != 8 ]; then POOL_LABEL=" pool=$ERS_BENCH_POOL"; fi
LABEL="$BACKEND commit=$(git rev-parse --short HEAD) services=$SERVICES slots=$SLOTS machine=[$MACHINE]$(pg_via)$POOL_LABEL $(date -u +%FT%TZ)"
mkdir -p docs/benchmarks
# book ($1: subscriptions, 0 for none): 32 clients, each booking its own slot. Enough pairs
# (referrals made first, each with its own free slot) for the whole run at 1,600 bookings/s:
# a run that uses them up ends early, with a short window (ERS_BENCH_PAIRS sets another number).
PAIRS="${ERS_BENCH_PAIRS:-$(( (SECONDS_ + 2) * 1600 ))}"
book() {
  "$BIN/ers-load" --base-url "http://127.0.0.1:$PORT/FHIR/R4" --scenario book \
      --sandbox-user 021600556514 --clients 32 --seconds "$SECONDS_" --warmup 2 \
      --pairs "$PAIRS" --subscriptions "$1" \
      --label "$LABEL" --json docs/benchmarks/booking.jsonl
}
# Without, with, with, without rest-hook subscriptions to every referral change (issue:
# notifications: delivery lag, and throughput beside the runs without them). Each run leaves
# the database larger and slower, so the order is balanced: the drop is the mean of the middle
# runs against the mean of the outer two.
book 0
book "${ERS_BENCH_SUBSCRIPTIONS:-100}"
book "${ERS_BENCH_SUBSCRIPTIONS:-100}"
book 0
"$BIN/ers-load" --base-url "http://127.0.0.1:$PORT/FHIR/R4" --scenario book-contended \
    --sandbox-user 021600556514 --clients 64 --seconds 10 --warmup 0 --pairs 2000 \
    --label "$LABEL" --json docs/benchmarks/booking.jsonl
