"""One agent's WebRTC audio session: kept up across calls, attached to a call's RTP leg while it talks.

The browser offers (non-trickle: its candidates are in the SDP), we answer from aiortc with codec
preferences set before ``setRemoteDescription``: PCMU first (no transcoding to a G.711 caller),
Opus only when configured or when the browser offers no PCMU. Candidates outside the allowed
networks are removed from the offer before aiortc sees them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from telephony.audio import ULAW_SILENCE
from telephony.webrtc.ice import CandidateFilter
from telephony.webrtc.rtp_leg import RtpLeg
from telephony.webrtc.tracks import CallerAudioTrack, ToTelephone

log = logging.getLogger(__name__)

RECEIVE_PREFETCH = 1
"""Packets aiortc's audio jitter buffer holds before decoding. aiortc 1.16 hard-codes 4 (80 ms of
G.711), most of the bridge's delay; one packet still smooths small reordering on a LAN."""
AIORTC_VERSION = "1.16.0"
CONNECT_TIMEOUT = 20.0
"""Seconds a session may take to connect after our answer before it counts as failed."""
MEDIA_TIMEOUT = 5.0
"""Seconds without audio from a connected browser before its session counts as lost. Browsers send
PCMU continuously (a muted track sends silence); ICE consent checks alone take ~30 s to notice."""


def tune_receiver(receiver: Any, prefetch: int = RECEIVE_PREFETCH) -> bool:
    """Shorten the receive jitter buffer (a private attribute of aiortc 1.16; skipped on other versions)."""
    import aiortc

    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    if aiortc.__version__ != AIORTC_VERSION or buffer is None or not hasattr(buffer, "_prefetch"):
        return False
    buffer._prefetch = prefetch
    return True


class SignallingError(ValueError):
    """An offer we cannot answer (not SDP, no audio, no usable candidate, no common codec)."""


@dataclass(frozen=True)
class MediaQuality:
    """Per-call media quality from the WebRTC statistics (deltas over the call, not the session)."""

    codec: str
    packets_received: int
    """Browser → server packets during the call."""
    packets_lost: int
    """Browser → server packets lost during the call (from sequence gaps)."""
    jitter_ms: float
    """Interarrival jitter of the browser's stream at the end of the call (RFC 3550)."""
    remote_packets_lost: int
    """Server → browser packets the browser reported lost (RTCP receiver reports)."""
    remote_jitter_ms: float
    round_trip_ms: float | None
    frames_to_browser: int
    frames_from_browser: int


@dataclass
class _Counters:
    received: int = 0
    lost: int = 0
    remote_lost: int = 0


class AgentSession:
    def __init__(self, agent_id: int, ice_servers: list[dict[str, Any]], candidates: CandidateFilter,
                 codec: str, on_state: Callable[[AgentSession, str], None]) -> None:
        self.agent_id = agent_id
        servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
                   for s in ice_servers]
        # An explicit empty list: aiortc's default would contact a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.candidates = candidates
        self.preferred_codec = codec.lower()
        self.on_state = on_state
        self.track = CallerAudioTrack()
        self.codec = ""
        self.clock_rate = 8000
        self.leg: RtpLeg | None = None
        self.call_id: str | None = None
        self.muted = False
        self.frames_from_browser = 0
        self._frames_at_attach = 0
        self._sent_at_attach = 0
        self._base = _Counters()
        self._pump: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._last_from_browser = 0.0
        self._converter = ToTelephone()
        self.closed = False
        self.id = secrets.token_hex(8)
        """Tells the page whether the server's session for its agent is its own (one tab carries audio)."""

        @self.pc.on("connectionstatechange")
        def _changed() -> None:
            self.on_state(self, self.pc.connectionState)

        @self.pc.on("track")
        def _track(track: Any) -> None:
            if track.kind == "audio" and self._pump is None:
                self._pump = asyncio.get_running_loop().create_task(self._from_browser(track))

    @property
    def state(self) -> str:
        return "closed" if self.closed else str(self.pc.connectionState)

    async def answer(self, offer_sdp: str) -> str:
        if "m=audio" not in offer_sdp:
            raise SignallingError("the offer has no audio media line")
        filtered, dropped = self.candidates.filter_sdp(offer_sdp)
        if "a=candidate:" not in filtered:
            raise SignallingError(f"none of the browser's ICE candidates is in webrtc.allowed_networks "
                                  f"({dropped} dropped)")
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        tune_receiver(transceiver.receiver)
        codecs = RTCRtpSender.getCapabilities("audio").codecs
        order = ["audio/opus", "audio/pcmu"] if self.preferred_codec == "opus" else ["audio/pcmu", "audio/opus"]
        preferred = [c for name in order for c in codecs if c.mimeType.lower() == name]
        transceiver.setCodecPreferences(preferred)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=filtered, type="offer"))
            answer = await self.pc.createAnswer()
        except (ValueError, AttributeError, IndexError) as exc:
            raise SignallingError(f"cannot answer this offer: {exc}") from exc
        if answer is None:
            raise SignallingError("cannot answer this offer")
        await self.pc.setLocalDescription(answer)
        self.codec, self.clock_rate = _negotiated(self.pc.localDescription.sdp)
        if not self.codec:
            raise SignallingError("no common audio codec (PCMU or Opus)")
        self.track.passthrough = self.codec == "PCMU"
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        sdp: str = self.pc.localDescription.sdp
        return sdp

    # ---- the call --------------------------------------------------------------------------------
    async def attach(self, call_id: str, leg: RtpLeg) -> None:
        self.call_id = call_id
        self.leg = leg
        self.muted = False
        self.track.clear()
        self._frames_at_attach = self.frames_from_browser
        self._sent_at_attach = self.track.frames_from_caller
        self._base = await self._counters()

    def from_caller(self, ulaw: bytes) -> None:
        self.track.push(ulaw)

    async def detach(self) -> MediaQuality | None:
        if self.leg is None:
            return None
        self.leg = None
        now = await self._counters()
        quality = await self._quality(now)
        self.call_id = None
        self.track.clear()
        return quality

    async def _from_browser(self, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._last_from_browser = time.monotonic()
            for ulaw in self._converter.convert(frame):
                self.frames_from_browser += 1
                leg = self.leg
                if leg is not None:
                    leg.send_audio(ULAW_SILENCE if self.muted else ulaw)

    async def _watch(self) -> None:
        started = time.monotonic()
        while not self.closed:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            connected = self.pc.connectionState == "connected"
            silent = connected and self._last_from_browser and now - self._last_from_browser > MEDIA_TIMEOUT
            never = not connected and not self._last_from_browser and now - started > CONNECT_TIMEOUT
            if silent or never:
                log.info("WebRTC session of agent %s: %s; closing it", self.agent_id,
                         "no audio from the browser" if silent else "never connected")
                self.on_state(self, "failed")
                await self.close()
                return

    # ---- statistics ---------------------------------------------------------------------------------
    async def _stats(self) -> list[Any]:
        try:
            report = await self.pc.getStats()
        except Exception:  # stats of a closing connection: report what we have
            return []
        return list(report.values())

    async def _counters(self) -> _Counters:
        c = _Counters()
        for s in await self._stats():
            if s.type == "inbound-rtp":
                c.received += s.packetsReceived
                c.lost += max(0, s.packetsLost)
            elif s.type == "remote-inbound-rtp":
                c.remote_lost += max(0, s.packetsLost)
        return c

    async def _quality(self, now: _Counters) -> MediaQuality:
        jitter = remote_jitter = 0.0
        rtt: float | None = None
        for s in await self._stats():
            if s.type == "inbound-rtp":
                jitter = 1000.0 * s.jitter / self.clock_rate
            elif s.type == "remote-inbound-rtp":
                remote_jitter = 1000.0 * s.jitter / self.clock_rate
                rtt = None if s.roundTripTime is None else 1000.0 * s.roundTripTime
        return MediaQuality(
            codec=self.codec,
            packets_received=now.received - self._base.received,
            packets_lost=max(0, now.lost - self._base.lost),
            jitter_ms=round(jitter, 2),
            remote_packets_lost=max(0, now.remote_lost - self._base.remote_lost),
            remote_jitter_ms=round(remote_jitter, 2),
            round_trip_ms=None if rtt is None else round(rtt, 2),
            frames_to_browser=self.track.frames_from_caller - self._sent_at_attach,
            frames_from_browser=self.frames_from_browser - self._frames_at_attach,
        )

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.track.stop()
        if self._pump is not None:
            self._pump.cancel()
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        await self.pc.close()


def _negotiated(sdp: str) -> tuple[str, int]:
    """The codec our answer chose (first payload type on the audio line) and its clock rate."""
    first: str | None = None
    names: dict[str, tuple[str, int]] = {}
    for line in sdp.splitlines():
        if line.startswith("m=audio") and first is None:
            parts = line.split()
            first = parts[3] if len(parts) > 3 else None
        elif line.startswith("a=rtpmap:"):
            pt, _, rest = line[9:].partition(" ")
            codec, _, clock = rest.partition("/")
            label = codec.upper() if codec.upper() == "PCMU" else codec.lower()
            names[pt] = (label, int(clock.split("/")[0] or 8000))
    if first is None or first not in names:
        return "", 8000
    return names[first]
