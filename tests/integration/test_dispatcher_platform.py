"""The whole wired platform (``build_platform``): a caller goes through the shipped IVR flow, waits,
and the dispatcher rings the best qualified agent once one is available; the decision's explanation
is stored on the call."""

from __future__ import annotations

from sqlalchemy import select, update

from callcentre.bootstrap import build_platform
from callcentre.db.models import Agent, Call, CallSegment
from callcentre.domain.events import AgentStateChanged
from callcentre.settings import Settings
from routing import reservations as rsv
from routing.dispatcher import Dispatcher
from telephony.memory import MemoryBackend


def test_ivr_to_agent_through_the_wired_dispatcher(demo_settings: Settings) -> None:
    platform = build_platform(demo_settings, MemoryBackend())
    dispatcher = platform.services["dispatcher"]
    assert isinstance(dispatcher, Dispatcher)
    platform.start()
    try:
        mem = platform.backend
        assert isinstance(mem, MemoryBackend)
        call_id = mem.place_call("+15550100001")
        mem.press(call_id, "1")  # billing
        with platform.session_factory() as s:
            assert rsv.position(s, call_id) == 1  # every demo agent is logged out: the call waits
        with platform.session_factory() as s:
            ids = {a.login: a.id for a in s.scalars(select(Agent))}
            # agent06 has billing 2, agent01 billing 5: both qualify, the better one must be chosen.
            s.execute(update(Agent).where(Agent.id.in_([ids["agent06"], ids["agent01"]])).values(state="available"))
            s.commit()
        platform.bus.publish(AgentStateChanged(ids["agent06"], "available"))
        ringing = mem.calls[call_id].ringing_agent
        assert ringing is not None and ringing.agent_id == ids["agent01"]
        mem.agent_answers(call_id)
        with platform.session_factory() as s:
            call = s.get(Call, call_id)
            assert call is not None and call.state == "connected"
            assert call.route_why["agent_id"] == ids["agent01"] and call.route_why["summary"]
            segment = s.scalars(select(CallSegment).where(CallSegment.call_id == call_id)).one()
            assert segment.agent_id == ids["agent01"] and segment.started_at is not None
            assert s.get(Agent, ids["agent01"]).state == "on_call"  # type: ignore[union-attr]
    finally:
        platform.stop()
