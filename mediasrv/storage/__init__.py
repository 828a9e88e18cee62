"""Persistent state: SQLite (WAL) for metadata and the audit log, encrypted blobs on disk."""

from mediasrv.storage.crypto import RecordCipher
from mediasrv.storage.database import Database

__all__ = ["Database", "RecordCipher"]
