"""The OpenAPI document matches the registered /v1 routes, both ways, and is served."""

from __future__ import annotations

from ctl_helpers import Server

from mediasrv.api.v1.openapi import document

METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def _registered(srv: Server) -> set[tuple[str, str]]:
    out = set()
    for route in srv.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/v1/") and route.method != "*":
            out.add((route.method.lower(), path))
    return out


def _documented() -> set[tuple[str, str]]:
    return {(m, path) for path, item in document()["paths"].items() for m in item if m in METHODS}


async def test_every_route_is_documented_and_every_operation_exists(srv: Server) -> None:
    registered, documented = _registered(srv), _documented()
    # aiohttp adds HEAD next to GET unless told not to; HEAD of a GET resource needs no entry.
    registered = {(m, p) for m, p in registered if not (m == "head" and ("get", p) in documented)}
    assert registered - documented == set(), "routes missing from the OpenAPI document"
    assert documented - registered == set(), "documented operations without a route"


async def test_document_is_served_and_is_openapi_31(srv: Server) -> None:
    resp = await srv.request("GET", "/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    for item in doc["paths"].values():
        for op in item.values():
            for ref in _refs(op):
                assert ref.split("/")[-1] in doc["components"]["schemas"]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
