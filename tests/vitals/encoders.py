"""Test-side encoders: build device payloads from field values, with the dict the decoder must return.

Written independently of the decoders (plain byte packing from the Bluetooth SIG layouts), so an
encode -> decode round trip checks the decoder against the specification, not against itself.
"""

from __future__ import annotations

import math
import struct
from datetime import date
from fractions import Fraction
from typing import Any

from hypothesis import strategies as st

SFLOAT_SPECIALS = {
    "nan": 0x07FF,
    "nres": 0x0800,
    "+inf": 0x07FE,
    "-inf": 0x0802,
    "reserved": 0x0801,
}
FLOAT_SPECIALS = {
    "nan": 0x007FFFFF,
    "nres": 0x00800000,
    "+inf": 0x007FFFFE,
    "-inf": 0x00800002,
    "reserved": 0x00800001,
}
SPECIAL_VALUES = {
    "nan": math.nan,
    "nres": math.nan,
    "reserved": math.nan,
    "+inf": math.inf,
    "-inf": -math.inf,
    "unsuccessful": math.nan,
}


def exact(mantissa: int, exponent: int) -> float:
    """mantissa * 10**exponent, correctly rounded to a double."""
    return float(Fraction(mantissa) * Fraction(10) ** exponent)


def pack_sfloat(mantissa: int, exponent: int) -> int:
    return ((exponent & 0xF) << 12) | (mantissa & 0x0FFF)


def pack_float(mantissa: int, exponent: int) -> int:
    return ((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF)


@st.composite
def sfloats(draw: Any) -> tuple[int, float, str | None]:
    """(raw 16-bit value, expected float, special name or None)."""
    if draw(st.integers(0, 5)) == 0:
        name = draw(st.sampled_from(sorted(SFLOAT_SPECIALS)))
        return SFLOAT_SPECIALS[name], SPECIAL_VALUES[name], name
    exponent = draw(st.integers(-8, 7))
    mantissa = draw(st.integers(-2048, 2047))
    if exponent == 0 and mantissa in (2046, 2047, -2048, -2047, -2046):
        mantissa = 0  # those bit patterns are the special values
    return pack_sfloat(mantissa, exponent), exact(mantissa, exponent), None


@st.composite
def floats32(draw: Any) -> tuple[int, float, str | None]:
    if draw(st.integers(0, 5)) == 0:
        name = draw(st.sampled_from(sorted(FLOAT_SPECIALS)))
        return FLOAT_SPECIALS[name], SPECIAL_VALUES[name], name
    exponent = draw(st.integers(-22, 22))  # correctly rounded range; wider ones are checked ≈
    mantissa = draw(st.integers(-(1 << 23), (1 << 23) - 1))
    if exponent == 0 and 0x7FFFFE <= mantissa & 0xFFFFFF <= 0x800002:
        mantissa = 0
    return pack_float(mantissa, exponent), exact(mantissa, exponent), None


@st.composite
def datetimes(draw: Any) -> tuple[bytes, str | None]:
    if draw(st.booleans()):
        year, month, day = draw(st.sampled_from([(0, 0, 0), (0, 5, 1), (2020, 0, 3), (2021, 4, 0)]))
        value = None
    else:
        d = draw(st.dates(min_value=date(1582, 1, 1), max_value=date(9999, 12, 31)))
        year, month, day = d.year, d.month, d.day
        value = ""
    hour, minute, second = (
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 59)),
    )
    if value is not None:
        value = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    return struct.pack("<H5B", year, month, day, hour, minute, second), value


class Builder:
    """Accumulates payload bytes and the expected decoded dict."""

    def __init__(self, flags: int) -> None:
        self.data = bytearray([flags])
        self.expect: dict[str, Any] = {}
        self.special: dict[str, str] = {}

    def sfloat(self, key: str, value: tuple[int, float, str | None]) -> None:
        raw, number, special = value
        self.data += struct.pack("<H", raw)
        self.expect[key] = number
        if special:
            self.special[key] = special

    def done(self) -> tuple[bytes, dict[str, Any]]:
        if self.special:
            self.expect["special"] = self.special
        return bytes(self.data), self.expect


@st.composite
def heart_rate(draw: Any) -> tuple[bytes, dict[str, Any]]:
    flags = draw(st.integers(0, 0xFF))
    b = Builder(flags)
    hr = draw(st.integers(0, 0xFFFF if flags & 1 else 0xFF))
    b.data += struct.pack("<H" if flags & 1 else "<B", hr)
    b.expect["heart_rate_bpm"] = hr
    if flags & 0x04:
        b.expect["sensor_contact"] = bool(flags & 0x02)
    if flags & 0x08:
        energy = draw(st.integers(0, 0xFFFF))
        b.data += struct.pack("<H", energy)
        b.expect["energy_expended_kj"] = energy
    if flags & 0x10:
        rr = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=9))
        b.data += struct.pack(f"<{len(rr)}H", *rr)
        b.expect["rr_intervals_s"] = [v / 1024 for v in rr]
    return b.done()


@st.composite
def plx_continuous(draw: Any) -> tuple[bytes, dict[str, Any]]:
    flags = draw(st.integers(0, 0xFF))
    b = Builder(flags)
    b.sfloat("spo2_pct", draw(sfloats()))
    b.sfloat("pulse_rate_bpm", draw(sfloats()))
    if flags & 0x01:
        b.sfloat("spo2_fast_pct", draw(sfloats()))
        b.sfloat("pulse_rate_fast_bpm", draw(sfloats()))
    if flags & 0x02:
        b.sfloat("spo2_slow_pct", draw(sfloats()))
        b.sfloat("pulse_rate_slow_bpm", draw(sfloats()))
    if flags & 0x04:
        status = draw(st.integers(0, 0xFFFF))
        b.data += struct.pack("<H", status)
        b.expect["measurement_status"] = status
    if flags & 0x08:
        status = draw(st.integers(0, 0xFFFFFF))
        b.data += status.to_bytes(3, "little")
        b.expect["device_sensor_status"] = status
    if flags & 0x10:
        b.sfloat("pulse_amplitude_index_pct", draw(sfloats()))
    return b.done()


@st.composite
def plx_spot_check(draw: Any) -> tuple[bytes, dict[str, Any]]:
    flags = draw(st.integers(0, 0xFF))
    b = Builder(flags)
    b.sfloat("spo2_pct", draw(sfloats()))
    b.sfloat("pulse_rate_bpm", draw(sfloats()))
    if flags & 0x01:
        raw, value = draw(datetimes())
        b.data += raw
        b.expect["timestamp"] = value
    if flags & 0x02:
        status = draw(st.integers(0, 0xFFFF))
        b.data += struct.pack("<H", status)
        b.expect["measurement_status"] = status
    if flags & 0x04:
        status = draw(st.integers(0, 0xFFFFFF))
        b.data += status.to_bytes(3, "little")
        b.expect["device_sensor_status"] = status
    if flags & 0x08:
        b.sfloat("pulse_amplitude_index_pct", draw(sfloats()))
    if flags & 0x10:
        b.expect["device_clock_not_set"] = True
    return b.done()


@st.composite
def blood_pressure(draw: Any) -> tuple[bytes, dict[str, Any]]:
    flags = draw(st.integers(0, 0xFF))
    b = Builder(flags)
    b.expect["unit"] = "kPa" if flags & 1 else "mm[Hg]"
    for key in ("systolic", "diastolic", "mean_arterial"):
        b.sfloat(key, draw(sfloats()))
    if flags & 0x02:
        raw, value = draw(datetimes())
        b.data += raw
        b.expect["timestamp"] = value
    if flags & 0x04:
        b.sfloat("pulse_rate_bpm", draw(sfloats()))
    if flags & 0x08:
        user = draw(st.integers(0, 0xFF))
        b.data.append(user)
        b.expect["user_id"] = user
    if flags & 0x10:
        status = draw(st.integers(0, 0xFFFF))
        b.data += struct.pack("<H", status)
        b.expect["measurement_status"] = status
    return b.done()


@st.composite
def temperature(draw: Any) -> tuple[bytes, dict[str, Any]]:
    flags = draw(st.integers(0, 0xFF))
    b = Builder(flags)
    b.expect["unit"] = "[degF]" if flags & 1 else "Cel"
    raw, value, special = draw(floats32())
    b.data += struct.pack("<I", raw)
    b.expect["temperature"] = value
    if special:
        b.special["temperature"] = special
    if flags & 0x02:
        raw_ts, ts = draw(datetimes())
        b.data += raw_ts
        b.expect["timestamp"] = ts
    if flags & 0x04:
        kind = draw(st.integers(0, 0xFF))
        b.data.append(kind)
        b.expect["temperature_type"] = kind
    return b.done()


@st.composite
def weight(draw: Any) -> tuple[bytes, dict[str, Any]]:
    flags = draw(st.integers(0, 0xFF))
    imperial = bool(flags & 1)
    b = Builder(flags)
    b.expect["unit"] = "[lb_av]" if imperial else "kg"
    raw = draw(st.integers(0, 0xFFFF))
    b.data += struct.pack("<H", raw)
    if raw == 0xFFFF:
        b.expect["weight"] = math.nan
        b.special["weight"] = "unsuccessful"
    else:
        b.expect["weight"] = float(Fraction(raw, 100 if imperial else 200))
    if flags & 0x02:
        raw_ts, ts = draw(datetimes())
        b.data += raw_ts
        b.expect["timestamp"] = ts
    if flags & 0x04:
        user = draw(st.integers(0, 0xFF))
        b.data.append(user)
        b.expect["user_id"] = user
    if flags & 0x08:
        bmi, height = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF))
        b.data += struct.pack("<HH", bmi, height)
        b.expect["bmi"] = float(Fraction(bmi, 10))
        b.expect["height"] = float(Fraction(height, 10 if imperial else 1000))
        b.expect["height_unit"] = "[in_i]" if imperial else "m"
    return b.done()


@st.composite
def glucose(draw: Any) -> tuple[bytes, dict[str, Any]]:
    flags = draw(st.integers(0, 0xFF))
    b = Builder(flags)
    seq = draw(st.integers(0, 0xFFFF))
    b.data += struct.pack("<H", seq)
    b.expect["sequence_number"] = seq
    raw_ts, ts = draw(datetimes())
    b.data += raw_ts
    b.expect["base_time"] = ts
    if flags & 0x01:
        offset = draw(st.integers(-0x8000, 0x7FFF))
        b.data += struct.pack("<h", offset)
        b.expect["time_offset_min"] = offset
    if flags & 0x02:
        b.expect["unit"] = "mol/L" if flags & 0x04 else "kg/L"
        b.sfloat("concentration", draw(sfloats()))
        sample_type, location = draw(st.integers(0, 15)), draw(st.integers(0, 15))
        b.data.append(location << 4 | sample_type)
        b.expect["sample_type"] = sample_type
        b.expect["sample_location"] = location
    if flags & 0x08:
        status = draw(st.integers(0, 0xFFFF))
        b.data += struct.pack("<H", status)
        b.expect["sensor_status"] = status
    if flags & 0x10:
        b.expect["context_follows"] = True
    return b.done()


@st.composite
def polar_ecg(draw: Any) -> tuple[bytes, dict[str, Any]]:
    timestamp = draw(st.integers(0, (1 << 64) - 1))
    samples = draw(st.lists(st.integers(-(1 << 23), (1 << 23) - 1), min_size=1, max_size=40))
    data = struct.pack("<BQB", 0, timestamp, 0) + b"".join(
        s.to_bytes(3, "little", signed=True) for s in samples
    )
    return data, {"timestamp_ns": timestamp, "samples_uv": samples}


STRATEGIES = {
    "heart_rate": heart_rate,
    "plx_continuous": plx_continuous,
    "plx_spot_check": plx_spot_check,
    "blood_pressure": blood_pressure,
    "temperature": temperature,
    "weight": weight,
    "glucose": glucose,
    "polar_ecg": polar_ecg,
}


def same(actual: Any, expected: Any) -> bool:
    """Equality where NaN equals NaN and numpy arrays compare by content."""
    if hasattr(actual, "tolist"):
        actual = actual.tolist()
    if hasattr(expected, "tolist"):
        expected = expected.tolist()
    if isinstance(actual, float) and isinstance(expected, float):
        return actual == expected or (math.isnan(actual) and math.isnan(expected))
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            same(actual[k], expected[k]) for k in actual
        )
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(map(same, actual, expected))
    return type(actual) is type(expected) and actual == expected
