#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh), builds one binary of the harness
# crate (tests/) and runs it from the caller's directory, so paths given on
# the command line resolve as typed. Used by demo.sh and bench.sh.
#
#   scripts/harness.sh BINARY [ARGS...]
#
# Environment: PG_MAJOR (default 15).
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR="${PG_MAJOR:-15}"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
binary="$1"; shift

"$ROOT_DIR/scripts/setup.sh"
cargo build --release --quiet --bin "$binary" --manifest-path "$ROOT_DIR/tests/Cargo.toml"
BQ_PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config" "$ROOT_DIR/tests/target/release/$binary" "$@"
