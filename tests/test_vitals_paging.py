"""GET /v1/rooms/{room}/vitals in pages: limit, the `after` cursor, `next` links (JSON and FHIR)."""

from __future__ import annotations

import aiohttp
import pytest
from fhir.resources.R4B.bundle import Bundle

from mediasrv.vitals.envelope import build_upload, encode


def _hr(bpm: int) -> bytes:
    return encode("heart_rate", bytes([0x00, bpm]))


async def _upload(server, patient: str, room: str, bpms: list[int]) -> None:
    token = server.token(patient, "patient", room)
    admin = {"Authorization": f"Bearer {server.token('ops', 'admin')}"}
    # Readings for a room belong to one of its visits: the room is open.
    async with aiohttp.ClientSession() as s, s.post(f"{server.url}/v1/rooms", json={"name": room},
                                                    headers=admin) as r:
        assert r.status in (201, 409)
    async with aiohttp.ClientSession() as s, s.post(
            f"{server.url}/v1/vitals", json=build_upload([_hr(b) for b in bpms], room=room),
            headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 201, await r.text()


async def _get(server, path: str, room: str = "v1") -> tuple[int, dict, aiohttp.typedefs.LooseHeaders]:
    token = server.token("dr", "clinician", room)
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}{path}",
                                                   headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json(content_type=None), r.headers


def _bpms(page: dict) -> list[int]:
    return [r["reading"]["heart_rate_bpm"] for r in page["readings"]]


async def test_json_pages_follow_next_until_the_end(server) -> None:
    await _upload(server, "pat", "v1", list(range(40, 65)))  # 25 readings
    path, pages = "/v1/rooms/v1/vitals?limit=10", []
    while path:
        status, page, headers = await _get(server, path)
        assert status == 200
        pages.append(page)
        if page["next"]:
            assert headers["Link"] == f'<{page["next"]}>; rel="next"'
        else:
            assert "Link" not in headers
        path = page["next"]
    assert [len(p["readings"]) for p in pages] == [10, 10, 5]
    assert [b for p in pages for b in _bpms(p)] == list(range(40, 65))  # all, in order, once
    ids = [r["id"] for p in pages for r in p["readings"]]
    assert ids == sorted(set(ids))
    assert pages[0]["next"] == f"/v1/rooms/v1/vitals?limit=10&after={ids[9]}"


async def test_a_full_last_page_has_no_next(server) -> None:
    await _upload(server, "pat", "v1", list(range(40, 50)))
    status, page, _ = await _get(server, "/v1/rooms/v1/vitals?limit=10")
    assert status == 200 and len(page["readings"]) == 10 and page["next"] is None


async def test_readings_stored_between_pages_come_on_the_next_page(server) -> None:
    await _upload(server, "pat", "v1", list(range(40, 55)))
    _, first, _ = await _get(server, "/v1/rooms/v1/vitals?limit=10")
    await _upload(server, "pat", "v1", list(range(100, 105)))
    _, second, _ = await _get(server, first["next"])
    assert _bpms(second) == [*range(50, 55), *range(100, 105)] and second["next"] is None


async def test_the_cursor_keeps_the_patient_filter(server) -> None:
    await _upload(server, "ana", "v1", [60, 61, 62])
    await _upload(server, "bob", "v1", [90])
    await _upload(server, "ana", "v1", [63])
    _, first, _ = await _get(server, "/v1/rooms/v1/vitals?patient=ana&limit=2")
    assert _bpms(first) == [60, 61] and "patient=ana" in first["next"]
    _, second, _ = await _get(server, first["next"])
    assert _bpms(second) == [62, 63] and second["next"] is None


async def test_default_page_is_1000(server) -> None:
    await _upload(server, "pat", "v1", [60] * 600)
    await _upload(server, "pat", "v1", [61] * 600)
    _, page, _ = await _get(server, "/v1/rooms/v1/vitals")
    assert len(page["readings"]) == 1000 and page["next"] is not None
    _, rest, _ = await _get(server, page["next"])
    assert len(rest["readings"]) == 200 and rest["next"] is None


async def test_fhir_pages_carry_next_links_and_total_only_when_whole(server) -> None:
    await _upload(server, "pat", "v1", list(range(40, 45)))
    status, bundle, headers = await _get(server, "/v1/rooms/v1/vitals?format=fhir&limit=3")
    assert status == 200 and headers["Content-Type"].startswith("application/fhir+json")
    Bundle.model_validate(bundle)
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["self"] == "/v1/rooms/v1/vitals?format=fhir&limit=3"
    assert "total" not in bundle and len(bundle["entry"]) == 3
    status, last, _ = await _get(server, links["next"])
    Bundle.model_validate(last)
    assert len(last["entry"]) == 2 and [x["relation"] for x in last["link"]] == ["self"]
    assert "total" not in last  # a later page: total would count only this page
    _, whole, _ = await _get(server, "/v1/rooms/v1/vitals?format=fhir")
    assert whole["total"] == 5


@pytest.mark.parametrize("query", ["limit=0", "limit=10001", "limit=abc", "limit=", "limit=%2B5",
                                   "after=-1", "after=1.5", "after=99999999999999999999", "limit=%D9%A5"])
async def test_bad_paging_parameters_are_400(server, query) -> None:
    status, body, _ = await _get(server, f"/v1/rooms/v1/vitals?{query}")
    assert status == 400 and body["error"]["code"] == "invalid_query"


async def test_limits_at_the_edges_are_accepted(server) -> None:
    for query in ("limit=1", "limit=10000", "after=0", "after=9223372036854775807"):
        status, _, _ = await _get(server, f"/v1/rooms/v1/vitals?{query}")
        assert status == 200, query
