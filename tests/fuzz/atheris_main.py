"""Run one Python fuzz target under atheris (libFuzzer for Python, coverage-guided on bytecode).

    .venv/bin/python tests/fuzz/atheris_main.py vitals|sdp|tus [libFuzzer flags] [corpus dirs]

scripts/fuzz.sh passes the flags and corpora. The code under test is instrumented at import:
mediasrv's SDP and tus modules, aiortc's SDP parser and the plain-Python vitals reference decoder
(the Cython decoders are compiled C, not instrumented; the reference's branches, which follow the
same payload layouts, guide the search, and every input is decoded by both).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["mediasrv", "aiortc.sdp", "tests.fuzz"]):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(TARGETS)} [libFuzzer flags] [corpus dirs]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
