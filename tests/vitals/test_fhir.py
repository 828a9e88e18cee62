"""FHIR export: Bundles of Observations validate against the R4 structures (fhir.resources R4B
models, whose Observation and Bundle are unchanged from R4) and carry the right LOINC/UCUM codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediasrv.vitals import decode, jsonable
from mediasrv.vitals.fhir import StoredReading, build_bundle, observations

from .encoders import STRATEGIES
from .test_vectors import VALID

Bundle = pytest.importorskip("fhir.resources.R4B.bundle").Bundle
RECEIVED = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def reading(kind: str, hex_payload: str, **kw) -> StoredReading:
    return StoredReading(
        kind=kind,
        values=decode(kind, bytes.fromhex(hex_payload)),
        received_at=kw.pop("received_at", RECEIVED),
        patient=kw.pop("patient", "patient-7"),
        room=kw.pop("room", "visit-1"),
        **kw,
    )


def validated(bundle: dict) -> dict:
    """Validate with the library, then return the JSON round trip (what a client receives)."""
    Bundle.model_validate(bundle)
    return json.loads(json.dumps(bundle, allow_nan=False))


def codes(resource: dict) -> list[str]:
    return [c["code"] for c in resource["code"]["coding"]]


def only(kind: str, hex_payload: str, **kw) -> list[dict]:
    bundle = validated(build_bundle([reading(kind, hex_payload, **kw)]))
    return [entry["resource"] for entry in bundle["entry"]]


def test_all_vectors_make_a_valid_searchset() -> None:
    readings = [
        reading(v["kind"], v["payload"]) for v in VALID if v["kind"] not in (None, "polar_ecg")
    ]
    bundle = validated(build_bundle(readings, "searchset"))
    assert bundle["type"] == "searchset" and bundle["total"] == len(bundle["entry"]) > len(readings)
    assert all(entry["search"] == {"mode": "match"} for entry in bundle["entry"])
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])


def test_collection_bundle() -> None:
    bundle = validated(build_bundle([reading("weight", "00B036")], "collection"))
    assert bundle["type"] == "collection" and "total" not in bundle
    assert "search" not in bundle["entry"][0]


def test_heart_rate() -> None:
    (obs,) = only("heart_rate", "0055")
    assert codes(obs) == ["8867-4"]
    assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
    assert obs["valueQuantity"] == {
        "value": 85,
        "unit": "beats/minute",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    }
    assert obs["subject"]["identifier"]["value"] == "patient-7"
    assert obs["encounter"]["identifier"]["value"] == "visit-1"


def test_oximeter_gives_spo2_and_pulse() -> None:
    spo2, pulse = only("plx_continuous", "0064005A00")
    assert codes(spo2) == ["2708-6", "59408-5"]
    assert spo2["valueQuantity"]["value"] == 100.0 and spo2["valueQuantity"]["code"] == "%"
    assert codes(pulse) == ["8867-4"] and pulse["valueQuantity"]["value"] == 90.0


def test_blood_pressure_panel() -> None:
    panel, pulse = only("blood_pressure", "1E8A00580078000000041114293B3C00012700")
    assert codes(panel) == ["85354-9"] and "valueQuantity" not in panel
    parts = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in panel["component"]}
    assert {k: (v["value"], v["code"]) for k, v in parts.items()} == {
        "8480-6": (138.0, "mm[Hg]"),
        "8462-4": (88.0, "mm[Hg]"),
        "8478-0": (120.0, "mm[Hg]"),
    }
    assert codes(pulse) == ["8867-4"]


def test_blood_pressure_in_kpa_is_converted_to_mmhg() -> None:
    (panel,) = only("blood_pressure", "01A0F06BF07DF0")  # 16.0 / 10.7 / 12.5 kPa
    values = [c["valueQuantity"]["value"] for c in panel["component"]]
    assert values == [120.0, 80.3, 93.8]
    assert {c["valueQuantity"]["code"] for c in panel["component"]} == {"mm[Hg]"}


def test_special_value_becomes_data_absent_reason() -> None:
    (panel,) = only("blood_pressure", "0078005000FF07")  # mean arterial pressure NaN
    mean = panel["component"][2]
    assert "valueQuantity" not in mean
    assert mean["dataAbsentReason"]["coding"][0]["code"] == "NaN"
    (temp,) = only("temperature", "00FEFF7F00")
    assert temp["dataAbsentReason"]["coding"][0]["code"] == "PINF" and "valueQuantity" not in temp
    (weight,) = only("weight", "00FFFF")
    assert weight["dataAbsentReason"]["coding"][0]["code"] == "error"


def test_json_safe_stored_values_export_the_same() -> None:
    raw = reading("plx_continuous", "0000084800")  # SpO2 NRes
    stored = StoredReading(raw.kind, jsonable(raw.values), RECEIVED, "patient-7")
    spo2 = observations(stored)[0]
    assert spo2["dataAbsentReason"]["coding"][0]["code"] == "unsupported"
    assert observations(raw)[0]["dataAbsentReason"] == spo2["dataAbsentReason"]


def test_temperature_units() -> None:
    (celsius,) = only("temperature", "06B00E00FEDC070C050B321B04")
    assert codes(celsius) == ["8310-5"] and celsius["valueQuantity"]["code"] == "Cel"
    assert celsius["valueQuantity"]["value"] == 37.6
    (fahrenheit,) = only("temperature", "01DA0300FF")
    assert fahrenheit["valueQuantity"]["code"] == "[degF]"


def test_weight_bmi_and_height() -> None:
    weight, bmi, height = only("weight", "08B036E500D606")
    assert codes(weight) == ["29463-7"] and weight["valueQuantity"]["code"] == "kg"
    assert codes(bmi) == ["39156-5"] and bmi["valueQuantity"]["value"] == 22.9
    assert codes(height) == ["8302-2"] and height["valueQuantity"] == {
        "value": 175.0,
        "unit": "cm",
        "system": "http://unitsofmeasure.org",
        "code": "cm",
    }
    weight_lb, *_ = only("weight", "0D483C02DD00C102")
    assert weight_lb["valueQuantity"]["code"] == "[lb_av]"


def test_glucose_mass_per_volume_in_capillary_blood() -> None:
    (obs,) = only("glucose", "030100E807010F072D00FBFF5FB011")
    assert obs["category"][0]["coding"][0]["code"] == "laboratory"
    assert codes(obs) == ["2339-0"]
    assert obs["valueQuantity"]["value"] == 95.0 and obs["valueQuantity"]["code"] == "mg/dL"


def test_glucose_moles_per_volume_in_plasma() -> None:
    (obs,) = only("glucose", "1E02000000000000000035C0120100")
    assert codes(obs) == ["14749-6"]
    assert obs["valueQuantity"]["value"] == 5.3 and obs["valueQuantity"]["code"] == "mmol/L"


def test_glucose_control_solution_and_ecg_are_not_exported() -> None:
    control = "030100E807010F072D00FBFF5FB01A"  # sample type 10 = control solution
    assert observations(reading("glucose", control)) == []
    assert observations(reading("polar_ecg", "00" + "00" * 8 + "00" + "010000")) == []


def test_effective_time_prefers_the_device_clock() -> None:
    (obs,) = only("heart_rate", "0055", device_time_ms=1_700_000_000_123)
    assert obs["effectiveDateTime"] == "2023-11-14T22:13:20.123Z"
    assert obs["issued"] == "2025-03-01T12:00:00.000Z"
    local = datetime(2025, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    (obs,) = only("heart_rate", "0055", received_at=local)
    assert obs["effectiveDateTime"] == "2025-03-01T12:00:00.000Z"


def test_ids_are_stable_for_the_same_reading() -> None:
    assert (
        observations(reading("heart_rate", "0055"))[0]["id"]
        == observations(reading("heart_rate", "0055"))[0]["id"]
    )


def test_mapping_input_and_bad_readings() -> None:
    item = {
        "kind": "heart_rate",
        "values": {"heart_rate_bpm": 60},
        "patient": "p",
        "received_at": "2025-03-01T12:00:00+00:00",
    }
    assert observations(item)[0]["valueQuantity"]["value"] == 60
    with pytest.raises(ValueError, match="lacks 'patient'"):
        observations({k: v for k, v in item.items() if k != "patient"})
    with pytest.raises(ValueError, match="timezone-aware"):
        observations({**item, "received_at": datetime(2025, 1, 1)})
    with pytest.raises(ValueError, match="unknown kind"):
        observations({**item, "kind": "stethoscope"})
    with pytest.raises(ValueError, match="bundle_type"):
        build_bundle([], "document")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(sorted(set(STRATEGIES) - {"polar_ecg"})), min_size=1, max_size=4),
    st.data(),
)
def test_random_readings_always_make_a_valid_bundle(kinds, data) -> None:
    readings = []
    for kind in kinds:
        payload, _ = data.draw(STRATEGIES[kind]())
        readings.append(StoredReading(kind, decode(kind, payload), RECEIVED, "p", "r"))
    validated(build_bundle(readings))
