# Shared by the benchmark scripts (sourced, not run): the build, an empty database, waiting for
# the server, and the machine's description for the results' labels.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ers-target}"
PG_ADMIN_URL="${ERS_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# Where the benchmark databases are reached: PostgreSQL on this machine through its Unix socket
# (how a server beside its database connects: a round trip costs about half the CPU of one
# over loopback TCP, docs/BENCHMARKS.md, Booking), unless ERS_BENCH_POSTGRES_URL names
# another or ERS_BENCH_POSTGRES_TCP=1. PG_VIA goes into the results' labels.
PG_SOCKET_DIR="${ERS_BENCH_POSTGRES_SOCKET_DIR:-/var/run/postgresql}"
if [ -z "${ERS_BENCH_POSTGRES_URL:-}" ] && [ "${ERS_BENCH_POSTGRES_TCP:-0}" != 1 ] && [ -S "$PG_SOCKET_DIR/.s.PGSQL.5432" ]; then
  PG_BASE="postgres://postgres@$(printf %s "$PG_SOCKET_DIR" | sed 's|/|%2F|g')"
  PG_VIA=socket
else
  PG_BASE="${PG_ADMIN_URL%/*}"
  PG_VIA=tcp
fi
# pg_via: " postgres=socket" (or tcp) for a PostgreSQL run's label ($BACKEND), nothing for SQLite.
pg_via() { [ "${BACKEND:-}" = postgres ] && printf ' postgres=%s' "$PG_VIA"; return 0; }
BIN="$CARGO_TARGET_DIR/release"
MACHINE="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# fresh_database sqlite|postgres NAME: an empty database ers_bench_NAME (SQLite: a file under
# /var/tmp); sets URL.
fresh_database() {
  case "$1" in
    sqlite)
      local file="/var/tmp/ers-bench-$2.db"
      rm -f "$file" "$file-wal" "$file-shm"
      URL="sqlite://$file" ;;
    postgres)
      psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS ers_bench_$2" -c "CREATE DATABASE ers_bench_$2"
      URL="$PG_BASE/ers_bench_$2" ;;
    *) echo "backend must be sqlite or postgres" >&2; exit 2 ;;
  esac
}

# booking_database NAME [SERVER]: a fresh ers_bench_NAME on PostgreSQL holding the postcodes,
# the sandbox and a generated directory of 1,000 services and 200,000 slots, vacuumed and
# analysed, made by SERVER (an ers-server binary; the release build by default). Sets URL.
booking_database() {
  local server="${2:-$BIN/ers-server}"
  fresh_database postgres "$1"
  ERS_DATABASE_URL="$URL" RUST_LOG=warn "$server" import-postcodes "${ERS_OUTCODES:-../shared/geo/uk-outcodes.csv}"
  ERS_DATABASE_URL="$URL" RUST_LOG=warn "$server" seed
  ERS_DATABASE_URL="$URL" RUST_LOG=warn "$server" generate-directory 1000 200000
  psql "$URL" -qc "VACUUM ANALYZE"
}

# wait_ready PORT: until the server on PORT answers /_ping (at most two minutes).
wait_ready() {
  for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$1/_ping" >/dev/null && return 0; sleep 0.5; done
  echo "the server on port $1 did not start" >&2
  return 1
}

# analyze_while_running sqlite|postgres URL: these machines run PostgreSQL with autovacuum off;
# a production server has it on, and would analyze the tables as the rows a run makes arrive.
# Stands in for it until the script exits, as autovacuum would with the server's settings: once
# every autovacuum_naptime (60 s by default; ERS_BENCH_ANALYZE_EVERY=S for another period),
# ANALYZE each table autovacuum would, by its rule (more rows changed since the last ANALYZE
# than 50 + 10 % of the table, or the table's own settings: migration 000023 makes it 1 % for
# the shared resource tables), throttled as autovacuum throttles its workers
# (autovacuum_vacuum_cost_delay, 2 ms by default, for every vacuum_cost_limit of page costs).
# An ANALYZE of the whole database every 10 s, as at first, also made every connection plan its
# statements again each time (docs/BENCHMARKS.md, Referrals); every 10 s and unthrottled, as
# later, a pass took 5-9 s of every 15-19 (docs/BENCHMARKS.md, Booking). Sets ANALYZER (its pid,
# or "").
analyze_while_running() {
  ANALYZER=""
  if [ "$1" = postgres ] && [ "$(psql "$PG_ADMIN_URL" -Atc 'SHOW autovacuum')" = off ]; then
    local every throttle
    every="${ERS_BENCH_ANALYZE_EVERY:-$(psql "$PG_ADMIN_URL" -Atc "SELECT setting FROM pg_settings WHERE name = 'autovacuum_naptime'")}"
    throttle="$(psql "$PG_ADMIN_URL" -Atc "SELECT format('SET vacuum_cost_delay = %L; SET vacuum_cost_limit = %L;', CASE WHEN current_setting('autovacuum_vacuum_cost_delay') LIKE '-1%' THEN current_setting('vacuum_cost_delay') ELSE current_setting('autovacuum_vacuum_cost_delay') END, CASE WHEN current_setting('autovacuum_vacuum_cost_limit')::int > 0 THEN current_setting('autovacuum_vacuum_cost_limit') ELSE current_setting('vacuum_cost_limit') END)")"
    ( while sleep "$every"; do
        { echo "$throttle"
          psql "$2" -Atc "SELECT format('ANALYZE %I;', s.relname) FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.n_mod_since_analyze > COALESCE((SELECT option_value::float8 FROM pg_options_to_table(c.reloptions) WHERE option_name = 'autovacuum_analyze_threshold'), 50) + COALESCE((SELECT option_value::float8 FROM pg_options_to_table(c.reloptions) WHERE option_name = 'autovacuum_analyze_scale_factor'), 0.1) * GREATEST(c.reltuples, 0)" 2>/dev/null
        } | psql "$2" -q >/dev/null 2>&1 || true
      done ) &
    ANALYZER=$!
  fi
}
