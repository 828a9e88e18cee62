"""Plain pure-Python ``struct`` decoder for the same payloads as ``mediasrv._vitals``.

It is deliberately straightforward: the benchmark baseline and the oracle the property tests compare
the Cython decoder against. Same output dicts, same ValueError cases (messages may differ).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

HEART_RATE, PLX_CONTINUOUS, PLX_SPOT_CHECK = 0x2A37, 0x2A5F, 0x2A5E
BLOOD_PRESSURE, TEMPERATURE, WEIGHT, GLUCOSE, POLAR_ECG = 0x2A35, 0x2A1C, 0x2A9D, 0x2A18, 0xFF00
NAMES = {
    "heart_rate": HEART_RATE,
    "plx_continuous": PLX_CONTINUOUS,
    "plx_spot_check": PLX_SPOT_CHECK,
    "blood_pressure": BLOOD_PRESSURE,
    "temperature": TEMPERATURE,
    "weight": WEIGHT,
    "glucose": GLUCOSE,
    "polar_ecg": POLAR_ECG,
}

POW10 = [float(10**k) for k in range(129)]

SFLOAT_SPECIAL = {
    0x07FF: ("nan", math.nan),
    0x0800: ("nres", math.nan),
    0x07FE: ("+inf", math.inf),
    0x0802: ("-inf", -math.inf),
    0x0801: ("reserved", math.nan),
}
FLOAT_SPECIAL = {
    0x7FFFFF: ("nan", math.nan),
    0x800000: ("nres", math.nan),
    0x7FFFFE: ("+inf", math.inf),
    0x800002: ("-inf", -math.inf),
    0x800001: ("reserved", math.nan),
}


def _scaled(mantissa: int, exponent: int) -> float:
    return mantissa * POW10[exponent] if exponent >= 0 else mantissa / POW10[-exponent]


def sfloat(raw: int) -> tuple[float, str | None]:
    mantissa, exponent = raw & 0x0FFF, raw >> 12
    if exponent == 0 and mantissa in SFLOAT_SPECIAL:
        name, value = SFLOAT_SPECIAL[mantissa]
        return value, name
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    if exponent >= 8:
        exponent -= 16
    return _scaled(mantissa, exponent), None


def float32(raw: int) -> tuple[float, str | None]:
    mantissa, exponent = raw & 0xFFFFFF, raw >> 24
    if exponent == 0 and mantissa in FLOAT_SPECIAL:
        name, value = FLOAT_SPECIAL[mantissa]
        return value, name
    if mantissa >= 0x800000:
        mantissa -= 0x1000000
    if exponent >= 128:
        exponent -= 256
    return _scaled(mantissa, exponent), None


def sfloat_list(data: bytes) -> list[float]:
    """Raw little-endian SFLOATs -> list of floats (the batch baseline)."""
    return [sfloat(raw)[0] for raw in struct.unpack(f"<{len(data) // 2}H", data)]


class _Payload:
    """A read cursor that raises ValueError when a field runs past the end."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.data, self.pos = name, data, 0
        self.flags = 0
        self.special: dict[str, str] = {}

    def take(self, fmt: str, what: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(
                f"{self.name}: payload too short for {what} "
                f"(flags 0x{self.flags:02x}, {len(self.data)} bytes)"
            )
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def sfloat(self, out: dict[str, Any], key: str) -> None:
        value, special = sfloat(self.take("<H", key)[0])
        out[key] = value
        if special:
            self.special[key] = special

    def datetime(self, what: str) -> str | None:
        year, month, day, hour, minute, second = self.take("<H5B", what)
        if (
            (year and not 1582 <= year <= 9999)
            or month > 12
            or day > 31
            or hour > 23
            or minute > 59
            or second > 59
        ):
            raise ValueError(f"{self.name}: {what} out of range")
        if not (year and month and day):
            return None
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        if day > days:
            raise ValueError(f"{self.name}: {what} is not a calendar date")
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"

    def finish(self, out: dict[str, Any]) -> dict[str, Any]:
        if self.pos != len(self.data):
            raise ValueError(f"{self.name}: {len(self.data) - self.pos} trailing bytes")
        if self.special:
            out["special"] = self.special
        return out


def _flags(cur: _Payload) -> int:
    if not cur.data:
        raise ValueError(f"{cur.name}: empty payload")
    cur.flags = cur.take("<B", "flags")[0]
    return cur.flags


def heart_rate(data: bytes) -> dict[str, Any]:
    cur = _Payload("heart_rate", data)
    flags = _flags(cur)
    out: dict[str, Any] = {}
    out["heart_rate_bpm"] = cur.take("<H" if flags & 0x01 else "<B", "heart rate")[0]
    if flags & 0x04:
        out["sensor_contact"] = bool(flags & 0x02)
    if flags & 0x08:
        out["energy_expended_kj"] = cur.take("<H", "energy expended")[0]
    if flags & 0x10:
        rest = data[cur.pos :]
        if not rest or len(rest) % 2:
            raise ValueError("heart_rate: RR-intervals missing or truncated")
        out["rr_intervals_s"] = [v / 1024.0 for v in struct.unpack(f"<{len(rest) // 2}H", rest)]
        cur.pos = len(data)
    return cur.finish(out)


def plx_continuous(data: bytes) -> dict[str, Any]:
    cur = _Payload("plx_continuous", data)
    flags = _flags(cur)
    out: dict[str, Any] = {}
    cur.sfloat(out, "spo2_pct")
    cur.sfloat(out, "pulse_rate_bpm")
    if flags & 0x01:
        cur.sfloat(out, "spo2_fast_pct")
        cur.sfloat(out, "pulse_rate_fast_bpm")
    if flags & 0x02:
        cur.sfloat(out, "spo2_slow_pct")
        cur.sfloat(out, "pulse_rate_slow_bpm")
    if flags & 0x04:
        out["measurement_status"] = cur.take("<H", "measurement status")[0]
    if flags & 0x08:
        low, high = cur.take("<HB", "device and sensor status")
        out["device_sensor_status"] = low | high << 16
    if flags & 0x10:
        cur.sfloat(out, "pulse_amplitude_index_pct")
    return cur.finish(out)


def plx_spot_check(data: bytes) -> dict[str, Any]:
    cur = _Payload("plx_spot_check", data)
    flags = _flags(cur)
    out: dict[str, Any] = {}
    cur.sfloat(out, "spo2_pct")
    cur.sfloat(out, "pulse_rate_bpm")
    if flags & 0x01:
        out["timestamp"] = cur.datetime("timestamp")
    if flags & 0x02:
        out["measurement_status"] = cur.take("<H", "measurement status")[0]
    if flags & 0x04:
        low, high = cur.take("<HB", "device and sensor status")
        out["device_sensor_status"] = low | high << 16
    if flags & 0x08:
        cur.sfloat(out, "pulse_amplitude_index_pct")
    if flags & 0x10:
        out["device_clock_not_set"] = True
    return cur.finish(out)


def blood_pressure(data: bytes) -> dict[str, Any]:
    cur = _Payload("blood_pressure", data)
    flags = _flags(cur)
    out: dict[str, Any] = {"unit": "kPa" if flags & 0x01 else "mm[Hg]"}
    cur.sfloat(out, "systolic")
    cur.sfloat(out, "diastolic")
    cur.sfloat(out, "mean_arterial")
    if flags & 0x02:
        out["timestamp"] = cur.datetime("timestamp")
    if flags & 0x04:
        cur.sfloat(out, "pulse_rate_bpm")
    if flags & 0x08:
        out["user_id"] = cur.take("<B", "user ID")[0]
    if flags & 0x10:
        out["measurement_status"] = cur.take("<H", "measurement status")[0]
    return cur.finish(out)


def temperature(data: bytes) -> dict[str, Any]:
    cur = _Payload("temperature", data)
    flags = _flags(cur)
    out: dict[str, Any] = {"unit": "[degF]" if flags & 0x01 else "Cel"}
    value, special = float32(cur.take("<I", "temperature")[0])
    out["temperature"] = value
    if special:
        cur.special["temperature"] = special
    if flags & 0x02:
        out["timestamp"] = cur.datetime("timestamp")
    if flags & 0x04:
        out["temperature_type"] = cur.take("<B", "temperature type")[0]
    return cur.finish(out)


def weight(data: bytes) -> dict[str, Any]:
    cur = _Payload("weight", data)
    flags = _flags(cur)
    imperial = bool(flags & 0x01)
    out: dict[str, Any] = {"unit": "[lb_av]" if imperial else "kg"}
    raw = cur.take("<H", "weight")[0]
    if raw == 0xFFFF:
        out["weight"] = math.nan
        cur.special["weight"] = "unsuccessful"
    else:
        out["weight"] = raw / 100.0 if imperial else raw / 200.0
    if flags & 0x02:
        out["timestamp"] = cur.datetime("timestamp")
    if flags & 0x04:
        out["user_id"] = cur.take("<B", "user ID")[0]
    if flags & 0x08:
        bmi, height = cur.take("<HH", "BMI and height")
        out["bmi"] = bmi / 10.0
        out["height"] = height / 10.0 if imperial else height / 1000.0
        out["height_unit"] = "[in_i]" if imperial else "m"
    return cur.finish(out)


def glucose(data: bytes) -> dict[str, Any]:
    cur = _Payload("glucose", data)
    flags = _flags(cur)
    out: dict[str, Any] = {"sequence_number": cur.take("<H", "sequence number")[0]}
    out["base_time"] = cur.datetime("base time")
    if flags & 0x01:
        out["time_offset_min"] = cur.take("<h", "time offset")[0]
    if flags & 0x02:
        out["unit"] = "mol/L" if flags & 0x04 else "kg/L"
        cur.sfloat(out, "concentration")
        type_location = cur.take("<B", "type and sample location")[0]
        out["sample_type"] = type_location & 0x0F
        out["sample_location"] = type_location >> 4
    if flags & 0x08:
        out["sensor_status"] = cur.take("<H", "sensor status annunciation")[0]
    if flags & 0x10:
        out["context_follows"] = True
    return cur.finish(out)


def polar_ecg(data: bytes) -> dict[str, Any]:
    if len(data) < 10:
        raise ValueError("polar_ecg: frame shorter than its 10-byte header")
    measurement, timestamp_ns, frame_type = struct.unpack_from("<BQB", data)
    if measurement != 0 or frame_type != 0:
        raise ValueError("polar_ecg: not an uncompressed ECG frame")
    body = data[10:]
    if not body or len(body) % 3:
        raise ValueError("polar_ecg: samples missing or truncated")
    samples = [
        int.from_bytes(body[i : i + 3], "little", signed=True) for i in range(0, len(body), 3)
    ]
    return {"timestamp_ns": timestamp_ns, "samples_uv": np.array(samples, dtype=np.int32)}


DECODERS = {
    HEART_RATE: heart_rate,
    PLX_CONTINUOUS: plx_continuous,
    PLX_SPOT_CHECK: plx_spot_check,
    BLOOD_PRESSURE: blood_pressure,
    TEMPERATURE: temperature,
    WEIGHT: weight,
    GLUCOSE: glucose,
    POLAR_ECG: polar_ecg,
}


def decode(kind: str | int, payload: bytes) -> dict[str, Any]:
    code = NAMES.get(kind, kind) if isinstance(kind, str) else kind
    if code not in DECODERS:
        raise ValueError(f"unknown vitals kind {kind!r}")
    return DECODERS[code](bytes(payload))
