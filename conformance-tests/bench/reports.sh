#!/usr/bin/env bash
# Reports and bulk export benchmark (issue: reports, extracts and bulk export).
#   conformance-tests/bench/reports.sh sqlite|postgres [REFERRALS]
# A fresh sandbox database with REFERRALS synthetic referrals (default 1,000,000), their
# patients (one per four referrals) and appointments (about 60 %), and a release server. Then:
#   1. an analyst streams the active-referrals CSV (every active referral: no filter);
#   2. the referring organisation (R69, party to every generated referral) runs a FHIR Bulk
#      Data $export of all its ServiceRequests: kick-off to manifest, then every file fetched;
#   3. R69's worklists, paged by 8 clients for 30 s (a line in docs/benchmarks/referrals.jsonl).
# Each is run twice: the first reads a database the generator has just written (partly cold),
# the second a warm one. The server's memory is sampled every 100 ms throughout: VmRSS, and
# RssAnon (what the server allocates; the rest of VmRSS on SQLite is its memory-mapped database
# file). Appends one JSON line to docs/benchmarks/reports.jsonl.
# REUSE=1 measures the database of the previous run again instead of making a new one.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance-tests/bench/lib.sh
BACKEND="${1:?sqlite or postgres}"
REFERRALS="${2:-1000000}"
PORT=18497
WORK=/var/tmp/ers-bench-reports
mkdir -p "$WORK"
cargo build --release --locked --bins -q
DB_FILE="$WORK/reports.db"
case "$BACKEND" in
  sqlite) URL="sqlite://$DB_FILE" ;;
  postgres) URL="$PG_BASE/ers_bench_reports" ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 2 ;;
esac
export ERS_DATABASE_URL="$URL" RUST_LOG=warn
GEN_SECS=0
if [ "${REUSE:-0}" != 1 ]; then
  case "$BACKEND" in
    sqlite) rm -f "$DB_FILE" "$DB_FILE-wal" "$DB_FILE-shm" ;;
    postgres) psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS ers_bench_reports" -c "CREATE DATABASE ers_bench_reports" ;;
  esac
  "$BIN/ers-server" seed
  GEN_START=$(date +%s.%N)
  "$BIN/ers-server" generate-referrals "$REFERRALS"
  GEN_SECS=$(echo "$(date +%s.%N) - $GEN_START" | bc)
fi

ERS_BIND="127.0.0.1:$PORT" ERS_SEED=none ERS_RATE_LIMIT_PER_SEC=0 "$BIN/ers-server" > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER $SAMPLER 2>/dev/null || true' EXIT
wait_ready "$PORT"
: > "$WORK/rss.txt"
( while kill -0 "$SERVER" 2>/dev/null; do
    echo "$(date +%s.%N) $(awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} END {print r, a}' "/proc/$SERVER/status")" >> "$WORK/rss.txt"; sleep 0.1
  done ) &
SAMPLER=$!
token() { curl -s -X POST -d "user_id=$1" "http://127.0.0.1:$PORT/oauth2/sandbox/token" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'; }
max_rss() { awk -v a="$1" -v b="$2" '$1 >= a && $1 <= b && $2 > m { m = $2 } END { printf "%.0f", m / 1024 }' "$WORK/rss.txt"; }
max_anon() { awk -v a="$1" -v b="$2" '$1 >= a && $1 <= b && $3 > m { m = $3 } END { printf "%.0f", m / 1024 }' "$WORK/rss.txt"; }
ANALYST=(-H "Authorization: Bearer $(token 555031998111)" -H "NHSD-eRS-Business-Function: INFORMATION_ANALYST" -H "NHSD-End-User-Organisation-ODS: RR8")
REFERRER=(-H "Authorization: Bearer $(token 021600556514)" -H "NHSD-eRS-Business-Function: REFERRING_CLINICIAN" -H "NHSD-End-User-Organisation-ODS: R69")
IDLE_RSS=$(ps -o rss= -p "$SERVER" | awk '{printf "%.0f", $1 / 1024}')

# 1. The active-referrals CSV, twice.
csv_run() {
  local t0 out
  t0=$(date +%s.%N)
  out=$(curl -s -o "$WORK/active.csv" -w '%{http_code} %{size_download} %{time_total}' "${ANALYST[@]}" "http://127.0.0.1:$PORT/reports/active-referrals")
  read -r CSV_STATUS CSV_BYTES CSV_SECS <<< "$out"
  [ "$CSV_STATUS" = 200 ] || { echo "active-referrals: HTTP $CSV_STATUS" >&2; exit 1; }
  CSV_ROWS=$(( $(wc -l < "$WORK/active.csv") - 1 ))
  sleep 0.3
  CSV_RSS=$(max_rss "$t0" "$(date +%s.%N)"); CSV_ANON=$(max_anon "$t0" "$(date +%s.%N)")
}
csv_run; CSV1_SECS=$CSV_SECS; CSV1_RSS=$CSV_RSS; CSV1_ANON=$CSV_ANON
csv_run

# 2. $export of every ServiceRequest the referrer's organisation sees, twice.
export_run() {
  local t0 t1 t2 url code
  t0=$(date +%s.%N)
  url=$(curl -s -D - -o /dev/null "${REFERRER[@]}" -H "Prefer: respond-async" "http://127.0.0.1:$PORT/FHIR/R4/\$export?_type=ServiceRequest" | awk 'tolower($1) == "content-location:" {print $2}' | tr -d '\r')
  [ -n "$url" ] || { echo "\$export: no Content-Location" >&2; exit 1; }
  while :; do
    code=$(curl -s -o "$WORK/manifest.json" -w '%{http_code}' "${REFERRER[@]}" "$url")
    [ "$code" = 200 ] && break
    [ "$code" = 202 ] || { echo "\$export status: HTTP $code: $(cat "$WORK/manifest.json")" >&2; exit 1; }
    sleep 0.2
  done
  t1=$(date +%s.%N)
  EXPORTED=$(python3 -c 'import json,sys; print(sum(o["count"] for o in json.load(open(sys.argv[1]))["output"]))' "$WORK/manifest.json")
  python3 -c 'import json,sys; [print(o["url"]) for o in json.load(open(sys.argv[1]))["output"]]' "$WORK/manifest.json" > "$WORK/files.txt"
  : > "$WORK/export.ndjson"
  while read -r F; do curl -s "${REFERRER[@]}" "$F" >> "$WORK/export.ndjson"; done < "$WORK/files.txt"
  t2=$(date +%s.%N)
  DOWNLOADED=$(wc -l < "$WORK/export.ndjson")
  curl -s -X DELETE "${REFERRER[@]}" "$url" > /dev/null
  sleep 0.3
  EXPORT_RSS=$(max_rss "$t0" "$(date +%s.%N)"); EXPORT_ANON=$(max_anon "$t0" "$(date +%s.%N)")
  EXPORT_SECS=$(echo "$t1 - $t0" | bc)
  DOWNLOAD_SECS=$(echo "$t2 - $t1" | bc)
  RATE=$(echo "$EXPORTED / $EXPORT_SECS" | bc)
}
export_run; EXPORT1_SECS=$EXPORT_SECS; EXPORT1_RATE=$RATE
export_run

# 3. Worklists over the same referrals (issue: referrals): R69's clinician pages its
#    AWAITING_BOOKING list (most of the million) and its REJECTED_TRIAGE_RESPONSE list, 8 clients.
"$BIN/ers-load" --base-url "http://127.0.0.1:$PORT/FHIR/R4" --scenario worklist \
    --sandbox-user 021600556514 --clients 8 --seconds 30 --warmup 5 \
    --label "$BACKEND commit=$(git rev-parse --short HEAD) machine=[$MACHINE]$(pg_via) $(date -u +%FT%TZ) referrals=$REFERRALS" \
    --json docs/benchmarks/referrals.jsonl
DB_SIZE=$(case "$BACKEND" in sqlite) du -m "$DB_FILE" | cut -f1 ;; postgres) psql "$PG_ADMIN_URL" -Atc "SELECT pg_database_size('ers_bench_reports') / 1048576" ;; esac)

mkdir -p docs/benchmarks
LINE=$(printf '{"label":"%s commit=%s machine=[%s] %s","referrals":%s,"generate_secs":%.0f,"database_mb":%s,"idle_rss_mb":%s,"csv_rows":%s,"csv_bytes":%s,"csv_first_secs":%.3f,"csv_first_max_rss_mb":%s,"csv_first_max_anon_mb":%s,"csv_secs":%.3f,"csv_max_rss_mb":%s,"csv_max_anon_mb":%s,"export_resources":%s,"export_first_secs":%.3f,"export_first_per_sec":%s,"export_secs":%.3f,"export_per_sec":%s,"export_download_secs":%.3f,"export_downloaded":%s,"export_max_rss_mb":%s,"export_max_anon_mb":%s}' \
  "$BACKEND" "$(git rev-parse --short HEAD)" "$MACHINE" "$(date -u +%FT%TZ)" "$REFERRALS" "$GEN_SECS" "$DB_SIZE" "$IDLE_RSS" \
  "$CSV_ROWS" "$CSV_BYTES" "$CSV1_SECS" "$CSV1_RSS" "$CSV1_ANON" "$CSV_SECS" "$CSV_RSS" "$CSV_ANON" \
  "$EXPORTED" "$EXPORT1_SECS" "$EXPORT1_RATE" "$EXPORT_SECS" "$RATE" "$DOWNLOAD_SECS" "$DOWNLOADED" "$EXPORT_RSS" "$EXPORT_ANON")
echo "$LINE" | tee -a docs/benchmarks/reports.jsonl
