"""Supervisor listen / whisper / barge on the embedded SIP endpoint.

A mixin of :class:`telephony.sip.SipBackend` (after :class:`telephony.agent_legs.AgentLegs`, whose
``_dial`` rings the supervisor exactly like an agent, with ``purpose="supervisor"``).

On answer a :class:`Mixer` joins the call. It runs in the media thread (a ticker of the media engine,
called once per 20 ms tick before the sessions send), so the one-thread model stays:

* every received caller / agent / supervisor frame is decoded to 16-bit PCM and kept (only the newest
  frame, so mixing adds at most one frame — 20 ms — of delay; a frame that arrives while the previous
  one is still unsent replaces it);
* each tick takes one frame per party, sums the ones a listener may hear with clipping
  (``audioop.add`` saturates) and encodes the result for that listener's codec.

Modes (who hears whom):

* ``listen``: the supervisor hears caller + agent; caller↔agent keep their direct relay.
* ``whisper``: the supervisor hears both; the agent hears caller + supervisor (mixed); the caller
  hears the agent only (the agent→caller relay is untouched).
* ``barge``: each hears the other two (all three outputs mixed).

Ending (the supervisor's BYE, the console's stop, the caller or agent hanging up, hold, transfer)
removes the mixer and restores the caller↔agent relay as it was. Recording taps (``on_audio``)
are not touched: recordings keep the caller and agent only.
"""

from __future__ import annotations

import audioop
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from telephony.audio import FRAME_SAMPLES, encode
from telephony.base import AgentEndpoint
from telephony.rtp_relay import MediaEngine, RtpSession
from telephony.sip_state import AgentLeg, CallerCall

log = logging.getLogger(__name__)

SUPERVISION_MODES = ("listen", "whisper", "barge")
FRAME_BYTES = FRAME_SAMPLES * 2
PARTIES = ("caller", "agent", "supervisor")
HEARS: dict[str, dict[str, tuple[str, ...]]] = {
    "listen": {"supervisor": ("caller", "agent")},
    "whisper": {"supervisor": ("caller", "agent"), "agent": ("caller", "supervisor")},
    "barge": {
        "supervisor": ("caller", "agent"),
        "agent": ("caller", "supervisor"),
        "caller": ("agent", "supervisor"),
    },
}
"""For each mode, whose output the mixer writes and from which parties."""


class SupervisionError(RuntimeError):
    """A supervision request that cannot be carried out (no such call, no agent talking...)."""


def mix(frames: list[bytes]) -> bytes:
    """Sum 16-bit linear frames of one 20 ms tick with clipping; silence when there is none."""
    out = b""
    for frame in frames:
        frame = frame[:FRAME_BYTES].ljust(FRAME_BYTES, b"\x00")
        out = frame if not out else audioop.add(out, frame, 2)
    return out or bytes(FRAME_BYTES)


class Mixer:
    """Per-call mixing of caller, agent and supervisor audio; its methods run in the media thread."""

    def __init__(self, sessions: dict[str, RtpSession], mode: str) -> None:
        self.sessions = sessions
        self.mode = mode
        self._latest: dict[str, bytes | None] = dict.fromkeys(PARTIES)

    def feeder(self, party: str) -> Callable[[bytes], None]:
        def feed(pcm: bytes) -> None:
            self._latest[party] = pcm  # newest frame wins: at most one frame waits
        return feed

    def tick(self) -> None:
        taken = {p: self._latest[p] for p in PARTIES}
        for p in PARTIES:
            self._latest[p] = None
        for listener, sources in HEARS[self.mode].items():
            session = self.sessions[listener]
            if session.closed:
                continue
            pcm = mix([f for f in (taken[s] for s in sources) if f is not None])
            session._send_payload(encode(pcm, session.payload_type), session.payload_type)


@dataclass
class Supervised:
    call_id: str
    supervisor_id: int
    mode: str
    leg: AgentLeg
    mixer: Mixer | None = None
    agent: AgentLeg | None = None
    """The agent leg the mixer joined (restored on stop)."""
    feeders: dict[str, Callable[[bytes], None]] = field(default_factory=dict)


class Supervision:
    """Mixin: ``supervision_modes`` and ``supervise`` (what ``agent_console.actions`` looks for)."""

    supervision_modes = SUPERVISION_MODES
    media: MediaEngine
    calls: dict[str, CallerCall]
    _lock: threading.RLock

    if TYPE_CHECKING:
        def _dial(self, call: CallerCall, agent_id: int, uri: str, ring_seconds: float,
                  purpose: str) -> AgentLeg | None: ...
        def _agent_uri(self, contact: str) -> str: ...
        def _drop_agent_leg(self, agent: AgentLeg) -> None: ...

    def _supervisions(self) -> dict[str, Supervised]:
        table: dict[str, Supervised] | None = getattr(self, "_supervised", None)
        if table is None:
            table = {}
            self._supervised = table
        return table

    def supervise(self, call_id: str, supervisor: AgentEndpoint, mode: str, ring_seconds: float = 20.0) -> None:
        """Ring the supervisor into ``call_id`` in ``mode``, switch an existing leg's mode, or ``stop``."""
        if mode == "stop":
            self.stop_supervising(call_id)
            return
        if mode not in SUPERVISION_MODES:
            raise SupervisionError(f"mode is one of {', '.join(SUPERVISION_MODES)} or stop")
        call = self.calls.get(call_id)
        if call is None or call.leg.ended:
            raise SupervisionError("the call has ended")
        if call.agent is None or not call.agent.answered:
            raise SupervisionError("no agent is talking to the caller")
        with call.lock:
            current = self._supervisions().get(call_id)
            if current is not None and not current.leg.leg.ended:
                if current.supervisor_id != supervisor.agent_id:
                    raise SupervisionError("another supervisor is on this call")
                current.mode = mode
                if current.mixer is not None:
                    self._unmix(call, current)
                    self._mix(call, current)
                return
        if not supervisor.contact or supervisor.contact == "browser":
            raise SupervisionError("the supervisor needs a SIP phone (sip_contact) to be rung")
        leg = self._dial(call, supervisor.agent_id, self._agent_uri(supervisor.contact), ring_seconds,
                         purpose="supervisor")
        if leg is None:
            raise SupervisionError("no RTP port for the supervisor")
        with call.lock:
            self._supervisions()[call_id] = Supervised(call_id, supervisor.agent_id, mode, leg)
        log.info("call %s: ringing supervisor %s (%s)", call_id, supervisor.agent_id, mode)

    def supervision_of(self, call_id: str) -> str | None:
        """The mode a supervisor is (or is being rung) in on ``call_id``; None when none."""
        sup = self._supervisions().get(call_id)
        return sup.mode if sup is not None else None

    def stop_supervising(self, call_id: str) -> None:
        """End the supervisor's leg (BYE or CANCEL) and give caller↔agent their plain relay back."""
        sup = self._supervisions().pop(call_id, None)
        if sup is None:
            return
        call = self.calls.get(call_id)
        if call is not None:
            with call.lock:
                self._unmix(call, sup)
        else:
            self._unmix(None, sup)
        self._drop_agent_leg(sup.leg)
        log.info("call %s: supervisor %s left", call_id, sup.supervisor_id)

    # ---- hooks called by AgentLegs / SipBackend --------------------------------------------
    def _supervisor_answered(self, call: CallerCall, leg: AgentLeg) -> None:
        with call.lock:
            sup = self._supervisions().get(call.call_id)
            if sup is None or sup.leg is not leg or leg.leg.media is None:
                return
            self._mix(call, sup)

    def _supervisor_gone(self, leg: AgentLeg) -> None:
        """The supervisor's leg failed (no answer, refused) or they hung up."""
        sup = self._supervisions().get(leg.call_id)
        if sup is None or sup.leg is not leg:
            return
        self.stop_supervising(leg.call_id)

    # ---- media -------------------------------------------------------------------------------
    def _mix(self, call: CallerCall, sup: Supervised) -> None:
        """Under ``call.lock``: join the mixer for ``sup.mode`` (the caller↔agent relay changes per mode)."""
        agent = call.agent
        caller_media = call.leg.media
        sup_media = sup.leg.leg.media
        if agent is None or agent.leg.media is None or caller_media is None or sup_media is None:
            return
        agent_media = agent.leg.media
        sessions = {"caller": caller_media, "agent": agent_media, "supervisor": sup_media}
        mixer = Mixer(sessions, sup.mode)
        sup.mixer, sup.agent = mixer, agent
        sup_media.mute_output(True)  # the mixer is its only voice
        if sup.mode in ("whisper", "barge"):
            # The caller no longer goes straight to the agent: the mix does. An unbridged session
            # would send its own frames (silence) on each tick; the agent's relay still feeds it.
            caller_media.unbridge()
            caller_media.mute_output(True)
        if sup.mode == "barge":
            agent_media.unbridge()
            agent_media.mute_output(True)
        for party, session in sessions.items():
            feed = mixer.feeder(party)
            sup.feeders[party] = feed
            session.listeners = (*session.listeners, feed)
        self.media.add_ticker(mixer.tick)

    def _unmix(self, call: CallerCall | None, sup: Supervised) -> None:
        """Leave the mixer and restore the plain caller↔agent relay (as ``_bridge`` made it)."""
        mixer = sup.mixer
        if mixer is None:
            return
        self.media.remove_ticker(mixer.tick)
        for party, session in mixer.sessions.items():
            feed = sup.feeders.get(party)
            session.listeners = tuple(f for f in session.listeners if f is not feed)
        sup.feeders.clear()
        sup.mixer = None
        caller_media, agent_media = mixer.sessions["caller"], mixer.sessions["agent"]
        if mixer.mode in ("whisper", "barge"):
            caller_media.mute_output(False)
        if mixer.mode == "barge":
            agent_media.mute_output(False)
        if call is None or call.agent is not sup.agent or call.on_hold or call.consult is not None:
            return  # the call moved on (hold, transfer): its own code set the relay
        if not caller_media.closed and not agent_media.closed:
            caller_media.bridge(agent_media)
            agent_media.bridge(caller_media)
