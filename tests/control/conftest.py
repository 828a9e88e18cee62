"""Fixtures for the control API tests (helpers live in ctl_helpers.py).

Every test that takes `srv` (or `database_url`) runs twice: on SQLite (the embedded default) and on
PostgreSQL (a fresh database of one server started for the whole session, tests/pg_cluster.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ctl_helpers import Server, make_settings


@pytest.fixture
async def srv(tmp_path: Path, database_url: str) -> AsyncIterator[Server]:
    srv = Server(make_settings(tmp_path / "data", database_url=database_url))
    await srv.start()
    yield srv
    await srv.stop()
