"""`mediasrv-loadtest compare --mode visits`: 1:1 visits in which both participants publish and
watch each other. A CI-sized run of two rounds against mediasrv (Janus too when it is installed),
plus the report's pure helpers."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from mediasrv.loadtest import procstat
from mediasrv.loadtest.compare import add_ratios, combine_rounds, round_order, worker_spread_pct
from mediasrv.loadtest.servers import parse_prometheus

VISITS, DURATION_S, ROUNDS = 2, 4, 2


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("visits")
    servers = "mediasrv,janus" if shutil.which("janus") and os.geteuid() == 0 else "mediasrv"
    cmd = [sys.executable, "-m", "mediasrv.loadtest", "compare", "--mode", "visits", "--servers", servers,
           "--rooms", str(VISITS), "--video-kbps", "400", "--duration", str(DURATION_S), "--ramp", "1",
           "--rounds", str(ROUNDS), "--quiet", "--out-dir", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, json.loads((out / "mediasrv.json").read_text())


@pytest.mark.slow
def test_each_participant_publishes_and_watches_the_other(result: tuple[Path, dict[str, Any]]) -> None:
    _, report = result
    assert report["setup_failures"] == 0, report["failures"]
    assert report["options"]["mutual"] is True
    # Per visit: two WHIP publishers and two WHEP viewers (each participant watches the other).
    assert report["connections"] == VISITS * 4
    assert report["streams_sent"] == VISITS * 2 * 2  # audio + video per participant
    assert report["streams_received"] == report["streams_expected"] == VISITS * 2 * 2
    assert report["packets_received"] >= 0.8 * report["packets_sent"]


@pytest.mark.slow
def test_visit_report_has_memory_threads_and_worker_load(result: tuple[Path, dict[str, Any]]) -> None:
    out, report = result
    assert report["server_idle_rss_mb"] > 0
    assert report["server_rss_per_visit_mb"] is not None
    threads = report["server_thread_cpu_s"]
    assert "main" in threads and any(k.startswith("media-worker-") for k in threads)
    assert set(report["worker_packets_steady"]) == set(report["worker_cpu_s_steady"])
    assert sum(report["worker_packets_steady"].values()) > 0
    # The receive gather's waits, and those that found nothing, in /metrics (summed over workers).
    counters = report["server_counters"]
    assert 0 <= counters["mediasrv_media_gather_waits_empty_total"] <= counters["mediasrv_media_gather_waits_total"]
    assert counters["mediasrv_media_gather_waits_total"] > 0
    text = (out / "comparison.md").read_text()
    assert "visits of 2" in text and "ratio to janus" in text and "RSS above idle / visit" in text
    assert "packets per media worker" in text


@pytest.mark.slow
def test_setup_is_reported_by_phase_with_the_slowest_connections(result: tuple[Path, dict[str, Any]]) -> None:
    _, report = result
    phases = report["setup_phases_ms"]
    assert list(phases) == ["answer", "connected", "handover", "answer_http"]
    assert all(0 < p["p50"] <= p["p99"] <= p["max"] for p in phases.values())
    assert phases["answer_http"]["max"] <= phases["answer"]["max"]
    slowest = report["setup_slowest"]
    assert len(slowest) == 5
    assert [s["ms"] for s in slowest] == sorted((s["ms"] for s in slowest), reverse=True)
    assert slowest[0]["ms"] == pytest.approx(report["setup_ms"]["max"], abs=0.1)
    for s in slowest:
        assert s["role"] in ("publisher", "subscriber") and s["started_s"] >= 0
        assert s["answer_ms"] + s["connected_ms"] + s["handover_ms"] == pytest.approx(s["ms"], abs=0.3)
        assert 0 < s["answer_http_ms"] <= s["answer_ms"]


@pytest.mark.slow
def test_rounds_are_reported_each_and_as_medians(result: tuple[Path, dict[str, Any]]) -> None:
    out, _ = result
    comparison = json.loads((out / "comparison.json").read_text())
    rounds, rows = comparison["rounds"], comparison["rows"]
    assert len(rounds) == ROUNDS
    servers = [r["server"] for r in rows]
    assert all([r["server"] for r in each] == servers for each in rounds)
    for server in servers:
        row = next(r for r in rows if r["server"] == server)
        each = [next(r for r in rnd if r["server"] == server) for rnd in rounds]
        assert row["rounds"] == ROUNDS
        assert row["forwarded_per_cpu_s"] == pytest.approx(statistics.median(r["forwarded_per_cpu_s"] for r in each))
        assert (out / f"{server}-round1.json").exists() and (out / f"{server}-round2.json").exists()
        if "janus" in servers:
            assert row["ratios_to_janus"] == [r["ratio_to_janus"] for r in each]
    text = (out / "comparison.md").read_text()
    assert f"median of {ROUNDS} rounds" in text and "| 2 |" in text


def test_rounds_alternate_the_order() -> None:
    servers = ["mediasrv", "janus"]
    assert [round_order(servers, i) for i in range(3)] == [servers, servers[::-1], servers]
    assert servers == ["mediasrv", "janus"]


def test_combined_rounds_take_medians_and_each_rounds_own_ratio() -> None:
    def row(server: str, rate: float, ratio: float | None, p99: float, failures: int = 0) -> dict[str, Any]:
        return {"server": server, "forwarded_per_cpu_s": rate, "ratio_to_janus": ratio, "p99_ms": p99,
                "setup_failures": failures, "thread_cpu_pct": {"main": rate / 1e4},
                "worker_cpu_spread_pct": rate / 10}

    rounds = [
        [row("mediasrv", 100.0, 5.0, 2.0), row("janus", 20.0, 1.0, 9.0), {"server": "aiortc-sfu", "skipped": "x"}],
        [row("mediasrv", 90.0, 3.0, 4.0, failures=1), row("janus", 30.0, 1.0, 7.0),
         {"server": "aiortc-sfu", "skipped": "x"}],
        [row("mediasrv", 120.0, 4.0, 3.0), row("janus", 30.0, 1.0, 8.0), {"server": "aiortc-sfu", "skipped": "x"}],
    ]
    m, j, a = combine_rounds(rounds)
    assert (m["forwarded_per_cpu_s"], m["p99_ms"]) == (100.0, 3.0)
    # The median of the rounds' own ratios (4.0), not the ratio of the medians (100 / 30).
    assert m["ratio_to_janus"] == 4.0 and m["ratios_to_janus"] == [5.0, 3.0, 4.0]
    assert m["setup_failures"] == 1 and m["rounds"] == 3
    assert m["thread_cpu_pct"] == {"main": 0.01}, "the breakdown of the median round"
    assert m["worker_cpu_spread_pct"] == 10.0, "and its spread"
    assert j["forwarded_per_cpu_s"] == 30.0
    assert a == {"server": "aiortc-sfu", "skipped": "x"}
    # Even rounds: the lower middle round's breakdown, the mean of the middle two as the figure.
    m2, _, _ = combine_rounds(rounds[:2])
    assert m2["forwarded_per_cpu_s"] == 95.0 and m2["thread_cpu_pct"] == {"main": 0.009}
    assert m2["worker_cpu_spread_pct"] == 9.0


def test_ratio_is_to_janus_in_the_same_run() -> None:
    rows: list[dict[str, Any]] = [{"server": "mediasrv", "forwarded_per_cpu_s": 50_000.0},
                                  {"server": "janus", "forwarded_per_cpu_s": 10_000.0},
                                  {"server": "aiortc-sfu", "skipped": "no"}]
    add_ratios(rows)
    assert rows[0]["ratio_to_janus"] == pytest.approx(5.0)
    assert rows[1]["ratio_to_janus"] == pytest.approx(1.0)
    assert "ratio_to_janus" not in rows[2]
    lone = [{"server": "mediasrv", "forwarded_per_cpu_s": 1.0}]
    add_ratios(lone)
    assert lone[0]["ratio_to_janus"] is None


def test_worker_spread() -> None:
    assert worker_spread_pct({"0": 120.0, "1": 100.0}) == pytest.approx(20.0)
    assert worker_spread_pct({"0": 100.0}) is None
    assert worker_spread_pct({"0": 0.0, "1": 5.0}) is None


def test_per_worker_metrics_keep_their_labels() -> None:
    text = ('mediasrv_worker_packets_total{worker="0"} 10\nmediasrv_worker_packets_total{worker="1"} 30\n'
            'mediasrv_rooms{kind="a"} 2\nmediasrv_rooms{kind="b"} 3\n')
    values = parse_prometheus(text)
    assert values["mediasrv_worker_packets_total"] == 40
    assert values['mediasrv_worker_packets_total{worker="1"}'] == 30
    assert values["mediasrv_rooms"] == 5 and 'mediasrv_rooms{kind="a"}' not in values


def test_thread_cpu_names_threads_and_groups_numbered_ones() -> None:
    stop = threading.Event()
    workers = [threading.Thread(target=stop.wait, name=f"pool-{i}") for i in range(3)]
    for t in workers:
        t.start()
    try:
        before = procstat.thread_cpu_s(os.getpid())
        sum(range(2_000_000))  # some CPU on the main thread
        after = procstat.thread_cpu_s(os.getpid())
    finally:
        stop.set()
        for t in workers:
            t.join()
    # The process's own thread is "main"; the others are named by /proc (Python 3.11 does not
    # name OS threads, so they share the interpreter's name, summed in one row).
    assert "main" in before and len(before) >= 2
    assert after["main"] >= before["main"]
    delta = procstat.thread_cpu_delta(before, after)
    assert all(v > 0 for v in delta.values())


def test_an_idle_main_thread_or_worker_is_reported_at_zero_other_idle_threads_are_not() -> None:
    before = {"main": 1.0, "media-worker-0": 2.0, "media-worker-1": 2.0, "ThreadPoolExecutor-_": 0.5}
    after = {"main": 1.0, "media-worker-0": 2.5, "media-worker-1": 2.0, "ThreadPoolExecutor-_": 0.5}
    delta = procstat.thread_cpu_delta(before, after)
    assert delta == {"media-worker-0": 0.5, "main": 0.0, "media-worker-1": 0.0}
    assert list(delta)[0] == "media-worker-0"
