"""CI-sized load run against a real mediasrv: the generator's report must be self-consistent and
agree with the server's own counters.

The generator and the server run as subprocesses (`mediasrv-loadtest run --start-server mediasrv`),
exactly as an SRE would run them, talking only over 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOMS, PUBLISHERS, SUBSCRIBERS, DURATION_S = 3, 2, 2, 10


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("loadtest") / "report.json"
    cmd = [sys.executable, "-m", "mediasrv.loadtest", "run", "--start-server", "mediasrv",
           "--rooms", str(ROOMS), "--publishers-per-room", str(PUBLISHERS),
           "--subscribers-per-room", str(SUBSCRIBERS), "--video-kbps", "600",
           "--duration", str(DURATION_S), "--ramp", "2", "--quiet", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(Path(out).read_text())


def test_every_client_connected_and_every_stream_arrived(report: dict[str, Any]) -> None:
    assert report["setup_failures"] == 0, report["failures"]
    assert report["connections"] == ROOMS * PUBLISHERS * (1 + SUBSCRIBERS)
    assert report["streams_sent"] == ROOMS * PUBLISHERS * 2  # audio + video each
    assert report["streams_received"] == report["streams_expected"] == ROOMS * PUBLISHERS * SUBSCRIBERS * 2


def test_received_never_exceeds_sent_times_subscribers(report: dict[str, Any]) -> None:
    assert 0 < report["packets_received"] <= report["packets_sent"] * SUBSCRIBERS
    # Every subscriber gets every publisher's stream, bar what precedes its first keyframe.
    assert report["packets_received"] >= 0.8 * report["packets_sent"] * SUBSCRIBERS


def test_loss_comes_from_sequence_numbers(report: dict[str, Any]) -> None:
    expected, lost = report["packets_expected"], report["packets_lost"]
    assert expected >= report["packets_received"] - lost  # lost = expected - received in streams
    assert lost == max(0, expected - report["packets_received"])
    assert report["loss_pct"] == pytest.approx(100.0 * lost / expected)
    assert report["srtp_errors"] == 0


def test_latencies_are_positive_and_ordered(report: dict[str, Any]) -> None:
    lat = report["latency_ms"]
    assert report["latency_samples"] == report["packets_received"]  # every payload carried a stamp
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["jitter_ms"] >= 0
    assert 0 < report["setup_ms"]["p50"] <= report["setup_ms"]["p99"]


def test_server_counters_agree_with_the_generator(report: dict[str, Any]) -> None:
    c = report["server_counters"]
    server_in = c["mediasrv_rtp_packets_received_total"]
    server_out = c["mediasrv_rtp_packets_forwarded_total"] + c["mediasrv_rtp_retransmissions_total"]
    # Sending stops, in-flight packets drain, then both sides are read: they must match closely.
    assert server_in == pytest.approx(report["packets_sent"], rel=0.01, abs=5)
    assert server_out == pytest.approx(report["packets_received"], rel=0.01, abs=5)


def test_server_resources_were_measured(report: dict[str, Any]) -> None:
    assert report["server_cpu_s"] > 0
    assert report["server_peak_rss_mb"] > 0
    assert report["forwarded_per_cpu_s"] > 0
    assert len(report["timeline"]) >= DURATION_S - 1
