#!/usr/bin/env bash
# What a booking writes and reads in PostgreSQL (a diagnostic: prints, records nothing).
#   conformance-tests/bench/rows.sh [SECONDS] [CLIENTS]
# The sandbox with 1000 services and 200000 slots (as ab.sh), a release server, and ers-load's
# `book` at CLIENTS (default 16) clients; over SECONDS (default 20) of steady booking, each
# table's rows inserted, updated (HOT or not) and deleted, its scans and the rows they read,
# and each index's scans and the entries they read, from PostgreSQL's statistics views, each
# divided by the appointments made over the same seconds. Both snapshots are taken while the
# run is steady (a backend reports its counts within about a second, so the two lags cancel),
# before ers-load's own checks at its end. What it found first: 386 entries of the outbox's
# number index read a booking (docs/BENCHMARKS.md, Booking, "The outbox's newest number").
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance-tests/bench/lib.sh
SECONDS_="${1:-20}"
CLIENTS="${2:-16}"
PORT=18497
WORK=/var/tmp/ers-rows
mkdir -p "$WORK"
cargo build --release --locked -q --bin ers-server --bin ers-load
booking_database rows
ERS_DATABASE_URL="$URL" RUST_LOG=warn ERS_BIND="127.0.0.1:$PORT" ERS_SEED=none ERS_RATE_LIMIT_PER_SEC=0 \
  ERS_DB_POOL_SIZE="${ERS_BENCH_POOL:-8}" "$BIN/ers-server" > "$WORK/server.log" 2>&1 &
SERVER=$!
LOAD=""
trap 'kill $SERVER $LOAD 2>/dev/null || true' EXIT
wait_ready "$PORT"
rm -f "$WORK/load.out"
"$BIN/ers-load" --base-url "http://127.0.0.1:$PORT/FHIR/R4" --scenario book \
  --sandbox-user 021600556514 --clients "$CLIENTS" --seconds "$((SECONDS_ + 8))" --warmup 0 \
  --pairs "$(( (SECONDS_ + 10) * 800 ))" > "$WORK/load.out" 2>&1 &
LOAD=$!
until grep -q "pairs ready" "$WORK/load.out"; do
  kill -0 "$LOAD" 2>/dev/null || { cat "$WORK/load.out" >&2; exit 1; }
  sleep 0.05
done
# snapshot FILE: the appointments so far, then every table's and index's counts.
snapshot() {
  psql "$URL" -AtF, -c "SELECT 'appointments', count(*) FROM resources WHERE res_type = 'Appointment'" \
    -c "SELECT 'wal', pg_current_wal_lsn() - '0/0'" \
    -c "SELECT 't:' || relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, seq_scan, seq_tup_read, COALESCE(idx_scan, 0), COALESCE(idx_tup_fetch, 0) FROM pg_stat_user_tables" \
    -c "SELECT 'i:' || indexrelname, idx_scan, idx_tup_read FROM pg_stat_user_indexes" > "$1"
}
sleep 3
snapshot "$WORK/before"
sleep "$SECONDS_"
snapshot "$WORK/after"
kill -0 "$LOAD" 2>/dev/null || { echo "ers-load ended before the second snapshot" >&2; cat "$WORK/load.out" >&2; exit 1; }
wait "$LOAD" || true
LOAD=""
echo "postgres commit=$(git rev-parse --short HEAD) machine=[$MACHINE]$(BACKEND=postgres pg_via) $(date -u +%FT%TZ), $CLIENTS clients, $SECONDS_ s"
python3 - "$WORK/before" "$WORK/after" <<'PY'
import sys
def load(path):
    return {l.split(',')[0]: [float(x) for x in l.split(',')[1:]] for l in open(path).read().splitlines() if l}
a, b = load(sys.argv[1]), load(sys.argv[2])
n = b['appointments'][0] - a['appointments'][0]
if n <= 0:
    sys.exit("no appointments were made between the snapshots")
d = {k: [(y - x) / n for x, y in zip(a.get(k, [0] * len(v)), v)] for k, v in b.items()}
print(f"{n:.0f} bookings; WAL {d['wal'][0]:.0f} bytes a booking")
print(f"{'a booking':32s} {'ins':>6s} {'upd':>6s} {'hot':>6s} {'del':>6s} {'seqscan':>8s} {'seqrows':>8s} {'idxscan':>8s} {'idxrows':>8s}")
for k in sorted(x for x in d if x.startswith('t:')):
    v = d[k]
    if any(abs(x) >= 0.005 for x in v):
        print(f"{k[2:]:32s} " + " ".join(f"{x:{w}.2f}" for x, w in zip(v, [6, 6, 6, 6, 8, 8, 8, 8])))
print(f"{'index':40s} {'scans':>7s} {'entries read':>13s}")
for k in sorted((x for x in d if x.startswith('i:')), key=lambda x: -d[x][1]):
    v = d[k]
    if any(abs(x) >= 0.005 for x in v):
        print(f"{k[2:]:40s} {v[0]:7.2f} {v[1]:13.2f}")
PY
