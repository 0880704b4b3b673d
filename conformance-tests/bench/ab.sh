#!/usr/bin/env bash
# Two server builds compared at the same moment (PostgreSQL, booking).
#   conformance-tests/bench/ab.sh A B [ROUNDS] [SECONDS]
# A and B are each "." (the working tree, built here) or the path of an ers-server binary (for
# another commit: git worktree add /var/tmp/ers-ab-REV REV, then cargo build --release --bin
# ers-server there, and copy target/release/ers-server aside). These machines drift by a fifth
# within minutes, so runs one after the other cannot show a change of a few percent. Here both
# builds run together: each on its own copy of one database (the sandbox, 1000 services and
# 200000 slots, made with A's server), each booked by its own ers-load at 16 clients (book, as
# booking.sh), and each one's CPU a booking (its server and its PostgreSQL backends) is taken
# over the same seconds, so a slow spell of the machine slows both alike. The builds swap
# their start order every round. The same build against itself gave 0.984 and 1.006 in two
# rounds: read the mean of several rounds.
# Prints one line per round and the mean ratio, and appends one JSON line per round to
# docs/benchmarks/ab.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance-tests/bench/lib.sh
A="${1:?usage: ab.sh A B [ROUNDS] [SECONDS] (each . for the working tree or an ers-server binary)}"
B="${2:?usage: ab.sh A B [ROUNDS] [SECONDS]}"
ROUNDS="${3:-4}"
SECONDS_="${4:-20}"
PAIRS="${ERS_AB_PAIRS:-$(( (SECONDS_ + 4) * 700 ))}"
TICK=$(getconf CLK_TCK)
WORK=/var/tmp/ers-ab
mkdir -p "$WORK"
cargo build --release --locked -q --bin ers-load

# server A|B: the path of the ers-server binary it names ("." is built from the working tree
# and copied aside).
server() {
  if [ "$1" = . ]; then
    cargo build --release --locked -q --bin ers-server >&2
    cp "$BIN/ers-server" "$WORK/ers-server-working-tree"
    echo "$WORK/ers-server-working-tree"
  elif [ -f "$1" ] && [ -x "$1" ]; then
    echo "$1"
  else
    echo "ab.sh: $1 is neither . nor an ers-server binary" >&2
    exit 2
  fi
}
SERVER_A=$(server "$A")
SERVER_B=$(server "$B")

# The database both copies are made from.
booking_database ab_template "$SERVER_A"

# ticks PID...: the CPU the processes have used, in clock ticks.
# (utime and stime, the 14th and 15th fields, counted after the command name, which may hold spaces.)
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ u = $12 + $13 } END { print u + 0 }'))); done; echo $t; }
# booked TRACE FROM TO: answers that came back between FROM and TO seconds of the run's window.
booked() { awk -v lo="$2" -v hi="$3" '{ e = ($1 + $2) / 1000; if (e >= lo && e < hi) n++ } END { print n + 0 }' "$1"; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
sleep_until() { sleep "$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; printf "%.3f", (d > 0 ? d : 0) }')"; }

PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
LABEL="postgres commit=$(git rev-parse --short HEAD) machine=[$MACHINE]$(BACKEND=postgres pg_via) $(date -u +%FT%TZ)"
SUM=0
for ROUND in $(seq 1 "$ROUNDS"); do
  if [ $((ROUND % 2)) = 1 ]; then ORDER="a b"; else ORDER="b a"; fi
  declare -A SRV LOAD READY PORT=([a]=18495 [b]=18496) BINARY=([a]="$SERVER_A" [b]="$SERVER_B")
  for X in $ORDER; do
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS ers_bench_ab_$X" \
      -c "CREATE DATABASE ers_bench_ab_$X TEMPLATE ers_bench_ab_template STRATEGY FILE_COPY"
  done
  psql "$PG_ADMIN_URL" -qc CHECKPOINT
  for X in $ORDER; do
    ERS_DATABASE_URL="$PG_BASE/ers_bench_ab_$X" RUST_LOG=warn ERS_BIND="127.0.0.1:${PORT[$X]}" ERS_SEED=none \
      ERS_RATE_LIMIT_PER_SEC=0 ERS_DB_POOL_SIZE="${ERS_BENCH_POOL:-8}" "${BINARY[$X]}" > "$WORK/server-$X.log" 2>&1 &
    SRV[$X]=$!; PIDS+=($!)
  done
  for X in $ORDER; do wait_ready "${PORT[$X]}"; done
  for X in $ORDER; do
    rm -f "$WORK/load-$X.out"
    "$BIN/ers-load" --base-url "http://127.0.0.1:${PORT[$X]}/FHIR/R4" --scenario book \
      --sandbox-user 021600556514 --clients 16 --seconds "$SECONDS_" --warmup 2 --pairs "$PAIRS" \
      --trace "$WORK/trace-$X" > "$WORK/load-$X.out" 2>&1 &
    LOAD[$X]=$!; PIDS+=($!)
    READY[$X]=""
  done
  # Each ers-load measures from 2 s after its pairs are ready, for SECONDS.
  while [ -z "${READY[a]}" ] || [ -z "${READY[b]}" ]; do
    for X in a b; do
      if [ -z "${READY[$X]}" ] && grep -q "pairs ready" "$WORK/load-$X.out" 2>/dev/null; then READY[$X]=$(now); fi
      if [ -z "${READY[$X]}" ] && ! kill -0 "${LOAD[$X]}" 2>/dev/null; then cat "$WORK/load-$X.out" >&2; exit 1; fi
    done
    sleep 0.05
  done
  # The window: the seconds both measure, less one at each end.
  FROM=$(calc "(${READY[a]} > ${READY[b]} ? ${READY[a]} : ${READY[b]}) + 3")
  TO=$(calc "(${READY[a]} < ${READY[b]} ? ${READY[a]} : ${READY[b]}) + 2 + $SECONDS_ - 1")
  if awk "BEGIN { exit !($TO - $FROM < 5) }"; then
    echo "round $ROUND: the two runs overlap by under 5 s (pairs ready $(calc "${READY[a]} - ${READY[b]}") s apart); give more SECONDS" >&2
    exit 1
  fi
  sleep_until "$FROM"
  PG_A=$(pgrep -u postgres -f "ers_bench_ab_a " | tr '\n' ' '); PG_B=$(pgrep -u postgres -f "ers_bench_ab_b " | tr '\n' ' ')
  T0=$(now)
  # shellcheck disable=SC2086
  S0=("$(ticks "${SRV[a]}")" "$(ticks $PG_A)" "$(ticks "${SRV[b]}")" "$(ticks $PG_B)")
  sleep_until "$TO"
  T1=$(now)
  # shellcheck disable=SC2086
  S1=("$(ticks "${SRV[a]}")" "$(ticks $PG_A)" "$(ticks "${SRV[b]}")" "$(ticks $PG_B)")
  wait "${LOAD[a]}" "${LOAD[b]}"
  kill "${SRV[a]}" "${SRV[b]}"; wait "${SRV[a]}" "${SRV[b]}" 2>/dev/null || true
  N_A=$(booked "$WORK/trace-a" "$(calc "$T0 - ${READY[a]} - 2")" "$(calc "$T1 - ${READY[a]} - 2")")
  N_B=$(booked "$WORK/trace-b" "$(calc "$T0 - ${READY[b]} - 2")" "$(calc "$T1 - ${READY[b]} - 2")")
  ms() { calc "($2 - $1) * 1000 / $TICK / $3"; }
  SA=$(ms "${S0[0]}" "${S1[0]}" "$N_A"); PA=$(ms "${S0[1]}" "${S1[1]}" "$N_A")
  SB=$(ms "${S0[2]}" "${S1[2]}" "$N_B"); PB=$(ms "${S0[3]}" "${S1[3]}" "$N_B")
  RATIO=$(calc "($SB + $PB) / ($SA + $PA)")
  SUM=$(calc "$SUM + $RATIO")
  printf 'round %s (%s first, %.1f s): A %s bookings, %.3f + %.3f ms; B %s bookings, %.3f + %.3f ms; B/A CPU a booking %.3f\n' \
    "$ROUND" "${ORDER%% *}" "$(calc "$T1 - $T0")" "$N_A" "$SA" "$PA" "$N_B" "$SB" "$PB" "$RATIO"
  printf '{"label":"%s","scenario":"ab-book","a":"%s","b":"%s","round":%s,"first":"%s","window_s":%.2f,"a_bookings":%s,"a_server_ms":%.3f,"a_postgres_ms":%.3f,"b_bookings":%s,"b_server_ms":%.3f,"b_postgres_ms":%.3f,"b_over_a":%.4f}\n' \
    "$LABEL" "$A" "$B" "$ROUND" "${ORDER%% *}" "$(calc "$T1 - $T0")" "$N_A" "$SA" "$PA" "$N_B" "$SB" "$PB" "$RATIO" >> docs/benchmarks/ab.jsonl
done
printf 'B/A CPU a booking, mean of %s rounds: %.3f\n' "$ROUNDS" "$(calc "$SUM / $ROUNDS")"
