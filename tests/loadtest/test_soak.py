"""A seconds-long soak (`mediasrv-loadtest soak --start-server mediasrv`), run as an SRE would: the
report has its figures, and once the load stops every live-object gauge of the server is back to
its idle value (a visit that leaves something behind fails this)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from mediasrv.loadtest.soak import LIVE_GAUGES, back_to_idle, rss_figures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    cmd = [sys.executable, "-m", "mediasrv.loadtest", "soak", "--start-server", "mediasrv",
           "--visits", "2", "--visit-length", "3", "--duration", "8", "--warmup", "2",
           "--interval", "1", "--settle-timeout", "45", "--video-kbps", "300", "--quiet",
           "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    return done.returncode, json.loads(out.read_text()), done.stdout + done.stderr


def test_visits_came_and_went_and_every_gauge_is_back_to_idle(soak: tuple[int, dict[str, Any], str]) -> None:
    code, report, output = soak
    assert report["setup_failures"] == 0, report["failures"]
    assert report["visits_started"] >= 4 and report["visits_completed"] == report["visits_started"]
    assert set(report["idle_gauges"]) == {short for _, short in LIVE_GAUGES}
    assert report["back_to_idle"] == {name: True for name in report["idle_gauges"]}, \
        (report["idle_gauges"], report["gauges_after_load"])
    assert report["all_back_to_idle"] is True
    assert code == 0, output
    assert "every gauge back to idle" in output


def test_the_load_showed_in_the_gauges_and_the_process(soak: tuple[int, dict[str, Any], str]) -> None:
    _, report, _ = soak
    peaks = {name: max(s.get("gauges", {}).get(name, 0) for s in report["timeline"]) for name in report["idle_gauges"]}
    for name in ("rooms", "participants", "sessions", "transports", "tracks"):
        assert peaks[name] > report["idle_gauges"][name], name
    assert report["idle_gauges"]["tasks"] > 0  # the event loop's own tasks, at least the scrape
    assert peaks["tasks"] > report["idle_gauges"]["tasks"]
    phases = [s["phase"] for s in report["timeline"]]
    assert phases[0] == "idle" and phases[-1] == "settled" and "load" in phases
    for s in report["timeline"]:
        assert s["rss_mb"] > 0 and s["fds"] > 0 and s["threads"] > 0
    rss = report["rss"]
    assert rss["measured"] and rss["peak_mb"] >= rss["end_of_load_mb"] > 0
    assert rss["growth_after_warmup_pct"] is not None and rss["slope_after_warmup_mb_per_min"] is not None
    # No thread per session: the load need not add a thread.
    assert report["fds"]["max"] >= report["fds"]["idle"] and report["threads"]["max"] >= report["threads"]["idle"]


def test_rss_figures_and_idle_check_by_hand() -> None:
    samples = [{"t": 0.0, "phase": "idle", "rss_mb": 90.0},
               *({"t": float(t), "phase": "load", "rss_mb": 100.0 + t} for t in range(1, 11)),
               {"t": 12.0, "phase": "settled", "rss_mb": 105.0}]
    rss = rss_figures(samples, warmup_end_t=5.0)
    assert (rss["idle_mb"], rss["after_warmup_mb"], rss["end_of_load_mb"], rss["settled_mb"]) == (90, 105, 110, 105)
    assert rss["growth_after_warmup_pct"] == pytest.approx(100 * 5 / 105, abs=0.01)
    assert rss["slope_after_warmup_mb_per_min"] == pytest.approx(60.0)
    assert back_to_idle({"rooms": 0, "tasks": 4}, {"rooms": 0, "tasks": 5}) == {"rooms": True, "tasks": False}
