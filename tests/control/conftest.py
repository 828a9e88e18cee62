"""Fixtures for the control API tests (helpers live in ctl_helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ctl_helpers import Server, make_settings


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(make_settings(tmp_path / "data"))
    await srv.start()
    yield srv
    await srv.stop()
