"""ICE-TCP for mediasrv's own aiortc clients (load generator, benchmarks, tests): RFC 4571 framing
in Python and an RFC 6544 *active* host candidate for an aioice agent.

The server side lives in the native plane (native_plane.py, native/plane/src/tcp.rs); aioice itself
knows no TCP. A client agent gathered with `tcp_active_gathering()` offers one `tcptype active` host
candidate; aioice pairs it with the server's `tcptype passive` candidates (both "tcp") and sends its
checks to them through `ActiveTcpTransport`, which opens one TCP connection per remote address on
the first send and frames every datagram onto it; frames arriving on it go back to aioice as
datagrams from that address. DTLS and SRTP then run over the same connection, as a browser's do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import aioice.ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

from mediasrv.media import aiortc_glue

Addr = tuple[str, int]
MAX_FRAME = 65535
# RFC 6544 4.2: an active host candidate's direction preference is 6.
TCP_ACTIVE_LOCAL_PREFERENCE = (6 << 13) | 8191
# An active candidate's port is meaningless: RFC 6544 says to signal 9 (discard).
ACTIVE_PORT = 9


class FramingError(ValueError):
    """The stream announced a frame longer than the reader accepts."""


def frame(data: bytes) -> bytes:
    """`data` behind its 16-bit big-endian length."""
    if len(data) > MAX_FRAME:
        raise FramingError(f"{len(data)} bytes do not fit one RFC 4571 frame")
    return len(data).to_bytes(2, "big") + data


class FrameReader:
    """Reassembles RFC 4571 frames from the chunks a stream delivers."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The frames completed by `chunk`; FramingError for a frame over the limit."""
        self._buf += chunk
        frames = []
        at = 0
        while len(self._buf) - at >= 2:
            length = int.from_bytes(self._buf[at:at + 2], "big")
            if length > self.max_frame:
                raise FramingError(f"frame of {length} bytes is over the limit of {self.max_frame}")
            if len(self._buf) - at - 2 < length:
                break
            frames.append(bytes(self._buf[at + 2:at + 2 + length]))
            at += 2 + length
        del self._buf[:at]
        return frames


class _Connection(asyncio.Protocol):
    """One TCP connection of an `ActiveTcpTransport`, to one remote address."""

    def __init__(self, owner: ActiveTcpTransport, remote: Addr) -> None:
        self.owner = owner
        self.remote = remote
        self.reader = FrameReader()
        # uvloop's TCP transports are not asyncio.Transport subclasses, but have its methods.
        self.transport: Any = None
        self.waiting: list[bytes] = []  # frames sent before the connection was up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        for f in self.waiting:
            self.transport.write(f)
        self.waiting.clear()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FramingError:
            if self.transport is not None:
                self.transport.close()
            return
        for f in frames:
            self.owner.protocol.datagram_received(f, self.remote)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.connection_gone(self)

    def send(self, data: bytes) -> None:
        f = frame(data)
        if self.transport is None:
            self.waiting.append(f)
        elif not self.transport.is_closing():
            self.transport.write(f)


class ActiveTcpTransport(asyncio.DatagramTransport):
    """What an aioice StunProtocol sees as its socket for an ICE-TCP active candidate."""

    def __init__(self, protocol: Any, host: str) -> None:
        super().__init__()
        self.protocol = protocol
        self.host = host
        self.connections: dict[Addr, _Connection] = {}
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing or addr is None:
            return
        remote = (str(addr[0]), int(addr[1]))
        conn = self.connections.get(remote)
        if conn is None:
            if remote[1] == ACTIVE_PORT:
                return  # another active candidate: nothing listens there
            conn = self.connections[remote] = _Connection(self, remote)
            task = asyncio.get_running_loop().create_task(self._connect(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        conn.send(bytes(data))

    async def _connect(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: conn, conn.remote[0], conn.remote[1],
                                         local_addr=(self.host, 0))
        except OSError:
            self.connection_gone(conn)

    def connection_gone(self, conn: _Connection) -> None:
        if self.connections.get(conn.remote) is conn:
            del self.connections[conn.remote]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return (self.host, ACTIVE_PORT)
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        self.connections.clear()
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


def active_tcp_candidate(component: int, host: str) -> Candidate:
    return Candidate(
        foundation=candidate_foundation("host", "tcp", host), component=component, transport="tcp",
        priority=candidate_priority(component, "host", TCP_ACTIVE_LOCAL_PREFERENCE),
        host=host, port=ACTIVE_PORT, type="host", tcptype="active",
    )


@contextlib.contextmanager
def tcp_active_gathering(host: str = "127.0.0.1") -> Iterator[None]:
    """While the block runs, aioice agents gather a single ICE-TCP active host candidate on `host`
    (no UDP at all, as behind a firewall that drops UDP). Use it around the client's
    `setLocalDescription`/`createAnswer`, where aiortc gathers."""

    async def gather(connection: aioice.ice.Connection, component: int, addresses: list[str],
                     timeout: int = 5) -> list[Candidate]:
        protocol = aioice.ice.StunProtocol(connection)
        protocol.connection_made(ActiveTcpTransport(protocol, host))
        candidate = active_tcp_candidate(component, host)
        aiortc_glue.add_host_protocol(connection, protocol, candidate)
        return [candidate]

    with aiortc_glue.component_gathering(gather):
        yield
