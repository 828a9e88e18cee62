"""The aiohttp application: routes, middlewares, and the lifecycle of rooms and storage."""

from __future__ import annotations

import logging

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api import demo, recorded_messages
from mediasrv.api import room_protocol as roomws
from mediasrv.api import whip_whep as whip
from mediasrv.api.http_common import error_middleware, query_token_middleware
from mediasrv.api.metrics import setup_metrics
from mediasrv.api.v1 import recordings as recordings_api
from mediasrv.api.v1 import vitals as vitals_http
from mediasrv.config import Settings
from mediasrv.recording.recording_store import RecordingStore
from mediasrv.rooms import RoomManager
from mediasrv.storage import Database
from mediasrv.storage.audit_log import AuditLog
from mediasrv.storage.crypto import RecordCipher, parse_key
from mediasrv.vitals.vitals_store import VitalsStore

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    """Liveness for load balancers: unauthenticated, so it says nothing about visits."""
    return web.json_response({"status": "ok"})


def create_app(settings: Settings) -> web.Application:
    """Build the application. `settings.data_dir` must exist and secrets be filled in."""
    app = web.Application(
        middlewares=[error_middleware, query_token_middleware],
        client_max_size=settings.max_signaling_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.DB] = Database(settings.data_dir / "mediasrv.sqlite3")
    app[keys.AUDIT] = AuditLog(app[keys.DB])
    app[keys.ROOMS] = RoomManager(settings, app[keys.AUDIT])
    app[keys.VITALS] = VitalsStore(app[keys.DB], RecordCipher(parse_key(settings.storage_key)))
    app[keys.ROOMS].vitals_store = app[keys.VITALS]

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        await app[keys.DB].open()
        await app[keys.ROOMS].start()
        yield
        await app[keys.ROOMS].shutdown()
        await app[keys.DB].close()

    async def close_rooms(app: web.Application) -> None:
        # Before aiohttp waits for open handlers: ends WebSocket sessions and peer connections.
        await app[keys.ROOMS].shutdown()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_rooms)
    app.router.add_get("/healthz", healthz)
    setup_metrics(app)
    whip.setup_routes(app)
    roomws.setup_routes(app)
    demo.setup_routes(app)
    vitals_http.setup_routes(app)
    try:
        from mediasrv.api.v1 import setup_control_api
    except ImportError:  # the control API package is optional during early development
        log.debug("control API not installed")
    else:
        setup_control_api(app)
    if keys.BLOBS in app:  # recordings are sealed into the control API's encrypted blob store
        app[keys.ROOMS].recording_store = RecordingStore(app[keys.DB], app[keys.BLOBS],
                                                         settings.data_dir / "recording-work")
        recordings_api.setup_routes(app)
        recorded_messages.setup_routes(app)
    return app
