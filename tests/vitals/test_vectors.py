"""Every published and specification-derived vector decodes exactly; every invalid one raises."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasrv import vitals
from mediasrv.vitals import reference

from .encoders import SPECIAL_VALUES, same

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "vitals_vectors.json").read_text())
VALID = [v for v in VECTORS["characteristics"] if "invalid" not in v]
INVALID = [v for v in VECTORS["characteristics"] if "invalid" in v]


def _id(vector: dict[str, Any]) -> str:
    return f"{vector['kind'] or vector['uuid16']}:{vector['payload'] or 'empty'}"


def _check(decoded: dict[str, Any], vector: dict[str, Any]) -> None:
    expect = dict(vector["expect"])
    special = vector.get("special", {})
    for key, name in special.items():
        expect[key] = SPECIAL_VALUES[name]
    if special:
        expect["special"] = special
    # Keys the vector leaves out may only be unknown timestamps (None), e.g. the BP vector's year 0.
    extra = {k: v for k, v in decoded.items() if k not in expect}
    assert all(v is None for v in extra.values()), extra
    assert same({k: decoded[k] for k in expect}, expect)


@pytest.mark.parametrize("decoder", [vitals.decode, reference.decode], ids=["cython", "reference"])
@pytest.mark.parametrize("vector", VALID, ids=_id)
def test_valid_vector_decodes_exactly(vector: dict[str, Any], decoder) -> None:
    decoded = decoder(vector["kind"], bytes.fromhex(vector["payload"]))
    _check(decoded, vector)


@pytest.mark.parametrize("vector", VALID, ids=_id)
def test_kind_may_be_given_as_uuid(vector: dict[str, Any]) -> None:
    payload = bytes.fromhex(vector["payload"])
    assert same(
        vitals.decode(int(vector["uuid16"], 16), payload), vitals.decode(vector["kind"], payload)
    )


@pytest.mark.parametrize("decoder", [vitals.decode, reference.decode], ids=["cython", "reference"])
@pytest.mark.parametrize("vector", INVALID, ids=_id)
def test_invalid_vector_raises(vector: dict[str, Any], decoder) -> None:
    kind = vector["kind"] or int(vector["uuid16"], 16)
    with pytest.raises(ValueError):
        decoder(kind, bytes.fromhex(vector["payload"]))


def test_blood_pressure_vector_with_year_zero_has_unknown_timestamp() -> None:
    decoded = vitals.decode(
        "blood_pressure", bytes.fromhex("1E8A00580078000000041114293B3C00012700")
    )
    assert "timestamp" in decoded and decoded["timestamp"] is None


@pytest.mark.parametrize("vector", VECTORS["sfloat"], ids=lambda v: v["hex16"])
def test_sfloat_vector(vector: dict[str, Any]) -> None:
    raw = int(vector["hex16"], 16)
    for decode in (vitals.sfloat, reference.sfloat):
        value, special = decode(raw)
        if "special" in vector:
            assert special == vector["special"]
            assert same(value, SPECIAL_VALUES[vector["special"]])
        else:
            assert special is None and value == vector["value"]
    array, codes = vitals.decode_sfloat_array(np.array([raw], dtype=np.uint16), with_special=True)
    assert vitals.SPECIAL_NAMES[codes[0]] == vector.get("special")
    assert same(float(array[0]), SPECIAL_VALUES.get(vector.get("special"), vector.get("value")))


@pytest.mark.parametrize("vector", VECTORS["float32"], ids=lambda v: v["hex32"])
def test_float_vector(vector: dict[str, Any]) -> None:
    raw = int(vector["hex32"], 16)
    for decode in (vitals.float32, reference.float32):
        value, special = decode(raw)
        if "special" in vector:
            assert special == vector["special"]
            assert same(value, SPECIAL_VALUES[vector["special"]])
        else:
            assert special is None and value == vector["value"]
    array = vitals.decode_float_array(raw.to_bytes(4, "little"))
    assert same(float(array[0]), SPECIAL_VALUES.get(vector.get("special"), vector.get("value")))


def test_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"flags 0x17 announce RR-intervals"):
        vitals.decode("heart_rate", bytes.fromhex("170101"))
    with pytest.raises(ValueError, match=r"flags 0x06 announce temperature type at byte 12"):
        vitals.decode("temperature", bytes.fromhex("06B00E00FEDC070C050B321B"))
    with pytest.raises(ValueError, match=r"1 trailing bytes"):
        vitals.decode("weight", bytes.fromhex("00B03600"))
    with pytest.raises(ValueError, match=r"truncated payload: diastolic"):
        vitals.decode("blood_pressure", bytes.fromhex("007800"))
    with pytest.raises(ValueError, match=r"unknown vitals kind 'spirometer'"):
        vitals.decode("spirometer", b"\x00")
    with pytest.raises(ValueError, match=r"unknown vitals kind 0x2A00"):
        vitals.decode(0x2A00, b"\x00")
    with pytest.raises(ValueError, match=r"empty payload"):
        vitals.decode("glucose", b"")


def test_payload_may_be_any_bytes_like() -> None:
    payload = bytes.fromhex("1E5532002100")
    expected = vitals.decode("heart_rate", payload)
    for variant in (bytearray(payload), memoryview(payload), np.frombuffer(payload, np.uint8)):
        assert same(vitals.decode("heart_rate", variant), expected)


def test_ecg_samples_are_int32_array() -> None:
    frame = bytes.fromhex("000100000000000000" + "00" + "010000FFFFFF")
    samples = vitals.decode("polar_ecg", frame)["samples_uv"]
    assert samples.dtype == np.int32 and samples.tolist() == [1, -1]


def test_jsonable_replaces_special_numbers_and_arrays() -> None:
    decoded = vitals.decode("blood_pressure", bytes.fromhex("0078005000FF07"))
    safe = vitals.jsonable(decoded)
    assert safe["mean_arterial"] is None and safe["special"] == {"mean_arterial": "nan"}
    json.dumps(safe, allow_nan=False)
    ecg = vitals.jsonable(vitals.decode("polar_ecg", bytes(10) + b"\x05\x00\x00"))
    assert ecg["samples_uv"] == [5] and not math.isnan(ecg["timestamp_ns"])
