"""HL7 FHIR R4 export: stored vitals readings -> a Bundle of Observations (LOINC codes, UCUM units).

Mapping (one reading may give several Observations):
  heart_rate            -> 8867-4 heart rate (/min)
  plx_continuous/spot   -> 2708-6 + 59408-5 oxygen saturation (%), and 8867-4 from the pulse rate
  blood_pressure        -> 85354-9 panel, components 8480-6 / 8462-4 / 8478-0 (mm[Hg]; kPa is
                           converted), and 8867-4 from the pulse rate
  temperature           -> 8310-5 body temperature (Cel or [degF])
  weight                -> 29463-7 body weight (kg or [lb_av]), 39156-5 BMI, 8302-2 body height
  glucose               -> category laboratory; mass/volume in mg/dL (2339-0 blood, 2345-7 serum or
                           plasma) or moles/volume in mmol/L (15074-8 blood, 14749-6 serum or plasma);
                           control-solution and interstitial-fluid samples are not exported
  polar_ecg             -> not exported (waveforms are not vital-sign observations)
Special values (NaN, NRes, ±inf, reserved, unsuccessful) give ``dataAbsentReason`` instead of a value.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
ABSENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
IDENTITY_SYSTEM = "urn:mediasrv:identity"
ROOM_SYSTEM = "urn:mediasrv:room"
_ID_NAMESPACE = uuid.UUID("5b0f6f7e-3c61-4e0b-9a57-6d0d1c7a1f42")
MMHG_PER_KPA = 7.500615758
# Glucose sample types (GATT Glucose Measurement) that are plasma; 9 = ISF, 10 = control solution.
_PLASMA_SAMPLES = {2, 4, 6, 8}
_BLOOD_SAMPLES = {1, 3, 5, 7}

_ABSENT = {
    "nan": ("NaN", "Not a Number (NaN)"),
    "+inf": ("PINF", "Positive Infinity (PINF)"),
    "-inf": ("NINF", "Negative Infinity (NINF)"),
    "nres": ("unsupported", "Unsupported"),
    "reserved": ("error", "Error"),
    "unsuccessful": ("error", "Error"),
}
_UNIT_DISPLAY = {
    "/min": "beats/minute",
    "%": "%",
    "mm[Hg]": "mmHg",
    "Cel": "C",
    "[degF]": "degF",
    "kg": "kg",
    "[lb_av]": "lb",
    "kg/m2": "kg/m2",
    "cm": "cm",
    "[in_i]": "in",
    "mg/dL": "mg/dL",
    "mmol/L": "mmol/L",
}


@dataclass(frozen=True, slots=True)
class StoredReading:
    """One reading as the server keeps it."""

    kind: str
    values: Mapping[str, Any]  # output of mediasrv.vitals.decode (raw or jsonable form)
    received_at: datetime  # timezone-aware server time
    patient: str
    room: str | None = None
    device_time_ms: int | None = None  # envelope device timestamp, None/0 = unknown


def _reading(item: StoredReading | Mapping[str, Any]) -> StoredReading:
    if isinstance(item, StoredReading):
        reading = item
    else:
        try:
            reading = StoredReading(
                kind=item["kind"],
                values=item["values"],
                received_at=item["received_at"],
                patient=item["patient"],
                room=item.get("room"),
                device_time_ms=item.get("device_time_ms"),
            )
        except KeyError as exc:
            raise ValueError(f"stored reading lacks {exc.args[0]!r}") from None
    if isinstance(reading.received_at, str):
        reading = replace(reading, received_at=datetime.fromisoformat(reading.received_at))
    if not isinstance(reading.received_at, datetime) or reading.received_at.tzinfo is None:
        raise ValueError("stored reading: received_at must be a timezone-aware datetime")
    if not isinstance(reading.patient, str) or not reading.patient:
        raise ValueError("stored reading: patient must be a non-empty string")
    return reading


def _instant(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _quantity_or_absent(
    values: Mapping[str, Any], key: str, unit: str, scale: float = 1.0, digits: int | None = None
) -> dict[str, Any]:
    value = values.get(key)
    special = (values.get("special") or {}).get(key)
    if special is None and isinstance(value, int | float) and math.isfinite(value):
        number = value * scale if scale != 1.0 else value
        if digits is not None:
            number = round(number, digits)
        return {
            "valueQuantity": {
                "value": number,
                "unit": _UNIT_DISPLAY.get(unit, unit),
                "system": UCUM,
                "code": unit,
            }
        }
    code, display = _ABSENT.get(special or "", ("unknown", "Unknown"))
    return {
        "dataAbsentReason": {
            "coding": [{"system": ABSENT_SYSTEM, "code": code, "display": display}]
        }
    }


def _code(*codings: tuple[str, str], text: str) -> dict[str, Any]:
    return {
        "coding": [
            {"system": LOINC, "code": code, "display": display} for code, display in codings
        ],
        "text": text,
    }


def _category(code: str, display: str) -> list[dict[str, Any]]:
    return [
        {"coding": [{"system": CATEGORY_SYSTEM, "code": code, "display": display}], "text": display}
    ]


VITAL = ("vital-signs", "Vital Signs")
LAB = ("laboratory", "Laboratory")
HEART_RATE = (("8867-4", "Heart rate"),)
SPO2 = (
    ("2708-6", "Oxygen saturation in Arterial blood"),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
)


def _observations(reading: StoredReading) -> list[tuple[str, dict[str, Any]]]:
    """(slot name, partial Observation) pairs for one reading; slot names make ids stable."""
    v, kind, out = reading.values, reading.kind, []

    def simple(slot: str, codings, text: str, key: str, unit: str, category=VITAL, **kw) -> None:
        if key in v:
            body = {"category": _category(*category), "code": _code(*codings, text=text)}
            body.update(_quantity_or_absent(v, key, unit, **kw))
            out.append((slot, body))

    if kind == "heart_rate":
        simple("hr", HEART_RATE, "Heart rate", "heart_rate_bpm", "/min")
    elif kind in ("plx_continuous", "plx_spot_check"):
        simple("spo2", SPO2, "Oxygen saturation", "spo2_pct", "%")
        simple("pulse", HEART_RATE, "Pulse rate", "pulse_rate_bpm", "/min")
    elif kind == "blood_pressure":
        scale = MMHG_PER_KPA if v.get("unit") == "kPa" else 1.0
        digits = 1 if scale != 1.0 else None
        components = []
        for key, code, display in (
            ("systolic", "8480-6", "Systolic blood pressure"),
            ("diastolic", "8462-4", "Diastolic blood pressure"),
            ("mean_arterial", "8478-0", "Mean blood pressure"),
        ):
            if key in v:
                component = {"code": _code((code, display), text=display)}
                component.update(_quantity_or_absent(v, key, "mm[Hg]", scale, digits))
                components.append(component)
        out.append(
            (
                "bp",
                {
                    "category": _category(*VITAL),
                    "code": _code(
                        ("85354-9", "Blood pressure panel with all children optional"),
                        text="Blood pressure",
                    ),
                    "component": components,
                },
            )
        )
        simple("pulse", HEART_RATE, "Pulse rate", "pulse_rate_bpm", "/min")
    elif kind == "temperature":
        unit = "[degF]" if v.get("unit") == "[degF]" else "Cel"
        simple("temp", (("8310-5", "Body temperature"),), "Body temperature", "temperature", unit)
    elif kind == "weight":
        imperial = v.get("unit") == "[lb_av]"
        simple(
            "weight",
            (("29463-7", "Body weight"),),
            "Body weight",
            "weight",
            "[lb_av]" if imperial else "kg",
        )
        simple("bmi", (("39156-5", "Body mass index (BMI) [Ratio]"),), "BMI", "bmi", "kg/m2")
        if imperial:
            simple("height", (("8302-2", "Body height"),), "Body height", "height", "[in_i]")
        else:
            simple(
                "height",
                (("8302-2", "Body height"),),
                "Body height",
                "height",
                "cm",
                scale=100.0,
                digits=1,
            )
    elif kind == "glucose":
        sample = v.get("sample_type")
        if "concentration" in v and (sample in _PLASMA_SAMPLES or sample in _BLOOD_SAMPLES):
            plasma = sample in _PLASMA_SAMPLES
            if v.get("unit") == "mol/L":
                codings = (
                    (("14749-6", "Glucose [Moles/volume] in Serum or Plasma"),)
                    if plasma
                    else (("15074-8", "Glucose [Moles/volume] in Blood"),)
                )
                simple(
                    "glucose",
                    codings,
                    "Glucose",
                    "concentration",
                    "mmol/L",
                    LAB,
                    scale=1000.0,
                    digits=2,
                )
            else:
                codings = (
                    (("2345-7", "Glucose [Mass/volume] in Serum or Plasma"),)
                    if plasma
                    else (("2339-0", "Glucose [Mass/volume] in Blood"),)
                )
                simple(
                    "glucose",
                    codings,
                    "Glucose",
                    "concentration",
                    "mg/dL",
                    LAB,
                    scale=1e5,
                    digits=1,
                )
    elif kind != "polar_ecg":
        raise ValueError(f"stored reading: unknown kind {kind!r}")
    return out


def observations(item: StoredReading | Mapping[str, Any]) -> list[dict[str, Any]]:
    """Complete Observation resources for one stored reading."""
    reading = _reading(item)
    issued = _instant(reading.received_at)
    if reading.device_time_ms:
        effective = _instant(datetime.fromtimestamp(reading.device_time_ms / 1000, UTC))
    else:
        effective = issued
    key = f"{reading.patient}|{reading.room}|{reading.kind}|{issued}|{reading.device_time_ms}"
    resources = []
    for slot, body in _observations(reading):
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": str(uuid.uuid5(_ID_NAMESPACE, f"{key}|{slot}")),
            "status": "final",
            **body,
            "subject": {"identifier": {"system": IDENTITY_SYSTEM, "value": reading.patient}},
            "effectiveDateTime": effective,
            "issued": issued,
        }
        if reading.room:
            resource["encounter"] = {"identifier": {"system": ROOM_SYSTEM, "value": reading.room}}
        resources.append(resource)
    return resources


def build_bundle(
    readings: Iterable[StoredReading | Mapping[str, Any]],
    bundle_type: Literal["collection", "searchset"] = "searchset",
    *,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """A FHIR R4 Bundle (as a JSON-ready dict) of the Observations of ``readings``, in order."""
    if bundle_type not in ("collection", "searchset"):
        raise ValueError(f'bundle_type must be "collection" or "searchset", got {bundle_type!r}')
    entries = []
    for item in readings:
        for resource in observations(item):
            entry: dict[str, Any] = {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}
            if bundle_type == "searchset":
                entry["search"] = {"mode": "match"}
            entries.append(entry)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": bundle_type,
        "timestamp": _instant(timestamp or datetime.now(UTC)),
    }
    if bundle_type == "searchset":
        bundle["total"] = len(entries)
    bundle["entry"] = entries
    return bundle
