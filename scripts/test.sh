#!/usr/bin/env bash
# One command for the whole test suite: set up (incl. chromium, redis), lint, cargo test, then pytest.
# Media and browser tests run inside a private network namespace (`unshare -n`): loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
MEDIASRV_BOOTSTRAP_TEST=1 scripts/bootstrap.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-"$HOME/.cache/mediasrv/cargo-target"}
PATH="$(pwd)/.venv/bin:$PATH"

echo "== ruff"
ruff check mediasrv benchmarks tests

echo "== mypy (config in pyproject.toml), stubtest of the mediasrv_native stubs"
mypy
python -m mypy.stubtest mediasrv_native --allowlist native/bindings/stubtest-allowlist.txt

echo "== import layering (contract in pyproject.toml)"
lint-imports --no-cache

echo "== cargo test, clippy (native/ workspace)"
# same build lock as bootstrap.sh: the target directory is shared by every checkout
(cd native && flock "$CARGO_TARGET_DIR/.mediasrv-build.lock" cargo test --workspace --quiet 2>&1 | tail -n 40)
(cd native && flock "$CARGO_TARGET_DIR/.mediasrv-build.lock" cargo clippy --workspace --all-targets --quiet -- -D warnings)

echo "== fuzzing, short run: each native and Python target for a few seconds (docs/fuzzing.md)"
FUZZ_SECONDS=${FUZZ_SECONDS:-5} scripts/fuzz.sh --short

echo "== benchmarks, smoke run (each once; timings are reported by --benchmark-only runs, never asserted)"
unshare -n -- bash -c 'ip link set lo up && exec python -m pytest benchmarks --benchmark-disable -q -p no:cacheprovider'

echo "== pytest (inside unshare -n)"
# `ip link set lo up` because a new network namespace starts with loopback down.
exec unshare -n -- bash -c 'ip link set lo up && exec python -m pytest "$@"' pytest "$@"
