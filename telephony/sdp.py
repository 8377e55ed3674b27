"""The small part of SDP (RFC 4566 / 3264 offer-answer) a G.711 endpoint needs.

Our own parser rather than pyVoIP's: pyVoIP 1.6.8 raises on an ``a=rtpmap`` for a payload type
that is not on the ``m=`` line, which loses the whole INVITE. Here anything not understood is
ignored, and the caller decides (no usable codec → 488).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from telephony.audio import PCMA, PCMU

STATIC_NAMES = {0: "PCMU", 8: "PCMA"}


class SdpError(ValueError):
    """An offer we cannot use; the message says why (no audio line, no address)."""


@dataclass(frozen=True)
class MediaOffer:
    address: str
    port: int
    payload_types: tuple[int, ...]
    rtpmap: dict[int, str] = field(default_factory=dict)
    """payload type → encoding name, upper case (``PCMU``, ``TELEPHONE-EVENT``)."""
    direction: str = "sendrecv"

    def codec_name(self, pt: int) -> str:
        return self.rtpmap.get(pt, STATIC_NAMES.get(pt, "")).upper()

    def choose_audio(self, preferred: tuple[int, ...] = (PCMU, PCMA)) -> int | None:
        """The first G.711 payload type in the caller's order that we support, else None."""
        ours = {STATIC_NAMES[p] for p in preferred}
        for pt in self.payload_types:
            if self.codec_name(pt) in ours:
                return PCMU if self.codec_name(pt) == "PCMU" else PCMA
        return None

    def telephone_event(self) -> int | None:
        for pt in self.payload_types:
            if self.codec_name(pt) == "TELEPHONE-EVENT":
                return pt
        return None


def parse_offer(body: str) -> MediaOffer:
    session_address = ""
    media_address = ""
    port = -1
    pts: tuple[int, ...] = ()
    rtpmap: dict[int, str] = {}
    direction = "sendrecv"
    in_audio = False
    seen_audio = False
    for raw in body.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            in_audio = bool(parts) and parts[0] == "audio" and not seen_audio
            if in_audio and len(parts) >= 3:
                seen_audio = True
                try:
                    port = int(parts[1].split("/")[0])
                except ValueError as exc:
                    raise SdpError(f"bad audio port {parts[1]!r}") from exc
                pts = tuple(int(p) for p in parts[3:] if p.isdigit())
        elif kind == "c":
            parts = value.split()
            if len(parts) >= 3:
                address = parts[2].split("/")[0]
                if in_audio:
                    media_address = address
                elif not seen_audio:
                    session_address = address
        elif kind == "a" and in_audio:
            if value.startswith("rtpmap:"):
                head, _, rest = value[7:].partition(" ")
                if head.isdigit() and rest:
                    rtpmap[int(head)] = rest.split("/")[0].upper()
            elif value in ("sendrecv", "sendonly", "recvonly", "inactive"):
                direction = value
    if not seen_audio:
        raise SdpError("no audio media line")
    address = media_address or session_address
    if not address:
        raise SdpError("no connection address")
    if not 0 <= port <= 65535:
        raise SdpError("bad audio port")
    # rtpmap entries for payload types not on the m= line are simply ignored.
    rtpmap = {pt: name for pt, name in rtpmap.items() if pt in pts}
    return MediaOffer(address, port, pts, rtpmap, direction)


def build_sdp(
    session_id: int,
    address: str,
    port: int,
    payload_type: int,
    event_pt: int | None,
    direction: str = "sendrecv",
) -> str:
    pts = [payload_type] + ([event_pt] if event_pt is not None else [])
    lines = [
        "v=0",
        f"o=callcentre {session_id} {session_id} IN IP4 {address}",
        "s=callcentre",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(p) for p in pts)}",
        f"a=rtpmap:{payload_type} {STATIC_NAMES[payload_type]}/8000",
    ]
    if event_pt is not None:
        lines += [f"a=rtpmap:{event_pt} telephone-event/8000", f"a=fmtp:{event_pt} 0-16"]
    lines += ["a=ptime:20", f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"
