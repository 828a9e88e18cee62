"""A visit over a shaped link: the clinician's browser on the server's machine, the patient's in its
own namespace (netns.py), whose downlink is the test side of the veth (`LINK`). Shaping is tc on
that device's egress; what the patient heard and saw comes from its page's getStats."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from .conftest import eventually, goto

LINK = "msbr0"  # the test side of the veth: its egress is the patient's downlink

PATIENT_STATS = """
async () => {
  const pc = window.demo.room && window.demo.room.sub;
  const out = {audio: null, video: null};
  if (!pc) return out;
  (await pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'audio') out.audio = {samples: s.totalSamplesReceived || 0,
                                         concealed: s.concealedSamples || 0,
                                         jbDelay: s.jitterBufferDelay || 0,
                                         jbEmitted: s.jitterBufferEmittedCount || 0};
    if (s.kind === 'video') out.video = {frames: s.framesDecoded || 0, height: s.frameHeight || 0,
                                         fps: s.framesPerSecond || 0};
  });
  return out;
}
"""

# Classic BPF for a loss filter: A = a random 32-bit number; "match" (into the drop class) when it
# is at most the loss share of 2^32.
_RANDOM_LOSS_BPF = "4,32 0 0 4294963256,37 1 0 {k},6 0 0 4294967295,6 0 0 0"


def tc(*args: str) -> None:
    subprocess.run(["tc", *args], check=True, capture_output=True, timeout=10)


def clear() -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", LINK, "root"], capture_output=True, timeout=10)


def token_bucket(rate_kbit: int, latency_ms: int = 250) -> None:
    """The downlink limited to `rate_kbit` with a queue of `latency_ms`."""
    tc("qdisc", "add", "dev", LINK, "root", "tbf", "rate", f"{rate_kbit}kbit", "burst", "6000",
       "latency", f"{latency_ms}ms")


def lossy(rate_kbit: int, loss_pct: int) -> None:
    """The downlink as an HTB class of `rate_kbit` with a 250 ms byte FIFO (leaf "10:"), and a
    classic-BPF filter sending `loss_pct` % of packets at random into a class that drops them
    (leaf "20:"): this kernel has neither netem nor the gact action."""
    tc("qdisc", "add", "dev", LINK, "root", "handle", "1:", "htb", "default", "10")
    tc("class", "add", "dev", LINK, "parent", "1:", "classid", "1:10", "htb", "rate", f"{rate_kbit}kbit",
       "ceil", f"{rate_kbit}kbit")
    tc("qdisc", "add", "dev", LINK, "parent", "1:10", "handle", "10:", "bfifo", "limit",
       str(rate_kbit * 1000 // 8 // 4))
    tc("class", "add", "dev", LINK, "parent", "1:", "classid", "1:20", "htb", "rate", "8bit", "ceil", "8bit")
    tc("qdisc", "add", "dev", LINK, "parent", "1:20", "handle", "20:", "bfifo", "limit", "1")
    k = loss_pct * 2**32 // 100
    tc("filter", "add", "dev", LINK, "parent", "1:", "protocol", "ip", "prio", "1", "bpf", "bytecode",
       _RANDOM_LOSS_BPF.format(k=k), "flowid", "1:20")


def _qdiscs() -> list[dict[str, Any]]:
    out = subprocess.run(["tc", "-s", "-j", "qdisc", "show", "dev", LINK], check=True, capture_output=True,
                         timeout=10).stdout
    return list(json.loads(out))


def link_counters() -> tuple[int, int, int]:
    """(bytes sent, packets sent, packets dropped) by the downlink's root qdisc."""
    root = next(q for q in _qdiscs() if q.get("root"))
    return root["bytes"], root["packets"], root["drops"]


class BacklogSampler:
    """The root qdisc's backlog (bytes queued in the link), sampled every `interval_s` in a thread:
    what the audio waits behind at the bottleneck. `peaks()` gives the largest backlog of each
    second since the last call."""

    def __init__(self, interval_s: float = 0.05) -> None:
        import threading
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                root = next(q for q in _qdiscs() if q.get("root"))
                self.samples.append(int(root.get("backlog", 0)))
            except (StopIteration, subprocess.SubprocessError, ValueError):
                pass

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def take(self) -> list[int]:
        out, self.samples = self.samples, []
        return out


def leaf_counters() -> dict[str, tuple[int, int]]:
    """(packets sent, packets dropped) per queue of the downlink, by handle ("10:", "20:")."""
    return {q["handle"]: (q["packets"], q["drops"]) for q in _qdiscs()}


def jitter_delay_s(before: dict[str, Any], after: dict[str, Any]) -> float:
    """The audio jitter buffer's mean delay between two PATIENT_STATS samples, in seconds."""
    emitted = after["audio"]["jbEmitted"] - before["audio"]["jbEmitted"]
    return float(after["audio"]["jbDelay"] - before["audio"]["jbDelay"]) / max(1, emitted)


async def open_page(browser: Any, server: Any, url: str, room: str, identity: str, role: str,
                    options: str = "") -> Any:
    """The demo page joined to `room` at `url` (the server's address as the browser reaches it);
    `options` are more of its query parameters (e.g. "&red=1")."""
    page = await (await browser.new_context()).new_page()
    token = server.token(identity, role, room, name=identity)
    await goto(page, f"{url}/demo?room={room}&identity={identity}&role={role}&autojoin=1{options}#token={token}")
    try:
        # (30 s: a page behind the delay line joined in a second or two in most runs and not
        # within 15 s in a few; the page's own state says where it stood.)
        await page.wait_for_function("window.demo && window.demo.joined", timeout=30000)
    except Exception as e:
        state = await page.evaluate(
            "() => [document.querySelector('#status').textContent, (window.demo || {}).errors]")
        raise AssertionError(f"{identity}'s page did not join in 30 s: status, errors {state}") from e
    return page


async def decoding(patient: Any, timeout: float = 30) -> dict[str, Any]:
    """Waits until the patient's page has decoded 30 frames; its stats then."""
    async def check() -> Any:
        s = await patient.evaluate(PATIENT_STATS)
        return s["video"] and s["video"]["frames"] > 30 and s
    result: dict[str, Any] = await eventually(check, timeout=timeout, what="patient decodes the clinician")
    return result
