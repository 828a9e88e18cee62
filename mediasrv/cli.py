"""Command line: `mediasrv serve`, `mediasrv token` and `mediasrv turn-config`."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from mediasrv import __version__
from mediasrv.auth import mint_token
from mediasrv.authz import ROLES
from mediasrv.config import ConfigError, Settings, load_settings, prepare_data_dir


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=args.data_dir,
        dev_mode=True if getattr(args, "dev", False) else None,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvloop
    from aiohttp import web

    from mediasrv.app import create_app

    settings = _settings(args)
    from mediasrv.media.reclaim import tune_allocator

    tune_allocator()  # before any thread starts: see reclaim.ALLOCATOR_SETTINGS
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for note in prepare_data_dir(settings):
        print(f"mediasrv: {note}", flush=True)
    try:
        # Bound before the app starts: its media plane opens an ephemeral ICE-TCP listener on the
        # same address at startup, and the kernel could hand that listener the HTTP port.
        http_sockets = listen_http(settings.host, settings.port)
    except OSError as exc:
        print(f"mediasrv: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    app = create_app(settings)
    port = http_sockets[0].getsockname()[1]
    base = f"http://{settings.host}:{port}"
    print(
        f"mediasrv {__version__} listening on {base} (data in {settings.data_dir})\n"
        f"  media addresses: {', '.join(settings.announced_addresses)}\n"
        f"  health: {base}/healthz   metrics: {base}/metrics   demo: {base}/demo"
        f"{'' if settings.dev_mode else ' (needs --dev to mint tokens in the page)'}\n"
        f"  get a token:  .venv/bin/mediasrv token --data-dir {settings.data_dir} "
        "--room visit1 --identity dr-lee --role clinician",
        flush=True,
    )
    async def say_media_port(app: web.Application) -> None:
        from mediasrv.api import appkeys as keys

        plane = app[keys.ROOMS].plane
        if plane is not None:
            ports = sorted({f"{host}:{port}" for host, port in plane.sockets})
            print(f"  media (UDP, all peers): {', '.join(ports)}", flush=True)

    app.on_startup.append(say_media_port)

    async def drain_on_sigterm(app: web.Application) -> None:
        # In a cluster SIGTERM drains (docs/cluster.md): the node takes no new rooms, its visits go on
        # until they end or drain_timeout_s, then it stops as on SIGINT; a second SIGTERM stops now.
        from mediasrv.api import appkeys as keys

        cluster = app.get(keys.CLUSTER)
        if cluster is None:
            return
        cluster.on_drained = lambda: os.kill(os.getpid(), signal.SIGINT)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, cluster.sigterm)

    app.on_startup.append(drain_on_sigterm)

    async def freeze_startup_objects(app: web.Application) -> None:
        # Last of the start-up hooks: what exists now lives as long as the server.
        from mediasrv.media.reclaim import freeze_startup_objects

        logging.getLogger("mediasrv").debug("%d start-up objects frozen out of the collector",
                                            freeze_startup_objects())

    app.on_startup.append(freeze_startup_objects)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, sock=http_sockets, print=None, access_log=None)
    return 0


def listen_http(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets for every address `host` resolves to (as aiohttp would bind them)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    addresses = list(dict.fromkeys((family, addr) for family, _, _, _, addr in infos))
    for attempt in range(5):
        try:
            return _listen_all(addresses)
        except OSError as exc:
            # Port 0 on several addresses: the port the first got may be taken on another.
            if port != 0 or len(addresses) < 2 or exc.errno != errno.EADDRINUSE or attempt == 4:
                raise
    raise AssertionError("unreachable")


def _listen_all(addresses: Sequence[tuple[int, Any]]) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for family, addr in addresses:
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError:
                if len(addresses) > 1:
                    continue  # a family this kernel lacks (IPv6 disabled): the others serve
                raise
            if sockets:  # port 0: the first socket's free port is used for the others too
                addr = (addr[0], sockets[0].getsockname()[1], *addr[2:])
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(128)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(errno.EAFNOSUPPORT, "no address family of the host can be listened on")
    return sockets


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    prepare_data_dir(settings)
    ttl = args.ttl if args.ttl is not None else settings.default_token_ttl_s
    try:
        print(
            mint_token(
                settings.api_secret,
                identity=args.identity,
                role=args.role,
                room=args.room,
                name=args.name,
                ttl_s=ttl,
            )
        )
    except ValueError as exc:
        print(f"mediasrv token: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_turn_config(args: argparse.Namespace) -> int:
    """Prints a coturn config for this server's settings (turn_secret, media addresses, TLS files)."""
    from mediasrv.media.coturn_config import CoturnOptions, render

    settings = _settings(args)
    print(render(settings, CoturnOptions(
        port=args.turn_port, tls_port=args.tls_port, listening_ips=args.listening_ip or (),
        relay_ips=args.relay_ip or (), external_ip=args.external_ip or "", log_file=args.log_file or "")),
        end="")
    if not settings.turn_secret:
        print("mediasrv turn-config: turn_secret is not set; the config has a placeholder secret",
              file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mediasrv", description="telehealth media server")
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="TOML settings file (also MEDIASRV_CONFIG)")
        sp.add_argument("--data-dir", help="data directory (default ./data; MEDIASRV_DATA_DIR)")

    serve = sub.add_parser("serve", help="run the server")
    common(serve)
    serve.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8080)")
    serve.add_argument("--dev", action="store_true", help="development mode: demo page mints tokens")
    serve.set_defaults(fn=cmd_serve)

    token = sub.add_parser("token", help="print an access token")
    common(token)
    token.add_argument("--room", help="room (omit for admin and messaging tokens)")
    token.add_argument("--identity", required=True, help="participant identity (sub)")
    token.add_argument("--role", required=True, choices=sorted(ROLES))
    token.add_argument("--name", help="display name")
    token.add_argument("--ttl", type=int, help="lifetime in seconds")
    token.set_defaults(fn=cmd_token)

    turn = sub.add_parser("turn-config", help="print a coturn config (turnserver.conf) for these settings")
    common(turn)
    turn.add_argument("--turn-port", type=int, default=3478, help="TURN UDP/TCP port (default 3478)")
    turn.add_argument("--tls-port", type=int, default=443, help="TURN over TLS port (default 443)")
    turn.add_argument("--listening-ip", action="append", help="address coturn listens on (repeatable)")
    turn.add_argument("--relay-ip", action="append", help="address coturn relays from (repeatable)")
    turn.add_argument("--external-ip", help="public address when coturn is behind 1:1 NAT (public[/private])")
    turn.add_argument("--log-file", help="coturn log file (default: syslog)")
    turn.set_defaults(fn=cmd_turn_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(f"mediasrv: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
