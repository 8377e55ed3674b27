"""Per-call state of the SIP endpoint: dialogs (legs), the caller's call, agent legs, DTMF gathers.

Plain data shared by ``telephony/sip.py`` (the caller's side) and ``telephony/agent_legs.py``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ivr.actions import Action, Gather
from telephony.rtp_relay import RtpSession
from telephony.sdp import MediaOffer
from telephony.sip_message import RawSip

Address = tuple[str, int]


def new_tag(n: int = 10) -> str:
    return "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=n))


@dataclass
class GatherState:
    action: Gather
    digits: str = ""
    started: bool = False
    """True once the prompts finished (or were barged into) and the timeout runs."""
    cancel_timer: Callable[[], None] | None = None
    done: bool = False


@dataclass
class Leg:
    """One SIP dialog: the caller's (we are UAS) or an agent's / transfer target's (we are UAC)."""

    sip_call_id: str
    local_tag: str
    remote: Address
    """Where requests in this dialog go (Contact, or the first Route)."""
    remote_uri: str
    """Request-URI for in-dialog requests (the peer's Contact)."""
    local_header: str
    """Our From (as UAC) / To (as UAS) value, with our tag."""
    remote_header: str
    routes: list[str] = field(default_factory=list)
    cseq: int = 1
    media: RtpSession | None = None
    ended: bool = False


@dataclass
class CallerCall:
    call_id: str
    leg: Leg
    invite: RawSip
    source: Address
    offer: MediaOffer
    answered: bool = False
    cancelled: bool = False
    pending: list[Action] = field(default_factory=list)
    gather: GatherState | None = None
    typeahead: str = ""
    agent: AgentLeg | None = None
    consult: AgentLeg | None = None
    """A warm transfer's second agent (ringing or talking to ``agent``) while the caller is held."""
    on_hold: bool = False
    queued: bool = False
    acked: bool = False
    remote_hold: bool = False
    """The caller put us on hold (re-INVITE sendonly/inactive): no RTP is expected from them."""
    """The caller ACKed our 200 OK (until then it is retransmitted)."""
    """Waiting for an agent: announcements (a Gather from the dispatcher) keep the hold music under them."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    last_response: bytes = b""
    hold_timer: Callable[[], None] | None = None
    grace_timer: Callable[[], None] | None = None
    callback: CallbackDial | None = None
    """Set when the platform dialled this call (a callback): ``leg`` is then OUR dialog to the customer
    (we are the UAC), ``invite`` our INVITE to them and ``offer`` our own SDP until they answer."""


@dataclass
class AgentLeg:
    call_id: str
    agent_id: int
    leg: Leg
    invite: bytes
    branch: str
    answered: bool = False
    cancel_timer: Callable[[], None] | None = None
    failed: bool = False
    purpose: str = "agent"
    """``agent``, ``consult`` (a warm transfer's second agent) or ``transfer`` (a blind transfer out)."""
    responded: bool = False
    """Any response to our INVITE arrived (stops its retransmission)."""
    handover_from: int | None = None
    """A consultation whose first agent hung up while this (consulted) leg rang: the id of that agent;
    on answer the caller is bridged straight to this leg (``ConsultHandedOver``)."""


@dataclass
class CallbackDial:
    """A callback being dialled (``telephony/sip_callback.py``): the agent first, then the customer."""

    customer: AgentLeg
    """Our INVITE transaction to the customer (its ``leg`` is the call's ``leg``); never logged."""
    ring_seconds: float
    dialled: bool = False
    """The customer's INVITE went out (the agent answered)."""
    authenticated: bool = False
    """The INVITE was re-sent with digest credentials once (a second challenge fails the attempt)."""
    routable: bool = True
    """False when neither ``sip.outbound_proxy`` nor a registrar says where to send it: fails once the agent answers."""
    outcome: str = ""
    """``answered``, or the reason the attempt ended (``busy``, ``no-answer`` …); set once."""
