"""Chromium and the plane's ICE consent freshness (RFC 7675): after the handover the native plane
sends the consent checks and answers the browser's, with no STUN through Python. Chromium must
accept our checks (USERNAME, role, MESSAGE-INTEGRITY and a valid FINGERPRINT, else it drops them
unanswered) and our answers to its own checks; with a short timeout the visit stays up well past it
only if both hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, start_server

from .conftest import eventually, inbound, open_demo
from .test_fanout import frames, publish, transports, view

pytestmark = pytest.mark.browser


@pytest.fixture
async def quick_consent_server(tmp_path: Path) -> AsyncIterator[Server]:
    # A check every 0.4-0.6 s and a 3 s timeout, instead of 5 s and 30 s.
    srv = await start_server(tmp_path / "data", ice_consent_interval_s=0.5, ice_consent_timeout_s=3.0)
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


async def test_chromium_keeps_consent_with_the_plane(quick_consent_server: Server, browser: Any) -> None:
    server = quick_consent_server
    plane = server.rooms.plane
    assert plane is not None
    await publish(browser, server, "ward")
    (viewer,) = await view(browser, server, "ward", 1)

    async def decoding() -> bool:
        return await frames(viewer) > 10

    await eventually(decoding, timeout=60, what="viewer decoding")
    peers = transports(server, "ward", "whip") + transports(server, "ward", "whep")
    assert len(peers) == 2 and all(p.handed_over for p in peers)

    async def answered_long_enough() -> bool:
        # >= 8 answered checks: at least 3.2 s of them, past the 3 s timeout, so consent held on
        # the browser's answers alone (the handover's own grant ran out meanwhile).
        return all((plane.native.peer_stats(p.handle) or {}).get("consent_responses", 0) >= 8 for p in peers)

    await eventually(answered_long_enough, timeout=60, what="Chromium answering the plane's checks")
    for p in peers:
        stats = plane.native.peer_stats(p.handle)
        assert stats is not None and stats["checks_answered"] >= 1, stats  # Chromium's own checks
        assert stats["checks_refused"] == 0
        assert p.connected and not p.closed
    assert plane.consent_lost == 0
    before = await frames(viewer)

    async def still_decoding() -> bool:
        return await frames(viewer) > before + 10

    await eventually(still_decoding, timeout=30, what="video still flowing")


async def test_room_protocol_visit_keeps_consent_both_roles(quick_consent_server: Server, browser: Any) -> None:
    """The room protocol's subscriber connection is offered by the server, which is then the
    controlling ICE agent (its checks carry ICE-CONTROLLING): Chromium answers those too."""
    server = quick_consent_server
    plane = server.rooms.plane
    assert plane is not None
    await open_demo(browser, server, "visit", "dr-c", "clinician")
    patient = await open_demo(browser, server, "visit", "pat-c", "patient")

    async def decoding() -> bool:
        video = (await inbound(patient))["video"]
        return bool(video) and video["framesDecoded"] > 10

    await eventually(decoding, timeout=60, what="patient decoding the clinician")
    room = server.rooms.get("visit")
    peers = [t for p in room.participants.values() for t in (p.publisher, p.subscriber) if t is not None]
    assert len(peers) == 4 and all(p.handed_over for p in peers)

    async def answered_long_enough() -> bool:
        return all((plane.native.peer_stats(p.handle) or {}).get("consent_responses", 0) >= 8 for p in peers)

    await eventually(answered_long_enough, timeout=60, what="Chromium answering every connection's checks")
    assert all(p.connected and not p.closed for p in peers)
    assert plane.consent_lost == 0
