#!/usr/bin/env bash
# Installs everything balance_queue needs on a fresh Debian 12 machine, then
# builds the extension and installs it into the system Postgres.
#
# Safe to run twice: every step checks first and skips what is already done.
# Works as root and as a sudo-capable user.
#
# Environment:
#   PG_MAJOR   Postgres major version to build against (default 15)
#   BQ_SKIP_INSTALL=1  set up the toolchain only; do not build and install
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
PGRX_VERSION="0.18.0"
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

# --- Debian packages: Postgres server and headers, libclang for bindgen -----
apt_packages=("postgresql-${PG_MAJOR}" "postgresql-server-dev-${PG_MAJOR}"
              libclang-dev clang pkg-config build-essential sudo fonts-dejavu-core)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

# --- Rust toolchain: cargo must already be on the machine (rustup) ----------
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { log "cargo not found: install Rust (rustup) first"; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true

# --- cargo-pgrx, pinned to the pgrx version in Cargo.toml --------------------
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "installing cargo-pgrx $PGRX_VERSION (about 3 minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
else
  log "cargo-pgrx $PGRX_VERSION present"
fi

# --- pgrx init against the system Postgres: never downloads Postgres --------
if ! grep -q "pg${PG_MAJOR} *= *\"${PG_CONFIG}\"" "$HOME/.pgrx/config.toml" 2>/dev/null; then
  log "cargo pgrx init --pg${PG_MAJOR} ${PG_CONFIG}"
  cargo pgrx init "--pg${PG_MAJOR}" "$PG_CONFIG"
fi

# --- Node.js and the GraphQL test harness (tests/graphql): rindexer's --------
# PostGraphile server with the versions pinned in its package-lock.json.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "installing Debian packages: nodejs npm"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
if ! (cd "$ROOT_DIR/tests/graphql" && [ node_modules/.package-lock.json -nt package-lock.json ]); then
  log "npm ci in tests/graphql (PostGraphile 4.14.1, as rindexer 0.41)"
  (cd "$ROOT_DIR/tests/graphql" && npm ci --no-audit --no-fund >/dev/null)
else
  log "tests/graphql node modules present"
fi

# --- a non-root user needs write access to the system extension dirs --------
if [ -n "$SUDO" ]; then
  for d in "$("$PG_CONFIG" --pkglibdir)" "$("$PG_CONFIG" --sharedir)/extension"; do
    [ -w "$d" ] || { log "granting $USER write access to $d"; $SUDO chown -R "$USER" "$d"; }
  done
fi

# --- build and install the extension into the system Postgres --------------
if [ "${BQ_SKIP_INSTALL:-0}" != "1" ]; then
  log "building and installing balance_queue (release) into Postgres ${PG_MAJOR}"
  (cd "$ROOT_DIR" && cargo pgrx install --release --pg-config "$PG_CONFIG" \
     --no-default-features --features "pg${PG_MAJOR}" >/dev/null)
fi
log "done"
