#!/usr/bin/env bash
# Sets up everything mediasrv needs on a fresh Debian machine: system packages, a virtualenv in .venv,
# the Python dependencies, and both native extensions built from source (Rust via maturin, Cython via
# setuptools). Idempotent: a second run only rebuilds what changed.
#   MEDIASRV_BOOTSTRAP_TEST=1  also installs what the test suite needs (chromium, redis, test extras)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
log() { printf '[bootstrap] %s\n' "$*" >&2; }

need_test=${MEDIASRV_BOOTSTRAP_TEST:-0}

# --- system packages (Debian) -------------------------------------------------------------------
apt_pkgs=(python3-venv pkg-config libssl-dev iproute2 util-linux)
if [ "$need_test" = 1 ]; then
  apt_pkgs+=(chromium redis-server fonts-liberation)
  # PostgreSQL: tests run the control API and tus across nodes on it (they start their own server)
  apt_pkgs+=(postgresql)
  # TURN tests: coturn (the relay operators run), nftables (a browser namespace's firewall),
  # libnss3-tools (certutil: a test CA Chromium trusts for TURN over TLS)
  apt_pkgs+=(coturn nftables libnss3-tools)
fi
# Janus is only needed by `mediasrv-loadtest compare`: MEDIASRV_BOOTSTRAP_COMPARE=1 scripts/bootstrap.sh
if [ "${MEDIASRV_BOOTSTRAP_COMPARE:-0}" = 1 ]; then
  apt_pkgs+=(janus)
fi
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Rust toolchain -----------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { log "cargo not found: install Rust (rustup) first"; exit 1; }

# --- Python virtualenv --------------------------------------------------------------------------
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv in $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U pip wheel "maturin>=1.5,<2" "setuptools>=77" "Cython>=3.0" "numpy>=2.0"

# --- Rust extension (native/, a Cargo workspace; the Python module is the bindings crate) --------
# Cargo's target dir is a build cache: keep it outside the checkout so a fresh clone reuses it.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-"$HOME/.cache/mediasrv/cargo-target"}
log "building native/ (Rust, release)"
mkdir -p "$CARGO_TARGET_DIR"
# The cache is shared by every checkout on the machine: one maturin build at a time, or two
# concurrent ones (a serve and a test run, say) rename each other's artefacts away.
exec 9>"$CARGO_TARGET_DIR/.mediasrv-build.lock"
flock 9
rm -rf "$ROOT/build/wheels"
(cd native/bindings && "$VENV/bin/maturin" build --release -q -o "$ROOT/build/wheels" >/dev/null)
flock -u 9
"${PIP[@]}" install --force-reinstall --no-deps "$ROOT"/build/wheels/mediasrv_native-*.whl
rm -rf "$ROOT/build/wheels"

# --- mediasrv itself, with the Cython extensions (ext/) -----------------------------------------
extras=""
[ "$need_test" = 1 ] && extras="[test]"
log "installing mediasrv$extras (builds ext/ with Cython)"
"${PIP[@]}" install --no-build-isolation -e ".$extras"
log "ready: $VENV"
