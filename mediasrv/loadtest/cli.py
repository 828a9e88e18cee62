"""`mediasrv-loadtest` (also `python -m mediasrv.loadtest`).

    mediasrv-loadtest run URL --secret S [--rooms N ...]    load a running server
    mediasrv-loadtest run --start-server [...]              start a local mediasrv for the run
    mediasrv-loadtest run ... --impair-share 0.2 --impair-rate 300k [--impair-loss 2]
                                                            a fifth of the subscribers behind a poor link
    mediasrv-loadtest capacity [...]                        step up visits until loss or latency breaks
    mediasrv-loadtest compare [...]                         same load on mediasrv, aiortc SFU, Janus
    mediasrv-loadtest compare --mode visits --rooms 25 --servers mediasrv,janus
                                                            1:1 visits, both publishing and watching
    mediasrv-loadtest compare ... --rounds 3                each server three times, order alternated:
                                                            medians and every round's ratio
    mediasrv-loadtest soak [URL | --start-server] [...]     visits joining and leaving for a long time:
                                                            RSS, fds, threads, tasks and live objects
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from mediasrv.loadtest.downlinks import Impairment, parse_rate
from mediasrv.loadtest.runner import LoadOptions, Target
from mediasrv.loadtest.visit import MediaPlan

SUBCOMMANDS = ("run", "capacity", "compare", "soak")
VISIT_VIDEO_KBPS = 1450


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_load_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("load")
    g.add_argument("--mode", choices=("rooms", "visits"), default="rooms",
                   help="rooms: publishers and separate viewers watching each of them; visits: every "
                        "participant publishes and watches the others (a 1:1 visit with the default "
                        "two; --subscribers-per-room is ignored, video defaults to 1450 kbit/s)")
    g.add_argument("--rooms", type=int, default=2, help="simultaneous visits (default 2)")
    g.add_argument("--publishers-per-room", type=int, default=2, help="default 2")
    g.add_argument("--subscribers-per-room", type=int, default=2,
                   help="each watches every publisher of its room (default 2)")
    g.add_argument("--video-kbps", type=int, default=None,
                   help="VP8 bitrate per publisher (default 1000; 1450 in visits mode: ~1.5 Mbit/s with Opus)")
    g.add_argument("--fps", type=int, default=30, help="video frame rate (default 30)")
    g.add_argument("--keyframe-interval", type=float, default=3.0, help="seconds (default 3)")
    g.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True, help="send Opus")
    g.add_argument("--video", action=argparse.BooleanOptionalAction, default=True, help="send VP8")
    g.add_argument("--duration", type=float, default=30.0, help="seconds of media after ramp-up (default 30)")
    g.add_argument("--ramp", type=float, default=5.0, help="seconds over which visits start (default 5)")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--client-address", action="append", dest="client_addresses",
                   help="address clients gather ICE candidates on (default 127.0.0.1; repeatable)")
    g.add_argument("--quiet", action="store_true", help="no live progress line")


def add_downlink_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("subscribers' downlinks (bandwidth adaptation)")
    g.add_argument("--impair-share", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of subscribers (viewers) behind an impaired downlink, e.g. 0.2 (default 0)")
    g.add_argument("--impair-rate", type=parse_rate, default=0, metavar="RATE",
                   help="the impaired link's rate in bit/s, e.g. 300k or 1.5M (default: no rate limit)")
    g.add_argument("--impair-loss", type=float, default=0.0, metavar="PERCENT",
                   help="random loss on the impaired link, percent (default 0)")
    g.add_argument("--impair-queue", type=int, default=250, metavar="MS",
                   help="the impaired link's queue: longest wait before it drops a packet (default 250 ms)")
    g.add_argument("--follow-remb", action="store_true",
                   help="publishers' video follows the REMB the server sends them (at most --video-kbps), "
                        "as a browser's encoder does; without it their rate is fixed")
    g.add_argument("--transport-cc", action="store_true",
                   help="subscribers negotiate transport-cc and send its feedback like browsers (implied "
                        "by --impair-share); the report then has the server's estimate per group")


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the result (needs matplotlib)")


def load_options(args: argparse.Namespace) -> LoadOptions:
    mutual = args.mode == "visits"
    video_kbps = args.video_kbps or (VISIT_VIDEO_KBPS if mutual else 1000)
    plan = MediaPlan(video_kbps=video_kbps, fps=args.fps, keyframe_interval_s=args.keyframe_interval,
                     audio=args.audio, video=args.video)
    opts = LoadOptions(rooms=args.rooms, publishers_per_room=args.publishers_per_room,
                       subscribers_per_room=args.subscribers_per_room, plan=plan,
                       duration_s=args.duration, ramp_s=args.ramp, progress=not args.quiet,
                       seed=args.seed, mutual=mutual,
                       client_addresses=tuple(args.client_addresses or ("127.0.0.1",)))
    if getattr(args, "impair_share", None) is not None:  # `run` only
        opts.transport_cc = args.transport_cc
        plan.follow_remb = args.follow_remb
        opts.impairment = Impairment(rate_bps=args.impair_rate, loss_pct=args.impair_loss,
                                     queue_ms=args.impair_queue, share=args.impair_share)
    opts.check()
    return opts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mediasrv-loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulated visits against one server")
    run.add_argument("url", nargs="?", help="server base URL, e.g. http://127.0.0.1:8080")
    run.add_argument("--secret", default=os.environ.get("MEDIASRV_API_SECRET"),
                     help="API secret to mint room tokens (default $MEDIASRV_API_SECRET)")
    run.add_argument("--server-pid", type=int, help="local server process, for CPU and memory")
    run.add_argument("--start-server", choices=("mediasrv", "aiortc-sfu", "janus"),
                     help="start this server locally for the run instead of URL")
    add_load_options(run)
    add_downlink_options(run)
    add_output_options(run)

    cap = sub.add_parser("capacity", help="step up visits until loss > 1 %% or p99 > 50 ms")
    cap.add_argument("url", nargs="?")
    cap.add_argument("--secret", default=os.environ.get("MEDIASRV_API_SECRET"))
    cap.add_argument("--server-pid", type=int)
    cap.add_argument("--start-server", choices=("mediasrv", "aiortc-sfu", "janus"))
    cap.add_argument("--step", type=int, default=2, help="visits added per step (default 2)")
    cap.add_argument("--max-rooms", type=int, default=40, help="stop here if nothing breaks (default 40)")
    cap.add_argument("--max-loss", type=float, default=1.0, help="percent (default 1)")
    cap.add_argument("--max-p99", type=float, default=50.0, help="milliseconds (default 50)")
    add_load_options(cap)
    add_output_options(cap)

    cmp_ = sub.add_parser("compare", help="the same load against mediasrv, an aiortc SFU and Janus")
    cmp_.add_argument("--servers", default="mediasrv,aiortc-sfu,janus",
                      help="comma-separated subset of mediasrv, aiortc-sfu, janus")
    cmp_.add_argument("--out-dir", default="loadtest-results", help="JSON reports and the chart go here")
    cmp_.add_argument("--rounds", type=positive_int, default=1,
                      help="run every server this many times, alternating their order; report medians "
                           "and each round's ratio (default 1)")
    add_load_options(cmp_)
    add_soak_parser(sub)
    return p


def add_soak_parser(sub: Any) -> None:
    soak = sub.add_parser("soak", help="visits joining and leaving; what the server keeps of them")
    soak.add_argument("url", nargs="?", help="server base URL (give --server-pid for RSS, fds, threads)")
    soak.add_argument("--secret", default=os.environ.get("MEDIASRV_API_SECRET"),
                      help="API secret: room tokens, and an admin token for /metrics")
    soak.add_argument("--server-pid", type=int, help="local server process, for RSS, fds and threads")
    soak.add_argument("--start-server", choices=("mediasrv",), help="start a local mediasrv for the soak")
    soak.add_argument("--visits", type=int, default=3, help="visits at once (default 3)")
    soak.add_argument("--visit-length", type=float, default=20.0, help="seconds each visit stays (default 20)")
    soak.add_argument("--publishers-per-room", type=int, default=2, help="default 2")
    soak.add_argument("--subscribers-per-room", type=int, default=1, help="default 1")
    soak.add_argument("--video-kbps", type=int, default=500, help="default 500")
    soak.add_argument("--fps", type=int, default=30)
    soak.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True)
    soak.add_argument("--video", action=argparse.BooleanOptionalAction, default=True)
    soak.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    soak.add_argument("--warmup", type=float, default=60.0,
                      help="seconds before RSS growth is measured (default 60)")
    soak.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    soak.add_argument("--settle-timeout", type=float, default=60.0,
                      help="seconds the gauges get to return to idle after the load (default 60)")
    soak.add_argument("--max-rss-growth", type=float,
                      help="exit 1 if RSS grew more than this percent after the warm-up")
    soak.add_argument("--seed", type=int, default=1)
    soak.add_argument("--client-address", action="append", dest="client_addresses")
    soak.add_argument("--quiet", action="store_true")
    soak.add_argument("--json", metavar="FILE", help="write the report (with its timeline) as JSON")


def _target_from(args: argparse.Namespace) -> Target:
    if not args.url:
        raise SystemExit("give a server URL or --start-server")
    target = Target(name="server", url=args.url, api_secret=args.secret, pid=args.server_pid)
    if args.secret and (getattr(args, "impair_share", 0) or getattr(args, "transport_cc", False)):
        from mediasrv.loadtest.servers import mediasrv_counters, mediasrv_metrics

        # The server's per-subscription estimates (and pause counters) come from its /metrics.
        target.metrics_text = mediasrv_metrics(args.url, args.secret)
        target.counters = mediasrv_counters(args.url, args.secret)
    return target


async def _with_target(args: argparse.Namespace, body: Any) -> Any:
    if args.start_server:
        from mediasrv.loadtest.servers import local_server

        async with local_server(args.start_server) as target:
            return await body(target)
    return await body(_target_from(args))


def _emit(report: dict[str, Any], args: argparse.Namespace) -> None:
    from mediasrv.loadtest.report import plot_timeline, table, write_json

    print(table(report))
    if report["failures"]:
        print("setup failures (first few):", *report["failures"][:5], sep="\n  ")
    if args.json:
        write_json(report, args.json)
    if args.plot:
        plot_timeline(report, args.plot)


def cmd_run(args: argparse.Namespace) -> int:
    from mediasrv.loadtest.runner import run_load

    opts = load_options(args)
    report = asyncio.run(_with_target(args, lambda target: run_load(opts, target)))
    _emit(report, args)
    return 0 if report["setup_failures"] == 0 else 1


def cmd_capacity(args: argparse.Namespace) -> int:
    from mediasrv.loadtest.capacity import find_knee, knee_table

    opts = load_options(args)
    result = asyncio.run(_with_target(args, lambda target: find_knee(
        opts, target, step=args.step, max_rooms=args.max_rooms, max_loss_pct=args.max_loss,
        max_p99_ms=args.max_p99)))
    print(knee_table(result))
    if args.json:
        from mediasrv.loadtest.report import write_json

        write_json(result, args.json)
    if args.plot:
        from mediasrv.loadtest.capacity import plot_steps

        plot_steps(result, args.plot)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mediasrv.loadtest.compare import run_compare

    opts = load_options(args)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    return asyncio.run(run_compare(opts, servers, args.out_dir, rounds=args.rounds))


def cmd_soak(args: argparse.Namespace) -> int:
    from mediasrv.loadtest.report import write_json
    from mediasrv.loadtest.servers import mediasrv_counters
    from mediasrv.loadtest.soak import SoakOptions, run_soak, soak_table

    mutual = getattr(args, "mode", "rooms") == "visits"  # soak has no --mode
    video_kbps = args.video_kbps or (VISIT_VIDEO_KBPS if mutual else 1000)
    plan = MediaPlan(video_kbps=video_kbps, fps=args.fps, audio=args.audio, video=args.video)
    opts = SoakOptions(visits=args.visits, visit_length_s=args.visit_length,
                       publishers_per_room=args.publishers_per_room,
                       subscribers_per_room=args.subscribers_per_room, plan=plan,
                       duration_s=args.duration, warmup_s=args.warmup, interval_s=args.interval,
                       settle_timeout_s=args.settle_timeout, seed=args.seed, progress=not args.quiet,
                       client_addresses=tuple(args.client_addresses or ("127.0.0.1",)))
    opts.check()

    async def body(target: Target) -> dict[str, Any]:
        if target.counters is None and target.api_secret:
            target.counters = mediasrv_counters(target.url, target.api_secret)
        return await run_soak(opts, target)

    report = asyncio.run(_with_target(args, body))
    print(soak_table(report))
    if report["failures"]:
        print("setup failures (first few):", *report["failures"][:5], sep="\n  ")
    if args.json:
        write_json(report, args.json)
    growth = report["rss"].get("growth_after_warmup_pct")
    too_much = args.max_rss_growth is not None and growth is not None and growth > args.max_rss_growth
    return 0 if report["all_back_to_idle"] and report["setup_failures"] == 0 and not too_much else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "run")  # `mediasrv-loadtest URL ...` means run
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    fn = {"run": cmd_run, "capacity": cmd_capacity, "compare": cmd_compare, "soak": cmd_soak}[args.command]
    try:
        return fn(args)
    except ValueError as exc:
        print(f"mediasrv-loadtest: {exc}", file=sys.stderr)
        return 2
