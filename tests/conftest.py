"""Shared fixtures: a real mediasrv server on 127.0.0.1 and token helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web

from mediasrv.app import create_app
from mediasrv.auth import mint_token
from mediasrv.config import Settings, load_settings, prepare_data_dir
from tests.pg_cluster import database_url, pg_cluster  # noqa: F401 (fixtures: both engines)


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    # The server runs on uvloop in production; run the tests on it too.
    return uvloop.EventLoopPolicy()


@dataclass
class Server:
    app: web.Application
    runner: web.AppRunner
    settings: Settings
    url: str

    def token(self, identity: str, role: str, room: str | None = None, ttl_s: int = 600, **kw: Any) -> str:
        return mint_token(self.settings.api_secret, identity=identity, role=role, room=room,
                          ttl_s=ttl_s, **kw)

    @property
    def rooms(self) -> Any:
        from mediasrv.api import appkeys as keys

        return self.app[keys.ROOMS]


async def start_server(data_dir: Path, **overrides: Any) -> Server:
    settings = load_settings(env={}, data_dir=data_dir, **overrides)
    prepare_data_dir(settings)
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return Server(app=app, runner=runner, settings=settings, url=f"http://127.0.0.1:{port}")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(tmp_path / "data")
    try:
        yield srv
    finally:
        await srv.runner.cleanup()
