#!/usr/bin/env bash
# The balance_queue demo. On a fresh Debian 12 machine it first installs
# everything it needs (scripts/setup.sh), then starts a throwaway Postgres
# cluster, creates a rindexer Transfer table, attaches the extension, loads
# transfers the way rindexer writes them, drains the queue, prints top
# holders and queue counts, and checks every balance against an independent
# recomputation from the raw rows. Safe to run twice.
#
#   scripts/demo.sh                        # generated workload (100,000 transfers)
#   scripts/demo.sh --csv ../shared/data/rindexer-reth/rocketpooleth-transfer_18900000-19000000.csv
#   scripts/demo.sh --help                 # all options
#
# Environment: PG_MAJOR (default 15).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/harness.sh" demo "$@"
