#!/usr/bin/env bash
# Builds (once) the balance_queue release that the upgrade test starts from,
# and prints the directory that holds it:
#
#   <dir>/lib/balance_queue.so
#   <dir>/extension/balance_queue.control          (default_version = base)
#   <dir>/extension/balance_queue--<base>.sql      (its install script)
#   <dir>/REVISION                                 (the commit it was built from)
#
# The base is a git commit, not a tag (a clean clone may lack tags): the
# tree of that commit is exported with `git archive` and packaged with
# `cargo pgrx package --out-dir`, which never touches the system Postgres.
# Only an upgrade base, so it is built without the release profile's fat LTO.
# A finished build is reused; delete the directory to rebuild.
#
#   cd tests && BQ_UPGRADE_BASE=$(../scripts/upgrade-base.sh) cargo test --release --test upgrade
#
# Environment:
#   PG_MAJOR              Postgres major version (default 15)
#   BQ_BASE_REV           commit to build (default 895b2a3..., version 0.1.0)
#   BQ_UPGRADE_BASE_DIR   where to put it (default target/upgrade-base/<version>-pg<major>)
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR="${PG_MAJOR:-15}"
PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[upgrade-base] %s\n' "$*" >&2; }

# 0.1.0: the last commit before the first versioned schema change.
BASE_REV="${BQ_BASE_REV:-895b2a3ce7d332a0c80520e3d929d39cb71ca3c8}"
BASE_REV="$(git -C "$ROOT_DIR" rev-parse --verify --quiet "${BASE_REV}^{commit}")" \
  || { log "commit ${BQ_BASE_REV:-895b2a3} is not in this clone (shallow? git fetch --unshallow)"; exit 1; }
BASE_VERSION="$(git -C "$ROOT_DIR" show "${BASE_REV}:Cargo.toml" \
  | sed -n 's/^version *= *"\(.*\)"/\1/p' | head -n 1)"
[ -n "$BASE_VERSION" ] || { log "no version in Cargo.toml at $BASE_REV"; exit 1; }

OUT="${BQ_UPGRADE_BASE_DIR:-$ROOT_DIR/target/upgrade-base/${BASE_VERSION}-pg${PG_MAJOR}}"
# One build at a time: a second run waits, then reuses the first one's.
mkdir -p "$(dirname "$OUT")"
exec 9>"$OUT.lock"
flock 9

# The install script of every released version is checked in as
# sql/balance_queue--<version>.sql; say so when it differs from the build.
check_checked_in() {
  local checked_in="$ROOT_DIR/sql/balance_queue--${BASE_VERSION}.sql"
  local built="$OUT/extension/balance_queue--${BASE_VERSION}.sql"
  if [ ! -f "$checked_in" ]; then
    log "note: $checked_in is missing; it should be a copy of $built"
  elif ! cmp -s "$checked_in" "$built"; then
    log "warning: $checked_in differs from the script generated from ${BASE_REV:0:9} ($built)"
  fi
}

if [ -f "$OUT/REVISION" ] && [ "$(cat "$OUT/REVISION")" = "$BASE_REV" ] \
   && [ -f "$OUT/lib/balance_queue.so" ] \
   && [ -f "$OUT/extension/balance_queue--${BASE_VERSION}.sql" ]; then
  log "reusing balance_queue ${BASE_VERSION} (${BASE_REV:0:9}) in $OUT"
  check_checked_in
  echo "$OUT"
  exit 0
fi

command -v cargo >/dev/null 2>&1 || { log "cargo not found: run scripts/setup.sh"; exit 1; }
cargo pgrx --version >/dev/null 2>&1 || { log "cargo-pgrx not found: run scripts/setup.sh"; exit 1; }

# The exported tree and its own target dir stay beside the output until the
# build succeeds, so an interrupted build resumes where it stopped.
WORK="$OUT.build"
SRC="$WORK/src"
rm -rf "$SRC" "$WORK/package"
mkdir -p "$SRC"
git -C "$ROOT_DIR" archive "$BASE_REV" | tar -x -C "$SRC"

log "building balance_queue ${BASE_VERSION} from ${BASE_REV:0:9} (release, no LTO) into $OUT"
started=$(date +%s)
(
  cd "$SRC"
  export CARGO_TARGET_DIR="$WORK/target"
  export CARGO_PROFILE_RELEASE_LTO=false
  export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
  # The exported Cargo.lock is the one 0.1.0 was built and tested with.
  export PGRX_BUILD_FLAGS="--locked"
  cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$WORK/package" \
    --no-default-features --features "pg${PG_MAJOR}" >&2
)
log "built in $(( $(date +%s) - started )) s"

# `cargo pgrx package` lays the files out as they would be installed
# (<out>/usr/lib/postgresql/N/lib, <out>/usr/share/postgresql/N/extension).
PKG_LIB="$WORK/package$("$PG_CONFIG" --pkglibdir)"
PKG_EXT="$WORK/package$("$PG_CONFIG" --sharedir)/extension"
rm -rf "$OUT"
mkdir -p "$OUT/lib" "$OUT/extension"
cp "$PKG_LIB/balance_queue.so" "$OUT/lib/"
cp "$PKG_EXT"/balance_queue.control "$PKG_EXT"/balance_queue--*.sql "$OUT/extension/"
grep -q "^default_version = '${BASE_VERSION}'" "$OUT/extension/balance_queue.control" \
  || { log "control file does not say default_version = '${BASE_VERSION}'"; exit 1; }
[ -f "$OUT/extension/balance_queue--${BASE_VERSION}.sql" ] \
  || { log "cargo pgrx package wrote no balance_queue--${BASE_VERSION}.sql"; exit 1; }
echo "$BASE_REV" > "$OUT/REVISION"
rm -rf "$WORK"
check_checked_in
echo "$OUT"
