"""Capacity mode: add visits step by step until loss or p99 latency passes its limit; the knee is
the last step that stayed within both (and connected every client)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from mediasrv.loadtest.runner import LoadOptions, Target, run_load


def step_ok(report: dict[str, Any], max_loss_pct: float, max_p99_ms: float) -> tuple[bool, str]:
    if report["setup_failures"]:
        return False, f"{report['setup_failures']} connections failed"
    if report["loss_pct"] > max_loss_pct:
        return False, f"loss {report['loss_pct']:.2f} % > {max_loss_pct} %"
    if report["latency_ms"]["p99"] > max_p99_ms:
        return False, f"p99 {report['latency_ms']['p99']:.1f} ms > {max_p99_ms} ms"
    return True, "ok"


async def find_knee(opts: LoadOptions, target: Target, step: int = 2, max_rooms: int = 40,
                    max_loss_pct: float = 1.0, max_p99_ms: float = 50.0) -> dict[str, Any]:
    if step < 1 or max_rooms < step:
        raise ValueError("--step must be >= 1 and --max-rooms >= --step")
    steps: list[dict[str, Any]] = []
    knee: dict[str, Any] | None = None
    broke: dict[str, Any] | None = None
    for rooms in range(step, max_rooms + 1, step):
        run_opts = dataclasses.replace(opts, rooms=rooms, seed=opts.seed + rooms)
        report = await run_load(run_opts, target)
        ok, why = step_ok(report, max_loss_pct, max_p99_ms)
        row = {"rooms": rooms, "ok": ok, "why": why, "streams": report["streams_received"],
               "rx_pps": report["packets_received"] / max(report["steady_s"], 1e-6),
               "loss_pct": report["loss_pct"], "p99_ms": report["latency_ms"]["p99"],
               "setup_p99_ms": report["setup_ms"]["p99"],
               "server_cpu_pct": 100 * (report["server_cpu_s_steady"] or 0) / max(report["steady_s"], 1e-6),
               "forwarded_per_cpu_s": report["forwarded_per_cpu_s"]}
        steps.append(row)
        print(f"capacity: {rooms} visits -> {why}", file=sys.stderr)
        if ok:
            knee = row
        else:
            broke = row
            break
    return {"server": target.name, "limits": {"loss_pct": max_loss_pct, "p99_ms": max_p99_ms},
            "per_visit": {"publishers": opts.publishers_per_room, "subscribers": opts.subscribers_per_room,
                          "video_kbps": opts.plan.video_kbps, "audio": opts.plan.audio},
            "knee": knee, "first_failure": broke, "steps": steps}


def knee_table(result: dict[str, Any]) -> str:
    lines = [f"{'visits':>6} {'streams':>7} {'rx pps':>9} {'loss %':>7} {'p99 ms':>7} {'cpu %':>6}  verdict"]
    for s in result["steps"]:
        lines.append(f"{s['rooms']:>6} {s['streams']:>7} {s['rx_pps']:>9.0f} {s['loss_pct']:>7.2f} "
                     f"{s['p99_ms']:>7.1f} {s['server_cpu_pct']:>6.0f}  {s['why']}")
    knee = result["knee"]
    if knee is None:
        lines.append("knee: below the first step")
    elif result["first_failure"] is None:
        lines.append(f"knee: not reached; {knee['rooms']} visits still within limits")
    else:
        lines.append(f"knee: {knee['rooms']} visits ({knee['streams']} streams); "
                     f"{result['first_failure']['rooms']} visits break it ({result['first_failure']['why']})")
    return "\n".join(lines)


def plot_steps(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["steps"]
    x = [s["rooms"] for s in steps]
    fig, (a1, a2) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    a1.plot(x, [s["loss_pct"] for s in steps], marker="o")
    a1.axhline(result["limits"]["loss_pct"], color="red", linestyle="--")
    a1.set_ylabel("loss %")
    a2.plot(x, [s["p99_ms"] for s in steps], marker="o")
    a2.axhline(result["limits"]["p99_ms"], color="red", linestyle="--")
    a2.set_ylabel("p99 latency (ms)")
    a2.set_xlabel("visits")
    a1.set_title(f"{result['server']}: capacity steps")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
