"""Threshold alerts on decoded readings."""

from __future__ import annotations

import math

import pytest

from mediasrv.vitals import decode
from mediasrv.vitals.alerts import evaluate, validate_thresholds

THRESHOLDS = {
    "spo2_pct": [90.0, None],
    "heart_rate_bpm": [40.0, 130.0],
    "pulse_rate_bpm": [40, 130],
}


def test_low_spo2_alerts_below() -> None:
    reading = decode("plx_continuous", bytes.fromhex("0055004800"))  # SpO2 85 %, pulse 72
    assert evaluate(THRESHOLDS, reading) == [
        {"metric": "spo2_pct", "value": 85.0, "threshold": 90.0, "direction": "below"}
    ]


def test_fast_heart_rate_alerts_above() -> None:
    reading = decode("heart_rate", bytes.fromhex("0096"))  # 150 /min
    assert evaluate(THRESHOLDS, reading) == [
        {"metric": "heart_rate_bpm", "value": 150, "threshold": 130.0, "direction": "above"}
    ]


def test_values_at_the_threshold_and_inside_do_not_alert() -> None:
    assert evaluate(THRESHOLDS, decode("plx_continuous", bytes.fromhex("005A004800"))) == []
    assert evaluate(THRESHOLDS, decode("heart_rate", bytes.fromhex("0082"))) == []


@pytest.mark.parametrize("raw", ["FF07", "0008", "FE07", "0208", "0108"])
def test_special_values_never_alert(raw: str) -> None:
    reading = decode("plx_continuous", bytes.fromhex("00" + raw + "4800"))
    assert reading["special"]
    assert evaluate({"spo2_pct": [90.0, 100.0]}, reading) == []


def test_nan_without_special_marker_never_alerts() -> None:
    assert evaluate({"spo2_pct": [90.0, None]}, {"spo2_pct": math.nan}) == []
    assert evaluate({"spo2_pct": [90.0, None]}, {"spo2_pct": None}) == []


def test_alert_carries_the_unit() -> None:
    reading = decode("temperature", bytes.fromhex("00AE0100FF"))  # 43.0 Cel
    assert evaluate({"temperature": [35.0, 38.0]}, reading)[0]["unit"] == "Cel"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"spo2_pct": [95, 90]}, "low 95.0 is above high 90.0"),
        ({"spo2_pct": [None, None]}, "neither"),
        ({"spo2_pct": [90]}, r"must be \[low, high\]"),
        ({"spo2_pct": ["low", None]}, "not a finite number"),
        ({"spo2_pct": [math.nan, None]}, "not a finite number"),
        ([], "must be an object"),
    ],
)
def test_bad_thresholds_raise(raw, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_thresholds(raw)
