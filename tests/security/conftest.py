"""Fixtures for the security regression tests: a real server (the control API's test helpers)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "control"))

from ctl_helpers import Server, make_settings  # noqa: E402


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(make_settings(tmp_path / "data"))
    await srv.start()
    yield srv
    await srv.stop()
