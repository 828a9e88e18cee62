#!/usr/bin/env bash
# Coverage-guided fuzzing (docs/fuzzing.md). Native targets: cargo-fuzz + libFuzzer on the stable
# toolchain (`--sanitizer none`: AddressSanitizer needs nightly; the targets are safe Rust apart from
# one checked unsafe write, and build with debug assertions and overflow checks). Python targets:
# atheris, one process per target.
#
#   scripts/fuzz.sh --short [target...]   a few seconds per target (CI); FUZZ_SECONDS, default 8
#   scripts/fuzz.sh --long  [target...]   FUZZ_RUNS executions per native target (default 10M),
#                                         one target after another; FUZZ_PY_RUNS per Python target
#
# New corpus entries go to ~/.cache/mediasrv/fuzz/corpus/<target> (the committed seeds in
# native/fuzz/corpus and tests/fuzz/corpus are read, never written); a crash leaves its input in
# ~/.cache/mediasrv/fuzz/artifacts/<target>/ and makes the script exit 1. Per-target logs and a
# summary line (executions, coverage, features, corpus size) are in ~/.cache/mediasrv/fuzz/logs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-}
case "$MODE" in --short | --long) shift ;; *) echo "usage: $0 --short|--long [target...]" >&2; exit 2 ;; esac

NATIVE_TARGETS=(rtp_parse rtcp_parse srtp_unprotect demux stun tcp_framing depack jitter router_ops twcc)
PY_TARGETS=(vitals sdp tus)
if (($#)); then SELECTED=("$@"); else SELECTED=("${NATIVE_TARGETS[@]}" "${PY_TARGETS[@]}"); fi

CACHE="$HOME/.cache/mediasrv"
WORK="$CACHE/fuzz"
TOOLS="$CACHE/tools"
export PATH="$TOOLS/bin:$HOME/.cargo/bin:$PATH"
FUZZ_TARGET_DIR="$CACHE/fuzz-target"
BIN="$FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release"
mkdir -p "$WORK/logs" "$TOOLS"

is_native() { local t; for t in "${NATIVE_TARGETS[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }
is_python() { local t; for t in "${PY_TARGETS[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }
for t in "${SELECTED[@]}"; do
  is_native "$t" || is_python "$t" || { echo "unknown target $t" >&2; exit 2; }
done

# libFuzzer's final stats line (`Done N runs`), coverage (`cov:`/`ft:`) and corpus size from a log.
summarize() {
  local name=$1 log=$2 corpus=$3
  local done_line stat
  done_line=$(grep -a -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)
  stat=$(grep -a -E '^#[0-9]+' "$log" | grep -a 'cov:' | tail -n 1 || true)
  printf '%-15s %s | %s | corpus files: %s\n' "$name" "${done_line:-(no Done line)}" \
    "$(sed -E 's/.*(cov: [0-9]+ ft: [0-9]+).*/\1/' <<<"$stat")" "$(find "$corpus" -type f | wc -l)" |
    tee -a "$WORK/logs/summary-${MODE#--}.txt"
}

failed=0
native=()
for t in "${SELECTED[@]}"; do is_native "$t" && native+=("$t"); done
if ((${#native[@]})); then
  if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz into $TOOLS (once)"
    cargo install cargo-fuzz --locked --root "$TOOLS" --quiet
  fi
  echo "== building fuzz targets (cargo fuzz build --sanitizer none --debug-assertions)"
  # Every checkout shares the build directory: build under a lock, then run hard links to this
  # build's binaries (a later build by another checkout writes new files, never into these).
  mkdir -p "$FUZZ_TARGET_DIR" "$WORK/bin"
  RUN_BIN=$(mktemp -d "$WORK/bin/run.XXXXXX")
  trap 'rm -rf "$RUN_BIN"' EXIT
  (
    flock 9
    (cd native && cargo fuzz build --sanitizer none --debug-assertions --target-dir "$FUZZ_TARGET_DIR" 2>&1 |
      grep -E '^(error|warning)|Finished' || true)
    for t in "${native[@]}"; do
      [[ -x $BIN/$t ]] || { echo "fuzz build failed ($t)" >&2; exit 1; }
      ln -f "$BIN/$t" "$RUN_BIN/$t" 2>/dev/null || cp "$BIN/$t" "$RUN_BIN/$t"
    done
  ) 9>"$FUZZ_TARGET_DIR/.mediasrv-fuzz-build.lock"
  # The seeds authenticate with the targets' fixed keys (else the SRTP targets would fuzz nothing).
  # A second build (~40 s cold), so in the long run only: CI keeps the short run under ~3 min cold.
  if [[ $MODE == --long ]]; then
    (cd native/fuzz && CARGO_TARGET_DIR="$FUZZ_TARGET_DIR" cargo test --quiet --test seeds 2>&1 |
      grep -E 'test result|panicked|error' | head -n 5)
  fi
fi

for t in "${native[@]}"; do
  corpus="$WORK/corpus/$t"
  artifacts="$WORK/artifacts/$t"
  mkdir -p "$corpus" "$artifacts" "native/fuzz/corpus/$t"
  log="$WORK/logs/$t${MODE/--/-}.log"
  if [[ $MODE == --short ]]; then
    limit=(-max_total_time="${FUZZ_SECONDS:-8}")
  else
    limit=(-runs="${FUZZ_RUNS:-10000000}")
  fi
  # One datagram: no longer than a packet on the wire (MTU); sequences get libFuzzer's 4096.
  case $t in rtp_parse | rtcp_parse | stun | twcc) limit+=(-max_len=1500) ;; esac
  echo "== $t ($MODE)"
  if "$RUN_BIN/$t" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" "native/fuzz/corpus/$t" >"$log" 2>&1; then
    summarize "$t" "$log" "$corpus"
  else
    failed=1
    echo "!! $t failed: see $log; inputs in $artifacts/" >&2
    grep -a -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 8 >&2 || true
  fi
done

PY="$ROOT/.venv/bin/python"
for t in "${SELECTED[@]}"; do
  is_python "$t" || continue
  corpus="$WORK/corpus/py-$t"
  artifacts="$WORK/artifacts/py-$t"
  mkdir -p "$corpus" "$artifacts" "tests/fuzz/corpus/$t"
  log="$WORK/logs/py-$t${MODE/--/-}.log"
  if [[ $MODE == --short ]]; then
    limit=(-max_total_time="${FUZZ_SECONDS:-8}")
  else
    limit=(-runs="${FUZZ_PY_RUNS:-200000}")
  fi
  echo "== python $t ($MODE)"
  if "$PY" tests/fuzz/atheris_main.py "$t" "${limit[@]}" -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    summarize "py-$t" "$log" "$corpus"
  else
    failed=1
    echo "!! python $t failed: see $log; inputs in $artifacts/" >&2
    grep -a -E 'Error|Uncaught|Test unit written' "$log" | head -n 8 >&2 || true
  fi
done
exit "$failed"
