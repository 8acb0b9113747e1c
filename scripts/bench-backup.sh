#!/usr/bin/env bash
# Backup and restore benchmarks, the way docs/benchmarks.md "Backup and
# restore" was measured:
#
#   bash scripts/bench-backup.sh sqlite|postgres OUTDIR
#
# Environment: DB_BYTES (database size to fill to, default 1 GiB),
# MEDIA_BYTES (media, default 5 GiB), LOAD_DURATION (default 60s),
# BENCH_BIN (a built haven; built otherwise), BACKUP_ARGS (added to every
# `haven backup`, e.g. "--max-rate 0"), WORK (folder for the data,
# default a new one under /tmp; removed at the end unless KEEP=1).
#
# 1. starts a fresh server; go run ./loadtest/benchfill api: users, rooms,
#    members and media files through the client API (real write path);
# 2. stops it; benchfill db: message events by bulk SQL into the
#    roomserver's tables until the database is DB_BYTES large;
# 3. starts it again and times `haven backup` (online, idle server),
#    `haven backup verify` and `haven restore` into a fresh data folder
#    (and, for postgres, a fresh database);
# 4. runs `haven loadtest` at 100 msg/s (500 users, 50 rooms) twice: alone,
#    then with `haven backup` running back to back for the whole run.
# 5. takes an incremental backup on top of a full one taken before the load
#    tests (what the load tests wrote: the delta's size and time);
# 6. with COMPARE="label=BIN ARGS;label=BIN ARGS;...", one more load test
#    per entry with that binary taking the backups back to back (say an
#    older build, or --max-rate 0), each after a load test alone, so that
#    builds or rates are compared under the same conditions.
# OUTDIR gets timings.txt and the logs and reports of every step.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,28p' "$0" >&2
  exit 2
fi
db=$1 out=$2
case $db in sqlite|postgres) ;; *) echo "bench-backup.sh: database must be sqlite or postgres" >&2; exit 2 ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PATH=$PATH:/usr/local/go/bin
bin=${BENCH_BIN:-$out/haven}
[ -n "${BENCH_BIN:-}" ] || go build -o "$bin" ./cmd/haven
fill=$out/benchfill
go build -o "$fill" ./loadtest/benchfill
DB_BYTES=${DB_BYTES:-1073741824}
MEDIA_BYTES=${MEDIA_BYTES:-5368709120}
LOAD_DURATION=${LOAD_DURATION:-60s}
work=${WORK:-$(mktemp -d /tmp/haven-bench-backup.XXXXXX)}
mkdir -p "$work"
port=${PORT:-18018}
secret=bench-shared-secret-$RANDOM$RANDOM
ulimit -n "$(ulimit -Hn)"
dbs=()
# newdb VAR: creates a database (dropped at the end) and sets VAR to its URL
# (not in a $(...) subshell, which would lose the list of databases).
newdb() {
  local name=haven_bb_$(date +%s)_$RANDOM
  createdb -h 127.0.0.1 -U postgres "$name"
  dbs+=("$name")
  printf -v "$1" '%s' "postgres://postgres@127.0.0.1:5432/$name?sslmode=disable"
}
live_db= restored_db=
if [ "$db" = postgres ]; then
  newdb live_db
  newdb restored_db
fi
unset_haven=()
for v in $(compgen -e | grep '^HAVEN_' || true); do unset_haven+=(-u "$v"); done
# haven DATA_DIR DATABASE ARGS...: the binary with this server's settings only.
haven() {
  local data=$1 database=$2
  shift 2
  env "${unset_haven[@]}" HAVEN_DATA_DIR="$data" ${database:+HAVEN_DATABASE="$database"} HAVEN_LISTEN=127.0.0.1:$port \
    HAVEN_RATE_LIMITS_ENABLED=false HAVEN_PASSWORD_HASH_COST=4 HAVEN_REGISTRATION_SHARED_SECRET="$secret" \
    HAVEN_LOGGING_LEVEL=warn "$bin" "$@"
}
pid=
start() {
  # exec: $! must be the server itself, not a subshell around it.
  (exec env "${unset_haven[@]}" HAVEN_DATA_DIR="$work/data" ${live_db:+HAVEN_DATABASE="$live_db"} HAVEN_LISTEN=127.0.0.1:$port \
    HAVEN_RATE_LIMITS_ENABLED=false HAVEN_PASSWORD_HASH_COST=4 HAVEN_REGISTRATION_SHARED_SECRET="$secret" \
    HAVEN_LOGGING_LEVEL=warn "$bin" serve >>"$out/server.log" 2>&1 </dev/null) &
  pid=$!
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "bench-backup.sh: the server exited:" >&2; tail -20 "$out/server.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench-backup.sh: the server did not start" >&2
  exit 1
}
stop() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; fi
}
cleanup() {
  stop
  if [ "${KEEP:-}" != 1 ]; then
    rm -rf "$work"
    for d in ${dbs[@]+"${dbs[@]}"}; do dropdb -h 127.0.0.1 -U postgres "$d" || true; done
  fi
}
trap cleanup EXIT
note() { echo "$*" | tee -a "$out/timings.txt"; }
# timed NAME CMD...: runs CMD, notes its wall time in seconds.
timed() {
  local name=$1
  shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$out/$name.log" 2>&1
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
mib() { echo "scale=1; $1 / 1048576" | bc; }
: >"$out/timings.txt"
note "bench-backup.sh $db: DB_BYTES=$DB_BYTES MEDIA_BYTES=$MEDIA_BYTES, $(nproc) cores, commit $(git rev-parse --short HEAD)"
note "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

start
t=$(timed fill-api "$fill" api --hs "http://127.0.0.1:$port" --shared-secret "$secret" --media-bytes "$MEDIA_BYTES")
note "fill through the API (users, rooms, media): ${t}s — $(grep 'media files' "$out/fill-api.log" || true)"
stop
t=$(timed fill-db "$fill" db --database "$live_db" --data-dir "$work/data" --bytes "$DB_BYTES")
note "fill by bulk SQL: ${t}s — $(tail -1 "$out/fill-db.log")"
start

media=$(du -sb "$work/data/media" | cut -f1)
t=$(timed backup haven "$work/data" "$live_db" backup --to "$work/backups" ${BACKUP_ARGS:-})
bk=$(ls -d "$work"/backups/*/ | tail -1)
dbf=$(stat -c %s "$bk/haven.db" 2>/dev/null || du -sb "$bk" | cut -f1)
total=$(du -sb "$bk" | cut -f1)
note "backup: ${t}s, $(mib "$total") MiB written (database copy $(mib "$dbf") MiB, media $(mib "$media") MiB): $(echo "scale=1; $total / 1048576 / $t" | bc) MiB/s; load $(cut -d' ' -f1-3 /proc/loadavg)"
note "  $(grep '^backup ' "$out/backup.log" | head -1)"
t=$(timed verify haven "$work/data" "$live_db" backup verify --scratch "$work/scratch" "$work/backups")
rm -rf "$work/scratch"
note "backup verify: ${t}s: $(echo "scale=1; $total / 1048576 / $t" | bc) MiB/s; load $(cut -d' ' -f1-3 /proc/loadavg)"
t=$(timed restore haven "$work/restored" "$restored_db" restore --from "$work/backups")
note "restore: ${t}s: $(echo "scale=1; $total / 1048576 / $t" | bc) MiB/s; load $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$work/restored"
rm -rf "$work/backups"
# The base of the incremental measured after the load tests.
haven "$work/data" "$live_db" backup --to "$work/chain" ${BACKUP_ARGS:-} >"$out/chain-full.log" 2>&1

# Delivery at 100 msg/s, without and with a backup running.
load() {
  "$bin" loadtest --hs "http://127.0.0.1:$port" --shared-secret "$secret" --prefix "$1" --users 500 --rooms 50 --rate 100 \
    --duration "$LOAD_DURATION" --warmup 10s >"$out/loadtest-$1.txt" 2>&1
}
note "load average before the load tests: $(cut -d' ' -f1-3 /proc/loadavg)"
load alone
note "loadtest alone:"; grep -iE 'deliver|p99|send' "$out/loadtest-alone.txt" | head -8 | tee -a "$out/timings.txt"
# backups LABEL BIN ARGS...: backups back to back with BIN until told to stop.
backups() {
  local label=$1 b=$2
  shift 2
  rm -f "$work/stop-backups"
  (
    n=0
    while [ ! -e "$work/stop-backups" ]; do
      n=$((n + 1))
      bin=$b haven "$work/data" "$live_db" backup --to "$work/bk-load" "$@" >>"$out/backup-during-load-$label.log" 2>&1 || true
      rm -rf "$work/bk-load"
      echo "backup $n done $(date +%T)" >>"$out/backup-during-load-$label.log"
    done
  ) &
  loop=$!
}
backups withbackup "$bin" ${BACKUP_ARGS:-}
load withbackup
touch "$work/stop-backups"
wait "$loop" || true
note "loadtest with backups running back to back ($(grep -c '^backup .* done' "$out/backup-during-load-withbackup.log") backups, $(grep -o ' in [0-9.]*s:' "$out/backup-during-load-withbackup.log" | tr '\n' ' ')):"
grep -iE 'deliver|p99|send' "$out/loadtest-withbackup.txt" | head -8 | tee -a "$out/timings.txt"

t=$(timed incremental haven "$work/data" "$live_db" backup --incremental --to "$work/chain" ${BACKUP_ARGS:-})
full=$(ls -d "$work"/chain/*-full/ | head -1)
incr=$(ls -d "$work"/chain/*-incr/ | tail -1)
note "incremental after the load tests: ${t}s, $(mib "$(du -sb "$incr" | cut -f1)") MiB (the full backup before them: $(mib "$(du -sb "$full" | cut -f1)") MiB)"
note "  $(grep -E '^backup |^database: ' "$out/incremental.log" | tr '\n' ' ')"
rm -rf "$work/chain"

IFS=';' read -r -a compare <<<"${COMPARE:-}"
for c in ${compare[@]+"${compare[@]}"}; do
  label=${c%%=*}
  read -r -a cmd <<<"${c#*=}"
  load "alone-before-$label"
  note "loadtest alone (before $label):"; grep -iE 'deliver' "$out/loadtest-alone-before-$label.txt" | head -2 | tee -a "$out/timings.txt"
  backups "$label" "${cmd[@]}"
  load "with-$label"
  touch "$work/stop-backups"
  wait "$loop" || true
  note "loadtest with $label backups back to back (${cmd[*]}; $(grep -c '^backup .* done' "$out/backup-during-load-$label.log") backups, $(grep -o ' in [0-9.]*s:' "$out/backup-during-load-$label.log" | tr '\n' ' ')):"
  grep -iE 'deliver' "$out/loadtest-with-$label.txt" | head -2 | tee -a "$out/timings.txt"
done
note "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
