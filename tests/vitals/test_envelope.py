"""The vitals data-channel envelope and the JSON upload batch."""

from __future__ import annotations

import base64
import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediasrv.vitals import KINDS, decode
from mediasrv.vitals.envelope import (
    HEADER_SIZE,
    MAX_UPLOAD_ENVELOPES,
    build_upload,
    decode_envelope,
    encode,
    parse_upload,
)

HR = bytes.fromhex("1E5532002100")


@given(st.sampled_from(sorted(KINDS)), st.binary(max_size=300), st.integers(0, (1 << 64) - 1))
def test_round_trip(kind: str, payload: bytes, device_time_ms: int) -> None:
    frame = encode(kind, payload, device_time_ms)
    assert len(frame) == HEADER_SIZE + len(payload)
    env = decode_envelope(frame)
    assert (env.kind_name, env.payload, env.device_time_ms) == (kind, payload, device_time_ms)


def test_layout_is_documented_little_endian() -> None:
    frame = encode("heart_rate", HR, 1_700_000_000_000)
    assert frame[:13] == bytes([1]) + struct.pack("<HQH", 0x2A37, 1_700_000_000_000, len(HR))
    assert decode("heart_rate", decode_envelope(frame).payload)["heart_rate_bpm"] == 85


def test_polar_ecg_uses_private_code() -> None:
    assert decode_envelope(encode("polar_ecg", bytes(13))).kind == 0xFF00


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x01\x37\x2a", "shorter than the 13-byte header"),
        (bytes([2]) + struct.pack("<HQH", 0x2A37, 0, 0), "version 2 is not supported"),
        (bytes([1]) + struct.pack("<HQH", 0x2A00, 0, 0), "unknown kind 0x2A00"),
        (bytes([1]) + struct.pack("<HQH", 0x2A37, 0, 6) + b"\x00", "6-byte payload but only 1"),
        (bytes([1]) + struct.pack("<HQH", 0x2A37, 0, 1) + b"\x00\x00", "1 trailing bytes"),
    ],
)
def test_bad_envelopes_raise_precise_errors(frame: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_envelope(frame)


@given(st.binary(max_size=40))
def test_fuzzed_envelope_never_crashes(frame: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode_envelope(frame)


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown vitals kind"):
        encode("stethoscope", b"")
    with pytest.raises(ValueError, match="u64"):
        encode("heart_rate", HR, -1)
    with pytest.raises(ValueError, match="exceeds"):
        encode("heart_rate", bytes(70_000))


def test_upload_batch_round_trip() -> None:
    frames = [encode("heart_rate", HR, 5), encode("weight", bytes.fromhex("00B036"))]
    batch = parse_upload(build_upload(frames, patient="pat-1", room="r1"))
    assert (batch.patient, batch.room) == ("pat-1", "r1")
    assert [e.kind_name for e in batch.envelopes] == ["heart_rate", "weight"]
    assert batch.envelopes[0].device_time_ms == 5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({"envelopes": []}, "non-empty list"),
        ({"envelopes": ["%%%"]}, "envelope 0 is not valid base64"),
        ({"envelopes": [base64.b64encode(b"\x01").decode()]}, "envelope 0: vitals envelope"),
        ({"envelopes": [7]}, "envelope 0 is not a base64 string"),
        ({"envelopes": ["AA=="], "extra": 1}, "unknown keys"),
        ({"envelopes": ["AA=="], "patient": 3}, "'patient' must be"),
        ({"envelopes": ["AA=="] * (MAX_UPLOAD_ENVELOPES + 1)}, "exceed the limit"),
    ],
)
def test_bad_uploads_raise_precise_errors(body, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_upload(body)
