"""The demo page follows a visit that moved to another node while its node was stalled: the
clinician's node is stopped (SIGSTOP) past its lease, the patient's join places the visit on the
other node, and when the stalled node wakes it sends the clinician there (`redirect`, 4307); the
page rejoins and both pages decode each other on the new owner."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.browser.conftest import browser, eventually, open_demo  # noqa: F401 (fixture)
from tests.cluster.conftest import Cluster
from tests.cluster.test_browser_cluster import Entry, decoding, page_state

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def test_a_page_follows_its_visit_to_the_node_that_took_it_over(
        cluster: Cluster, browser: Any) -> None:  # noqa: F811
    a, b = await cluster.start(2)
    r = aioredis.from_url(cluster.redis.url, decode_responses=True)
    try:
        clinician = await open_demo(browser, Entry(a), "moved", "dr-lee", "clinician")
        stalled = cluster.by_url(await clinician.evaluate("window.demo.room.baseUrl"))
        other = b if stalled is a else a
        stalled.signal(signal.SIGSTOP)
        try:
            async def lapsed() -> bool:
                return not await r.exists("mediasrv:room-owner:moved", f"mediasrv:node:{stalled.name}")

            await eventually(lapsed, timeout=30, what="the stopped node's lease expires")
            patient = await open_demo(browser, Entry(other), "moved", "pat-1", "patient")
            assert await patient.evaluate("window.demo.room.baseUrl") == other.url
        finally:
            stalled.signal(signal.SIGCONT)
        await eventually(lambda: clinician.evaluate("window.demo.reconnects || 0"), timeout=30,
                         what="the clinician's page follows the visit")
        try:
            await eventually(lambda: clinician.evaluate("window.demo.room.baseUrl === " + repr(other.url)),
                             timeout=60, what="the clinician rejoins on the new owner")
            for page in (clinician, patient):
                await eventually(lambda p=page: decoding(p), timeout=60, what="frames decoded")
        except AssertionError as e:
            raise AssertionError(f"{e}; clinician: {await page_state(clinician)}; patient: "
                                 f"{await page_state(patient)}") from None
        for page in (clinician, patient):
            await page.context.close()
    finally:
        await r.aclose()
