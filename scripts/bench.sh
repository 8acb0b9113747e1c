#!/usr/bin/env bash
# Runs one load-test scenario against a fresh Haven server started from a
# built binary, the way docs/benchmarks.md was measured:
#
#   bash scripts/bench.sh sqlite|postgres OUTDIR [haven loadtest flags...]
#
# It builds the binary (unless BENCH_BIN names one), starts the server on a
# new data folder (and, for postgres, a new database on 127.0.0.1:5432) with
# rate limits off, fast password hashing and a shared secret, runs
# `haven loadtest` with --metrics, --pid and --shared-secret filled in, and
# stops the server (and drops the database unless KEEP_DB=1). OUTDIR gets
# report.txt, report.json, server.log, and cpu.pprof / heap.pprof (open
# with `go tool pprof BINARY OUTDIR/cpu.pprof`).
#
# Example: bash scripts/bench.sh sqlite /tmp/b1 --users 500 --rooms 50 --rate 100 --duration 60s
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,15p' "$0" >&2
  exit 2
fi
db=$1 out=$2
shift 2
case $db in sqlite|postgres) ;; *) echo "bench.sh: database must be sqlite or postgres" >&2; exit 2 ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PATH=$PATH:/usr/local/go/bin
bin=${BENCH_BIN:-$out/haven}
if [ -z "${BENCH_BIN:-}" ]; then
  go build -o "$bin" ./cmd/haven
fi
port=${PORT:-18008}
mport=${METRICS_PORT:-19100}
secret=bench-shared-secret-$RANDOM$RANDOM
data=$(mktemp -d /tmp/haven-bench-data.XXXXXX)
ulimit -n "$(ulimit -Hn)"

envs=(HAVEN_DATA_DIR="$data" HAVEN_LISTEN=127.0.0.1:$port HAVEN_METRICS_LISTEN=127.0.0.1:$mport
  HAVEN_RATE_LIMITS_ENABLED=false HAVEN_PASSWORD_HASH_COST=4 HAVEN_REGISTRATION_SHARED_SECRET="$secret"
  HAVEN_LOGGING_LEVEL=warn)
dbname=
extra=()
if [ "$db" = postgres ]; then
  dbname=haven_bench_$(date +%s)_$RANDOM
  createdb -h 127.0.0.1 -U postgres "$dbname"
  envs+=(HAVEN_DATABASE="postgres://postgres@127.0.0.1:5432/$dbname?sslmode=disable")
  extra+=(--db-process postgres)
  echo "bench.sh: database $dbname (dropped at the end unless KEEP_DB=1)" >&2
fi

# The server refuses unknown HAVEN_* variables: start it with ours only.
unset_haven=()
for v in $(compgen -e | grep '^HAVEN_' || true); do unset_haven+=(-u "$v"); done
env "${unset_haven[@]}" "${envs[@]}" ${SERVER_ENV:-} "$bin" serve >"$out/server.log" 2>&1 </dev/null &
pid=$!
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  if [ -n "${dbname:-}" ] && [ "${KEEP_DB:-}" != 1 ]; then
    dropdb -h 127.0.0.1 -U postgres "$dbname" || true
  fi
}
trap stop EXIT
for _ in $(seq 1 300); do
  if curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { echo "bench.sh: the server exited:" >&2; cat "$out/server.log" >&2; exit 1; }
  sleep 0.1
done
echo "bench.sh: server pid $pid on 127.0.0.1:$port ($db), metrics on 127.0.0.1:$mport" >&2

set +e
"$bin" loadtest --hs "http://127.0.0.1:$port" --metrics "http://127.0.0.1:$mport" --pid "$pid" --shared-secret "$secret" \
  --cpu-profile "$out/cpu.pprof" --heap-profile "$out/heap.pprof" --json ${extra[@]+"${extra[@]}"} "$@" >"$out/report.json" 2>"$out/report.txt"
code=$?
set -e
cat "$out/report.txt"
if grep -qiE 'level=(error|warn)|panic' "$out/server.log"; then
  echo "bench.sh: server log (warnings and errors, last 20 lines):" >&2
  grep -iE 'level=(error|warn)|panic' "$out/server.log" | tail -n 20 >&2
fi
exit $code
