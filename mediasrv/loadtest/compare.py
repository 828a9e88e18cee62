"""`mediasrv-loadtest compare`: the same load, in one run, against mediasrv, a plain aiortc SFU and
Janus, each started here and stopped after its run. One table and a bar chart."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from mediasrv.loadtest.report import table, write_json
from mediasrv.loadtest.runner import LoadOptions, run_load
from mediasrv.loadtest.servers import KINDS, local_server

COLUMNS = [("forwarded pkts / CPU-s", "forwarded_per_cpu_s", "{:,.0f}"),
           ("ratio to janus", "ratio_to_janus", "{:.2f}×"),
           ("RSS above idle / visit MiB", "rss_per_visit_mb", "{:.2f}"),
           ("loss %", "loss_pct", "{:.3f}"),
           ("p99 latency ms", "p99_ms", "{:.2f}"),
           ("setup p50 ms", "setup_p50_ms", "{:.0f}"),
           ("setup p99 ms", "setup_p99_ms", "{:.0f}"),
           ("server CPU %", "cpu_pct", "{:.0f}"),
           ("peak RSS MiB", "rss_mb", "{:.0f}"),
           ("server µs / pkt", "server_us_per_packet", "{:.1f}"),
           ("generator µs / pkt", "generator_us_per_packet", "{:.1f}")]


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    steady = max(report["steady_s"], 1e-6)
    return {"server": report["server"], "forwarded_per_cpu_s": report["forwarded_per_cpu_s"],
            "loss_pct": report["loss_pct"], "p99_ms": report["latency_ms"]["p99"],
            "setup_p50_ms": report["setup_ms"]["p50"], "setup_p99_ms": report["setup_ms"]["p99"],
            "cpu_pct": 100 * (report["server_cpu_s_steady"] or 0) / steady,
            "rss_mb": report["server_peak_rss_mb"],
            "rss_per_visit_mb": report.get("server_rss_per_visit_mb"),
            "thread_cpu_pct": {k: 100 * v / steady for k, v in (report.get("server_thread_cpu_s") or {}).items()},
            "worker_packets": report.get("worker_packets_steady") or {},
            "worker_spread_pct": worker_spread_pct(report.get("worker_packets_steady") or {}),
            "worker_cpu_s": report.get("worker_cpu_s_steady") or {},
            "worker_cpu_spread_pct": worker_spread_pct(report.get("worker_cpu_s_steady") or {}),
            "server_us_per_packet": report.get("server_us_per_packet"),
            "generator_us_per_packet": report.get("generator_pump_us_per_packet"),
            "pump_max_gap_ms": report.get("pump_max_gap_ms"), "streams": report["streams_received"],
            "setup_failures": report["setup_failures"], "packets_received": report["packets_received"]}


def worker_spread_pct(packets: dict[str, float]) -> float | None:
    """How far the busiest media worker is above the least busy one, in percent of the latter."""
    values = [v for v in packets.values() if v >= 0]
    if len(values) < 2 or min(values) <= 0:
        return None
    return 100.0 * (max(values) - min(values)) / min(values)


def add_ratios(rows: list[dict[str, Any]], baseline: str = "janus") -> None:
    """Each row's delivered packets per server CPU-second over the baseline's, measured in the same
    run (the only comparison that a machine shared with other work does not blur)."""
    base = next((r for r in rows if r["server"] == baseline and r.get("forwarded_per_cpu_s")), None)
    for r in rows:
        if "skipped" not in r:
            r["ratio_to_janus"] = (r["forwarded_per_cpu_s"] / base["forwarded_per_cpu_s"]
                                   if base and r.get("forwarded_per_cpu_s") else None)


def thread_table(rows: list[dict[str, Any]], top: int = 6) -> str:
    """Where each server's CPU went over the steady window, by thread (percent of one core)."""
    lines = []
    for r in rows:
        threads = r.get("thread_cpu_pct") or {}
        if threads:
            shown = ", ".join(f"{k} {v:.1f}%" for k, v in list(threads.items())[:top])
            lines.append(f"- {r['server']}: {shown}")
        if r.get("worker_packets"):
            spread = r.get("worker_spread_pct")
            lines.append(f"- {r['server']} packets per media worker: "
                         + ", ".join(f"{k}: {v:,.0f}" for k, v in r["worker_packets"].items())
                         + (f" (spread {spread:.0f} %)" if spread is not None else ""))
        if r.get("worker_cpu_s"):
            spread = r.get("worker_cpu_spread_pct")
            lines.append(f"- {r['server']} CPU seconds per media worker: "
                         + ", ".join(f"{k}: {v:.2f}" for k, v in r["worker_cpu_s"].items())
                         + (f" (spread {spread:.0f} %)" if spread is not None else ""))
    return "\n".join(lines)


def comparison_table(rows: list[dict[str, Any]]) -> str:
    head = f"| server | {' | '.join(c[0] for c in COLUMNS)} |"
    sep = "|---" * (len(COLUMNS) + 1) + "|"
    lines = [head, sep]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['server']} | skipped: {r['skipped']} |" + " |" * (len(COLUMNS) - 1))
            continue
        cells = [fmt.format(r[key]) if r.get(key) is not None else "-" for _, key, fmt in COLUMNS]
        lines.append(f"| {r['server']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def rounds_table(per_round: list[list[dict[str, Any]]]) -> str:
    """Each round's throughput and ratio, so the spread behind the medians is in the report."""
    servers = list(dict.fromkeys(r["server"] for rows in per_round for r in rows))
    lines = ["| round | " + " | ".join(f"{s} pkts / CPU-s (ratio)" for s in servers) + " |",
             "|---" * (len(servers) + 1) + "|"]
    for i, rows in enumerate(per_round, 1):
        cells = []
        for server in servers:
            r = next((x for x in rows if x["server"] == server), None)
            if r is None or "skipped" in r:
                cells.append("skipped")
                continue
            ratio = r.get("ratio_to_janus")
            cells.append(f"{r['forwarded_per_cpu_s']:,.0f}" + (f" ({ratio:.2f}×)" if ratio is not None else ""))
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if "skipped" not in r]
    names = [r["server"] for r in done]
    panels = [("forwarded packets per server CPU-second", "forwarded_per_cpu_s"),
              ("loss %", "loss_pct"), ("p99 latency (ms)", "p99_ms"), ("setup p99 (ms)", "setup_p99_ms")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4))
    for ax, (label, key) in zip(axes, panels, strict=True):
        values = [r.get(key) or 0 for r in done]
        ax.bar(names, values, color=["#2a7ab9", "#d98c1f", "#5aa35a"][: len(names)])
        ax.set_title(label, fontsize=10)
        for i, v in enumerate(values):
            ax.annotate(f"{v:,.0f}" if v >= 100 else f"{v:.2f}", (i, v), ha="center", va="bottom", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# Taken whole from the median round by `combine_rounds`, not as medians of their own.
MEDIAN_ROUND_KEYS = frozenset({"worker_spread_pct", "worker_cpu_spread_pct"})


def round_order(servers: list[str], index: int) -> list[str]:
    """The servers in the order round `index` (from 0) runs them: reversed every other round, so
    that neither is always the one measured on a machine warmed (or loaded) by the other."""
    return list(servers) if index % 2 == 0 else list(reversed(servers))


def combine_rounds(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per server from several rounds: each figure the median over the rounds that ran it,
    the ratio to Janus the median of each round's own ratio (never a ratio of medians: a round's
    two measurements share that round's machine), with every round's ratio kept beside it. The
    per-thread and per-worker breakdowns, and the spreads computed from them, are those of the
    round with the median throughput (so the spread shown matches the figures beside it)."""
    servers = list(dict.fromkeys(r["server"] for rows in rounds for r in rows))
    combined: list[dict[str, Any]] = []
    for server in servers:
        ran = [r for rows in rounds for r in rows if r["server"] == server and "skipped" not in r]
        if not ran:
            skipped = next(r for rows in rounds for r in rows if r["server"] == server)
            combined.append({"server": server, "skipped": skipped["skipped"]})
            continue
        by_rate = sorted(ran, key=lambda r: r.get("forwarded_per_cpu_s") or 0.0)
        row = dict(by_rate[(len(by_rate) - 1) // 2])
        for key, value in row.items():
            if key in MEDIAN_ROUND_KEYS:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values = [r[key] for r in ran if isinstance(r.get(key), (int, float))]
                row[key] = statistics.median(values)
        ratios = [r["ratio_to_janus"] for r in ran if r.get("ratio_to_janus") is not None]
        row["ratio_to_janus"] = statistics.median(ratios) if ratios else None
        row["ratios_to_janus"] = ratios
        row["rounds"] = len(ran)
        row["setup_failures"] = sum(r["setup_failures"] for r in ran)
        combined.append(row)
    return combined


async def run_compare(opts: LoadOptions, servers: list[str], out_dir: str, rounds: int = 1) -> int:
    unknown = [s for s in servers if s not in KINDS]
    if unknown:
        raise ValueError(f"unknown servers {unknown}; choose from {', '.join(KINDS)}")
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_round: list[list[dict[str, Any]]] = []
    reports: dict[str, list[dict[str, Any]]] = {}
    for index in range(rounds):
        rows: list[dict[str, Any]] = []
        for kind in round_order(servers, index):
            try:
                async with local_server(kind) as target:
                    report = await run_load(opts, target)
            except Exception as exc:  # one server that cannot run must not lose the others' results
                print(f"compare: {kind} skipped: {exc}", file=sys.stderr)
                rows.append({"server": kind, "skipped": str(exc).splitlines()[0][:120]})
                continue
            if rounds > 1:
                write_json(report, out / f"{kind}-round{index + 1}.json")
            reports.setdefault(kind, []).append(report)
            label = f"{kind}, round {index + 1} of {rounds}" if rounds > 1 else kind
            print(f"\n== {label}\n{table(report)}", file=sys.stderr)
            rows.append(summarize(report))
        add_ratios(rows)
        per_round.append(sorted(rows, key=lambda r: servers.index(r["server"])))
    rows = combine_rounds(per_round) if rounds > 1 else per_round[0]
    for kind, kept in reports.items():
        # `<server>.json`: the run with the median throughput (the only run, with one round).
        kept.sort(key=lambda r: r.get("forwarded_per_cpu_s") or 0.0)
        write_json(kept[(len(kept) - 1) // 2], out / f"{kind}.json")
    load = (f"{opts.rooms} visits of {opts.publishers_per_room} (each participant publishes Opus + VP8 "
            f"{opts.plan.video_kbps} kbit/s with WHIP and watches the others with WHEP), {opts.duration_s:.0f} s"
            if opts.mutual else f"{opts.rooms} visits x ({opts.publishers_per_room} publishers + {opts.subscribers_per_room} "
            f"subscribers), VP8 {opts.plan.video_kbps} kbit/s{' + Opus' if opts.plan.audio else ''}, "
            f"{opts.duration_s:.0f} s")
    text = comparison_table(rows)
    if rounds > 1:
        text = f"median of {rounds} rounds (servers alternated)\n\n{text}\n\n{rounds_table(per_round)}"
    threads = thread_table(rows)
    if threads:
        text += "\n\nserver CPU by thread over the steady window (% of one core):\n" + threads
    print(f"\nload: {load}\n{text}")
    (out / "comparison.md").write_text(f"load: {load}\n\n{text}\n")
    result: dict[str, Any] = {"load": load, "rows": rows}
    if rounds > 1:
        result["rounds"] = per_round
    (out / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    try:
        bar_chart(rows, out / "comparison.png", load)
    except ImportError:
        print("compare: matplotlib not installed, no chart (pip install mediasrv[loadtest])", file=sys.stderr)
    return 0 if all("skipped" not in r and not r["setup_failures"] for r in rows) else 1
