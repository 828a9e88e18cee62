"""Typed keys for the objects the app factory (`mediasrv.app.create_app`) puts on the aiohttp
Application, all of them in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from mediasrv.api.connection_caps import ConnectionCaps
    from mediasrv.api.whip_whep import WhipSession
    from mediasrv.cluster import Cluster
    from mediasrv.config import Settings
    from mediasrv.messages.message_store import MessageStore
    from mediasrv.messages.processing import AttachmentProcessor
    from mediasrv.messages.retention import Retention
    from mediasrv.messages.uploads import UploadState
    from mediasrv.rooms import RoomManager
    from mediasrv.storage.audit_log import AuditLog
    from mediasrv.storage.blobs import BlobStore
    from mediasrv.storage.database import Database
    from mediasrv.vitals.vitals_store import VitalsStore

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
DB: web.AppKey[Database] = web.AppKey("db")
AUDIT: web.AppKey[AuditLog] = web.AppKey("audit")
ROOMS: web.AppKey[RoomManager] = web.AppKey("rooms")
# Sealed attachments and recordings.
BLOBS: web.AppKey[BlobStore] = web.AppKey("blobs")
# Checksummed tus PATCH bodies too large to hold in memory, until their checksum is verified.
STAGING: web.AppKey[BlobStore] = web.AppKey("staging")
MESSAGES: web.AppKey[MessageStore] = web.AppKey("messages")
PROCESSOR: web.AppKey[AttachmentProcessor] = web.AppKey("processor")
UPLOADS: web.AppKey[UploadState] = web.AppKey("uploads")
RETENTION: web.AppKey[Retention] = web.AppKey("retention")
VITALS: web.AppKey[VitalsStore] = web.AppKey("vitals")
# Open WHIP/WHEP sessions by id.
SESSIONS: web.AppKey[dict[str, WhipSession]] = web.AppKey("whip_sessions")
METRICS_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry")
# What each client address, identity and token holds open (mediasrv.api.connection_caps).
CONNECTION_CAPS: web.AppKey[ConnectionCaps] = web.AppKey("connection_caps")
# The node's part in a cluster (only when redis_url is set; see docs/cluster.md).
CLUSTER: web.AppKey[Cluster] = web.AppKey("cluster")
