"""Turning a run's report dict into a table, a JSON file and a throughput/latency plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mediasrv.loadtest.downlinks import table_rows


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(report: dict[str, Any]) -> str:
    lat, setup = report["latency_ms"], report["setup_ms"]
    rows = [
        ("server", report["server"]),
        ("visits / connections", f"{report['visits']} / {report['connections']}"),
        ("setup failures", report["setup_failures"]),
        ("streams sent / received", f"{report['streams_sent']} / {report['streams_received']}"
                                    f" (expected {report['streams_expected']})"),
        ("packets sent / received", f"{_fmt(report['packets_sent'])} / {_fmt(report['packets_received'])}"),
        ("loss (from sequence numbers)", f"{report['loss_pct']:.3f} % ({_fmt(report['packets_lost'])} of "
                                         f"{_fmt(report['packets_expected'])})"),
        ("latency p50 / p95 / p99", f"{lat['p50']:.2f} / {lat['p95']:.2f} / {lat['p99']:.2f} ms"),
        ("jitter (mean over streams)", f"{report['jitter_ms']:.3f} ms"),
        ("NACKs / PLIs / FIRs / REMBs", f"{report['nacks']} / {report['plis']} / {report['firs']} / {report['rembs']}"),
        ("setup time p50 / p99", f"{setup['p50']:.0f} / {setup['p99']:.0f} ms"),
        *setup_phase_rows(report),
        ("server CPU (whole run / steady)", f"{_fmt(report['server_cpu_s'])} / {_fmt(report['server_cpu_s_steady'])} s"),
        ("server peak RSS", f"{_fmt(report['server_peak_rss_mb'], 1)} MiB"),
        ("forwarded packets per server CPU-s", _fmt(report["forwarded_per_cpu_s"], 0)),
        ("generator CPU (steady: process; native pump)",
         f"{_fmt(report['generator_cpu_s_steady'])} s; {_fmt(report.get('generator_pump_cpu_s_steady'))} s"),
        ("CPU per received packet (steady: pump / server)",
         f"{_fmt(report.get('generator_pump_us_per_packet'))} / {_fmt(report.get('server_us_per_packet'))} µs"),
        ("longest pump pass gap", f"{_fmt(report.get('pump_max_gap_ms'))} ms"),
        *table_rows(report),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in rows)


def setup_phase_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    phases = report.get("setup_phases_ms")
    if not phases:
        return []
    cells = " · ".join(f"{name} {p['p50']:.0f} / {p['p99']:.0f}" for name, p in phases.items())
    return [("  phases p50 / p99 (ms)", cells)]


def write_json(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def plot_timeline(report: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = report["timeline"]
    t = [p["t"] for p in tl]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    ax1.plot(t, [p["tx_pps"] for p in tl], label="sent (pps)")
    ax1.plot(t, [p["rx_pps"] for p in tl], label="received (pps)")
    ax1.set_ylabel("packets / s")
    ax1.legend(loc="upper left")
    ax1.set_title(f"{report['server']}: {report['visits']} visits, "
                  f"{report['options']['publishers_per_room']} pub + {report['options']['subscribers_per_room']} sub each")
    ax2.plot(t, [p["latency_p50_ms"] for p in tl], label="latency p50")
    ax2.plot(t, [p["latency_p99_ms"] for p in tl], label="latency p99")
    ax2.set_ylabel("ms")
    ax2.set_xlabel("seconds")
    ax2.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
