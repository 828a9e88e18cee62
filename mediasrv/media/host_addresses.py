"""ICE address policy: aioice only gathers the addresses mediasrv is configured to bind.

aioice discovers host addresses itself and leaves out loopback, which is what a server inside a
network namespace (or behind a fixed public address) must use. We replace its discovery with the
configured list, once, for the whole process. With the native datapath, host candidates are the
native media plane's shared socket (see native_plane.py).
"""

from __future__ import annotations

import ipaddress

import aioice.ice

from mediasrv.config import Settings
from mediasrv.media import native_plane
from mediasrv.media.native_plane import NativePlane

_addresses: list[str] = []


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    out = []
    for addr in _addresses:
        version = ipaddress.ip_address(addr).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            out.append(addr)
    return out


def configure_host_addresses(addresses: list[str]) -> None:
    for addr in addresses:
        ipaddress.ip_address(addr)  # ValueError for anything that is not an IP address
    _addresses[:] = addresses
    aioice.ice.get_host_addresses = _configured_host_addresses


def start_media_plane(settings: Settings) -> NativePlane | None:
    """Start the native media plane (datapath = "native") and make aioice gather on it."""
    if settings.datapath != "native":
        native_plane.install(None)
        return None
    plane = native_plane.NativePlane(settings.media_bind_addresses, settings.media_udp_port,
                                     settings.media_workers, settings.media_test_drop_ppm)
    native_plane.install(plane)
    return plane


def stop_media_plane(plane: NativePlane) -> None:
    native_plane.install(None)
    plane.close()
