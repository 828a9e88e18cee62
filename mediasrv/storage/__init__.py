"""Persistent state: the metadata database (SQLite, or PostgreSQL shared by nodes) with the audit log,
encrypted blobs on disk."""

from mediasrv.storage.crypto import RecordCipher
from mediasrv.storage.database import Database, open_database

__all__ = ["Database", "RecordCipher", "open_database"]
