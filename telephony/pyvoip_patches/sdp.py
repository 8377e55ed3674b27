"""SDP offer/answer for G.711 + RFC 2833 (defect 4's second half: unsupported codecs → 488).

Stock 1.6.8 builds an RTP client even when no offered codec is usable; its transmitter then dies
on the missing ``preference`` and the caller hears nothing. Here the offer is negotiated first:
the first PCMU or PCMA payload in the caller's order wins, ``telephone-event`` is kept when offered,
and ``None`` means "nothing we can speak" so the phone answers ``488 Not Acceptable Here``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from telephony.pyvoip_patches.version import import_pyvoip

_voip, _sip, _rtp = import_pyvoip()
PayloadType = _rtp.PayloadType
RTPProtocol = _rtp.RTPProtocol

_STATIC = {0: "PCMU", 8: "PCMA"}
_AUDIO = {"PCMU": PayloadType.PCMU, "PCMA": PayloadType.PCMA}


@dataclass(frozen=True)
class NegotiatedAudio:
    """What both sides will use for one call's audio stream."""

    remote_ip: str
    """Where to send RTP (the offer's connection address)."""
    remote_port: int
    """The offer's audio port."""
    audio_pt: int
    """Payload type number of the chosen G.711 codec (as the offer numbered it)."""
    audio: Any
    """``PayloadType.PCMU`` or ``PayloadType.PCMA``."""
    event_pt: int | None
    """Payload type number of ``telephone-event`` (RFC 2833 DTMF), if offered."""

    def assoc(self) -> dict[int, Any]:
        """pyVoIP's payload map: chosen codec first (RTPClient sends with the first one)."""
        mapping: dict[int, Any] = {self.audio_pt: self.audio}
        if self.event_pt is not None:
            mapping[self.event_pt] = PayloadType.EVENT
        return mapping


def negotiate(body: dict[str, Any]) -> NegotiatedAudio | None:
    """Pick the codec for the first usable ``m=audio`` line, or None if there is none."""
    connections = body.get("c") or []
    for media in body.get("m") or []:
        if media.get("type") != "audio" or media.get("port", 0) == 0:
            continue
        if media.get("protocol") is not RTPProtocol.AVP:
            continue
        audio: tuple[int, Any] | None = None
        event_pt: int | None = None
        for fmt in media.get("methods", []):
            if not str(fmt).isdigit():
                continue
            pt = int(fmt)
            rtpmap = media["attributes"].get(fmt, {}).get("rtpmap")
            name = str(rtpmap["name"]) if rtpmap else _STATIC.get(pt, "")
            rate = str(rtpmap["frequency"]) if rtpmap else "8000"
            if name.upper() in _AUDIO and rate == "8000" and audio is None:
                audio = (pt, _AUDIO[name.upper()])
            elif name.lower() == "telephone-event" and rate == "8000" and event_pt is None:
                event_pt = pt
        if audio is None or not connections:
            continue
        # Session- and media-level c= lines land in one list; the media-level one comes last.
        address = str(connections[-1]["address"])
        return NegotiatedAudio(address, int(media["port"]), audio[0], audio[1], event_pt)
    return None


def answer_body(session_id: int, my_ip: str, rtp_port: int, media: NegotiatedAudio, mode: str = "sendrecv") -> str:
    """The SDP answer: only the chosen codec (+ telephone-event), as RFC 3264 asks."""
    pts = [str(media.audio_pt)] + ([str(media.event_pt)] if media.event_pt is not None else [])
    lines = [
        "v=0",
        f"o=callcentre {session_id} {session_id + 1} IN IP4 {my_ip}",
        "s=callcentre",
        f"c=IN IP4 {my_ip}",
        "t=0 0",
        f"m=audio {rtp_port} RTP/AVP {' '.join(pts)}",
        f"a=rtpmap:{media.audio_pt} {media.audio}/8000",
    ]
    if media.event_pt is not None:
        lines += [f"a=rtpmap:{media.event_pt} telephone-event/8000", f"a=fmtp:{media.event_pt} 0-15"]
    lines += ["a=ptime:20", f"a={mode}"]
    return "\r\n".join(lines) + "\r\n"


def offer_body(session_id: int, my_ip: str, rtp_port: int, mode: str = "sendrecv") -> str:
    """The SDP offer for calls we place: PCMU, PCMA and telephone-event 101."""
    lines = [
        "v=0",
        f"o=callcentre {session_id} {session_id + 1} IN IP4 {my_ip}",
        "s=callcentre",
        f"c=IN IP4 {my_ip}",
        "t=0 0",
        f"m=audio {rtp_port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        f"a={mode}",
    ]
    return "\r\n".join(lines) + "\r\n"
