"""The control API under /v1: rooms, tokens, messages, tus uploads, audit, OpenAPI document.

`setup_control_api(app)` is called by `mediasrv.app.create_app` after the database, audit log and
room manager are on the app.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.v1 import audit, messages, openapi, rooms, tokens
from mediasrv.api.v1 import tus as uploads
from mediasrv.api.v1.common import MESSAGES, PROCESSOR, STAGING, UPLOADS
from mediasrv.messages import retention
from mediasrv.messages.message_store import MessageStore
from mediasrv.messages.processing import AttachmentProcessor
from mediasrv.storage.blobs import BlobStore
from mediasrv.storage.crypto import RecordCipher, parse_key

__all__ = ["setup_control_api"]


def setup_control_api(app: web.Application) -> None:
    settings = app[keys.SETTINGS]
    key = parse_key(settings.storage_key)
    blobs = BlobStore(settings.data_dir / "blobs", key)
    app[keys.BLOBS] = blobs
    app[STAGING] = BlobStore(settings.data_dir / "blobs-staging", key)
    app[MESSAGES] = MessageStore(app[keys.DB], RecordCipher(key))
    app[UPLOADS] = uploads.UploadState()
    app[PROCESSOR] = AttachmentProcessor(app[MESSAGES], blobs, app[keys.AUDIT])
    for module in (rooms, tokens, messages, uploads, audit, openapi):
        module.setup_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    app.cleanup_ctx.append(retention.purge_task)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    # Staged (unverified) bodies of requests cut off by a stop are worthless now.
    staging: BlobStore = app[STAGING]
    await asyncio.to_thread(shutil.rmtree, staging.root, True)
    await app[PROCESSOR].resume_pending()
    yield
    await app[PROCESSOR].stop()
    await app[UPLOADS].close_all()
