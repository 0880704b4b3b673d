#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 60), starting from the checked-in corpus and
# adding what it finds to it. Needs a nightly toolchain and cargo-fuzz
# (`rustup toolchain install nightly`, `cargo install cargo-fuzz`).
#
#   fhir-profiles/fuzz/run.sh [SECONDS] [TARGET...]
#
# A crash leaves its input in fhir-profiles/fuzz/artifacts/TARGET/: fix it, copy the input into
# corpus/TARGET/ (the replay tests `the_corpus_replays_without_a_panic` then keep it fixed on
# stable, in CI) and record the run in docs/BENCHMARKS.md ("Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(json xml validator search)
export CARGO_TARGET_DIR="${ERS_FUZZ_TARGET_DIR:-/var/tmp/ers-fuzz-target}"
for t in "${TARGETS[@]}"; do
    echo "== fuzz $t for ${SECONDS_EACH}s"
    LOG="$CARGO_TARGET_DIR/fuzz-$t.log"
    set +e
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 >"$LOG" 2>&1
    STATUS=$?
    set -e
    grep -E "^(Done|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))|SUMMARY|panicked" "$LOG" || true
    # Keep the corpus small: only inputs that add coverage.
    cargo +nightly fuzz cmin "$t" "fuzz/corpus/$t" >/dev/null 2>&1 || true
    echo "corpus $t: $(ls "fuzz/corpus/$t" | wc -l) inputs; full log $LOG"
    if [ "$STATUS" -ne 0 ] || ls "fuzz/artifacts/$t"/crash-* >/dev/null 2>&1; then
        echo "fuzz $t: crashes in fuzz/artifacts/$t" >&2
        exit 1
    fi
done
