"""Asterisk backend: the IVR over FastAGI, call control and call events over AMI.

How a call flows (``callcentre asterisk config`` prints the matching dialplan):

1. The caller reaches context ``<prefix>-in``, which answers and runs ``AGI(agi://host:port/ivr)``.
   The FastAGI session publishes ``CallArrived`` and then carries out whatever the IVR performs on
   the call (``Gather`` → ``STREAM FILE`` / ``GET DATA`` → ``DigitsReceived`` or ``InputTimedOut``).
   Asterisk's own channel id (``Uniqueid``) is the call's ``backend_ref``; ``SET VARIABLE
   CALLCENTRE_CALL_ID`` puts our id on the channel, so any process watching AMI (``VarSet``) can
   map the channel to the call.
2. A terminal action ends the AGI: ``Enqueue`` sets ``CALLCENTRE_NEXT=queue`` and the dialplan
   plays music on hold; ``Transfer`` sets ``CALLCENTRE_NEXT=transfer`` + the number; ``Hangup`` and
   ``RequestCallback`` hang up after the prompts.
3. ``connect_agent`` sends ``Originate`` (async) for the agent's endpoint into ``<prefix>-agent``;
   ``OriginateResponse`` success → ``Bridge`` caller and agent → ``AgentAnswered``; failure (or no
   response within the ring time) → ``AgentNoAnswer``.
4. AMI ``Hangup`` of the caller's channel → ``CallHungUp`` (by ``caller``, or ``platform`` when we
   asked for it); of the agent's channel → ``CallHungUp(by="agent")``. ``DTMFEnd`` while the caller
   is outside the IVR (on hold) → ``DigitsReceived``.
5. An action for a call that is no longer in the AGI (waiting on hold) is queued for the call and
   the channel is ``Redirect``-ed back into the IVR context, whose AGI picks the action up.
6. ``call_back`` (agent first) sends ``Originate`` for the agent's endpoint into ``<prefix>-callback``
   with the customer's number and ring time in channel variables; that context ``Dial``s the customer
   once the agent has answered. ``OriginateResponse`` → ``AgentAnswered`` / ``AgentNoAnswer``;
   ``DialBegin`` names the customer's channel, which from then on is the call's channel (``hangup``,
   ``hold``, recordings act on it); the customer's ``BridgeEnter`` → ``CallbackAnswered``; a
   ``DialEnd`` other than ANSWER plus the customer's ``Hangup`` cause → ``CallbackUnanswered``
   (:func:`callback_reason`); either side's ``Hangup`` after that → one ``CallHungUp``. ``hangup`` while
   the customer rings (the console's) hangs up the agent's channel, which ends the ``Dial``
   (``DialStatus: CANCEL``) → ``CallbackUnanswered("agent-ended")``; so does the agent hanging up.

After every AMI (re)connect the backend lists live channels (``CoreShowChannels``) and publishes
the hang-ups it missed while the link was down: Asterisk does not replay events.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from asterisk.ami import Event

from callcentre.bus import EventBus
from callcentre.domain.events import (
    AgentAnswered,
    AgentNoAnswer,
    CallArrived,
    CallbackAnswered,
    CallbackUnanswered,
    CallHungUp,
    DigitsReceived,
    InputTimedOut,
)
from callcentre.domain.ids import new_call_id
from callcentre.settings import AsteriskSettings, Settings
from ivr.actions import Action, Enqueue, Gather, Hangup, Prompt, RequestCallback, Transfer
from telephony.ami_link import AmiError, AmiLink
from telephony.base import AgentEndpoint
from telephony.fastagi import AgiHangup, AgiSession, FastAgiServer

log = logging.getLogger(__name__)

ALL_DIGITS = "0123456789*#"
CALL_ID_VARIABLE = "CALLCENTRE_CALL_ID"
CALLBACK_NUMBER_VARIABLE = "CALLCENTRE_CALLBACK_NUMBER"
CALLBACK_RING_VARIABLE = "CALLCENTRE_CALLBACK_RING"
CALLER_LEG_WAIT_SECONDS = 30.0
"""A callback due while the caller's own leg still hears the goodbye waits this long for it to end."""
CALLBACK_SETTLE_SLACK = 5.0
"""Seconds past the customer's ring time after which a callback with no dial result is given up."""
CAUSE_REASONS = {"17": "busy", "18": "no-answer", "19": "no-answer", "21": "rejected"}
"""Q.850 hangup causes of the customer's channel that say why a callback was not answered."""
DIAL_STATUS_REASONS = {"BUSY": "busy", "NOANSWER": "no-answer", "DONTCALL": "rejected", "CANCEL": "agent-ended"}
"""``CANCEL``: the calling channel hung up during ``Dial`` — in the callback context that is the agent's leg."""
AGI_IDLE_SECONDS = 30.0
"""How long an AGI session waits for the IVR's next action before giving up on the call."""
QUEUED_GRACE_SECONDS = 1.0
"""After an announcement to a queued caller: how long to wait for a follow-up action (e.g. the
callback confirmation) before sending the caller back to hold."""


def callback_reason(cause: str, dial_status: str) -> str:
    """Why a callback's customer did not answer: the customer channel's hangup cause when it is specific
    (Asterisk reports a declined call, cause 21, with ``DialStatus: NOANSWER``), else the ``DialStatus``
    (a ring timeout often hangs the channel up with the unspecific cause 16), else ``failed``."""
    return CAUSE_REASONS.get(cause) or DIAL_STATUS_REASONS.get(dial_status.upper()) or "failed"


@dataclass
class CallbackLeg:
    """The platform's call to a customer who asked for a callback (agent first)."""

    agent_id: int
    state: str = "ringing-agent"
    """``ringing-agent`` → ``dialling`` (agent answered, customer ringing) → ``connected`` → ``over``."""
    dial_status: str = ""
    customer_cause: str = ""
    customer_gone: bool = False
    agent_ended: bool = False
    """The agent ended the attempt while the customer rang (``hangup`` from the console, or their phone)."""


@dataclass
class AsteriskCall:
    call_id: str
    uniqueid: str
    channel: str
    mailbox: queue.Queue[Action] = field(default_factory=queue.Queue)
    in_agi: bool = False
    agent_id: int | None = None
    agent_channel: str = ""
    agent_uniqueid: str = ""
    originate_id: str = ""
    agent_settled: bool = True
    agent_connected: bool = False
    queued: bool = False
    """Waiting for an agent (on hold); an announcement played to it ends by returning to hold."""
    platform_hangup: bool = False
    ended: bool = False
    recording: bool = False
    callback: CallbackLeg | None = None
    """Set when this is the platform calling a customer back: ``uniqueid``/``channel`` are then the
    customer's leg once it is dialled, ``agent_*`` the agent's."""
    gone: threading.Event = field(default_factory=threading.Event)
    """Set when the call's ``CallHungUp`` has been published."""


def dial_string(contact: str) -> str:
    """Turn an agent contact into an Asterisk dial string (``PJSIP/agent01``)."""
    if "/" in contact and not contact.startswith(("sip:", "pjsip:")):
        return contact
    if contact.startswith("pjsip:"):
        return "PJSIP/" + contact[len("pjsip:"):]
    if contact.startswith("sip:"):
        user = urlsplit(contact).path.split("@", 1)[0] or contact[4:].split("@", 1)[0]
        if user:
            return "PJSIP/" + user
    raise ValueError(
        f"cannot dial agent contact {contact!r} on Asterisk; use sip:USER@host, pjsip:USER or TECH/RESOURCE"
    )


class AsteriskBackend:
    name = "asterisk"

    def __init__(self, settings: AsteriskSettings, *, agi_port: int | None = None,
                 action_timeout: float = 5.0, agi_idle_seconds: float = AGI_IDLE_SECONDS,
                 enable_ami: bool = True) -> None:
        self.settings = settings
        self._bus: EventBus | None = None
        self._calls: dict[str, AsteriskCall] = {}
        self._by_uid: dict[str, str] = {}
        self._originates: dict[str, str] = {}
        self._lock = threading.RLock()
        self._agi_idle = agi_idle_seconds
        prefix = settings.context_prefix
        self.contexts = {k: f"{prefix}-{k}" for k in ("in", "hold", "agent", "transfer", "callback")}
        self._callback_attempts = 0
        self._deferred: set[str] = set()
        """Calls whose callback waits for the caller's own leg to end."""
        self.link: AmiLink | None = None
        if enable_ami:
            self.link = AmiLink(
                settings.ami_host, settings.ami_port, settings.ami_username, settings.ami_secret,
                on_event=self._on_ami_event, on_linked=self._resync, action_timeout=action_timeout,
                ping_interval=settings.ping_interval,
            )
        self.agi = FastAgiServer(settings.agi_host, settings.agi_port if agi_port is None else agi_port,
                                 self._on_agi_session)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, bus: EventBus) -> None:
        self._bus = bus
        self.agi.start()
        if self.link is not None:
            self.link.start()

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()
        self.agi.stop()

    def call(self, call_id: str) -> AsteriskCall | None:
        with self._lock:
            return self._calls.get(call_id)

    def _publish(self, event: object) -> None:
        if self._bus is not None:
            self._bus.publish(event)

    # -- TelephonyBackend ------------------------------------------------------------------------
    def perform(self, call_id: str, action: Action) -> None:
        call = self.call(call_id)
        if call is None or call.ended:
            log.info("perform %s on unknown or ended call %s ignored", type(action).__name__, call_id)
            return
        if call.in_agi:
            call.mailbox.put(action)
            return
        # Outside the IVR: simple cases directly over AMI, anything with prompts via the IVR context.
        if isinstance(action, Hangup | RequestCallback) and not action.prompts:
            self.hangup(call_id)
        elif isinstance(action, Enqueue) and not action.prompts:
            call.queued = True
            self._ami("Redirect", Channel=call.channel, Context=self.contexts["hold"], Exten="s", Priority="1")
        elif isinstance(action, Transfer) and not action.prompts:
            self._ami("Redirect", Channel=call.channel, Context=self.contexts["transfer"],
                      Exten=action.number, Priority="1")
        else:
            call.mailbox.put(action)
            self._ami("Redirect", Channel=call.channel, Context=self.contexts["in"], Exten="resume", Priority="1")

    def connect_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        call = self.call(call_id)
        if call is None or call.ended:
            return
        dial = dial_string(agent.contact)
        link = self._require_link()
        client_id = f"orig-{call_id}-{agent.agent_id}"
        with self._lock:
            call.agent_id = agent.agent_id
            call.agent_settled = False
            call.originate_id = client_id
            self._originates[client_id] = call_id
        future = link.send(
            "Originate",
            variables={CALL_ID_VARIABLE: call_id, "CALLCENTRE_AGENT_ID": str(agent.agent_id)},
            ActionID=client_id, Channel=dial, Context=self.contexts["agent"], Exten="s", Priority="1",
            Timeout=str(int(ring_seconds * 1000)), CallerID=f'"callcentre" <{agent.agent_id}>', Async="true",
        )
        response = future.result(link.action_timeout)
        if response is None or response.is_error():
            self._agent_result(call, answered=False)
            return
        # Asterisk always sends OriginateResponse after the ring timeout; this is the backstop.
        timer = threading.Timer(ring_seconds + link.action_timeout, self._originate_overdue, (call_id, client_id))
        timer.daemon = True
        timer.start()

    def call_back(self, call_id: str, number: str, agent: AgentEndpoint, ring_seconds: float,
                  customer_ring_seconds: float) -> None:
        """Agent first: ``Originate`` the agent into ``<prefix>-callback``, whose ``Dial`` calls the customer.

        ``call_id`` is the original call's (ended) id; a new leg pair is tracked under it. The number
        travels only as a channel variable and is never logged.
        """
        if not number or any(ch not in "+0123456789*#" for ch in number):
            raise ValueError(f"call {call_id}: the callback number is not a diallable number")
        dial = dial_string(agent.contact)
        link = self._require_link()
        with self._lock:
            old = self._calls.get(call_id)
            if (old is not None and old.callback is not None and not old.ended) or call_id in self._deferred:
                raise ValueError(f"call {call_id} is still connected; cannot call it back now")
            caller_leg = old if old is not None and not old.ended else None
            if caller_leg is not None:
                self._deferred.add(call_id)
        if caller_leg is None:
            self._originate_callback(link, call_id, number, agent, dial, ring_seconds, customer_ring_seconds)
            return
        # The caller chose the callback a moment ago and still hears the goodbye (the AGI may be this
        # very thread): ring the agent once that leg has ended, so its CallHungUp comes first.
        log.info("call %s: callback waits for the caller's own leg to end", call_id)

        def when_caller_gone() -> None:
            if not caller_leg.gone.wait(CALLER_LEG_WAIT_SECONDS):
                log.warning("call %s: the caller's leg did not end within %.0fs; ringing the agent anyway",
                            call_id, CALLER_LEG_WAIT_SECONDS)
            with self._lock:
                self._deferred.discard(call_id)
            self._originate_callback(link, call_id, number, agent, dial, ring_seconds, customer_ring_seconds)

        threading.Thread(target=when_caller_gone, name=f"callback-{call_id}", daemon=True).start()

    def _originate_callback(self, link: AmiLink, call_id: str, number: str, agent: AgentEndpoint, dial: str,
                            ring_seconds: float, customer_ring_seconds: float) -> None:
        with self._lock:
            old = self._calls.get(call_id)
            if old is not None:
                # Late events of the caller's own leg no longer map to this call.
                for uid in (old.uniqueid, old.agent_uniqueid):
                    if self._by_uid.get(uid) == call_id:
                        del self._by_uid[uid]
            self._callback_attempts += 1
            client_id = f"cb-{call_id}-{agent.agent_id}-{self._callback_attempts}"
            leg = CallbackLeg(agent.agent_id)
            call = AsteriskCall(call_id, "", "", agent_id=agent.agent_id, agent_settled=False,
                                originate_id=client_id, callback=leg)
            self._calls[call_id] = call
            self._originates[client_id] = call_id
        future = link.send(
            "Originate",
            variables={CALL_ID_VARIABLE: call_id, "CALLCENTRE_AGENT_ID": str(agent.agent_id),
                       CALLBACK_NUMBER_VARIABLE: number,
                       CALLBACK_RING_VARIABLE: str(max(1, round(customer_ring_seconds)))},
            ActionID=client_id, Channel=dial, Context=self.contexts["callback"], Exten="s", Priority="1",
            Timeout=str(int(ring_seconds * 1000)), CallerID=f'"callcentre" <{agent.agent_id}>', Async="true",
        )
        response = future.result(link.action_timeout)
        if response is None or response.is_error():
            self._agent_result(call, answered=False)
            leg.state = "over"
            call.ended = True
            return
        timer = threading.Timer(ring_seconds + link.action_timeout, self._originate_overdue, (call_id, client_id))
        timer.daemon = True
        timer.start()
        give_up = threading.Timer(ring_seconds + customer_ring_seconds + link.action_timeout + CALLBACK_SETTLE_SLACK,
                                  self._callback_overdue, (call, client_id))
        give_up.daemon = True
        give_up.start()

    def hold(self, call_id: str, on: bool) -> None:
        call = self._known(call_id)
        if on:
            self._ami("Redirect", Channel=call.channel, Context=self.contexts["hold"], Exten="s", Priority="1")
        elif call.agent_channel:
            self._ami("Bridge", Channel1=call.channel, Channel2=call.agent_channel, Tone="no")

    def hangup(self, call_id: str) -> None:
        call = self.call(call_id)
        if call is None or call.ended:
            return
        call.platform_hangup = True
        cb = call.callback
        if cb is not None and cb.state != "connected":
            # Before the customer is connected the agent's leg is the call: ending it cancels the Dial
            # (``DialEnd: CANCEL``) and the attempt settles as CallbackUnanswered("agent-ended").
            if cb.state == "dialling":
                cb.agent_ended = True
            if call.agent_channel:
                self._ami("Hangup", Channel=call.agent_channel, Cause="16")
            return
        self._ami("Hangup", Channel=call.channel, Cause="16")

    # -- more call control (console, recordings, transfers) ---------------------------------------
    def redirect(self, call_id: str, context: str, exten: str, priority: str = "1") -> None:
        call = self._known(call_id)
        self._ami("Redirect", Channel=call.channel, Context=context, Exten=exten, Priority=priority)

    def start_recording(self, call_id: str, filename: str) -> None:
        """Stereo recording (caller and agent on separate channels: ``MixMonitor`` option ``D``)."""
        call = self._known(call_id)
        path = f"{self.settings.monitor_dir.rstrip('/')}/{filename}"
        self._ami("MixMonitor", Channel=call.channel, File=path, Options="bD")
        call.recording = True

    def pause_recording(self, call_id: str, paused: bool) -> None:
        call = self._known(call_id)
        self._ami("PauseMixMonitor", Channel=call.channel, State="1" if paused else "0", Direction="both")

    def stop_recording(self, call_id: str) -> None:
        call = self._known(call_id)
        self._ami("StopMixMonitor", Channel=call.channel)
        call.recording = False

    def blind_transfer(self, call_id: str, exten: str, context: str | None = None) -> None:
        """The agent's leg transfers the caller (``BlindTransfer`` acts on the transferer's channel)."""
        call = self._known(call_id)
        self._ami("BlindTransfer", Channel=call.agent_channel or call.channel, Exten=exten,
                  Context=context or self.contexts["transfer"])

    def attended_transfer(self, call_id: str, exten: str, context: str | None = None) -> None:
        call = self._known(call_id)
        if not call.agent_channel:
            raise ValueError(f"call {call_id} has no agent leg to transfer from")
        self._ami("Atxfer", Channel=call.agent_channel, Exten=exten, Context=context or self.contexts["transfer"])

    # -- helpers ---------------------------------------------------------------------------------
    def _known(self, call_id: str) -> AsteriskCall:
        call = self.call(call_id)
        if call is None:
            raise KeyError(f"unknown call {call_id}")
        return call

    def _require_link(self) -> AmiLink:
        if self.link is None:
            raise RuntimeError("the Asterisk backend was started without AMI")
        return self.link

    def _ami(self, name: str, **keys: str) -> None:
        try:
            self._require_link().request(name, keys)
        except AmiError as exc:
            log.warning("%s", exc)
            raise

    def _register(self, call_id: str, uniqueid: str, channel: str) -> AsteriskCall:
        with self._lock:
            call = self._calls.get(call_id)
            if call is None:
                call = AsteriskCall(call_id, uniqueid, channel)
                self._calls[call_id] = call
            self._by_uid[uniqueid] = call_id
            return call

    def _end(self, call: AsteriskCall, by: str, cause: str) -> None:
        with self._lock:
            if call.ended:
                return
            call.ended = True
        if call.platform_hangup and by == "caller":
            by = "platform"
        self._publish(CallHungUp(call.call_id, by=by, cause=cause))
        call.gone.set()

    def _agent_result(self, call: AsteriskCall, *, answered: bool) -> bool:
        """Publish the agent leg's outcome once; True when this call settled it."""
        with self._lock:
            if call.agent_settled or call.agent_id is None:
                return False
            call.agent_settled = True
            call.agent_connected = answered
            if answered:
                call.queued = False
            agent_id = call.agent_id
            self._originates.pop(call.originate_id, None)
        if answered:
            self._publish(AgentAnswered(call.call_id, agent_id=agent_id))
        else:
            self._publish(AgentNoAnswer(call.call_id, agent_id=agent_id))
        return True

    def _originate_overdue(self, call_id: str, originate_id: str) -> None:
        call = self.call(call_id)
        if (call is not None and call.originate_id == originate_id
                and self._agent_result(call, answered=False) and call.callback is not None):
            call.callback.state = "over"
            call.ended = True

    # -- callbacks (agent first, then the customer) ------------------------------------------------
    def _on_callback_event(self, call: AsteriskCall, cb: CallbackLeg, name: str, keys: dict[str, str],
                           uid: str) -> None:
        if name == "DialBegin" and uid == call.agent_uniqueid and cb.state in {"ringing-agent", "dialling"}:
            # The dialplan only dials the customer after the agent answered: that is proof enough
            # even if OriginateResponse has not arrived yet.
            self._agent_result(call, answered=True)
            dest = keys.get("DestUniqueid", "")
            with self._lock:
                call.uniqueid, call.channel = dest, keys.get("DestChannel", "")
                if dest:
                    self._by_uid[dest] = call.call_id
            cb.state = "dialling"
        elif name == "DialEnd" and uid == call.agent_uniqueid and cb.state == "dialling":
            cb.dial_status = keys.get("DialStatus", "") or "UNKNOWN"
            if cb.dial_status != "ANSWER":
                self._callback_try_settle(call, cb)
        elif name == "BridgeEnter" and uid == call.uniqueid:
            self._callback_connected(call, cb)
        elif name == "Hangup":
            cause = keys.get("Cause", "")
            text = keys.get("Cause-txt", "normal") or "normal"
            if cb.state == "connected":
                # Either side hanging up ends the callback; the other leg has nothing left to do. An
                # agent leg still ringing (a transfer's connect_agent) that rings out ends nothing.
                if uid == call.uniqueid:
                    self._end(call, "caller", text)
                    cb.state = "over"
                    self._hang_up_quietly(call.agent_channel)
                elif uid == call.agent_uniqueid and call.agent_settled and call.agent_connected:
                    self._end(call, "agent", text)
                    cb.state = "over"
                    self._hang_up_quietly(call.channel)
                elif uid == call.agent_uniqueid:
                    call.agent_uniqueid = call.agent_channel = ""
            elif cb.state == "dialling":
                if uid == call.uniqueid:
                    cb.customer_cause, cb.customer_gone = cause, True
                    self._callback_try_settle(call, cb)
                elif uid == call.agent_uniqueid:
                    # The dialplan ended the agent's leg (or the agent hung up while the customer rang:
                    # Asterisk reports DialEnd CANCEL first, so the reason is "agent-ended").
                    call.agent_uniqueid = call.agent_channel = ""
                    self._callback_settle(call, cb)
            elif uid == call.agent_uniqueid:
                call.agent_uniqueid = call.agent_channel = ""

    def _callback_try_settle(self, call: AsteriskCall, cb: CallbackLeg) -> None:
        """Settle once both the ``DialEnd`` and the customer's ``Hangup`` (which carries the precise
        cause and follows ``DialEnd`` on Asterisk) are in; a specific cause alone is enough."""
        if cb.customer_cause in CAUSE_REASONS or (cb.dial_status and (cb.customer_gone or not call.uniqueid)):
            self._callback_settle(call, cb)

    def _callback_connected(self, call: AsteriskCall, cb: CallbackLeg) -> None:
        with self._lock:
            if cb.state != "dialling":
                return
            cb.state = "connected"
            call.agent_connected = True
        self._publish(CallbackAnswered(call.call_id, agent_id=cb.agent_id))

    def _callback_settle(self, call: AsteriskCall, cb: CallbackLeg) -> None:
        with self._lock:
            if cb.state != "dialling":
                return
            cb.state = "over"
            call.ended = True
        reason = "agent-ended" if cb.agent_ended else callback_reason(cb.customer_cause, cb.dial_status)
        log.info("call %s: callback not answered (%s)", call.call_id, reason)
        self._publish(CallbackUnanswered(call.call_id, agent_id=cb.agent_id, reason=reason))

    def _callback_overdue(self, call: AsteriskCall, originate_id: str) -> None:
        """Backstop when events were lost: long after the customer's ring time a ``DialEnd: ANSWER`` without
        ``BridgeEnter`` counts as connected; no dial result at all gives up and ends the agent's leg."""
        cb = call.callback
        if cb is None or call.originate_id != originate_id or cb.state != "dialling":
            return
        if cb.dial_status == "ANSWER":
            self._callback_connected(call, cb)
            return
        agent_channel = call.agent_channel
        self._callback_settle(call, cb)
        self._hang_up_quietly(agent_channel)

    def _hang_up_quietly(self, channel: str) -> None:
        """End a leg whose partner is gone; it may already be gone too (then Asterisk says so, and that is fine)."""
        if channel and self.link is not None:
            self.link.send("Hangup", Channel=channel, Cause="16")

    # -- AMI events (dispatcher thread) ------------------------------------------------------------
    def _on_ami_event(self, event: Event) -> None:
        keys = event.keys
        uid = keys.get("Uniqueid", "")
        name = event.name
        if name == "VarSet" and keys.get("Variable") == CALL_ID_VARIABLE and keys.get("Value"):
            with self._lock:
                known = self._calls.get(keys["Value"])
            if known is None or known.uniqueid == uid:
                self._register(keys["Value"], uid, keys.get("Channel", ""))
            else:
                # The same id on another channel: an agent leg we originated.
                known.agent_uniqueid, known.agent_channel = uid, keys.get("Channel", "")
                with self._lock:
                    self._by_uid[uid] = known.call_id
            return
        if name == "OriginateResponse":
            call = self.call(self._originates.get(keys.get("ActionID", ""), ""))
            if call is None:
                return
            if call.callback is not None and keys.get("ActionID", "").startswith("cb-"):
                self._callback_originated(call, call.callback, keys)
                return
            if keys.get("Response", "").lower() == "success":
                call.agent_channel = keys.get("Channel", call.agent_channel)
                call.agent_uniqueid = keys.get("Uniqueid", call.agent_uniqueid)
                with self._lock:
                    self._by_uid[call.agent_uniqueid] = call.call_id
                try:
                    self._ami("Bridge", Channel1=call.channel, Channel2=call.agent_channel, Tone="no")
                except AmiError:
                    self._agent_result(call, answered=False)
                    return
                self._agent_result(call, answered=True)
            else:
                self._agent_result(call, answered=False)
            return
        call = self.call(self._by_uid.get(uid, "")) if uid else None
        if call is None and name == "DialEnd":
            call = self.call(self._by_uid.get(keys.get("DestUniqueid", ""), ""))
        if call is None:
            return
        if call.callback is not None:
            self._on_callback_event(call, call.callback, name, keys, uid)
            return
        if name == "Hangup":
            cause = keys.get("Cause-txt", "normal") or "normal"
            if uid == call.uniqueid:
                self._end(call, "caller", cause)
            elif uid == call.agent_uniqueid and not call.ended:
                # Only a conversation the agent ends counts; a leg that rang out was AgentNoAnswer.
                if call.agent_connected:
                    call.agent_connected = False
                    self._publish(CallHungUp(call.call_id, by="agent", cause=cause))
                call.agent_uniqueid = call.agent_channel = ""
        elif name == "DTMFEnd" and uid == call.uniqueid and not call.in_agi:
            if keys.get("Direction", "Received") == "Received" and keys.get("Digit"):
                self._publish(DigitsReceived(call.call_id, digits=keys["Digit"]))
        elif name == "DialEnd" and not call.agent_settled:
            self._agent_result(call, answered=keys.get("DialStatus", "") == "ANSWER")
        elif name == "BridgeEnter" and uid == call.agent_uniqueid and not call.agent_settled:
            # The agent reached the caller by other means than our Originate (e.g. a PBX transfer).
            self._agent_result(call, answered=True)

    def _callback_originated(self, call: AsteriskCall, cb: CallbackLeg, keys: dict[str, str]) -> None:
        if keys.get("Response", "").lower() != "success":
            if self._agent_result(call, answered=False):
                cb.state = "over"
                call.ended = True
            return
        uid = keys.get("Uniqueid", "")
        with self._lock:
            if uid and uid != "<null>":
                call.agent_uniqueid = uid
                call.agent_channel = keys.get("Channel", call.agent_channel)
                self._by_uid[uid] = call.call_id
        if self._agent_result(call, answered=True):
            cb.state = "dialling"

    def _resync(self) -> None:
        """After a (re)connect: publish the hang-ups that happened while AMI was not watching."""
        link = self._require_link()
        # Judge only calls known before the snapshot is asked for: a call that arrives (FastAGI)
        # while the list is being built is missing from it without having hung up.
        with self._lock:
            calls = [c for c in self._calls.values() if not c.ended]
        try:
            live = {e.keys.get("Uniqueid", "") for e in link.collect("CoreShowChannels")}
        except AmiError as exc:
            log.warning("resync after AMI reconnect failed: %s", exc)
            return
        for call in calls:
            if call.callback is not None:
                self._resync_callback(call, call.callback, live)
                continue
            if call.uniqueid not in live and not call.in_agi:
                self._end(call, "caller", "hung up while the AMI link was down")
            elif call.agent_uniqueid and call.agent_uniqueid not in live:
                call.agent_uniqueid = call.agent_channel = ""
                if call.agent_connected:
                    call.agent_connected = False
                    self._publish(CallHungUp(call.call_id, by="agent", cause="hung up while the AMI link was down"))

    def _resync_callback(self, call: AsteriskCall, cb: CallbackLeg, live: set[str]) -> None:
        agent_up = bool(call.agent_uniqueid) and call.agent_uniqueid in live
        customer_up = bool(call.uniqueid) and call.uniqueid in live
        if cb.state == "connected" and not (agent_up and customer_up):
            self._end(call, "agent" if not agent_up else "caller", "hung up while the AMI link was down")
            cb.state = "over"
            self._hang_up_quietly(call.channel if customer_up else call.agent_channel if agent_up else "")
        elif cb.state == "dialling" and call.agent_uniqueid and not agent_up:
            cb.customer_gone = True
            self._callback_settle(call, cb)

    # -- FastAGI (one thread per call) -------------------------------------------------------------
    def _on_agi_session(self, session: AgiSession) -> None:
        env = session.env
        uid = env.get("agi_uniqueid", "")
        with self._lock:
            existing = self._calls.get(self._by_uid.get(uid, "")) if uid else None
        if existing is not None and not existing.ended:
            call = existing
            call.in_agi = True
        else:
            call = self._register(new_call_id(), uid, env.get("agi_channel", ""))
            call.in_agi = True
            with contextlib.suppress(AgiHangup):
                session.set_variable(CALL_ID_VARIABLE, call.call_id)
            # The dialplan passes the dialled number as the first AGI argument (see asterisk_config).
            dialled = env.get("agi_arg_1") or _known_value(env.get("agi_dnid", "")) or env.get("agi_extension", "")
            self._publish(CallArrived(
                call.call_id, caller_id=_known_value(env.get("agi_callerid", "")),
                dialled=dialled, backend=self.name, backend_ref=uid,
            ))
        try:
            while not session.hung_up:
                try:
                    # A queued caller brought in for an announcement goes back to hold when nothing follows.
                    action = call.mailbox.get(timeout=QUEUED_GRACE_SECONDS if call.queued else self._agi_idle)
                except queue.Empty:
                    if call.queued:
                        session.set_variable("CALLCENTRE_NEXT", "queue")
                        break
                    log.warning("call %s: no IVR action within %.0fs; hanging up", call.call_id, self._agi_idle)
                    call.platform_hangup = True
                    session.hangup()
                    break
                if self._run_in_agi(session, call, action):
                    break
        except AgiHangup:
            self._end(call, "caller", "hung up in the IVR")
        finally:
            call.in_agi = False
        if session.hung_up and not call.ended and (self.link is None or not self.link.linked):
            # Without AMI the AGI is the only witness of the hang-up.
            self._end(call, "caller", "hung up in the IVR")

    def _sound(self, prompt: Prompt) -> str:
        return f"{self.settings.sounds_prefix.rstrip('/')}/{prompt.id}"

    def _play(self, session: AgiSession, prompts: tuple[Prompt, ...]) -> None:
        for prompt in prompts:
            session.stream_file(self._sound(prompt))

    def _run_in_agi(self, session: AgiSession, call: AsteriskCall, action: Action) -> bool:
        """Carry out one action; True when the AGI part of the call is over."""
        if isinstance(action, Gather):
            self._gather(session, call, action)
            return False
        self._play(session, action.prompts)
        if isinstance(action, Enqueue):
            call.queued = True
            session.set_variable("CALLCENTRE_QUEUE", action.queue)
            session.set_variable("CALLCENTRE_NEXT", "queue")
            return True
        if isinstance(action, Transfer):
            session.set_variable("CALLCENTRE_TRANSFER_TO", action.number)
            session.set_variable("CALLCENTRE_NEXT", "transfer")
            return True
        call.platform_hangup = True
        session.set_variable("CALLCENTRE_NEXT", "hangup")
        session.hangup()
        self._end(call, "platform", getattr(action, "reason", "callback"))
        return True

    def _gather(self, session: AgiSession, call: AsteriskCall, gather: Gather) -> None:
        paused = gather.sensitive and call.recording and self.link is not None
        if paused:
            self.pause_recording(call.call_id, True)
        try:
            digits, _timed_out = self._collect(session, gather)
        finally:
            if paused:
                self.pause_recording(call.call_id, False)
        if digits:
            self._publish(DigitsReceived(call.call_id, digits=digits))
        else:
            self._publish(InputTimedOut(call.call_id))

    def _collect(self, session: AgiSession, gather: Gather) -> tuple[str, bool]:
        timeout_ms = int(gather.timeout_seconds * 1000)
        first = ""
        for prompt in gather.prompts[:-1]:
            first = session.stream_file(self._sound(prompt), ALL_DIGITS)
            if first:
                break
        if first:
            if first == gather.terminator or gather.max_digits <= 1:
                return first, False
            rest, timed_out = session.get_data("silence/1", timeout_ms, gather.max_digits - 1)
            return first + rest, timed_out
        last = self._sound(gather.prompts[-1]) if gather.prompts else "silence/1"
        return session.get_data(last, timeout_ms, gather.max_digits)


def build_asterisk_backend(settings: Settings) -> AsteriskBackend:
    """Factory used by ``callcentre.bootstrap`` (``--backend asterisk``)."""
    return AsteriskBackend(settings.asterisk)


def _known_value(value: str) -> str:
    return "" if value.lower() in {"unknown", "anonymous", ""} else value
