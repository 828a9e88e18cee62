#!/usr/bin/env bash
# One command for a fresh machine: set up, then start mediasrv with embedded defaults
# (SQLite and ./data, no other service). Extra arguments go to `mediasrv serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/mediasrv serve "$@"
