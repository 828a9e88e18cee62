"""PeerTransport: one bundled WebRTC connection of a participant, either publishing or subscribing.

aiortc does SDP, ICE and DTLS. On the native datapath (the default), the connection is handed to
the native media plane once DTLS is up: SRTP keys and the nominated remote address go to a Rust
worker, which from then on unprotects, routes, protects and sends the media itself; aiortc never
sends SRTP at all (its idle senders' RTCP is suppressed, the router owns RTCP), and still handles
DTLS and the data channels; the plane also runs the peer's ICE consent checks (native_plane). On the "python" datapath (benchmark baseline),
decrypted RTP and RTCP are taken from aiortc's DTLS transport and handed to the room's router from
Python; what the router returns is sent through aiortc's SRTP context.
aiortc's own receivers never see the media, so their decoder threads are never started
(`aiortc_glue.skip_decoder`), and they run no RTCP loop and keep no bitrate estimator or jitter
buffer (`aiortc_glue.idle_receiver`); its senders carry a track that never yields a frame, so no
encoder is created either, and on the native datapath they run no RTP or RTCP loop at all
(`aiortc_glue.idle_sender`): after the handover a peer costs the event loop nothing per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.sdp import SessionDescription

from mediasrv.clock import now_ms
from mediasrv.config import Settings
from mediasrv.media import aiortc_glue, candidate_stats, simulcast_sdp
from mediasrv.media.reclaim import RECLAIMER
from mediasrv.media.sdp import SdpError, announce_addresses, announce_tcp_port, check_offer_text

if TYPE_CHECKING:
    import mediasrv_native

    from mediasrv.media.native_plane import NativePlane

log = logging.getLogger(__name__)
_handles = itertools.count(1)


class ForwardedTrack(MediaStreamTrack):
    """Placeholder track for an aiortc sender whose RTP the router produces instead."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never = asyncio.Event()

    async def recv(self) -> Any:  # pragma: no cover - waits until the sender stops
        await self._never.wait()
        raise asyncio.CancelledError


class TransportHost(Protocol):
    """What a PeerTransport needs from the room that owns it."""

    @property
    def settings(self) -> Settings: ...  # the media addresses to announce

    @property
    def plane(self) -> NativePlane | None: ...  # the native media plane, when that is the datapath

    @property
    def plane_key(self) -> int | None: ...  # the room's key on that plane

    @property
    def router(self) -> mediasrv_native.Router: ...  # the Python datapath routes through it

    def count_drop(self, reason: str) -> None: ...

    async def deliver_rtp(self, out: list[tuple[int, bytes]]) -> None:
        """Send what the router returned, each packet on the transport its handle names."""


# One DTLS certificate for all of the server's connections, as SFUs commonly do: its OpenSSL context
# is made once instead of ~20 KB per connection. Replaced daily (aiortc's are valid for 30 days).
CERTIFICATE_MAX_AGE_S = 86_400.0
_certificate: tuple[float, RTCCertificate] | None = None


def server_certificate() -> RTCCertificate:
    global _certificate
    now = time.monotonic()
    if _certificate is None or now - _certificate[0] > CERTIFICATE_MAX_AGE_S:
        _certificate = (now, aiortc_glue.shared_certificate())
    return _certificate[1]


class PeerTransport:
    def __init__(self, host: TransportHost, owner: str, direction: str) -> None:
        self.host = host
        self.owner = owner  # participant identity
        self.direction = direction  # "publish" | "subscribe"
        self.handle = next(_handles)
        self.pc = aiortc_glue.peer_connection_with(
            server_certificate(), RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self._dtls: set[RTCDtlsTransport] = set()
        self.closed = False
        self.handed_over = False
        self.suppressed_rtcp = 0  # aiortc RTP/RTCP sends refused on the native datapath
        # A publisher's simulcast offers by mid: aiortc never sees them; its answers get them back.
        self.simulcast: dict[str, simulcast_sdp.SimulcastMedia] = {}
        self.on_failed: Callable[[PeerTransport], Awaitable[None]] | None = None
        self.on_connected: Callable[[PeerTransport], Awaitable[None]] | None = None
        # Called when ICE and DTLS have not completed within the settings' session_setup_timeout_s
        # (the transport is closed when nobody is set to handle it).
        self.on_setup_timeout: Callable[[PeerTransport], Awaitable[None]] | None = None
        self.pc.on("connectionstatechange", self._on_state)
        # A peer that never connects must not keep its ICE agent, ports and room slot forever.
        loop = asyncio.get_running_loop()
        self._setup_timer: asyncio.TimerHandle | None = loop.call_later(
            host.settings.session_setup_timeout_s, self._setup_expired)
        self._setup_task: asyncio.Task[None] | None = None

    # --- negotiation ------------------------------------------------------------------------------
    async def accept_offer(
        self, offer_sdp: str, before_answer: Callable[[], None] | None = None
    ) -> str:
        """Apply a remote offer and return our answer. `before_answer` may add tracks (WHEP)."""
        if self.direction == "publish":
            offer_sdp, simulcast = simulcast_sdp.strip_offer(offer_sdp)
            self.simulcast.update(simulcast)
        check_offer_text(offer_sdp)
        try:
            with aiortc_glue.lean_receivers():
                await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
                if before_answer:
                    before_answer()
            answer = await self.pc.createAnswer()
            with self._gathering():
                await self.pc.setLocalDescription(answer)
        except SdpError:
            raise
        except Exception as exc:  # aiortc raises ValueError/InternalError/... on unusable offers
            raise SdpError(f"offer rejected: {exc.__class__.__name__}: {exc}") from None
        self._install_hooks()
        return self._local_sdp()

    async def create_offer(self) -> str:
        offer = await self.pc.createOffer()
        with self._gathering():
            await self.pc.setLocalDescription(offer)
        self._install_hooks()
        return self._local_sdp()

    async def accept_answer(self, answer_sdp: str) -> None:
        check_offer_text(answer_sdp)
        try:
            with aiortc_glue.lean_receivers():
                await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
        except Exception as exc:
            raise SdpError(f"answer rejected: {exc.__class__.__name__}: {exc}") from None
        self._install_hooks()

    def remote_description(self) -> SessionDescription | None:
        """The remote description, parsed (read it, never change it)."""
        return aiortc_glue.remote_description(self.pc)

    def _local_sdp(self) -> str:
        desc = self.pc.localDescription
        settings = self.host.settings
        mapping = dict(zip(settings.media_bind_addresses, settings.media_announced_addresses, strict=False))
        sdp = simulcast_sdp.add_to_answer(announce_addresses(desc.sdp, mapping), self.simulcast)
        plane = self._plane
        if plane is not None and settings.media_tcp_announced_port:
            for _, port in plane.tcp_sockets.values():
                sdp = announce_tcp_port(sdp, port, settings.media_tcp_announced_port)
        return sdp

    def add_sender(self, kind: str) -> RTCRtpTransceiver:
        """A send-only transceiver whose packets the router produces."""
        with aiortc_glue.lean_receivers():
            return self.pc.addTransceiver(ForwardedTrack(kind), direction="sendonly")

    def transceivers(self) -> list[RTCRtpTransceiver]:
        return self.pc.getTransceivers()

    # --- datapath hand-off --------------------------------------------------------------------------
    def _install_hooks(self) -> None:
        for t in self.pc.getTransceivers():
            # Its RTP is taken below, so aiortc's decoder would only be an idle thread per track,
            # and its RTCP loop, bitrate estimator and jitter buffer would only wait for RTP.
            aiortc_glue.skip_decoder(t.receiver)
            aiortc_glue.idle_receiver(t.receiver)
            if self._plane is not None:
                # The plane sends this SSRC's media and sender reports: no loop per sender here.
                aiortc_glue.idle_sender(t.sender)
            dtls = t.receiver.transport
            if dtls is None or dtls in self._dtls:
                continue
            self._dtls.add(dtls)
            aiortc_glue.release_idle_dtls_buffers(dtls)
            aiortc_glue.intercept_rtp(dtls, self._on_rtp)
            aiortc_glue.intercept_rtcp(dtls, self._on_rtcp)
            if self._plane is not None:
                # aiortc's SRTP context must never send on SSRCs the native one protects (keystream
                # reuse); the router sends every RTCP packet instead.
                aiortc_glue.replace_srtp_send(dtls, self._suppress_send)

    @property
    def _plane(self) -> NativePlane | None:
        return self.host.plane

    def _gathering(self) -> contextlib.AbstractContextManager[None]:
        """aiortc gathers in setLocalDescription: on the sockets of the room's media worker."""
        plane = self._plane
        return plane.gathering_for(self.host.plane_key) if plane is not None else contextlib.nullcontext()

    async def _suppress_send(self, data: bytes) -> None:
        self.suppressed_rtcp += 1

    def _hand_over(self) -> None:
        plane, key = self._plane, self.host.plane_key
        if plane is None or key is None or self.handed_over:
            return
        for dtls in self._dtls:
            try:
                self.handed_over = plane.hand_over(self.handle, key, dtls)
            except (ValueError, AttributeError) as exc:
                log.warning("transport %d: native handover failed: %s", self.handle, exc)
            if not self.handed_over:
                self.host.count_drop("handover_failed")

    async def _on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        if self.direction != "publish":
            self.host.count_drop("rtp_from_subscriber")
            return
        out = self.host.router.route_rtp(self.handle, data, now_ms())
        if out:
            await self.host.deliver_rtp(out)

    async def _on_rtcp(self, data: bytes) -> None:
        rtp_out, rtcp_out = self.host.router.handle_rtcp(self.handle, data, now_ms())
        if rtp_out:
            await self.host.deliver_rtp(rtp_out)
        if rtcp_out:
            await self.host.deliver_rtp(rtcp_out)

    def selected_candidate(self) -> tuple[str, str] | None:
        """(remote candidate type, "udp" / "tcp" / "tls") of the connection's nominated pair: how
        the peer reaches us (see candidate_stats); None until ICE has nominated one."""
        return candidate_stats.classify(self.pc)

    async def send(self, packet: bytes) -> bool:
        """Protect and send one RTP or RTCP packet; False when this transport cannot send."""
        plane = self._plane
        if plane is not None:
            return bool(plane.native.send_media(self.handle, packet))
        for dtls in self._dtls:
            try:
                await aiortc_glue.send_srtp(dtls, packet)
                return True
            except ConnectionError:
                return False
        return False

    # --- lifecycle ------------------------------------------------------------------------------------
    async def _on_state(self) -> None:
        state = self.pc.connectionState
        # The handle, never the owner: an identity is patient data and stays out of logs.
        log.debug("transport %d (%s): %s", self.handle, self.direction, state)
        if state in ("failed", "closed") and not self.closed and self.on_failed:
            await self.on_failed(self)
        elif state == "connected":
            self._cancel_setup_timer()
            self._hand_over()
            if self.on_connected:
                await self.on_connected(self)

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    def _cancel_setup_timer(self) -> None:
        if self._setup_timer is not None:
            self._setup_timer.cancel()
            self._setup_timer = None

    def _setup_expired(self) -> None:
        self._setup_timer = None
        if self.closed or self.connected:
            return
        log.info("transport %d (%s): not connected within %gs, closing", self.handle,
                 self.direction, self.host.settings.session_setup_timeout_s)
        self._setup_task = asyncio.get_running_loop().create_task(self._expire())

    async def _expire(self) -> None:
        try:
            if self.on_setup_timeout is not None:
                await self.on_setup_timeout(self)
            else:
                await self.close()
        except Exception:
            log.exception("transport %d: closing after the setup timeout", self.handle)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_setup_timer()
        plane = self._plane
        if plane is not None:
            with contextlib.suppress(ValueError):  # the plane already shut down
                plane.native.unregister_peer(self.handle)
        try:
            await self.pc.close()
        except Exception:  # closing must never fail the caller
            log.exception("closing transport %d", self.handle)
        RECLAIMER.closed()  # the closed connection is cyclic garbage: have it freed soon
