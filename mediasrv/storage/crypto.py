"""Encryption of small stored records (patient data in SQLite columns) with AES-256-GCM.

Each record gets a random 96-bit nonce; the associated data binds a ciphertext to its row
(e.g. b"vitals:<room>:<id>"), so a ciphertext copied into another row fails to open.

Records are sealed with a key derived from the storage key for this purpose only (HKDF-SHA256,
info "mediasrv records v2"), so the storage key itself encrypts nothing directly and the blob store's
keys (derived per blob) and the records' key stay independent. Records written before (version 1,
sealed with the storage key itself) still open.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RECORD_VERSION = b"\x02"  # sealed with the derived records key
LEGACY_VERSION = b"\x01"  # sealed with the storage key itself (read only)
RECORDS_INFO = b"mediasrv records v2"


class IntegrityError(Exception):
    """Stored data failed its integrity check (tampered, truncated or wrong key)."""


def parse_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise ValueError("storage key must be base64") from exc
    if len(key) != 32:
        raise ValueError("storage key must be 32 bytes (AES-256)")
    return key


def records_key(master: bytes) -> bytes:
    """The key that seals records, derived from the storage key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=RECORDS_INFO).derive(master)


class RecordCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._aead = AESGCM(records_key(key))
        self._legacy = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return RECORD_VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        version = blob[:1]
        if len(blob) < 1 + 12 + 16 or version not in (RECORD_VERSION, LEGACY_VERSION):
            raise IntegrityError("stored record is malformed")
        aead = self._aead if version == RECORD_VERSION else self._legacy
        try:
            return aead.decrypt(blob[1:13], blob[13:], aad)
        except InvalidTag:
            raise IntegrityError("stored record failed its integrity check") from None
