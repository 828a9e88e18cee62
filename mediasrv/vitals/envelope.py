"""The binary envelope carried on the ``vitals`` data channel, and the JSON upload batch.

Envelope (little-endian, like the GATT payloads inside it), 13-byte header then the payload:

    offset size  field
    0      1     version, 1
    1      2     kind: 16-bit GATT characteristic UUID (0x2A37 ...), or 0xFF00 for Polar PMD ECG
    3      8     device timestamp, ms since the Unix epoch (UTC), 0 = unknown
    11     2     payload length N
    13     N     payload, exactly as the device notified it

Upload batch (``POST /v1/vitals``, JSON): ``{"patient": "<identity>", "room": "<room>" | null,
"envelopes": ["<base64 envelope>", ...]}``; at most MAX_UPLOAD_ENVELOPES envelopes.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediasrv.vitals import KIND_NAMES, kind_code

VERSION = 1
HEADER = struct.Struct("<BHQH")
HEADER_SIZE = HEADER.size  # 13
MAX_PAYLOAD = 0xFFFF
MAX_UPLOAD_ENVELOPES = 1000


@dataclass(frozen=True, slots=True)
class Envelope:
    kind: int  # characteristic UUID / POLAR_ECG_CODE
    device_time_ms: int  # 0 = unknown
    payload: bytes

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]


def encode(kind: str | int, payload: bytes, device_time_ms: int = 0) -> bytes:
    """Wrap one device payload in an envelope; ValueError for an unknown kind or bad field."""
    code = kind_code(kind)
    if not 0 <= device_time_ms < 1 << 64:
        raise ValueError(f"device_time_ms {device_time_ms} does not fit in u64")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(VERSION, code, device_time_ms, len(payload)) + bytes(payload)


def decode_envelope(frame: bytes | bytearray | memoryview) -> Envelope:
    """Parse one envelope. The payload is returned undecoded (see ``mediasrv.vitals.decode``)."""
    frame = bytes(frame)
    if len(frame) < HEADER_SIZE:
        raise ValueError(
            f"vitals envelope: {len(frame)} bytes is shorter than the {HEADER_SIZE}-byte header"
        )
    version, code, device_time_ms, length = HEADER.unpack_from(frame)
    if version != VERSION:
        raise ValueError(f"vitals envelope: version {version} is not supported (only {VERSION})")
    if code not in KIND_NAMES:
        raise ValueError(f"vitals envelope: unknown kind 0x{code:04X}")
    body = len(frame) - HEADER_SIZE
    if body < length:
        raise ValueError(
            f"vitals envelope: header announces a {length}-byte payload but only {body} bytes follow"
        )
    if body > length:
        raise ValueError(
            f"vitals envelope: {body - length} trailing bytes after the {length}-byte payload"
        )
    return Envelope(code, device_time_ms, frame[HEADER_SIZE:])


@dataclass(frozen=True, slots=True)
class UploadBatch:
    patient: str | None
    room: str | None
    envelopes: list[Envelope]


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"vitals upload: {key!r} must be a non-empty string or null")
    return value


def parse_upload(body: Mapping[str, Any]) -> UploadBatch:
    """Validate a parsed JSON upload body. ValueError names the first bad envelope by index."""
    if not isinstance(body, Mapping):
        raise ValueError("vitals upload: body must be a JSON object")
    unknown = set(body) - {"patient", "room", "envelopes"}
    if unknown:
        raise ValueError(f"vitals upload: unknown keys {sorted(unknown)}")
    patient, room = _optional_str(body, "patient"), _optional_str(body, "room")
    items = body.get("envelopes")
    if not isinstance(items, list) or not items:
        raise ValueError("vitals upload: 'envelopes' must be a non-empty list of base64 strings")
    if len(items) > MAX_UPLOAD_ENVELOPES:
        raise ValueError(
            f"vitals upload: {len(items)} envelopes exceed the limit of {MAX_UPLOAD_ENVELOPES}"
        )
    envelopes = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"vitals upload: envelope {index} is not a base64 string")
        try:
            frame = base64.b64decode(item, validate=True)
        except binascii.Error as exc:
            raise ValueError(
                f"vitals upload: envelope {index} is not valid base64: {exc}"
            ) from None
        try:
            envelopes.append(decode_envelope(frame))
        except ValueError as exc:
            raise ValueError(f"vitals upload: envelope {index}: {exc}") from None
    return UploadBatch(patient, room, envelopes)


def build_upload(
    envelopes: list[bytes], patient: str | None = None, room: str | None = None
) -> dict[str, Any]:
    """The JSON body of an upload (client side and tests)."""
    return {
        "patient": patient,
        "room": room,
        "envelopes": [base64.b64encode(frame).decode("ascii") for frame in envelopes],
    }
