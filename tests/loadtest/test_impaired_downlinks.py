"""`mediasrv-loadtest run --impair-share ... --impair-rate ...`: some simulated subscribers sit
behind a poor downlink (simulated in the generator's pump, acknowledged in their transport-cc
feedback as it came out of that link). The server must adapt to exactly those: a lower estimate,
video paused below its pause threshold, while the other subscribers keep their video.

A CI-sized run against a real mediasrv (subprocesses, 127.0.0.1), plus the pure helpers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mediasrv.loadtest.downlinks import estimates_by_ssrc, impaired_viewers, parse_rate
from mediasrv.loadtest.report import table

ROOMS, SUBSCRIBERS, DURATION_S = 2, 2, 12
# Below video_pause_bitrate (150 kbit/s) plus audio: the impaired subscribers' video must pause.
RATE = "100k"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("impaired") / "report.json"
    cmd = [sys.executable, "-m", "mediasrv.loadtest", "run", "--start-server", "mediasrv",
           "--rooms", str(ROOMS), "--publishers-per-room", "1", "--subscribers-per-room", str(SUBSCRIBERS),
           "--video-kbps", "600", "--duration", str(DURATION_S), "--ramp", "1", "--quiet",
           "--impair-share", "0.5", "--impair-rate", RATE, "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "server's estimate" in done.stdout  # the table has the per-group rows
    return json.loads(Path(out).read_text())


@pytest.mark.slow
def test_half_the_subscribers_are_impaired_and_all_send_feedback(report: dict[str, Any]) -> None:
    assert report["setup_failures"] == 0, report["failures"]
    groups = report["downlinks"]["groups"]
    imp, ok = groups["impaired"], groups["unimpaired"]
    assert imp["subscribers"] == ok["subscribers"] == ROOMS * SUBSCRIBERS // 2
    # One impaired viewer per room (spread evenly), each with a link of its own.
    assert sorted(p["room"] for p in imp["per_subscriber"]) == sorted({p["room"] for p in ok["per_subscriber"]})
    assert all(p["feedback_packets"] > 0 for g in (imp, ok) for p in g["per_subscriber"])
    assert imp["dropped_by_link"] > 0 and ok["dropped_by_link"] == 0


@pytest.mark.slow
def test_the_server_adapts_to_the_impaired_subscribers_only(report: dict[str, Any]) -> None:
    d = report["downlinks"]
    imp, ok = d["groups"]["impaired"], d["groups"]["unimpaired"]
    assert d["estimate_scrapes"] > 0
    # Every subscriber's estimate was read from /metrics (matched by its video SSRC).
    assert all(p["estimate_kbps_mean"] is not None for g in (imp, ok) for p in g["per_subscriber"])
    assert imp["estimate_kbps_max"] < ok["estimate_kbps_min"]
    last = d["estimate_timeline"][-1]
    assert last["impaired_kbps"] < last["unimpaired_kbps"]
    # Below the pause threshold: each impaired subscriber saw its video paused, no other did.
    assert imp["subscribers_paused_once"] == imp["subscribers"]
    assert imp["first_pause_after_s_median"] is not None
    assert ok["pauses"] == 0 and ok["paused_at_end"] == 0 and ok["first_pause_after_s_median"] is None
    assert d["server_video_pauses"] >= imp["subscribers"]
    # What came out of the link is bounded by it; the others got their video.
    assert imp["received_kbps_mean"] <= parse_rate(RATE) / 1000
    assert ok["video_kbps_mean"] > 4 * imp["video_kbps_mean"]
    assert all(p["video_ssrc_changes"] == 0 for g in (imp, ok) for p in g["per_subscriber"])


@pytest.mark.slow
def test_table_shows_both_groups(report: dict[str, Any]) -> None:
    text = table(report)
    assert "impaired downlink" in text and "100 kbit/s" in text
    assert "pauses / resumes" in text


def test_rates_parse() -> None:
    assert parse_rate("300k") == 300_000
    assert parse_rate("1.5M") == 1_500_000
    assert parse_rate("150kbit/s") == 150_000
    assert parse_rate("64000") == 64_000
    with pytest.raises(ValueError):
        parse_rate("fast")


def test_impaired_viewers_are_a_share_spread_over_rooms() -> None:
    # 20 viewers, a fifth impaired: viewers 4, 9, 14 and 19 of the run.
    assert impaired_viewers(2, 10, 0.2) == [frozenset(), frozenset(), frozenset({0}), frozenset(),
                                            frozenset({1}), frozenset(), frozenset(), frozenset({0}),
                                            frozenset(), frozenset({1})]
    assert impaired_viewers(2, 2, 0.5) == [frozenset({1}), frozenset({1})]
    assert impaired_viewers(3, 2, 0.0) == [frozenset(), frozenset()]
    assert impaired_viewers(2, 2, 1.0) == [frozenset({0, 1})] * 2


def test_estimates_are_matched_by_the_video_ssrc() -> None:
    text = "\n".join([
        '# TYPE mediasrv_subscription_estimate_bps gauge',
        'mediasrv_subscription_estimate_bps{kind="video",room="r1",subscription="7",track="2"} 123000.0',
        'mediasrv_subscription_estimate_bps{kind="audio",room="r1",subscription="6",track="1"} 123000.0',
        'mediasrv_subscription_estimate_bps{kind="video",room="r2",subscription="7",track="2"} 9000.0',
        'mediasrv_subscription_info{kind="video",room="r1",ssrc="4000000000",subscription="7",track="2"} 1.0',
        'mediasrv_subscription_info{kind="audio",room="r1",ssrc="55",subscription="6",track="1"} 1.0',
        'mediasrv_subscription_info_extra{kind="video",room="r2",ssrc="66",subscription="7",track="2"} 1.0',
    ])
    assert estimates_by_ssrc(text) == {4_000_000_000: 123_000.0}
