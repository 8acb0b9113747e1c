#!/usr/bin/env bash
# Makes sure the services the tests use are running on this machine:
# PostgreSQL on 127.0.0.1:5432 (trust auth for local TCP, database "test")
# and NATS with JetStream on 127.0.0.1:4222. Installs them with apt if absent.
set -euo pipefail

log() { echo "services: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done; return 1; }

apt_ready=0
apt_install() {
  if [ $apt_ready = 0 ]; then as_root apt-get update -qq || true; apt_ready=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL
if ! port_open 5432; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    log "allowing trust auth on 127.0.0.1 for the tests"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $ver"
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  wait_port 5432 || { log "PostgreSQL did not come up on 5432"; exit 1; }
fi
if command -v psql >/dev/null; then
  if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    log "creating database test"
    psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null 2>&1 || \
      as_root su postgres -c "psql -c 'CREATE DATABASE test'" >/dev/null 2>&1 || true
  fi
fi

# NATS with JetStream
if ! port_open 4222; then
  if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
    log "installing nats-server"
    apt_install nats-server
  fi
  bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  as_root mkdir -p /var/lib/nats-server /var/log
  log "starting NATS"
  as_root start-stop-daemon --start --oknodo --background --exec "$bin" -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 || { log "NATS did not come up on 4222"; exit 1; }
fi
log "PostgreSQL on 127.0.0.1:5432 and NATS on 127.0.0.1:4222 are up"
