#!/usr/bin/env bash
# Every benchmark, then the summary of docs/BENCHMARKS.md (table and chart) regenerated from
# the results (issue: performance harness).
#   conformance-tests/bench/all.sh [sqlite|postgres|both]   (default both)
# Long: the 1M-referral report run alone takes about 40 minutes on PostgreSQL, the national day
# about 25, and the peer's first build more than 30. Each script can be run on its own; with
# REPORT_ONLY=1 only the summary is regenerated from the results already recorded.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHICH="${1:-both}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ers-target}"
case "$WHICH" in
  both) BACKENDS="sqlite postgres" ;;
  sqlite|postgres) BACKENDS="$WHICH" ;;
  *) echo "usage: all.sh [sqlite|postgres|both]" >&2; exit 2 ;;
esac
B=conformance-tests/bench
if [ -z "${REPORT_ONLY:-}" ]; then
  for BACKEND in $BACKENDS; do
    "$B/floor.sh" "$BACKEND"
    "$B/referrals.sh" "$BACKEND"
    "$B/booking.sh" "$BACKEND"
    "$B/dos.sh" "$BACKEND"
    "$B/reports.sh" "$BACKEND"
    "$B/national.sh" "$BACKEND"
  done
  "$B/peer.sh"
fi
cargo build --release --locked -q --bin ers-bench-report
"$CARGO_TARGET_DIR/release/ers-bench-report" --dir docs/benchmarks --doc docs/BENCHMARKS.md
