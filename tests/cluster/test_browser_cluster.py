"""Real browsers (the demo page) in a cluster of two nodes: a visit joined through different nodes
ends on its owner, and survives kill -9 of the owner (both pages rejoin and decode again)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.conftest import browser, eventually, inbound, open_demo  # noqa: F401 (fixture)
from tests.cluster.conftest import Cluster, Node, token

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@dataclass
class Entry:
    """A node as open_demo wants a server: its URL and a token minter."""

    node: Node

    @property
    def url(self) -> str:
        return self.node.url

    def token(self, identity: str, role: str, room: str, **kw: Any) -> str:
        return token(identity, role, room, **kw)


async def frames(page: Any) -> int:
    stats = await inbound(page)
    return int(stats["video"]["framesDecoded"]) if stats["video"] else 0


async def decoding(page: Any) -> bool:
    first = await frames(page)
    if first == 0:
        return False
    await page.wait_for_timeout(500)
    return await frames(page) > first


async def page_state(page: Any) -> Any:
    """What the demo page knows, for a failure message: status line, errors, peer connection states,
    the room events it got last."""
    return await page.evaluate("""() => {
      const r = window.demo.room;
      const pc = (p) => p ? p.connectionState + "/" + p.iceConnectionState : null;
      return {status: document.querySelector("#status").textContent, errors: window.demo.errors,
              reconnects: window.demo.reconnects, rejoinLog: r && r.rejoinLog, baseUrl: r && r.baseUrl, pub: pc(r && r.pub),
              sub: pc(r && r.sub), remote: r ? r.remoteTracks.size : 0,
              events: window.demo.events.slice(-12).map((e) => e.type + (e.code ? ":" + e.code : ""))};
    }""")


async def test_visit_through_two_nodes_meets_on_the_owner_and_survives_its_death(
        cluster: Cluster, browser: Any) -> None:  # noqa: F811
    a, b = await cluster.start(2)
    clinician = await open_demo(browser, Entry(a), "xvisit", "dr-lee", "clinician")
    patient = await open_demo(browser, Entry(b), "xvisit", "pat-1", "patient")
    owner_url = await clinician.evaluate("window.demo.room.baseUrl")
    assert await patient.evaluate("window.demo.room.baseUrl") == owner_url
    assert sorted(await patient.evaluate("window.demo.room.nodeUrls")) == sorted([a.url, b.url])
    # The clinician may have joined before its node saw the other one: a `nodes` event tells it.
    await eventually(lambda: clinician.evaluate("window.demo.room.nodeUrls.length === 2"), timeout=20,
                     what="the clinician knows both nodes")
    for page in (clinician, patient):
        await eventually(lambda p=page: decoding(p), timeout=40, what="frames decoded")

    owner = cluster.by_url(owner_url)
    survivor = b if owner is a else a
    owner.proc.kill()
    killed = time.monotonic()
    times = {}
    for name, page in (("clinician", clinician), ("patient", patient)):
        await eventually(lambda p=page: p.evaluate("window.demo.reconnects || 0"), timeout=30,
                         what=f"{name} reconnecting")
        # A new subscriber connection on the survivor that decodes again.
        try:
            await eventually(lambda p=page: frames(p), timeout=60, what=f"{name} decodes again")
        except AssertionError as e:
            raise AssertionError(f"{e}; page state: {await page_state(page)}; "
                                 f"survivor's log: {survivor.output()[-1500:]}") from None
        times[name] = time.monotonic() - killed
        assert await page.evaluate("window.demo.room.baseUrl") == survivor.url
    for page in (clinician, patient):
        await eventually(lambda p=page: decoding(p), timeout=40, what="frames decoded again")
    print(f"\nkill -9 of the owner -> first decoded frame again: clinician {times['clinician']:.1f} s, "
          f"patient {times['patient']:.1f} s")
    for page in (clinician, patient):
        print("rejoin tries that failed:", await page.evaluate("window.demo.room.rejoinLog"))
    for page in (clinician, patient):
        await page.context.close()
