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
go vet ./...
go test -count=1 -timeout 20m "$@" ./...
# The cgo SQLite driver (the faster opt-in build) under the storage
# and room tests too; the default build above uses the pure-Go driver.
go test -count=1 -timeout 10m -tags "sqlite_cgo sqlite_fts5" "$@" ./storage/... ./roomserver/... ./syncapi/...
