"""Fixtures for the control API tests (helpers live in ctl_helpers.py).

Every test that takes `srv` (or `database_url`) runs twice: on SQLite (the embedded default) and on
PostgreSQL (a fresh database of one server started for the whole session, tests/pg_cluster.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ctl_helpers import Server, make_settings

from tests.pg_cluster import PostgresCluster, pg_cluster  # noqa: F401 (the session fixture)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The `database_url` setting of the test's server: '' (SQLite in the data dir) or a new
    PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()


@pytest.fixture
async def srv(tmp_path: Path, database_url: str) -> AsyncIterator[Server]:
    srv = Server(make_settings(tmp_path / "data", database_url=database_url))
    await srv.start()
    yield srv
    await srv.stop()
