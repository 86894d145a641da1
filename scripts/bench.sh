#!/usr/bin/env bash
# The balance_queue benchmark. On a fresh Debian 12 machine it first installs
# everything it needs (scripts/setup.sh). It measures and prints; it asserts
# no timing. Results (markdown tables, the growth chart) go to --out
# (default bench-results/).
#
#   scripts/bench.sh                              # compare the five variants on 1,000,000 transfers
#   scripts/bench.sh --mode growth                # next 10,000 transfers on 100k, 1M, 10M of history
#   scripts/bench.sh --mode queries               # p50/p99 of the reading functions
#   scripts/bench.sh --mode sustained             # 10,000 transfers/s for 3 minutes, worker draining
#   scripts/bench.sh --mode all                   # all four
#   scripts/bench.sh --help                       # every option
#
# Environment: PG_MAJOR (default 15).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/harness.sh" bench "$@"
