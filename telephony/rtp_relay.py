"""RTP media for every call in one thread: prompt playback, hold music, RFC 4733 digits, caller↔agent relay.

Why our own code instead of pyVoIP's ``RTPClient``: pyVoIP 1.6.8 runs two threads per call that
poll with ``sleep(0.01)`` and pace sending with a relative ``sleep`` (drift and jitter grow with
the number of calls), keeps every received byte (~79 MB per call-hour), and has no way to relay
one call's audio into another. Here one thread serves all calls: a ``selectors`` loop receives,
and a single 20 ms clock on absolute deadlines sends one frame per playing call per tick. Memory
per call is fixed (a few counters and a pointer into shared, pre-encoded clips). The SIP stack
stays pyVoIP (see ``telephony/sip.py``).

Thread rule: the public methods of :class:`RtpSession` may be called from any thread; they only
set fields that the media thread reads (assignments of whole objects are atomic under the GIL).
Callbacks (``on_dtmf``, play-finished) run in the media thread and must return at once (the SIP
backend hands them to its event worker).
"""

from __future__ import annotations

import audioop
import heapq
import itertools
import logging
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from telephony.audio import PCMU, EncodedClip, decode, silence, transcode

log = logging.getLogger(__name__)

TICK = 0.020
DTMF_KEYS = "0123456789*#ABCD"
_RTP_HEADER = struct.Struct("!BBHII")


class NoRtpPortError(RuntimeError):
    """Every RTP port in the configured range is taken."""


@dataclass
class MediaStats:
    """Counters for tests and benchmarks; fixed size whatever the call length."""

    sent: int = 0
    received_audio: int = 0
    received_loud: int = 0
    """Received audio frames louder than -45 dBFS (i.e. not silence)."""
    received_events: int = 0
    relayed: int = 0
    dropped_garbage: int = 0


class RtpSession:
    """One call leg's media: a local UDP port and the far end's address from SDP."""

    LOUD_RMS = 180  # ≈ -45 dBFS in 16-bit linear

    def __init__(
        self,
        engine: MediaEngine,
        sock: socket.socket,
        payload_type: int,
        event_pt: int | None,
        on_dtmf: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.sock = sock
        self.local_port: int = sock.getsockname()[1]
        self.remote: tuple[str, int] | None = None
        self.payload_type = payload_type
        self.event_pt = event_pt
        self.on_dtmf = on_dtmf
        self.stats = MediaStats()
        self.last_received = time.monotonic()
        """When the far end last sent us any RTP (or when the session opened)."""
        self.closed = False
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._marker = True
        # outbound source: a playlist (each a clip), then the background loop (or silence)
        self._playlist: list[EncodedClip] = []
        self._clip_index = 0
        self._frame_index = 0
        self._on_played: Callable[[], None] | None = None
        self._background: EncodedClip | None = None
        self._bg_index = 0
        self._peer: RtpSession | None = None
        self._silent = False
        # RFC 4733 de-duplication: one digit per event, however many packets carry it
        self._event_ts: int | None = None
        self._event_ended = False
        self._relay_source_ts: int | None = None
        self._relay_ts = 0
        self.on_audio: Callable[[bytes], None] | None = None
        """Receives each audio frame as 16-bit PCM (recording, speech); runs in the media thread,
        so it must only hand the frame on (see ``recordings.tap.AudioTap``)."""
        self.listeners: tuple[Callable[[bytes], None], ...] = ()
        """More receivers of each decoded frame (a supervision mixer); media thread, return at once."""

    # ---- control (any thread) ------------------------------------------------------------
    def set_remote(self, host: str, port: int) -> None:
        self.remote = (host, port)

    def play(self, clips: list[EncodedClip], on_played: Callable[[], None] | None = None) -> None:
        """Replace whatever is playing with ``clips``; ``on_played`` runs when the last frame is sent."""
        self._on_played = None
        self._playlist = list(clips)
        self._clip_index = 0
        self._frame_index = 0
        self._on_played = on_played
        if not clips and on_played is not None:
            self._on_played = None
            self.engine.call_soon(on_played)

    def stop_playback(self) -> None:
        """Barge-in: drop the rest of the playlist without running its callback."""
        self._on_played = None
        self._playlist = []

    def set_background(self, clip: EncodedClip | None) -> None:
        """Looped after the playlist (hold music); None sends silence."""
        self._bg_index = 0
        self._background = clip

    @property
    def playing(self) -> bool:
        return bool(self._playlist)

    def bridge(self, peer: RtpSession) -> None:
        """Relay this leg's received audio to ``peer`` (set on both legs for two-way audio)."""
        self._peer = peer

    def unbridge(self) -> None:
        self._peer = None

    @property
    def bridged(self) -> bool:
        return self._peer is not None

    def mute_output(self, silent: bool) -> None:
        """Stop sending our own frames (used while the peer relays into this leg)."""
        self._silent = silent

    def close(self) -> None:
        self.closed = True
        self._peer = None
        self._on_played = None
        self.engine.remove(self)

    # ---- media thread --------------------------------------------------------------------
    def _next_frame(self) -> bytes:
        while self._playlist:
            clip = self._playlist[self._clip_index] if self._clip_index < len(self._playlist) else None
            if clip is None:
                self._playlist = []
                done, self._on_played = self._on_played, None
                if done is not None:
                    self.engine.call_soon(done)
                break
            if self._frame_index < len(clip.frames):
                frame = clip.frames[self._frame_index]
                self._frame_index += 1
                return transcode(frame, clip.payload_type, self.payload_type)
            self._clip_index += 1
            self._frame_index = 0
        bg = self._background
        if bg is not None and bg.frames:
            frame = bg.frames[self._bg_index % len(bg.frames)]
            self._bg_index += 1
            return transcode(frame, bg.payload_type, self.payload_type)
        return silence(self.payload_type)

    def _send_payload(self, payload: bytes, pt: int) -> None:
        if self.remote is None or self.closed:
            return
        header = _RTP_HEADER.pack(
            0x80, (0x80 if self._marker else 0) | pt, self._seq & 0xFFFF, self._ts & 0xFFFFFFFF, self._ssrc
        )
        self._marker = False
        self._seq += 1
        self._ts += len(payload)  # G.711: one byte per sample (relayed frames may be 30 ms)
        try:
            self.sock.sendto(header + payload, self.remote)
            self.stats.sent += 1
        except OSError:
            pass  # far end gone or unreachable: the SIP side ends the call

    def _tick(self) -> None:
        if self._peer is not None or self._silent:
            # The peer leg relays audio into us as it arrives; keep our timestamp moving.
            return
        self._send_payload(self._next_frame(), self.payload_type)

    def _receive(self, packet: bytes) -> None:
        self.last_received = time.monotonic()
        if len(packet) < 12 or packet[0] >> 6 != 2:
            self.stats.dropped_garbage += 1
            return
        first, second = packet[0], packet[1]
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension
            if len(packet) < offset + 4:
                self.stats.dropped_garbage += 1
                return
            offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
        payload = packet[offset:]
        if first & 0x20 and payload:  # padding
            payload = payload[: -payload[-1]] if payload[-1] <= len(payload) else b""
        pt = second & 0x7F
        marker = bool(second & 0x80)
        if self.event_pt is not None and pt == self.event_pt:
            self._receive_event(payload, int.from_bytes(packet[4:8], "big"), marker)
            relay_to = self._peer
            if self.on_dtmf is None and relay_to is not None and not relay_to.closed:
                # An agent leg's keypad (e.g. the WebRTC softphone) goes on to the caller as RFC 4733.
                relay_to._relay_event(payload, marker, int.from_bytes(packet[4:8], "big"))
            return
        if pt not in (0, 8):
            self.stats.dropped_garbage += 1
            return
        self.stats.received_audio += 1
        if self.stats.received_audio % 5 == 0:  # sample 1 frame in 5: enough to tell speech from silence
            try:
                if audioop.rms(decode(payload, pt), 2) > self.LOUD_RMS:
                    self.stats.received_loud += 1
            except Exception:
                pass
        tap = self.on_audio
        if tap is not None:
            try:
                tap(decode(payload, pt))
            except Exception:  # a recorder problem must never stop the call's audio
                log.exception("audio tap failed")
        listeners = self.listeners
        if listeners:
            try:
                pcm = decode(payload, pt)
                for listener in listeners:
                    listener(pcm)
            except Exception:
                log.exception("audio listener failed")
        peer = self._peer
        if peer is not None and not peer.closed:
            try:
                peer._send_payload(transcode(payload, pt, peer.payload_type), peer.payload_type)
                self.stats.relayed += 1
            except ValueError:
                pass

    def _relay_event(self, payload: bytes, marker: bool, source_ts: int) -> None:
        """Send an RFC 4733 event from the bridged leg, keeping one timestamp per event as the RFC asks."""
        if self.remote is None or self.closed or self.event_pt is None:
            return
        if source_ts != self._relay_source_ts:
            self._relay_source_ts, self._relay_ts = source_ts, self._ts
        header = _RTP_HEADER.pack(0x80, (0x80 if marker else 0) | self.event_pt, self._seq & 0xFFFF,
                                  self._relay_ts & 0xFFFFFFFF, self._ssrc)
        self._seq += 1
        try:
            self.sock.sendto(header + payload, self.remote)
            self.stats.sent += 1
        except OSError:
            pass

    def _receive_event(self, payload: bytes, timestamp: int, marker: bool) -> None:
        if len(payload) < 4:
            self.stats.dropped_garbage += 1
            return
        event, flags = payload[0], payload[1]
        ended = bool(flags & 0x80)
        fresh = marker or timestamp != self._event_ts or (self._event_ended and not ended)
        self._event_ts = timestamp
        self._event_ended = ended
        if not fresh or event >= len(DTMF_KEYS):
            return
        self.stats.received_events += 1
        if self.on_dtmf is not None:
            self.on_dtmf(DTMF_KEYS[event])


class MediaEngine:
    """The media thread: owns every RTP socket, a 20 ms send clock and a small timer heap."""

    def __init__(self, host: str, port_low: int = 0, port_high: int = 0) -> None:
        self.host = host
        self.port_low = port_low
        self.port_high = port_high
        self._selector = selectors.DefaultSelector()
        self._sessions: dict[int, RtpSession] = {}
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._soon: list[Callable[[], None]] = []
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None
        self._running = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.tick_intervals_ms: list[float] = []
        """Measured gaps between send ticks (bounded ring, for the capacity benchmark)."""
        self._tick_ring = 3000
        self.callback_errors = 0
        self._tickers: tuple[Callable[[], None], ...] = ()

    def add_ticker(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the media thread on every 20 ms tick, before the sessions send (a mixer)."""
        with self._lock:
            self._tickers = (*self._tickers, fn)

    def remove_ticker(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._tickers = tuple(t for t in self._tickers if t != fn)

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._run, name="rtp-media", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            sessions = list(self._sessions.values())
        for s in sessions:
            s.closed = True
            self._unregister(s)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    # ---- sessions ------------------------------------------------------------------------
    def open_session(
        self,
        payload_type: int = PCMU,
        event_pt: int | None = 101,
        on_dtmf: Callable[[str], None] | None = None,
    ) -> RtpSession:
        sock = self._bind()
        session = RtpSession(self, sock, payload_type, event_pt, on_dtmf)
        with self._lock:
            self._sessions[session.local_port] = session
            self._selector.register(sock, selectors.EVENT_READ, session)
        return session

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        if not self.port_low:
            sock.bind((self.host, 0))
            return sock
        # RTP takes even ports (RTCP would be the odd one above); try random ones in range.
        candidates = list(range(self.port_low + (self.port_low % 2), self.port_high + 1, 2))
        random.shuffle(candidates)
        for port in candidates[:2000]:
            if port in self._sessions:
                continue
            try:
                sock.bind((self.host, port))
                return sock
            except OSError:
                continue
        sock.close()
        raise NoRtpPortError(f"no free RTP port in {self.port_low}-{self.port_high}")

    def remove(self, session: RtpSession) -> None:
        self._unregister(session)

    def _unregister(self, session: RtpSession) -> None:
        with self._lock:
            if self._sessions.get(session.local_port) is session:
                del self._sessions[session.local_port]
            try:
                self._selector.unregister(session.sock)
            except (KeyError, ValueError):
                pass
        try:
            session.sock.close()
        except OSError:
            pass

    # ---- timers (run in the media thread; keep them short) ------------------------------
    def call_later(self, delay: float, fn: Callable[[], None]) -> Callable[[], None]:
        """Run ``fn`` after ``delay`` seconds; returns a cancel function."""
        cancelled = False

        def wrapper() -> None:
            if not cancelled:
                fn()

        def cancel() -> None:
            nonlocal cancelled
            cancelled = True

        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._counter), wrapper))
        self._wake()
        return cancel

    def call_soon(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._soon.append(fn)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # ---- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        next_tick = time.monotonic() + TICK
        last_tick = 0.0
        while self._running:
            now = time.monotonic()
            with self._lock:
                due_timer = self._timers[0][0] if self._timers else next_tick
            timeout = max(0.0, min(next_tick, due_timer) - now)
            try:
                ready = self._selector.select(timeout)
            except OSError:
                ready = []
            for key, _ in ready:
                session = key.data
                if session is None:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                self._drain(session)
            now = time.monotonic()
            if now >= next_tick:
                if last_tick:
                    self._record_tick((now - last_tick) * 1000)
                last_tick = now
                with self._lock:
                    sessions = list(self._sessions.values())
                    tickers = self._tickers
                for fn in tickers:
                    try:
                        fn()
                    except Exception:
                        log.exception("media ticker failed")
                for s in sessions:
                    try:
                        s._tick()
                    except Exception:
                        log.exception("RTP send failed on port %s", s.local_port)
                next_tick += TICK
                if now - next_tick > 0.2:
                    next_tick = now + TICK  # we were stalled; don't burst to catch up
            self._run_callbacks(now)

    def _drain(self, session: RtpSession) -> None:
        for _ in range(64):  # bounded: one noisy peer cannot starve the clock
            try:
                packet = session.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                session._receive(packet)
            except Exception:
                session.stats.dropped_garbage += 1
                log.exception("RTP receive failed on port %s", session.local_port)

    def _run_callbacks(self, now: float) -> None:
        due: list[Callable[[], None]] = []
        with self._lock:
            due, self._soon = self._soon, []
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers)[2])
        for fn in due:
            try:
                fn()
            except Exception:
                self.callback_errors += 1
                log.exception("media callback failed")

    def _record_tick(self, ms: float) -> None:
        ring = self.tick_intervals_ms
        if len(ring) >= self._tick_ring:
            del ring[: self._tick_ring // 2]
        ring.append(ms)
