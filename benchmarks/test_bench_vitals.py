"""Vitals decoders: Cython (mediasrv._vitals) against the pure-Python struct reference, same run.

pytest-benchmark times the Cython call; both sides are also timed with the same timeit method
(best of several repeats) so the ratio compares like with like. Nothing asserts on timing: figures
and ratios go to ``benchmark.extra_info`` and to the table printed at the end.

    .venv/bin/python -m pytest loadtest/benchmarks/test_bench_vitals.py --benchmark-only
"""

from __future__ import annotations

import random
import struct
import timeit
from collections.abc import Callable

import numpy as np
import pytest

from mediasrv import vitals
from mediasrv.vitals import reference

SFLOAT_COUNT = 100_000
PAYLOADS_PER_KIND = 2_000


def _sfloat(rng: random.Random, low: int, high: int, exponent: int = 0) -> bytes:
    return struct.pack("<H", ((exponent & 0xF) << 12) | (rng.randint(low, high) & 0x0FFF))


def _time(rng: random.Random) -> bytes:
    return struct.pack(
        "<H5B",
        rng.randint(2000, 2030),
        rng.randint(1, 12),
        rng.randint(1, 28),
        rng.randint(0, 23),
        rng.randint(0, 59),
        rng.randint(0, 59),
    )


def _payload(kind: str, rng: random.Random) -> bytes:
    """A realistic payload with most optional fields present."""
    if kind == "heart_rate":
        rr = [rng.randint(400, 1200) for _ in range(rng.randint(1, 3))]
        return bytes([0x1E, rng.randint(40, 180)]) + struct.pack(f"<H{len(rr)}H", 50, *rr)
    if kind == "plx_continuous":
        return (
            bytes([0x1C])
            + _sfloat(rng, 85, 100)
            + _sfloat(rng, 40, 140)
            + struct.pack("<H", 0)
            + b"\x00\x00\x00"
            + _sfloat(rng, 10, 200, -1)
        )
    if kind == "plx_spot_check":
        return (
            bytes([0x07])
            + _sfloat(rng, 85, 100)
            + _sfloat(rng, 40, 140)
            + _time(rng)
            + struct.pack("<H", 0)
            + b"\x00\x00\x00"
        )
    if kind == "blood_pressure":
        return (
            bytes([0x1E])
            + _sfloat(rng, 90, 180)
            + _sfloat(rng, 50, 110)
            + _sfloat(rng, 60, 130)
            + _time(rng)
            + _sfloat(rng, 40, 140)
            + b"\x01"
            + struct.pack("<H", 0)
        )
    if kind == "temperature":
        return (
            bytes([0x06])
            + struct.pack("<I", (0xFF << 24) | rng.randint(355, 420))
            + _time(rng)
            + b"\x02"
        )
    if kind == "weight":
        return (
            bytes([0x0E])
            + struct.pack("<H", rng.randint(8000, 30000))
            + _time(rng)
            + b"\x01"
            + struct.pack("<HH", rng.randint(150, 400), rng.randint(1500, 2000))
        )
    if kind == "glucose":
        return (
            bytes([0x0B])
            + struct.pack("<H", rng.randint(0, 65535))
            + _time(rng)
            + struct.pack("<h", rng.randint(-30, 30))
            + _sfloat(rng, 60, 250, -5)
            + b"\x11"
            + struct.pack("<H", 0)
        )
    if kind == "polar_ecg":  # a typical H10 notification: 73 samples at 130 Hz
        samples = b"".join(
            rng.randint(-2000, 2000).to_bytes(3, "little", signed=True) for _ in range(73)
        )
        return struct.pack("<BQB", 0, rng.getrandbits(63), 0) + samples
    raise ValueError(kind)


def _best(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best wall time of one call, timeit style (calls per repeat chosen to last ~20 ms)."""
    number, _ = timeit.Timer(fn).autorange()
    number = max(1, number // 10)
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def _compare(
    benchmark,
    speedup_report,
    name: str,
    baseline: Callable[[], object],
    fast: Callable[[], object],
    target: float,
    unit_count: int,
) -> None:
    benchmark(fast)
    base_s, fast_s = _best(baseline), _best(fast)
    benchmark.extra_info.update(
        {
            "baseline_s": base_s,
            "cython_s": fast_s,
            "speedup": base_s / fast_s,
            "target_speedup": target,
            "items": unit_count,
            "baseline_ns_per_item": base_s / unit_count * 1e9,
            "cython_ns_per_item": fast_s / unit_count * 1e9,
        }
    )
    speedup_report(name, base_s, fast_s, target)


@pytest.fixture(scope="module")
def sfloat_bytes() -> bytes:
    rng = np.random.default_rng(6)
    return rng.integers(0, 0x10000, SFLOAT_COUNT, dtype=np.uint16).astype("<u2").tobytes()


def test_sfloat_array(benchmark, speedup_report, sfloat_bytes: bytes) -> None:
    fast = vitals.decode_sfloat_array(sfloat_bytes)
    slow = reference.sfloat_list(sfloat_bytes)
    assert np.array_equal(fast, np.array(slow), equal_nan=True)  # same answers before timing
    _compare(
        benchmark,
        speedup_report,
        f"SFLOAT array x{SFLOAT_COUNT}",
        lambda: reference.sfloat_list(sfloat_bytes),
        lambda: vitals.decode_sfloat_array(sfloat_bytes),
        30.0,
        SFLOAT_COUNT,
    )


def test_float_array(benchmark, speedup_report) -> None:
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 1 << 32, SFLOAT_COUNT, dtype=np.uint32).astype("<u4").tobytes()

    def baseline() -> list[float]:
        return [reference.float32(v)[0] for v in struct.unpack(f"<{SFLOAT_COUNT}I", raw)]

    _compare(
        benchmark,
        speedup_report,
        f"FLOAT array x{SFLOAT_COUNT}",
        baseline,
        lambda: vitals.decode_float_array(raw),
        30.0,
        SFLOAT_COUNT,
    )


KINDS = sorted(vitals.KINDS)


@pytest.fixture(scope="module")
def payloads() -> dict[str, list[bytes]]:
    rng = random.Random(6)
    return {kind: [_payload(kind, rng) for _ in range(PAYLOADS_PER_KIND)] for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_batch_per_characteristic(benchmark, speedup_report, payloads, kind: str) -> None:
    items = payloads[kind]
    batch = vitals.decode_batch(kind, items)
    assert batch.records["ok"].all() and not batch.errors

    _compare(
        benchmark,
        speedup_report,
        f"{kind} batch x{len(items)}",
        lambda: [reference.decode(kind, p) for p in items],
        lambda: vitals.decode_batch(kind, items),
        10.0,
        len(items),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_dict_per_payload(benchmark, speedup_report, payloads, kind: str) -> None:
    items = payloads[kind]
    code = vitals.kind_code(kind)
    _compare(
        benchmark,
        speedup_report,
        f"{kind} decode() dicts x{len(items)}",
        lambda: [reference.DECODERS[code](p) for p in items],
        lambda: [vitals.decode(code, p) for p in items],
        10.0,
        len(items),
    )
