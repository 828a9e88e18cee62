"""ICE address policy: aioice only gathers the addresses mediasrv is configured to bind.

aioice discovers host addresses itself and leaves out loopback, which is what a server inside a
network namespace (or behind a fixed public address) must use. We replace its discovery with the
configured list, once, for the whole process. With the native datapath, host candidates are the
native media plane's shared socket (see native_plane.py).
"""

from __future__ import annotations

import ipaddress

from mediasrv.media import aiortc_glue

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
    aiortc_glue.use_host_addresses(_configured_host_addresses)
