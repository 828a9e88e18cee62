"""mediasrv-loadtest pointed at one node of a cluster: visits follow the 307s to their owners and
placement spreads them over both nodes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.conftest import SECRET, Cluster, admin

pytestmark = pytest.mark.slow
ROOMS = 4


async def test_loadtest_through_an_entry_node_reaches_every_owner(cluster: Cluster, tmp_path: Path) -> None:
    a, b = await cluster.start(2)
    out = tmp_path / "report.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediasrv.loadtest", "run", a.url, "--secret", SECRET,
        "--rooms", str(ROOMS), "--publishers-per-room", "1", "--subscribers-per-room", "1",
        "--video-kbps", "300", "--duration", "4", "--ramp", "1", "--quiet", "--json", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    stdout, _ = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, stdout.decode()[-3000:]
    report = json.loads(out.read_text())
    assert report["setup_failures"] == 0, report["failures"]
    assert report["streams_received"] == report["streams_expected"] == ROOMS * 2
    # Each node served some of the visits (its own audit log has their joins).
    async with aiohttp.ClientSession() as http:
        joins = {}
        for node in (a, b):
            async with http.get(node.url + "/v1/audit", params={"action": "join"}, headers=admin()) as r:
                assert r.status == 200, await r.text()
                body = await r.json()
                joins[node.name] = len(body["entries"])
    assert all(n > 0 for n in joins.values()), joins
    assert sum(joins.values()) == ROOMS * 2  # a publisher and a viewer per room, each joined once
