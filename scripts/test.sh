#!/usr/bin/env bash
# Runs the whole balance_queue test suite. On a fresh Debian 12 machine it
# first installs everything it needs (scripts/setup.sh). Safe to run twice.
#
#   1. unit tests: `cargo pgrx test` runs the #[pg_test] tests inside a
#      pgrx-managed Postgres, and the plain #[test] tests;
#   2. integration tests (tests/): the release build installed into the
#      system Postgres, then each test starts its own throwaway cluster and
#      drives it with committed transactions, binary COPY and concurrent
#      sessions, on the real data in ../shared/data/.
#
# Environment: PG_MAJOR (default 15).
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"
PG_MAJOR="${PG_MAJOR:-15}"
PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

BQ_SKIP_INSTALL=1 scripts/setup.sh

# Every runner's output also goes to a log, summed up in the last line.
LOG="$(mktemp "${TMPDIR:-/tmp}/balance_queue-tests.XXXXXX")"
trap 'rm -f "$LOG"' EXIT

echo "== unit tests (cargo pgrx test pg${PG_MAJOR}) =="
if [ "$(id -u)" -eq 0 ]; then
  # initdb refuses to run as root: the pgrx test cluster runs as postgres.
  PGRX_DATA="${TMPDIR:-/tmp}/balance_queue-pgrx-tests"
  rm -rf "$PGRX_DATA"; install -d -o postgres -g postgres "$PGRX_DATA"
  cargo pgrx test "pg${PG_MAJOR}" --runas postgres --pgdata "$PGRX_DATA/data" 2>&1 | tee -a "$LOG"
  rm -rf "$PGRX_DATA"
else
  cargo pgrx test "pg${PG_MAJOR}" 2>&1 | tee -a "$LOG"
fi

# `cargo pgrx test` installed its test build; put the release build back.
scripts/setup.sh

# The release the upgrade test (tests/tests/upgrade.rs) starts from: built
# once from its commit into target/upgrade-base/, then reused.
echo "== upgrade base (scripts/upgrade-base.sh) =="
BQ_UPGRADE_BASE="$(scripts/upgrade-base.sh)"
export BQ_UPGRADE_BASE

echo "== integration tests against real servers (tests/) =="
cd tests
BQ_PG_CONFIG="$PG_CONFIG" RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}" cargo test --release "$@" 2>&1 | tee -a "$LOG"

# One closing line for the whole suite (unit + integration).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$LOG"
