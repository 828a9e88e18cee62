"""Two nodes versus one: the visits a cluster carries within the loss and latency limits, each node
pinned to one core (taskset), the same load generator (mediasrv-loadtest capacity) through one
entry node, one after the other in the same run. Minutes long, so outside the default runs: set
MEDIASRV_CLUSTER_BENCH=1 (docs/cluster.md, Benchmark). The ratio is reported, never asserted."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import SECRET, Cluster, RedisServer

pytestmark = pytest.mark.skipif(not os.environ.get("MEDIASRV_CLUSTER_BENCH"),
                                reason="minutes long: set MEDIASRV_CLUSTER_BENCH=1")
STEP = int(os.environ.get("MEDIASRV_CLUSTER_BENCH_STEP", "4"))
MAX_ROOMS = int(os.environ.get("MEDIASRV_CLUSTER_BENCH_MAX", "48"))


async def knee(entry: str, out: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediasrv.loadtest", "capacity", entry, "--secret", SECRET,
        "--step", str(STEP), "--max-rooms", str(MAX_ROOMS), "--publishers-per-room", "1",
        "--subscribers-per-room", "1", "--video-kbps", "500", "--duration", "6", "--ramp", "2",
        "--quiet", "--json", str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    stdout, _ = await proc.communicate()
    assert proc.returncode == 0, stdout.decode()[-3000:]
    return dict(json.loads(out.read_text()))


async def test_two_nodes_versus_one(tmp_path: Path) -> None:
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        pytest.skip("needs taskset and two cores")
    results = {}
    for count in (1, 2):
        redis = RedisServer(tmp_path)
        cluster = Cluster(tmp_path / f"c{count}", redis)
        (tmp_path / f"c{count}").mkdir()
        try:
            nodes = await cluster.start(count, cpus=list(range(count)), media_workers=1)
            results[count] = await knee(nodes[0].url, tmp_path / f"knee{count}.json")
        finally:
            cluster.stop()
            redis.stop()
    visits = {n: (r["knee"] or {"rooms": 0})["rooms"] for n, r in results.items()}
    ratio = visits[2] / visits[1] if visits[1] else float("inf")
    print(f"\ncluster capacity (1 publisher + 1 viewer per visit, 500 kbit/s, limits loss 1 %, p99 50 ms): "
          f"one node {visits[1]} visits, two nodes {visits[2]} visits, ratio {ratio:.2f}x "
          f"(first failures: {results[1]['first_failure'] and results[1]['first_failure']['why']}; "
          f"{results[2]['first_failure'] and results[2]['first_failure']['why']})")
    for n, r in results.items():
        for step in r["steps"]:
            print(f"  {n} node(s), {step['rooms']} visits: {step['why']}, loss {step['loss_pct']:.2f} %, "
                  f"p99 {step['p99_ms']:.1f} ms, entry node CPU {step['server_cpu_pct']:.0f} %")
