"""Encryption of small stored records (patient data in SQLite columns) with AES-256-GCM.

Each record gets a random 96-bit nonce; the associated data binds a ciphertext to its row
(e.g. b"vitals:<room>:<id>"), so a ciphertext copied into another row fails to open.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

RECORD_VERSION = b"\x01"


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


class RecordCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._aead = AESGCM(key)
        self.key = key

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return RECORD_VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < 1 + 12 + 16 or blob[:1] != RECORD_VERSION:
            raise IntegrityError("stored record is malformed")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], aad)
        except InvalidTag:
            raise IntegrityError("stored record failed its integrity check") from None
