"""Persistent state: SQLite (WAL) for metadata and the audit log, encrypted blobs on disk."""

from .crypto import RecordCipher
from .db import Database

__all__ = ["Database", "RecordCipher"]
