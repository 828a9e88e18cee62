"""The browser-namespace fixture itself: the browser reaches the test's server over the veth, and the
firewall helpers really cut it off (so the restrictive-network tests test what they claim)."""

from __future__ import annotations

import pytest

from tests.conftest import start_server

from . import netns
from .conftest import goto
from .netns import HOST_ADDR, listen_on

# The namespace fixtures, made visible to pytest in this module.
browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

pytestmark = pytest.mark.browser

FETCH = """
async (url) => { try { const r = await fetch(url, {signal: AbortSignal.timeout(3000)}); return r.status; }
                 catch (e) { return 'failed'; } }
"""


async def test_browser_namespace_reaches_server_and_firewall_cuts_it(netns_browser, browser_netns, tmp_path):
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR])
    try:
        url = await listen_on(srv, HOST_ADDR)
        page = await (await netns_browser.new_context()).new_page()
        await goto(page, f"{url}/healthz")
        assert await page.evaluate(FETCH, f"{url}/healthz") == 200
        # The server's own loopback is not the browser's: 127.0.0.1 there is the browser's machine.
        assert await page.evaluate(FETCH, srv.url + "/healthz") == "failed"
        browser_netns.allow_only_tcp(443)
        assert await page.evaluate(FETCH, f"{url}/healthz") == "failed"
        browser_netns.open()
        assert await page.evaluate(FETCH, f"{url}/healthz") == 200
    finally:
        await srv.runner.cleanup()
