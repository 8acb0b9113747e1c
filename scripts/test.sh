#!/usr/bin/env bash
# The test command: sets up what the tests need on this machine, then runs
# every test (unit, storage on SQLite and PostgreSQL, end-to-end with real
# clients). Usage: bash scripts/test.sh [go test flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
export PATH=$PATH:/usr/local/go/bin
if [ -f sytest/js/package-lock.json ]; then
  (cd sytest/js && npm ci --no-audit --no-fund --loglevel=error)
fi
# Dendrite v0.13.8, a second implementation of the Server-Server API, for
# the federation interop tests (sytest/dendrite_test.go): built once from
# the Go module proxy into a tools folder.
dendrite_dir=${HAVEN_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/haven-tools}/dendrite-v0.13.8
if [ ! -x "$dendrite_dir/dendrite" ] || [ ! -x "$dendrite_dir/generate-config" ] || [ ! -x "$dendrite_dir/generate-keys" ]; then
  mkdir -p "$dendrite_dir"
  GOBIN=$dendrite_dir go install github.com/matrix-org/dendrite/cmd/dendrite@v0.13.8 \
    github.com/matrix-org/dendrite/cmd/generate-config@v0.13.8 github.com/matrix-org/dendrite/cmd/generate-keys@v0.13.8
fi
export SYTEST_DENDRITE_BIN_DIR=$dendrite_dir
# Debian packages some tests drive: installed when absent (the package
# lists are refreshed once, first, when an install fails without it).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
    { as_root apt-get update -qq >/dev/null 2>&1 || true; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}
# synadm, the admin command line made for Synapse's admin API, drives
# Haven's admin API in sytest/admin_test.go: a small Debian package.
if ! command -v synadm >/dev/null; then
  apt_install synadm ||
    echo "test: synadm could not be installed; its test is skipped" >&2
fi
# promtool (Debian package prometheus) checks docs/monitoring/alerts.yml and
# runs its unit tests in sytest/monitoring_test.go.
if ! command -v promtool >/dev/null; then
  apt_install prometheus ||
    echo "test: promtool could not be installed; the alert rules' check is skipped" >&2
fi
# OpenLDAP (Debian's slapd and ldap-utils): the LDAP / Active Directory
# sign-in tests start their own slapd on a loopback port
# (internal/testldap); the package's own server stays stopped.
if ! command -v slapd >/dev/null && [ ! -x /usr/sbin/slapd ]; then
  apt_install slapd ldap-utils ||
    echo "test: slapd could not be installed; the LDAP tests are skipped" >&2
fi
# goolm: mautrix-go's pure-Go Olm for the end-to-end encryption tests of
# sytest/olm_test.go (without the tag mautrix-go wants libolm through cgo).
go vet -tags goolm ./...
go test -count=1 -timeout 20m -tags goolm "$@" ./...
# The cgo SQLite driver (the faster opt-in build) under the storage,
# room and backup tests too (its backups copy through VACUUM INTO); the
# default build above uses the pure-Go driver.
go test -count=1 -timeout 10m -tags "sqlite_cgo sqlite_fts5" "$@" ./storage/... ./roomserver/... ./syncapi/... ./adminapi/backup/...
