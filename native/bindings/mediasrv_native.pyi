"""Type stubs of `mediasrv_native`, the Rust media plane (native/bindings).

Ids (transport, track, subscription, room, pump peer) are plain ints chosen by the caller; the
binding turns them into the core's typed ids. Times are milliseconds on a monotonic clock. Stats
methods return fresh dicts: `dict[str, int]` where every value is a counter, `dict[str, Any]`
where some values are floats, None, bools or nested dicts.
"""

from collections.abc import Sequence
from typing import Any, Self, final

__all__ = [
    "__version__",
    "Router",
    "SrtpSession",
    "srtp_key_lengths",
    "MediaPlane",
    "ClientPump",
    "JitterBuffer",
    "SinkReplay",
]

__version__: str

# (payload_type, name, clock_rate, apt) or (payload_type, name, clock_rate, apt, fmtp)
_Codec = tuple[int, str, int, int | None] | tuple[int, str, int, int | None, str | None]
# (transport, datagram) to protect and send
_Datagram = tuple[int, bytes]
# (timestamp extended to 64 bits, keyframe, data, arrival_ms)
_Frame = tuple[int, bool, bytes, int]

@final
class Router:
    """Selective forwarding core for one room (sans-IO)."""

    def __new__(
        cls,
        max_bitrate_bps: int = 2_500_000,
        nack_cache_packets: int = 1024,
        *,
        min_bitrate_bps: int = 50_000,
        group_floor_bps: int = 150_000,
        pli_min_interval_ms: int = 200,
        remb_interval_ms: int = 1000,
        keyframe_retry_ms: int = 1000,
        sender_reports: bool = False,
        sr_interval_ms: int = 1000,
        track_timeout_ms: int = 3000,
        bwe_start_bps: int = 1_000_000,
        video_pause_bps: int = 150_000,
        video_resume_bps: int = 200_000,
        video_resume_hold_ms: int = 2000,
        nack_history_ms: int = 500,
        pacing: bool = True,
        seed: int | None = None,
    ) -> Self: ...
    def add_publisher(self, transport: int, rtcp_ssrc: int, extensions: dict[str, int]) -> None: ...
    def add_track(
        self,
        track: int,
        transport: int,
        kind: str,
        mid: str | None,
        codecs: Sequence[_Codec],
        ssrcs: Sequence[int],
    ) -> None: ...
    def remove_track(self, track: int) -> bool: ...
    def add_subscription(
        self,
        sub: int,
        track: int,
        transport: int,
        ssrc: int,
        codecs: Sequence[_Codec],
        extensions: dict[str, int],
        *,
        rtx_ssrc: int | None = None,
    ) -> None: ...
    def add_sink(
        self,
        sub: int,
        track: int,
        codec: str,
        payload_type: int,
        *,
        target_delay_ms: int = 300,
        keyframe_interval_ms: int = 500,
        capacity: int = 2048,
    ) -> None: ...
    def sink_frames(self, sub: int, now_ms: int) -> list[_Frame]: ...
    def finish_sink(self, sub: int) -> list[_Frame]: ...
    def sink_sync(self, sub: int) -> tuple[float, int] | None: ...
    def sink_stats(self, sub: int) -> dict[str, int]: ...
    def remove_subscription(self, sub: int) -> bool: ...
    def remove_transport(self, transport: int) -> bool: ...
    def route_rtp(self, transport: int, packet: bytes, now_ms: int) -> list[_Datagram]: ...
    def handle_rtcp(
        self, transport: int, packet: bytes, now_ms: int
    ) -> tuple[list[_Datagram], list[_Datagram]]: ...
    def poll(self, now_ms: int) -> list[_Datagram]: ...
    def request_keyframe(self, track: int, now_ms: int) -> list[_Datagram]: ...
    def set_track_layers(
        self, track: int, rid_ext: int, rids: list[str], ssrcs: list[int], repaired_rid_ext: int = 0,
        rtx_ssrcs: list[int] = ...,
    ) -> None: ...
    def set_subscription_max_height(self, sub: int, max_height: int | None) -> None: ...
    def track_layers(self, track: int) -> list[dict[str, Any]] | None: ...
    def subscription_layers(self, sub: int) -> dict[str, Any] | None: ...
    def take_events(self) -> list[tuple[str, int, str | None]]: ...
    def stats(self) -> dict[str, Any]: ...
    def track_stats(self, track: int) -> dict[str, Any]: ...
    def subscription_stats(self, sub: int) -> dict[str, Any]: ...
    def downlink_stats(self, transport: int) -> dict[str, Any] | None: ...

@final
class MediaPlane:
    """Rust worker threads owning the media UDP sockets; control calls only."""

    def __new__(
        cls,
        addresses: Sequence[str],
        port: int = 0,
        workers: int = 0,
        *,
        port_per_worker: bool = False,
        drop_ppm: int = 0,
        poll_interval_ms: int = 20,
        rx_coalesce_us: int = 500,
        tcp_port: int | None = None,
        tcp_max_connections: int = 1024,
        tcp_max_pending: int = 128,
        tcp_max_per_session: int = 4,
        tcp_auth_timeout_ms: int = 5000,
        tcp_idle_timeout_ms: int = 30000,
        tcp_write_buffer_bytes: int = 262144,
    ) -> Self: ...
    @property
    def workers(self) -> int: ...
    @property
    def wake_fd(self) -> int: ...
    def sockets(self) -> list[tuple[str, int]]: ...
    def socket_workers(self) -> list[int]: ...
    def tcp_sockets(self) -> list[tuple[int, str, int]]: ...
    def take_datagrams(self) -> list[tuple[int, str, int, bytes]]: ...
    def sendto(self, socket: int, data: bytes, host: str, port: int) -> int: ...
    def admit_source(self, socket: int, host: str, port: int) -> bool: ...
    def forget_source(self, socket: int, host: str, port: int) -> bool: ...
    def register_ice_session(self, socket: int, ufrag: str, password: str) -> bool: ...
    def forget_ice_session(self, socket: int, ufrag: str) -> bool: ...
    def attach_room(self, room: int, router: Router) -> int: ...
    def detach_room(self, room: int) -> bool: ...
    def register_peer(
        self,
        transport: int,
        room: int,
        socket: int,
        host: str,
        port: int,
        profile: str,
        tx_key: bytes,
        tx_salt: bytes,
        rx_key: bytes,
        rx_salt: bytes,
    ) -> None: ...
    def update_peer_address(self, transport: int, socket: int, host: str, port: int) -> bool: ...
    def start_consent(
        self,
        transport: int,
        local_ufrag: str,
        local_password: str,
        remote_ufrag: str,
        remote_password: str,
        controlling: bool,
        tie_breaker: int,
        priority: int,
        interval_ms: int = 5000,
        timeout_ms: int = 30000,
    ) -> bool: ...
    def take_consent_lost(self) -> list[int]: ...
    def unregister_peer(self, transport: int) -> bool: ...
    def send_media(self, transport: int, packet: bytes) -> bool: ...
    def peer_stats(self, transport: int) -> dict[str, int] | None: ...
    def set_receiving(self, on: bool) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...

@final
class SrtpSession:
    """SRTP/SRTCP for one peer: `tx_*` keys protect, `rx_*` keys unprotect."""

    def __new__(
        cls, profile: str, tx_key: bytes, tx_salt: bytes, rx_key: bytes, rx_salt: bytes
    ) -> Self: ...
    @property
    def profile(self) -> str: ...
    def protect_rtp(self, packet: bytes) -> bytes: ...
    def unprotect_rtp(self, packet: bytes) -> bytes: ...
    def protect_rtcp(self, packet: bytes) -> bytes: ...
    def unprotect_rtcp(self, packet: bytes) -> bytes: ...
    def stats(self) -> dict[str, int]: ...
    def rx_roc(self, ssrc: int) -> int | None: ...
    def tx_roc(self, ssrc: int) -> int | None: ...

def srtp_key_lengths(profile: str) -> tuple[int, int]:
    """(key_len, salt_len) of an SRTP profile, in bytes."""

@final
class JitterBuffer:
    """Per-stream jitter buffer (VP8, H264 or opus)."""

    def __new__(
        cls,
        codec: str,
        *,
        target_delay_ms: int = 200,
        nack_interval_ms: int = 40,
        max_nack_retries: int = 4,
        keyframe_interval_ms: int = 500,
        capacity: int = 1024,
    ) -> Self: ...
    def push(self, packet: bytes, now_ms: int) -> bool: ...
    def push_many(self, packets: list[bytes], now_ms: int) -> int: ...
    def push_and_pop(self, packets: list[bytes], now_ms: int) -> list[_Frame]: ...
    def pop_frames(self, now_ms: int) -> list[_Frame]: ...
    def flush(self) -> list[_Frame]: ...
    def poll(self, now_ms: int) -> list[tuple[str, list[int]]]: ...
    def stats(self) -> dict[str, int]: ...

@final
class SinkReplay:
    """A recording sink's buffer fed as the router feeds it (benchmarks and tests)."""

    def __new__(cls, codec: str, packets: list[bytes], *, target_delay_ms: int = 300) -> Self: ...
    def __len__(self) -> int: ...
    def touch(self, start: int, count: int) -> int: ...
    def push_and_pop(self, start: int, count: int, now_ms: int) -> list[_Frame]: ...
    def stats(self) -> dict[str, int]: ...

@final
class ClientPump:
    """The load generator's native sender/receiver of simulated clients' media."""

    def __new__(cls, seed: int = 1) -> Self: ...
    def add_peer(
        self,
        fd: int,
        remote_host: str,
        remote_port: int,
        profile: str,
        tx_key: bytes,
        tx_salt: bytes,
        rx_key: bytes,
        rx_salt: bytes,
    ) -> int: ...
    def add_video(
        self,
        peer: int,
        ssrc: int,
        payload_type: int,
        kbps: int,
        fps: int = 30,
        keyframe_interval_s: float = 3.0,
        mid_ext_id: int | None = None,
        mid: str | None = None,
        follow_remb: bool = False,
    ) -> None: ...
    def add_audio(
        self,
        peer: int,
        ssrc: int,
        payload_type: int,
        mid_ext_id: int | None = None,
        mid: str | None = None,
    ) -> None: ...
    def set_receiver(
        self,
        peer: int,
        video_payload_types: list[int],
        transport_cc_ext_id: int | None = None,
        impair_rate_bps: int = 0,
        impair_queue_ms: int = 250,
        impair_loss_pct: float = 0.0,
    ) -> None: ...
    def receiver_stats(self) -> dict[int, dict[str, Any]]: ...
    def remove_peer(self, peer: int) -> bool: ...
    def take_control(self, peer: int) -> list[tuple[bytes, tuple[str, int]]]: ...
    def snapshot(self, interval: bool = True) -> dict[str, Any]: ...
    def set_paused(self, paused: bool) -> None: ...
    def close(self) -> None: ...
