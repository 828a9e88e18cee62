"""The aiohttp application: every store and service, every route, and their lifecycle, wired here."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api import demo, metrics, recorded_messages, room_protocol, whip_whep
from mediasrv.api.connection_caps import ConnectionCaps, connection_cap_middleware
from mediasrv.api.http_common import error_middleware, json_response, query_token_middleware
from mediasrv.api.v1 import (
    audit,
    cluster,
    ice_servers,
    messages,
    openapi,
    recordings,
    rooms,
    tokens,
    tus,
    vitals,
)
from mediasrv.config import Settings
from mediasrv.messages.message_store import MessageStore
from mediasrv.messages.processing import AttachmentProcessor
from mediasrv.messages.retention import Retention
from mediasrv.messages.uploads import UploadState
from mediasrv.recording.recording_store import RecordingStore
from mediasrv.rooms import RoomManager
from mediasrv.rooms.room_store import RoomStore
from mediasrv.storage import open_database
from mediasrv.storage.audit_log import AuditLog
from mediasrv.storage.blobs import BlobStore
from mediasrv.storage.crypto import RecordCipher, parse_key
from mediasrv.vitals.vitals_store import VitalsStore


async def healthz(request: web.Request) -> web.Response:
    """Liveness for load balancers: unauthenticated, so it says nothing about visits."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 while the node drains (it takes no new rooms), else 200. Unauthenticated."""
    cluster = request.app.get(keys.CLUSTER)
    if cluster is not None and cluster.state != "serving":
        return json_response({"status": cluster.state}, status=503)
    return json_response({"status": "ok"})


def create_app(settings: Settings) -> web.Application:
    """Build the application. `settings.data_dir` must exist and secrets be filled in."""
    app = web.Application(
        middlewares=[error_middleware, connection_cap_middleware, query_token_middleware],
        client_max_size=settings.max_signaling_body_bytes,
    )
    key = parse_key(settings.storage_key)
    db = open_database(settings.database_url, settings.data_dir / "mediasrv.sqlite3")
    audit_log = AuditLog(db)
    blobs = BlobStore(Path(settings.blob_dir) if settings.blob_dir else settings.data_dir / "blobs", key)
    message_store = MessageStore(db, RecordCipher(key))
    app[keys.SETTINGS] = settings
    app[keys.DB] = db
    app[keys.AUDIT] = audit_log
    app[keys.BLOBS] = blobs
    app[keys.STAGING] = BlobStore(settings.data_dir / "blobs-staging", key)
    app[keys.MESSAGES] = message_store
    uploads = app[keys.UPLOADS] = UploadState(lease_s=settings.upload_lease_s)
    app[keys.RETENTION] = Retention(message_store, uploads, blobs, audit_log, settings.retention_days)
    app[keys.PROCESSOR] = AttachmentProcessor(message_store, blobs, audit_log)
    app[keys.VITALS] = VitalsStore(db, RecordCipher(key))
    app[keys.ROOMS] = RoomManager(
        settings, audit_log, vitals_store=app[keys.VITALS],
        # Recordings are sealed into the same encrypted blob store as attachments.
        recording_store=RecordingStore(db, blobs, settings.data_dir / "recording-work",
                                       node=_recording_node(settings)),
        room_store=RoomStore(db),
    )
    app[keys.SESSIONS] = {}
    app[keys.CONNECTION_CAPS] = ConnectionCaps(settings)

    # Started in this order, stopped in the reverse one.
    app.cleanup_ctx.append(_database_and_rooms)
    app.cleanup_ctx.append(_message_processing)
    app.cleanup_ctx.append(_retention)
    if settings.redis_url:  # one node of a cluster (docs/cluster.md); else a node on its own
        from mediasrv.cluster import Cluster

        app[keys.CLUSTER] = Cluster(settings, app[keys.ROOMS])
        app.cleanup_ctx.append(_cluster)
        app.on_shutdown.append(_leaving_cluster)
    # on_startup runs after the cleanup contexts have started (the database is open).
    app.on_startup.append(_recover_recordings)
    app.on_shutdown.append(_close_rooms)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    metrics.setup_metrics(app)
    app[keys.METRICS_REGISTRY].register(app[keys.CONNECTION_CAPS])
    if app.get(keys.CLUSTER) is not None:
        app[keys.METRICS_REGISTRY].register(app[keys.CLUSTER])
    for module in (whip_whep, room_protocol, demo, vitals, rooms, tokens, messages, tus, audit, openapi,
                   recordings, recorded_messages, ice_servers, cluster):
        module.setup_routes(app)
    return app


async def _database_and_rooms(app: web.Application) -> AsyncIterator[None]:
    await app[keys.DB].open()
    await app[keys.ROOMS].start()
    yield
    await app[keys.ROOMS].shutdown()
    await app[keys.DB].close()


async def _cluster(app: web.Application) -> AsyncIterator[None]:
    # Joins the cluster once the rooms are up; leaves it (giving up its rooms) before they stop.
    await app[keys.CLUSTER].start()
    yield
    await app[keys.CLUSTER].stop()


async def _leaving_cluster(app: web.Application) -> None:
    app[keys.CLUSTER].shutting_down()


async def _message_processing(app: web.Application) -> AsyncIterator[None]:
    # Staged (unverified) bodies of requests cut off by a stop are worthless now.
    await asyncio.to_thread(shutil.rmtree, app[keys.STAGING].root, True)
    await app[keys.PROCESSOR].resume_pending()
    yield
    await app[keys.PROCESSOR].stop()
    await app[keys.UPLOADS].close_all()


async def _retention(app: web.Application) -> AsyncIterator[None]:
    interval = app[keys.SETTINGS].retention_purge_interval_s
    task = asyncio.get_running_loop().create_task(app[keys.RETENTION].run(interval)) if interval > 0 else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _recording_node(settings: Settings) -> str:
    """The node id recordings are marked with in a cluster (nodes share the database and blob
    directory); '' for a node on its own."""
    if not settings.redis_url:
        return ""
    return settings.node_id or f"{settings.host}:{settings.port}"


async def _recover_recordings(app: web.Application) -> None:
    """Before any recording starts: seal or discard what a previous process left unfinished."""
    store = app[keys.ROOMS].recording_store
    assert store is not None
    await store.recover()


async def _close_rooms(app: web.Application) -> None:
    # Before aiohttp waits for open handlers: ends WebSocket sessions and peer connections.
    await app[keys.ROOMS].shutdown()
