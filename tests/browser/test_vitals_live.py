"""Live vitals: the patient page sends device frames on the `vitals` data channel; the clinician page
gets the decoded readings and an alert; a bad frame is reported back to the sender only."""

from __future__ import annotations

import pytest

from mediasrv.api import appkeys as keys
from mediasrv.vitals.envelope import encode

from .conftest import eventually, open_demo

pytestmark = pytest.mark.browser

SEND = """
async (frames) => {
  const ch = window.demo.room.channels.vitals;
  if (ch.readyState !== 'open') await new Promise((r) => ch.addEventListener('open', r, {once: true}));
  window.vitalsReplies = window.vitalsReplies || [];
  ch.onmessage = (ev) => window.vitalsReplies.push(JSON.parse(ev.data));
  for (const f of frames) ch.send(new Uint8Array(f));
}
"""


async def test_vitals_reach_the_clinician_with_alerts(server, browser):
    clinician = await open_demo(browser, server, "visit-v", "dr-v", "clinician")
    patient = await open_demo(browser, server, "visit-v", "pat-v", "patient", extra="&vitals=1")
    heart_rate = encode("heart_rate", bytes([0x00, 72]), device_time_ms=1_790_000_000_000)
    # PLX continuous: flags 0, SpO2 85 % and pulse 72 /min as SFLOAT (exponent 0): below 90 % alerts
    spo2 = encode("plx_continuous", bytes([0x00, 85, 0x00, 72, 0x00]))
    truncated = encode("heart_rate", bytes([0x01, 72]))  # flags say 16-bit HR, one byte follows
    await patient.evaluate(SEND, [list(heart_rate), list(spo2), list(truncated)])

    async def got(kind):
        events = await clinician.evaluate("window.demo.events")
        return [e for e in events if e["type"] == kind]

    readings = await eventually(lambda: _at_least(got("vitals"), 2), timeout=20, what="vitals events")
    by_kind = {e["kind"]: e for e in readings}
    assert by_kind["heart_rate"]["reading"]["heart_rate_bpm"] == 72
    assert by_kind["heart_rate"]["participant"] == "pat-v"
    assert by_kind["heart_rate"]["device_time_ms"] == 1_790_000_000_000
    assert by_kind["plx_continuous"]["reading"]["spo2_pct"] == 85
    alerts = await eventually(lambda: got("vitals_alert"), timeout=10, what="alert")
    assert alerts[0]["alert"]["metric"] == "spo2_pct" and alerts[0]["alert"]["direction"] == "below"

    replies = await eventually(lambda: patient.evaluate("window.vitalsReplies"), timeout=10, what="reply")
    assert len(replies) == 1 and replies[0]["code"] == "invalid_frame", replies
    # The bad frame reached nobody else, and the visit goes on: the series holds the two good ones.
    assert len(await got("vitals")) == 2
    stored = await server.app[keys.VITALS].readings(room="visit-v")
    assert [r.kind for r in stored] == ["heart_rate", "plx_continuous"]
    await patient.context.close()
    await clinician.context.close()


async def _at_least(coro, n):
    items = await coro
    return items if len(items) >= n else None
