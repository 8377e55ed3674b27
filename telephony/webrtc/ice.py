"""ICE policy: which local addresses we offer, which remote candidates we accept, which servers we contact.

aioice 0.13 gathers host candidates from every interface except 127.0.0.1 and offers no option to
choose them. :func:`restrict_host_addresses` replaces its ``get_host_addresses`` (the one place it
asks) with the configured list, so candidates come only from configured interfaces — including
loopback for tests and single-host installs. Pinned to the aioice version it was written against;
on another version it refuses loudly instead of silently offering every interface.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

import aioice
import aioice.ice

from callcentre.settings import WebRtcSettings

log = logging.getLogger(__name__)

AIOICE_VERSION = "0.13.0"


class IcePolicyError(RuntimeError):
    """The installed aioice is not the version our interface restriction was checked against."""


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def restrict_host_addresses(addresses: Iterable[str]) -> None:
    """Make aioice offer host candidates on exactly ``addresses`` (IPv4/IPv6 literals)."""
    chosen = [str(ipaddress.ip_address(a)) for a in addresses]
    if not chosen:
        raise ValueError("webrtc.interfaces is empty: at least one local address is needed for ICE")
    if getattr(aioice, "__version__", AIOICE_VERSION) != AIOICE_VERSION:
        raise IcePolicyError(
            f"aioice {aioice.__version__} installed; telephony.webrtc.ice was checked against {AIOICE_VERSION}"
        )

    def configured(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = configured


_allowed_peers: list[CandidateFilter] = []


def restrict_peers(networks: Iterable[str]) -> None:
    """Ignore ICE connectivity checks from addresses outside ``networks``.

    Filtering the browser's offer is not enough: a browser also sends checks from its other
    interfaces, and aioice would learn those as peer-reflexive candidates and may pick them.
    Dropping such checks keeps every pair inside the allowed networks.
    """
    check = CandidateFilter(networks)
    if not _allowed_peers:
        original = aioice.ice.Connection.request_received

        def request_received(self: aioice.ice.Connection, message: object, addr: tuple[str, int],
                             protocol: object) -> None:
            if _allowed_peers and not _allowed_peers[0].allows(addr[0]):
                return
            original(self, message, addr, protocol)  # type: ignore[arg-type]

        aioice.ice.Connection.request_received = request_received  # type: ignore[method-assign]
        _allowed_peers.append(check)
    else:
        _allowed_peers[0] = check


def ice_servers(settings: WebRtcSettings) -> list[dict[str, object]]:
    """The ICE servers for both ends, in the browser's ``RTCIceServer`` shape; empty unless configured."""
    servers: list[dict[str, object]] = []
    stun = split_list(settings.stun_servers)
    if stun:
        servers.append({"urls": stun})
    if settings.turn_url:
        servers.append({"urls": [settings.turn_url], "username": settings.turn_username,
                        "credential": settings.turn_password})
    return servers


class CandidateFilter:
    """Drops ICE candidates outside the allowed networks (and mDNS names, which we cannot check)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # "xxxx.local" mDNS names or garbage
        return any(ip in net for net in self.networks)

    def filter_sdp(self, sdp: str) -> tuple[str, int]:
        """The SDP without disallowed ``a=candidate`` lines, and how many were dropped."""
        kept: list[str] = []
        dropped = 0
        for line in sdp.splitlines():
            if line.startswith("a=candidate:"):
                parts = line.split()
                if len(parts) < 8 or not self.allows(parts[4]):
                    dropped += 1
                    continue
            kept.append(line)
        return "\r\n".join(kept) + "\r\n", dropped
