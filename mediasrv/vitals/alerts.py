"""Threshold alerts on decoded readings.

Thresholds map a reading key to ``[low, high]`` (either may be None), e.g.
``{"spo2_pct": [90.0, None], "heart_rate_bpm": [40.0, 130.0]}``. A value strictly below ``low`` or
strictly above ``high`` raises an alert. NaN, ±inf and values flagged as special never alert: they say
the device could not measure, not that the patient is out of range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Thresholds = dict[str, tuple[float | None, float | None]]


def validate_thresholds(raw: Mapping[str, Any]) -> Thresholds:
    """Check and normalise thresholds (e.g. from config or JSON); ValueError says what is wrong."""
    if not isinstance(raw, Mapping):
        raise ValueError("thresholds must be an object of metric -> [low, high]")
    out: Thresholds = {}
    for metric, bounds in raw.items():
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"threshold metric must be a non-empty string, got {metric!r}")
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise ValueError(f"threshold {metric!r} must be [low, high], got {bounds!r}")
        low, high = (_bound(metric, b) for b in bounds)
        if low is None and high is None:
            raise ValueError(f"threshold {metric!r} has neither a low nor a high bound")
        if low is not None and high is not None and low > high:
            raise ValueError(f"threshold {metric!r}: low {low} is above high {high}")
        out[metric] = (low, high)
    return out


def _bound(metric: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"threshold {metric!r}: bound {value!r} is not a finite number")
    return float(value)


def evaluate(thresholds: Mapping[str, Any], reading: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Alerts for one decoded reading: dicts with metric, value, threshold, direction, unit.

    Only metrics present in both the thresholds and the reading are checked; the reading's ``unit``
    (when it has one) is copied so a consumer can tell 38 Cel from 38 [degF]."""
    checked = validate_thresholds(thresholds)
    special = reading.get("special") or {}
    alerts: list[dict[str, Any]] = []
    for metric, (low, high) in checked.items():
        value = reading.get(metric)
        if metric in special or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        if low is not None and value < low:
            alerts.append(_alert(metric, value, low, "below", reading))
        elif high is not None and value > high:
            alerts.append(_alert(metric, value, high, "above", reading))
    return alerts


def _alert(
    metric: str, value: float, threshold: float, direction: str, reading: Mapping[str, Any]
) -> dict[str, Any]:
    alert = {"metric": metric, "value": value, "threshold": threshold, "direction": direction}
    if "unit" in reading:
        alert["unit"] = reading["unit"]
    return alert
