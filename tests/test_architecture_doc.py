"""docs/architecture.md's module tables name every source file of the tree, and nothing else.

The tables are how a newcomer finds their way: a module added, moved or removed without its row
fails here, so the map never drifts from the tree.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
# A table row whose first cell is one backticked path: | `mediasrv/rooms/room.py` | ... |
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|", re.M)


def _tracked(*patterns: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return {p for p in out if (ROOT / p).exists()}


def _documented() -> set[str]:
    return set(ROW.findall(DOC.read_text()))


def _source_files() -> set[str]:
    python = {p for p in _tracked("mediasrv/*.py") if not p.endswith("/__init__.py")}
    rust = {p for p in _tracked("native/*.rs") if "/src/" in p}
    cython = _tracked("ext/*.pyx")
    return python | rust | cython


def test_every_source_file_has_a_row() -> None:
    missing = sorted(_source_files() - _documented())
    assert not missing, f"add these to docs/architecture.md's module tables: {missing}"


def test_every_row_names_a_file_that_exists() -> None:
    stale = sorted(p for p in _documented() if not (ROOT / p).exists())
    assert not stale, f"docs/architecture.md names files that are not in the tree: {stale}"
