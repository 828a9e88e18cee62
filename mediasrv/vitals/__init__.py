"""Vitals from Bluetooth health devices: decode GATT / Polar payloads into readings.

``decode(kind, payload)`` turns one device payload into a dict; ``decode_batch`` turns many payloads
of one kind into a numpy structured array; ``decode_sfloat_array`` / ``decode_float_array`` turn raw
IEEE 11073-20601 numbers into float64. The work happens in the Cython module ``mediasrv._vitals``;
``mediasrv.vitals.reference`` is a plain-Python decoder with the same results (baseline and oracle).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np

import mediasrv._vitals as _vitals

KINDS: dict[str, int] = {
    "heart_rate": _vitals.KIND_HEART_RATE,
    "plx_continuous": _vitals.KIND_PLX_CONTINUOUS,
    "plx_spot_check": _vitals.KIND_PLX_SPOT_CHECK,
    "blood_pressure": _vitals.KIND_BLOOD_PRESSURE,
    "temperature": _vitals.KIND_TEMPERATURE,
    "weight": _vitals.KIND_WEIGHT,
    "glucose": _vitals.KIND_GLUCOSE,
    "polar_ecg": _vitals.KIND_POLAR_ECG,
}
KIND_NAMES: dict[int, str] = {code: name for name, code in KINDS.items()}
POLAR_ECG_CODE = _vitals.KIND_POLAR_ECG
# Index = special code in batch records' ``<field>_special`` columns (0 = ordinary number, -1 = absent).
SPECIAL_NAMES: tuple[str | None, ...] = _vitals.SPECIAL_NAMES

Kind = str | int


def kind_code(kind: Kind) -> int:
    """The 16-bit code of a kind given by name or code; ValueError when it is not a known kind."""
    return _vitals.kind_code(kind)


def kind_name(kind: Kind) -> str:
    return KIND_NAMES[kind_code(kind)]


# The Cython function itself: no Python frame in front of the hot path.
decode = _vitals.decode


class VitalsBatch(NamedTuple):
    """``records``: one structured row per payload (see ``batch_dtype``). ``values``: RR intervals
    (float64 s, heart_rate) or ECG samples (int32 µV, polar_ecg) of all rows, concatenated; row i owns
    ``values[records["values_start"][i]:][:records["values_count"][i]]``. ``errors``: (index, message)
    of the payloads that were invalid (only with ``errors="mark"``)."""

    records: np.ndarray
    values: np.ndarray
    errors: list[tuple[int, str]]

    def row_values(self, index: int) -> np.ndarray:
        start = int(self.records["values_start"][index])
        return self.values[start : start + int(self.records["values_count"][index])]


def batch_dtype(kind: Kind) -> np.dtype:
    """Columns: ok, flags, unit (UCUM), one float64 per numeric field with ``<field>_special`` (int8:
    -1 absent, 0 number, else index into SPECIAL_NAMES), integers as int64 (-1 absent; time_offset_min
    is 0 when absent), booleans as int8 (-1 absent), timestamps as datetime64[s] (NaT = absent or
    unknown), values_start/values_count for kinds with lists."""
    return _vitals.batch_dtype(kind)


def decode_batch(
    kind: Kind,
    payloads: Iterable[bytes | bytearray | memoryview],
    *,
    errors: Literal["raise", "mark"] = "raise",
) -> VitalsBatch:
    """Decode many payloads of one kind. ``errors="raise"``: the first invalid payload raises
    ValueError naming its index. ``errors="mark"``: invalid rows get ok=False and are listed."""
    if errors not in ("raise", "mark"):
        raise ValueError(f'errors must be "raise" or "mark", got {errors!r}')
    records, values, errs = _vitals.decode_batch(kind, payloads, errors == "mark")
    return VitalsBatch(records, values, errs)


def _raw_array(data: Any, width: int) -> np.ndarray:
    dtype = np.uint16 if width == 2 else np.uint32
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) % width:
            raise ValueError(f"{len(data)} bytes is not a whole number of {width}-byte values")
        return np.frombuffer(data, dtype=f"<u{width}").astype(dtype, copy=False)
    arr = np.asarray(data)
    if arr.dtype == dtype:
        return np.ascontiguousarray(arr).ravel()
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"raw values must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(dtype).max):
        raise ValueError(f"raw values must fit in {8 * width} unsigned bits")
    return np.ascontiguousarray(arr, dtype=dtype).ravel()


def decode_sfloat_array(data: Any, *, with_special: bool = False) -> Any:
    """Raw SFLOATs (little-endian bytes, or integers 0..0xFFFF) -> float64 array. With
    ``with_special``, returns (values, codes) where codes index SPECIAL_NAMES."""
    raw = _raw_array(data, 2)
    if not with_special:
        return _vitals.sfloat_array(raw)
    codes = np.empty(raw.shape[0], dtype=np.int8)
    return _vitals.sfloat_array(raw, codes), codes


def decode_float_array(data: Any, *, with_special: bool = False) -> Any:
    """Raw 32-bit FLOATs (little-endian bytes, or integers 0..0xFFFFFFFF) -> float64 array."""
    raw = _raw_array(data, 4)
    if not with_special:
        return _vitals.float_array(raw)
    codes = np.empty(raw.shape[0], dtype=np.int8)
    return _vitals.float_array(raw, codes), codes


def sfloat(raw: int) -> tuple[float, str | None]:
    """One SFLOAT -> (value, special name or None)."""
    return _vitals.sfloat(raw)


def float32(raw: int) -> tuple[float, str | None]:
    """One 32-bit FLOAT -> (value, special name or None)."""
    return _vitals.float32(raw)


def jsonable(reading: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded reading made JSON-safe: NaN/±inf -> None (``special`` still names them), numpy
    arrays -> lists. Use before relaying readings to clinicians or storing them as JSON."""
    out: dict[str, Any] = {}
    for key, value in reading.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
        elif isinstance(value, np.ndarray):
            out[key] = value.tolist()
        elif isinstance(value, dict):
            out[key] = dict(value)
        else:
            out[key] = value
    return out


__all__ = [
    "KINDS",
    "KIND_NAMES",
    "POLAR_ECG_CODE",
    "SPECIAL_NAMES",
    "VitalsBatch",
    "batch_dtype",
    "decode",
    "decode_batch",
    "decode_float_array",
    "decode_sfloat_array",
    "float32",
    "jsonable",
    "kind_code",
    "kind_name",
    "sfloat",
]
