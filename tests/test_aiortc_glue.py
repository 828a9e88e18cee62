"""mediasrv.media.aiortc_glue against the installed aiortc and aioice.

The first test pins every private attribute and method the glue relies on, each check naming the
glue function that breaks if it moves; the others drive the glue with real objects (a peer
connection pair negotiating over loopback, an ICE agent gathering on provided sockets) and check
the RFC 5764 key split against a known answer.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import queue
import re
import select
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aioice
import aioice.ice
import aiortc
import aiortc.rate
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import aiortc.sdp
import mediasrv_native
import OpenSSL.SSL
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RtcpPsfbPacket, RtpPacket

from mediasrv.media import aiortc_glue
from mediasrv.media.aiortc_glue import SrtpKeys, split_srtp_keying_material
from mediasrv.media.sdp import check_offer_text

VERSIONS = f"installed aiortc {aiortc.__version__}, aioice {aioice.__version__}"


# --- pins ---------------------------------------------------------------------------------------------
@dataclass
class Objects:
    """Fresh, unconnected aiortc/aioice objects whose instance attributes the pins look at."""

    pc: RTCPeerConnection
    connection: aioice.ice.Connection

    @property
    def transceiver(self) -> Any:
        return self.pc.getTransceivers()[0]

    @property
    def dtls(self) -> RTCDtlsTransport:
        return self.transceiver.receiver.transport


def _is_method(cls: type, name: str, params: list[str], coroutine: bool) -> bool:
    fn = getattr(cls, name, None)
    if fn is None or inspect.iscoroutinefunction(fn) != coroutine:
        return False
    return list(inspect.signature(fn).parameters)[:len(params)] == params


def _calls(cls: type, call: str) -> bool:
    return call in inspect.getsource(cls)


def _looks_up_global(fn: Any, name: str) -> bool:
    return name in fn.__code__.co_names and fn.__globals__.get(name) is not None


# (glue function, what it relies on, check)
PINS: list[tuple[str, str, Callable[[Objects], bool]]] = [
    ("negotiated_codecs", "RTCRtpTransceiver instances keep a list `_codecs`",
     lambda o: isinstance(o.transceiver._codecs, list)),
    ("sender_ssrc", "RTCRtpSender instances keep an int `_ssrc`",
     lambda o: isinstance(o.transceiver.sender._ssrc, int)),
    ("sender_rtx_ssrc", "RTCRtpSender instances keep an int `_rtx_ssrc`",
     lambda o: isinstance(o.transceiver.sender._rtx_ssrc, int)),
    ("intercept_rtp", "RTCDtlsTransport._handle_rtp_data(self, data, arrival_time_ms) is a coroutine",
     lambda o: _is_method(RTCDtlsTransport, "_handle_rtp_data", ["self", "data", "arrival_time_ms"], True)),
    ("intercept_rtp", "RTCDtlsTransport's receive path calls it as `self._handle_rtp_data(`",
     lambda o: _calls(RTCDtlsTransport, "self._handle_rtp_data(")),
    ("intercept_rtcp", "RTCDtlsTransport._handle_rtcp_data(self, data) is a coroutine",
     lambda o: _is_method(RTCDtlsTransport, "_handle_rtcp_data", ["self", "data"], True)),
    ("intercept_rtcp", "RTCDtlsTransport's receive path calls it as `self._handle_rtcp_data(`",
     lambda o: _calls(RTCDtlsTransport, "self._handle_rtcp_data(")),
    ("send_srtp", "RTCDtlsTransport._send_rtp(self, data) is a coroutine",
     lambda o: _is_method(RTCDtlsTransport, "_send_rtp", ["self", "data"], True)),
    ("replace_srtp_send", "RTCRtpSender sends through `self.transport._send_rtp(`",
     lambda o: _calls(RTCRtpSender, "self.transport._send_rtp(")),
    ("replace_srtp_send", "RTCRtpReceiver sends RTCP through `self.transport._send_rtp(`",
     lambda o: _calls(RTCRtpReceiver, "self.transport._send_rtp(")),
    ("request_keyframe", "RTCRtpReceiver._send_rtcp_pli(self, media_ssrc) is a coroutine",
     lambda o: _is_method(RTCRtpReceiver, "_send_rtcp_pli", ["self", "media_ssrc"], True)),
    ("dtls_role", "RTCDtlsTransport instances keep `_role`, 'auto' until started",
     lambda o: o.dtls._role == "auto"),
    ("dtls_srtp_keys", "RTCDtlsTransport instances keep `_ssl`, None until started",
     lambda o: hasattr(o.dtls, "_ssl") and o.dtls._ssl is None),
    ("dtls_srtp_keys", "pyOpenSSL's SSL.Connection has get_selected_srtp_profile()",
     lambda o: callable(getattr(OpenSSL.SSL.Connection, "get_selected_srtp_profile", None))),
    ("dtls_srtp_keys", "pyOpenSSL's SSL.Connection has export_keying_material(label, olen)",
     lambda o: _is_method(OpenSSL.SSL.Connection, "export_keying_material",
                          ["self", "label", "olen"], False)),
    ("nominated_pair", "RTCIceTransport instances keep their aioice Connection in `_connection`",
     lambda o: isinstance(o.dtls.transport._connection, aioice.ice.Connection)),
    ("nominated_pair", "aioice Connection instances keep nominated pairs in a dict `_nominated`",
     lambda o: o.connection._nominated == {}),
    ("nominated_pair", "aioice CandidatePair has `protocol`, `remote_candidate` and `remote_addr`",
     lambda o: list(inspect.signature(aioice.ice.CandidatePair).parameters)
     == ["protocol", "remote_candidate"]
     and isinstance(inspect.getattr_static(aioice.ice.CandidatePair, "remote_addr"), property)),
    ("local_ice_password", "aioice Connection has a str `local_password`",
     lambda o: isinstance(o.connection.local_password, str)),
    ("ice_connection", "RTCIceTransport instances keep their aioice Connection in `_connection`",
     lambda o: isinstance(o.dtls.transport._connection, aioice.ice.Connection)),
    ("ice_parameters", "aioice Connection has an int `_tie_breaker`, a bool `ice_controlling`, and "
     "`remote_username` / `remote_password` None until known",
     lambda o: isinstance(o.connection._tie_breaker, int) and isinstance(o.connection.ice_controlling, bool)
     and o.connection.remote_username is None and o.connection.remote_password is None),
    ("ice_parameters", "aioice's checks carry PRIORITY candidate_priority(pair.component, \"prflx\")",
     lambda o: _calls(aioice.ice.Connection, 'candidate_priority(pair.component, "prflx")')
     and isinstance(inspect.getattr_static(aioice.ice.CandidatePair, "component"), property)),
    ("stop_consent_checks", "connect() starts `self._query_consent_task = asyncio.create_task("
     "self.query_consent())`; close() cancels it only when set and not done",
     lambda o: o.connection._query_consent_task is None
     and _calls(aioice.ice.Connection, "self._query_consent_task = asyncio.create_task(self.query_consent())")
     and _calls(aioice.ice.Connection, "if self._query_consent_task and not self._query_consent_task.done():")),
    ("close_ice", "aioice closes the agent itself on a consent failure with `await self.close()`",
     lambda o: _calls(aioice.ice.Connection, "return await self.close()")),
    ("take_over_socket", "asyncio's selector loop has `_remove_reader(fd)`",
     lambda o: callable(getattr(asyncio.SelectorEventLoop, "_remove_reader", None))),
    ("use_host_addresses", "aioice.ice.get_host_addresses(use_ipv4, use_ipv6) exists",
     lambda o: list(inspect.signature(aioice.ice.get_host_addresses).parameters)
     == ["use_ipv4", "use_ipv6"]),
    ("use_host_addresses", "Connection.gather_candidates looks get_host_addresses up in aioice.ice",
     lambda o: _looks_up_global(aioice.ice.Connection.gather_candidates, "get_host_addresses")),
    ("gather_host_candidates_on",
     "Connection.get_component_candidates(self, component, addresses, timeout) is a coroutine",
     lambda o: _is_method(aioice.ice.Connection, "get_component_candidates",
                          ["self", "component", "addresses", "timeout"], True)),
    ("gather_host_candidates_on", "Connection.gather_candidates calls self.get_component_candidates",
     lambda o: _calls(aioice.ice.Connection, "self.get_component_candidates(")),
    ("gather_host_candidates_on",
     "Connection instances have stun_server, turn_server, local_username and a list `_protocols`",
     lambda o: o.connection.stun_server is None and o.connection.turn_server is None
     and isinstance(o.connection.local_username, str) and o.connection._protocols == []),
    ("gather_host_candidates_on", "aioice.ice.StunProtocol(connection) has connection_made",
     lambda o: list(inspect.signature(aioice.ice.StunProtocol).parameters) == ["receiver"]
     and callable(aioice.ice.StunProtocol.connection_made)),
    ("component_gathering", "Connection.gather_candidates calls self.get_component_candidates",
     lambda o: _calls(aioice.ice.Connection, "self.get_component_candidates(")),
    ("add_host_protocol", "Connection instances pair and check from a list `_protocols`",
     lambda o: o.connection._protocols == [] and _calls(aioice.ice.Connection, "for protocol in self._protocols")),
    ("passive_tcp_candidate", "aioice pairs by `protocol.local_candidate.can_pair_with(remote_candidate)`",
     lambda o: _calls(aioice.ice.Connection, "protocol.local_candidate.can_pair_with(")),
    ("passive_tcp_candidate", "an unknown checker becomes a peer-reflexive pair on the protocol it came in on",
     lambda o: _calls(aioice.ice.Connection, 'type="prflx"')
     and _calls(aioice.ice.Connection, "pair = CandidatePair(protocol, remote_candidate)")),
    ("passive_tcp_candidate", "aioice Candidate has `tcptype`",
     lambda o: "tcptype" in inspect.signature(aioice.candidate.Candidate).parameters),
    ("nominated_transport", "aioice Connection instances keep nominated pairs in a dict `_nominated`",
     lambda o: o.connection._nominated == {}),
    ("selected_candidate", "a nominated pair's `local_candidate` comes from its protocol",
     lambda o: isinstance(inspect.getattr_static(aioice.ice.CandidatePair, "local_candidate"), property)),
    ("skip_decoder", "RTCRtpReceiver instances keep a queue.Queue `__decoder_queue`, `__decoder_thread` "
     "(None until receive) and `_track`",
     lambda o: isinstance(o.transceiver.receiver._RTCRtpReceiver__decoder_queue, queue.Queue)
     and o.transceiver.receiver._RTCRtpReceiver__decoder_thread is None
     and hasattr(o.transceiver.receiver, "_track")),
    ("skip_decoder", "RTCRtpReceiver.receive looks `threading` up in aiortc.rtcrtpreceiver and starts "
     "threading.Thread(target=decoder_worker, args=(loop, self.__decoder_queue, self._track._queue, ...))",
     lambda o: _looks_up_global(RTCRtpReceiver.receive, "threading")
     and re.search(r"threading\.Thread\(\s*target=decoder_worker,.*?args=\(\s*[^,]+,\s*"
                   r"self\.__decoder_queue,\s*self\._track\._queue,", inspect.getsource(RTCRtpReceiver),
                   re.S) is not None
     and list(inspect.signature(aiortc.rtcrtpreceiver.decoder_worker).parameters)[:3]
     == ["loop", "input_q", "output_q"]),
    ("skip_decoder", "RTCRtpReceiver stops its decoder by putting None on the queue and joining the thread",
     lambda o: _calls(RTCRtpReceiver, "self.__decoder_queue.put(None)")
     and _calls(RTCRtpReceiver, "self.__decoder_thread.join()")),
    ("skip_decoder", "a RemoteStreamTrack keeps an asyncio.Queue `_queue`; None there ends the track",
     lambda o: isinstance(aiortc.rtcrtpreceiver.RemoteStreamTrack("audio")._queue, asyncio.Queue)
     and _calls(aiortc.rtcrtpreceiver.RemoteStreamTrack, "if frame is None:")),
    ("idle_sender", "RTCRtpSender.send starts its loops as ensure_future(self._run_rtp(...)) and "
     "ensure_future(self._run_rtcp()); instances keep `__started` and the four loop events",
     lambda o: _calls(RTCRtpSender, "self.__rtp_task = asyncio.ensure_future(self._run_rtp(")
     and _calls(RTCRtpSender, "self.__rtcp_task = asyncio.ensure_future(self._run_rtcp())")
     and o.transceiver.sender._RTCRtpSender__started is False
     and all(isinstance(getattr(o.transceiver.sender, f"_RTCRtpSender__{e}"), asyncio.Event)
             for e in ("rtp_started", "rtp_exited", "rtcp_started", "rtcp_exited"))),
    ("idle_sender", "RTCRtpSender.stop waits for the loops' started events, cancels, waits for exited",
     lambda o: _calls(RTCRtpSender, "await asyncio.gather(self.__rtp_started.wait(), self.__rtcp_started.wait())")
     and _calls(RTCRtpSender, "await asyncio.gather(self.__rtp_exited.wait(), self.__rtcp_exited.wait())")),
    ("idle_receiver", "RTCRtpReceiver.receive starts ensure_future(self._run_rtcp()); stop waits for "
     "`__rtcp_started`, cancels, waits for `__rtcp_exited`",
     lambda o: _calls(RTCRtpReceiver, "self.__rtcp_task = asyncio.ensure_future(self._run_rtcp())")
     and _calls(RTCRtpReceiver, "await self.__rtcp_started.wait()")
     and _calls(RTCRtpReceiver, "await self.__rtcp_exited.wait()")
     and o.transceiver.receiver._RTCRtpReceiver__started is False),
    ("idle_receiver", "RTCRtpReceiver keeps `__jitter_buffer`, `__nack_generator` and "
     "`__remote_bitrate_estimator`, the last two checked for None where RTP is handled",
     lambda o: hasattr(o.transceiver.receiver, "_RTCRtpReceiver__jitter_buffer")
     and hasattr(o.transceiver.receiver, "_RTCRtpReceiver__nack_generator")
     and hasattr(o.transceiver.receiver, "_RTCRtpReceiver__remote_bitrate_estimator")
     and _calls(RTCRtpReceiver, "if self.__remote_bitrate_estimator is not None:")
     and _calls(RTCRtpReceiver, "if self.__nack_generator is not None and")),
    ("lean_receivers", "RTCRtpReceiver.__init__ makes a video receiver's estimator by calling "
     "RemoteBitrateEstimator() from its module's namespace",
     lambda o: _calls(RTCRtpReceiver, "self.__remote_bitrate_estimator = RemoteBitrateEstimator()")
     and "RemoteBitrateEstimator" in vars(aiortc.rtcrtpreceiver)),
    ("peer_connection_with", "RTCPeerConnection.__init__ gets its certificate from "
     "RTCCertificate.generateCertificate() looked up in aiortc.rtcpeerconnection's namespace",
     lambda o: _calls(RTCPeerConnection, "self.__certificates = [RTCCertificate.generateCertificate()]")
     and "RTCCertificate" in vars(aiortc.rtcpeerconnection)),
    ("shared_certificate", "RTCCertificate._create_ssl_context(srtp_profiles) makes an SSL.Context",
     lambda o: list(inspect.signature(aiortc.RTCCertificate._create_ssl_context).parameters)
     == ["self", "srtp_profiles"]
     and isinstance(aiortc.RTCCertificate.generateCertificate()._create_ssl_context(
         aiortc.rtcdtlstransport.SRTP_PROFILES), OpenSSL.SSL.Context)),
    ("use_certificate", "RTCPeerConnection instances keep `__certificates`, a list given to each "
     "RTCDtlsTransport they create",
     lambda o: isinstance(o.pc._RTCPeerConnection__certificates, list)
     and _calls(RTCPeerConnection, "RTCDtlsTransport(iceTransport, self.__certificates)")),
    ("release_idle_dtls_buffers", "RTCDtlsTransport.start builds SSL.Connection("
     "self.__local_certificate._create_ssl_context(srtp_profiles=...)); instances keep `_ssl` (None "
     "until start) and `__local_certificate`",
     lambda o: _calls(RTCDtlsTransport, "self.__local_certificate._create_ssl_context(")
     and _dtls(o.pc)._ssl is None
     and callable(_dtls(o.pc)._RTCDtlsTransport__local_certificate._create_ssl_context)),
    ("reuse_offer_parses", "RTCPeerConnection.setRemoteDescription parses the text with "
     "`sdp.SessionDescription.parse(` (`sdp` a global of aiortc.rtcpeerconnection) and then may change it",
     lambda o: "sdp.SessionDescription.parse(" in inspect.getsource(RTCPeerConnection.setRemoteDescription)
     and _looks_up_global(RTCPeerConnection.setRemoteDescription, "sdp")),
    ("reuse_offer_parses", "createOffer/createAnswer build `sdp.SessionDescription()` and return "
     "wrap_session_description(description), which str()s it; setLocalDescription parses the text and "
     "sets `type` itself",
     lambda o: all("description = sdp.SessionDescription()" in inspect.getsource(f)
                   and "return wrap_session_description(description)" in inspect.getsource(f)
                   for f in (RTCPeerConnection.createOffer, RTCPeerConnection.createAnswer))
     and "str(session_description)" in inspect.getsource(aiortc.rtcpeerconnection.wrap_session_description)
     and "description.type = sessionDescription.type" in inspect.getsource(RTCPeerConnection.setLocalDescription)),
    ("remote_description", "RTCPeerConnection.remoteDescription wraps self.__remoteDescription(), the "
     "parsed description (None before setRemoteDescription)",
     lambda o: "wrap_session_description(self.__remoteDescription())"
     in inspect.getsource(RTCPeerConnection.remoteDescription.fget)
     and o.pc._RTCPeerConnection__remoteDescription() is None),
]


@pytest.fixture
async def objects() -> AsyncIterator[Objects]:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    try:
        yield Objects(pc, aioice.ice.Connection(ice_controlling=True))
    finally:
        await pc.close()


def test_every_glue_function_has_pins() -> None:
    public = {name for name, fn in vars(aiortc_glue).items()
              if inspect.isfunction(fn) and not name.startswith("_") and fn.__module__ == aiortc_glue.__name__}
    pure = {"split_srtp_keying_material", "can_take_over_sockets"}
    assert public - pure - {glue for glue, _, _ in PINS} == set()


@pytest.mark.parametrize(("glue", "what", "check"), PINS, ids=[f"{g}: {w}" for g, w, _ in PINS])
async def test_private_interface_the_glue_relies_on(
    objects: Objects, glue: str, what: str, check: Callable[[Objects], bool]
) -> None:
    try:
        ok = check(objects)
    except (AttributeError, TypeError, ValueError, OSError) as exc:
        ok, what = False, f"{what} ({exc.__class__.__name__}: {exc})"
    assert ok, f"aiortc_glue.{glue} relies on: {what}; {VERSIONS}"


# --- the key split ------------------------------------------------------------------------------------
MATERIAL = bytes(range(60))  # 2 * (16 + 14): AES_CM_128 keys and salts


def test_key_split_known_answer_as_server() -> None:
    keys = split_srtp_keying_material("SRTP_AES128_CM_SHA1_80", MATERIAL, 16, 14, "server")
    # RFC 5764 4.2: client key | server key | client salt | server salt; the server sends with its own.
    assert keys == SrtpKeys("SRTP_AES128_CM_SHA1_80",
                            tx_key=bytes(range(16, 32)), tx_salt=bytes(range(46, 60)),
                            rx_key=bytes(range(0, 16)), rx_salt=bytes(range(32, 46)))


def test_key_split_known_answer_as_client() -> None:
    keys = split_srtp_keying_material("SRTP_AES128_CM_SHA1_80", MATERIAL, 16, 14, "client")
    assert keys == SrtpKeys("SRTP_AES128_CM_SHA1_80",
                            tx_key=bytes(range(0, 16)), tx_salt=bytes(range(32, 46)),
                            rx_key=bytes(range(16, 32)), rx_salt=bytes(range(46, 60)))


def test_key_split_known_answer_gcm_256() -> None:
    material = bytes.fromhex("aa" * 32 + "bb" * 32 + "cc" * 12 + "dd" * 12)
    keys = split_srtp_keying_material("SRTP_AEAD_AES_256_GCM", material, 32, 12, "client")
    assert (keys.tx_key, keys.tx_salt) == (b"\xaa" * 32, b"\xcc" * 12)
    assert (keys.rx_key, keys.rx_salt) == (b"\xbb" * 32, b"\xdd" * 12)


# --- real objects -------------------------------------------------------------------------------------
@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    # Restored afterwards; aioice leaves loopback out by itself, and loopback is all there is here.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    aiortc_glue.use_host_addresses(lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else [])


async def _wait_connected(*pcs: RTCPeerConnection) -> None:
    while any(pc.connectionState != "connected" for pc in pcs):
        assert all(pc.connectionState not in ("failed", "closed") for pc in pcs)
        await asyncio.sleep(0.02)


@pytest.fixture
async def pair(loopback_ice: None) -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    try:
        offerer.addTransceiver("audio")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        await asyncio.wait_for(_wait_connected(offerer, answerer), 20)
        yield offerer, answerer
    finally:
        await offerer.close()
        await answerer.close()


def _dtls(pc: RTCPeerConnection) -> RTCDtlsTransport:
    return pc.getTransceivers()[0].receiver.transport


async def test_connected_pair_keys_roles_and_ice(pair: tuple[RTCPeerConnection, RTCPeerConnection]) -> None:
    a, b = (_dtls(pc) for pc in pair)
    assert {aiortc_glue.dtls_role(a), aiortc_glue.dtls_role(b)} == {"client", "server"}
    ka, kb = aiortc_glue.dtls_srtp_keys(a), aiortc_glue.dtls_srtp_keys(b)
    assert ka is not None and kb is not None and ka.profile == kb.profile
    key_len, salt_len = mediasrv_native.srtp_key_lengths(ka.profile)
    assert (len(ka.tx_key), len(ka.tx_salt)) == (key_len, salt_len)
    assert (ka.tx_key, ka.tx_salt, ka.rx_key, ka.rx_salt) == (kb.rx_key, kb.rx_salt, kb.tx_key, kb.tx_salt)
    assert ka.tx_key != ka.rx_key
    for pc, dtls in zip(pair, (a, b), strict=True):
        nominated = aiortc_glue.nominated_pair(dtls)
        assert nominated is not None and nominated.remote_addr[0] == "127.0.0.1"
        assert nominated.protocol.transport.get_extra_info("socket") is not None
        sdp = pc.localDescription.sdp
        assert f"a=ice-pwd:{aiortc_glue.local_ice_password(dtls)}" in sdp
        ice = aiortc_glue.ice_parameters(dtls)
        assert ice is not None and f"a=ice-ufrag:{ice.local_ufrag}" in sdp
        assert ice.local_password == aiortc_glue.local_ice_password(dtls)
        assert ice.controlling is (pc is pair[0]) and 0 <= ice.tie_breaker < 2**64
    ia, ib = (aiortc_glue.ice_parameters(d) for d in (a, b))
    assert ia is not None and ib is not None
    assert (ia.remote_ufrag, ia.remote_password) == (ib.local_ufrag, ib.local_password)
    # aioice's consent task runs until stopped, once.
    assert aiortc_glue.stop_consent_checks(a) is True
    assert aiortc_glue.ice_connection(a)._query_consent_task is None
    assert aiortc_glue.stop_consent_checks(a) is False
    for pc in pair:
        sdp = pc.localDescription.sdp
        t = pc.getTransceivers()[0]
        assert f"a=ssrc:{aiortc_glue.sender_ssrc(t.sender)} " in sdp
        assert "opus/48000/2" in [f"{c.mimeType.split('/')[1].lower()}/{c.clockRate}/{c.channels}"
                                  for c in aiortc_glue.negotiated_codecs(t)]


async def test_rtp_and_rtcp_reach_the_hooks(pair: tuple[RTCPeerConnection, RTCPeerConnection]) -> None:
    a, b = (_dtls(pc) for pc in pair)
    rtp: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()
    rtcp: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
        rtp.put_nowait((data, arrival_time_ms))

    async def on_rtcp(data: bytes) -> None:
        rtcp.put_nowait(data)

    aiortc_glue.intercept_rtp(b, on_rtp)
    aiortc_glue.intercept_rtcp(b, on_rtcp)
    packet = RtpPacket(payload_type=111, sequence_number=7, timestamp=960, ssrc=0x1234, payload=b"x" * 20)
    await aiortc_glue.send_srtp(a, packet.serialize())
    data, arrival = await asyncio.wait_for(rtp.get(), 10)
    assert data == packet.serialize() and isinstance(arrival, int)

    pli = bytes(RtcpPsfbPacket(fmt=1, ssrc=0x99, media_ssrc=0x1234))
    await aiortc_glue.send_srtp(a, pli)
    while (got := await asyncio.wait_for(rtcp.get(), 10)) != pli:  # aiortc's own RTCP comes too
        pass
    assert got == pli


def _decoder_threads() -> int:
    return sum(t.name.endswith("-decoder") for t in threading.enumerate())


async def test_skipped_decoder_is_never_started_and_its_track_still_ends(loopback_ice: None) -> None:
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    before = _decoder_threads()
    try:
        offerer.addTransceiver("audio")  # sendrecv: both sides receive
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        answerer.getTransceivers()[0].direction = "sendrecv"
        receiver = answerer.getTransceivers()[0].receiver
        assert aiortc_glue.skip_decoder(receiver) and aiortc_glue.skip_decoder(receiver)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        await asyncio.wait_for(_wait_connected(offerer, answerer), 20)
        for _ in range(200):
            if _decoder_threads() > before:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # the answerer's would have started with the offerer's
        assert _decoder_threads() == before + 1, "only the offerer's receiver decodes"
        assert not aiortc_glue.skip_decoder(offerer.getTransceivers()[0].receiver), "already running"
        track = receiver.track
        await answerer.close()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(track.recv(), 5)
    finally:
        await offerer.close()
        await answerer.close()
    assert _decoder_threads() == before


async def test_released_dtls_buffers_leave_the_connection_working(loopback_ice: None) -> None:
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    try:
        offerer.addTransceiver("audio")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        assert aiortc_glue.release_idle_dtls_buffers(_dtls(answerer))
        assert aiortc_glue.release_idle_dtls_buffers(_dtls(answerer)), "twice is once"
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        await asyncio.wait_for(_wait_connected(offerer, answerer), 20)
        assert not aiortc_glue.release_idle_dtls_buffers(_dtls(answerer)), "already started"

        def mode(pc: RTCPeerConnection) -> int:
            # SSL_set_mode adding nothing returns the connection's mode.
            from OpenSSL._util import lib

            return int(lib.SSL_set_mode(_dtls(pc)._ssl._ssl, 0))

        assert mode(answerer) & OpenSSL.SSL.MODE_RELEASE_BUFFERS
        assert not mode(offerer) & OpenSSL.SSL.MODE_RELEASE_BUFFERS
        assert aiortc_glue.dtls_srtp_keys(_dtls(answerer)) is not None
        closed = asyncio.get_running_loop().create_future()
        _dtls(answerer).on("statechange", lambda: _dtls(answerer).state == "closed" and not closed.done()
                           and closed.set_result(None))
        await offerer.close()  # its close_notify still reaches the answerer through the freed buffers
        await asyncio.wait_for(closed, 10)
    finally:
        await offerer.close()
        await answerer.close()


async def test_connections_share_one_certificate_and_context(loopback_ice: None) -> None:
    from OpenSSL._util import lib

    cert = aiortc_glue.shared_certificate()
    pcs = [RTCPeerConnection() for _ in range(4)]
    offerers, answerers = pcs[:2], pcs[2:]
    try:
        for answerer in answerers:
            assert aiortc_glue.use_certificate(answerer, cert)
        for offerer, answerer in zip(offerers, answerers, strict=True):
            offerer.addTransceiver("audio")
            await offerer.setLocalDescription(await offerer.createOffer())
            await answerer.setRemoteDescription(offerer.localDescription)
            assert not aiortc_glue.use_certificate(answerer, cert), "has a transport already"
            assert aiortc_glue.release_idle_dtls_buffers(_dtls(answerer))
            await answerer.setLocalDescription(await answerer.createAnswer())
            await offerer.setRemoteDescription(answerer.localDescription)
        await asyncio.wait_for(_wait_connected(*pcs), 20)
        a, b = (_dtls(pc) for pc in answerers)
        assert a.getLocalParameters().fingerprints == b.getLocalParameters().fingerprints
        # The fingerprints the certificate gives (made once) are its own: the offerers checked them.
        assert [(f.algorithm, f.value) for f in cert.getFingerprints()] == [
            (algorithm, aiortc.rtcdtlstransport.certificate_digest(cert._cert, algorithm))
            for algorithm in aiortc.rtcdtlstransport.X509_DIGEST_ALGORITHMS]
        assert a._ssl.get_context() is b._ssl.get_context()
        ctx = a._ssl.get_context()._context
        assert lib.SSL_CTX_get_session_cache_mode(ctx) == OpenSSL.SSL.SESS_CACHE_OFF
        assert lib.SSL_set_mode(a._ssl._ssl, 0) & OpenSSL.SSL.MODE_RELEASE_BUFFERS
        assert all(aiortc_glue.dtls_srtp_keys(_dtls(pc)) is not None for pc in pcs)
        assert _dtls(offerers[0])._ssl.get_context() is not _dtls(offerers[1])._ssl.get_context()
    finally:
        for pc in pcs:
            await pc.close()


def _loop_tasks(*names: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "").endswith(names)]


async def test_idle_senders_and_receivers_run_no_loop_and_still_stop(loopback_ice: None) -> None:
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    loops = ("RTCRtpSender._run_rtp", "RTCRtpSender._run_rtcp", "RTCRtpReceiver._run_rtcp")
    try:
        offerer.addTransceiver("video")  # sendrecv: both sides send and receive
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        t = answerer.getTransceivers()[0]
        t.direction = "sendrecv"
        assert aiortc_glue.idle_sender(t.sender) and aiortc_glue.idle_receiver(t.receiver)
        assert t.receiver._RTCRtpReceiver__remote_bitrate_estimator is None
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        await asyncio.wait_for(_wait_connected(offerer, answerer), 20)
        for _ in range(200):  # the offerer's three loops start once its DTLS is up
            if len(_loop_tasks(*loops)) >= 3:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert len(_loop_tasks(*loops)) == 3, "only the offerer's sender and receiver have loops"
        assert not aiortc_glue.idle_sender(offerer.getTransceivers()[0].sender), "already running"
        assert not aiortc_glue.idle_receiver(offerer.getTransceivers()[0].receiver), "already running"
        await asyncio.wait_for(answerer.close(), 5)  # stop() finds the loops started and exited
    finally:
        await offerer.close()
        await answerer.close()
    assert _loop_tasks(*loops) == []


async def test_replaced_send_gets_a_requested_keyframe(
    pair: tuple[RTCPeerConnection, RTCPeerConnection]
) -> None:
    offerer = pair[0]
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    aiortc_glue.replace_srtp_send(_dtls(offerer), send)
    await aiortc_glue.request_keyframe(offerer.getTransceivers()[0].receiver, 0x4321)
    plis = [d for d in sent if d[1] == 206 and d[0] & 0x1F == 1]  # PSFB, FMT 1: PLI
    assert len(plis) == 1 and int.from_bytes(plis[0][8:12], "big") == 0x4321


async def test_exported_keys_are_the_ones_aiortc_unprotects_with(
    pair: tuple[RTCPeerConnection, RTCPeerConnection]
) -> None:
    """Native SRTP keyed from `dtls_srtp_keys` on either side (so either DTLS role) is what the
    other side's aiortc SRTP context accepts."""
    for src, dst in ((_dtls(pair[0]), _dtls(pair[1])), (_dtls(pair[1]), _dtls(pair[0]))):
        keys = aiortc_glue.dtls_srtp_keys(src)
        nominated = aiortc_glue.nominated_pair(src)
        assert keys is not None and nominated is not None
        ours = mediasrv_native.SrtpSession(keys.profile, keys.tx_key, keys.tx_salt,
                                           keys.rx_key, keys.rx_salt)
        received: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_rtp(data: bytes, arrival_time_ms: int, received: Any = received) -> None:
            received.put_nowait(data)

        aiortc_glue.intercept_rtp(dst, on_rtp)
        packet = RtpPacket(payload_type=111, sequence_number=1, timestamp=0, ssrc=0x5678, payload=b"y" * 20)
        nominated.protocol.transport.sendto(ours.protect_rtp(packet.serialize()), nominated.remote_addr)
        assert await asyncio.wait_for(received.get(), 10) == packet.serialize(), aiortc_glue.dtls_role(src)


class _SharedSocket(asyncio.DatagramTransport):
    def __init__(self, sockname: tuple[str, int], protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.sockname, self.protocol = sockname, protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sockname if name == "sockname" else default

    def close(self) -> None:
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)


async def test_host_candidates_gathered_on_provided_sockets(loopback_ice: None) -> None:
    opened: list[tuple[str, str]] = []

    class Sockets:
        def host_transport(self, address: str, ufrag: str, protocol: Any) -> _SharedSocket | None:
            opened.append((address, ufrag))
            return _SharedSocket(("127.0.0.1", 40000), protocol)

    original = aioice.ice.Connection.get_component_candidates
    connection = aioice.ice.Connection(ice_controlling=True)
    aiortc_glue.gather_host_candidates_on(Sockets())
    try:
        await connection.gather_candidates()
    finally:
        aiortc_glue.gather_host_candidates_on(None)
    assert aioice.ice.Connection.get_component_candidates is original
    assert opened == [("127.0.0.1", connection.local_username)]
    [candidate] = connection.local_candidates
    assert (candidate.host, candidate.port, candidate.type, candidate.component) == ("127.0.0.1", 40000, "host", 1)
    await connection.close()


def test_take_over_socket_stops_the_loop_reading_it() -> None:
    """The load generator's pump reads a taken-over socket; asyncio must not read it any more."""
    received: list[bytes] = []

    class Recorder(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            received.append(data)

    async def run() -> bytes:
        assert aiortc_glue.can_take_over_sockets()
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        sock = aiortc_glue.take_over_socket(SimpleNamespace(protocol=protocol))  # type: ignore[arg-type]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"for the pump", sock.getsockname())
        assert select.select([sock], [], [], 10)[0] == [sock]
        data = os.read(sock.fileno(), 100)
        for _ in range(3):
            await asyncio.sleep(0)
        transport.close()
        return data

    loop = asyncio.SelectorEventLoop()
    try:
        assert loop.run_until_complete(run()) == b"for the pump"
    finally:
        loop.close()
    assert received == []


async def test_uvloop_cannot_take_over_sockets() -> None:
    assert re.search("uvloop", type(asyncio.get_running_loop()).__module__)
    assert not aiortc_glue.can_take_over_sockets()


async def test_receivers_made_under_lean_receivers_have_no_bitrate_estimator() -> None:
    pc = RTCPeerConnection()
    try:
        with aiortc_glue.lean_receivers():
            lean = pc.addTransceiver("video").receiver
        full = pc.addTransceiver("video").receiver
        assert lean._RTCRtpReceiver__remote_bitrate_estimator is None  # type: ignore[attr-defined]
        assert isinstance(full._RTCRtpReceiver__remote_bitrate_estimator,  # type: ignore[attr-defined]
                          aiortc.rate.RemoteBitrateEstimator)
    finally:
        await pc.close()


async def test_a_peer_connection_made_with_a_certificate_generates_none() -> None:
    shared = aiortc_glue.shared_certificate()
    generated = []
    real = aiortc.RTCCertificate.generateCertificate
    aiortc.RTCCertificate.generateCertificate = lambda: generated.append(1) or real()  # type: ignore[method-assign]
    try:
        pc = aiortc_glue.peer_connection_with(shared, aiortc.RTCConfiguration())
        other = RTCPeerConnection()  # outside it, aiortc generates its own as always
    finally:
        aiortc.RTCCertificate.generateCertificate = real  # type: ignore[method-assign]
    try:
        assert generated == [1]
        assert pc._RTCPeerConnection__certificates == [shared]  # type: ignore[attr-defined]
        assert other._RTCPeerConnection__certificates[0] is not shared  # type: ignore[attr-defined]
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        fingerprint = shared.getFingerprints()[0].value
        assert fingerprint in pc.localDescription.sdp
    finally:
        await pc.close()
        await other.close()


async def test_a_checked_offer_is_parsed_once_on_its_way_into_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    client = RTCPeerConnection()
    client.addTransceiver("video", direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    offer = client.localDescription.sdp
    parses: list[str] = []
    real = aiortc.sdp.SessionDescription.parse
    monkeypatch.setattr(aiortc.sdp.SessionDescription, "parse", lambda text: parses.append(text) or real(text))
    servers = [RTCPeerConnection(), RTCPeerConnection()]
    try:
        for _ in range(3):  # where it arrives, in its room, before aiortc: as WHIP checks an offer
            check_offer_text(offer)
        await servers[0].setRemoteDescription(aiortc.RTCSessionDescription(offer, "offer"))
        assert parses == [offer], "aiortc took the checks' parse"
        answer = await servers[0].createAnswer()
        await servers[0].setLocalDescription(answer)
        assert parses == [offer], "its own answer, as createAnswer made it, is not parsed back"
        local = servers[0].localDescription
        assert local.type == "answer"
        for line in ("a=ice-ufrag:", "a=fingerprint:sha-256", "a=mid:0", "a=recvonly"):
            found = [x for x in answer.sdp.splitlines() if x.startswith(line)]
            assert found and found[0] in local.sdp.splitlines(), line
        ufrag = re.search(r"a=ice-ufrag:(\S+)", offer)
        assert ufrag and f"a=ice-ufrag:{ufrag.group(1)}" in servers[0].remoteDescription.sdp
        # Given away, not shared: the same text again (a retried offer) is parsed anew for aiortc.
        await servers[1].setRemoteDescription(aiortc.RTCSessionDescription(offer, "offer"))
        assert parses.count(offer) == 2
        # An answer changed before it is set (munged) is the text given, parsed.
        munged = (await servers[1].createAnswer()).sdp.replace("a=recvonly", "a=inactive")
        await servers[1].setLocalDescription(aiortc.RTCSessionDescription(munged, "answer"))
        assert parses[-1] == munged and "a=inactive" in servers[1].localDescription.sdp
    finally:
        for pc in (client, *servers):
            await pc.close()
