"""Property tests: encode -> decode round trips, Cython == reference, fuzzing never crashes."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mediasrv import vitals
from mediasrv.vitals import reference

from .encoders import STRATEGIES, floats32, pack_float, same, sfloats

KINDS = sorted(STRATEGIES)
_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def kind_and_payload(draw):
    kind = draw(st.sampled_from(KINDS))
    payload, expect = draw(STRATEGIES[kind]())
    return kind, payload, expect


@_settings
@given(kind_and_payload())
def test_round_trip(case) -> None:
    kind, payload, expect = case
    assert same(vitals.decode(kind, payload), expect)
    assert same(reference.decode(kind, payload), expect)


@_settings
@given(kind_and_payload())
def test_one_extra_byte_is_rejected(case) -> None:
    kind, payload, _ = case
    for decoder in (vitals.decode, reference.decode):
        try:
            decoder(kind, payload + b"\x00")
        except ValueError:
            continue
        raise AssertionError(f"{kind}: trailing byte accepted by {decoder.__module__}")


@_settings
@given(kind_and_payload(), st.data())
def test_truncated_fixed_part_is_rejected(case, data) -> None:
    kind, payload, expect = case
    # RR intervals and ECG samples are lists: dropping whole entries leaves a valid payload.
    fixed = len(payload)
    if kind == "heart_rate" and "rr_intervals_s" in expect:
        fixed -= 2 * len(expect["rr_intervals_s"]) - 1
    elif kind == "polar_ecg":
        fixed = 11
    cut = data.draw(st.integers(0, fixed - 1))
    for decoder in (vitals.decode, reference.decode):
        try:
            decoder(kind, payload[:cut])
        except ValueError:
            continue
        raise AssertionError(f"{kind}: {cut}-byte prefix accepted by {decoder.__module__}")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KINDS + [0x2A00, 0xFFFF]), st.binary(max_size=48))
def test_fuzz_gives_value_error_or_the_reference_result(kind, payload) -> None:
    try:
        got = vitals.decode(kind, payload)
    except ValueError:
        got = ValueError
    try:
        want = reference.decode(kind, payload)
    except ValueError:
        want = ValueError
    assert got is want if ValueError in (got, want) else same(got, want)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.binary(min_size=1, max_size=40), st.data())
def test_fuzz_mostly_valid_flags(kind, tail, data) -> None:
    # Random bytes rarely get past the flags; a valid payload with bytes flipped reaches deeper.
    payload, _ = data.draw(STRATEGIES[kind]())
    mutated = bytearray(payload)
    index = data.draw(st.integers(0, len(mutated) - 1))
    mutated[index] ^= data.draw(st.integers(1, 255))
    for candidate in (bytes(mutated), payload[: len(payload) // 2] + tail):
        try:
            got = vitals.decode(kind, candidate)
        except ValueError:
            got = ValueError
        try:
            want = reference.decode(kind, candidate)
        except ValueError:
            want = ValueError
        assert got is want if ValueError in (got, want) else same(got, want)


@settings(max_examples=200, deadline=None)
@given(st.lists(sfloats(), max_size=64))
def test_sfloat_array_matches_scalar_decoding(values) -> None:
    raw = np.array([v[0] for v in values], dtype=np.uint16)
    decoded, codes = vitals.decode_sfloat_array(raw, with_special=True)
    assert decoded.dtype == np.float64
    for (_, expected, special), got, code in zip(values, decoded, codes, strict=True):
        assert same(float(got), expected)
        assert vitals.SPECIAL_NAMES[code] == special
    assert same(vitals.decode_sfloat_array(raw.tobytes()).tolist(), decoded.tolist())


@settings(max_examples=200, deadline=None)
@given(st.lists(floats32(), max_size=64))
def test_float_array_matches_scalar_decoding(values) -> None:
    raw = np.array([v[0] for v in values], dtype=np.uint32)
    decoded = vitals.decode_float_array(raw)
    for (_, expected, _special), got in zip(values, decoded, strict=True):
        assert same(float(got), expected)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(1 << 23), (1 << 23) - 1), st.integers(-128, 127))
def test_float_with_large_exponent_is_close_and_agrees_with_reference(mantissa, exponent) -> None:
    raw = pack_float(mantissa, exponent)
    value, special = vitals.float32(raw)
    assume(special is None)
    assert same(value, reference.float32(raw)[0])
    exact = float(Fraction(mantissa) * Fraction(10) ** exponent)
    if math.isinf(exact) or exact == 0.0:
        assert value == exact or math.isclose(value, exact, abs_tol=1e-300)
    else:
        assert math.isclose(value, exact, rel_tol=1e-15)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(KINDS), st.data())
def test_batch_rows_equal_single_decodes(kind, data) -> None:
    cases = data.draw(st.lists(STRATEGIES[kind](), min_size=1, max_size=12))
    bad = data.draw(st.booleans())
    payloads = [p for p, _ in cases]
    if bad:
        payloads.insert(len(payloads) // 2, b"")
    batch = vitals.decode_batch(kind, payloads, errors="mark")
    assert len(batch.records) == len(payloads)
    for i, payload in enumerate(payloads):
        row = batch.records[i]
        if payload == b"":
            assert not row["ok"] and batch.errors == [(i, batch.errors[0][1])]
            continue
        assert row["ok"]
        single = vitals.decode(kind, payload)
        for key, value in single.items():
            if key == "special":
                for field, name in value.items():
                    assert vitals.SPECIAL_NAMES[row[field + "_special"]] == name
            elif key in ("rr_intervals_s", "samples_uv"):
                assert same(batch.row_values(i).tolist(), list(value))
            elif key in ("timestamp", "base_time"):
                stamp = row[key]
                assert (value is None and np.isnat(stamp)) or str(stamp) == value
            elif isinstance(value, bool):
                assert row[key] == int(value)
            elif isinstance(value, float):
                assert same(float(row[key]), value)
            else:
                assert row[key] == value, key
