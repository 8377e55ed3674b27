"""Storing a browser leg's media quality with the call (``webrtc_leg_quality``)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.models import WebRtcLegQuality
from callcentre.db.session import session_scope
from telephony.webrtc.session import MediaQuality


def save_quality(factory: sessionmaker[Session], call_id: str, agent_id: int, quality: MediaQuality) -> None:
    with session_scope(factory) as db:
        db.add(WebRtcLegQuality(
            call_id=call_id,
            agent_id=agent_id,
            codec=quality.codec,
            packets_received=quality.packets_received,
            packets_lost=quality.packets_lost,
            jitter_ms=quality.jitter_ms,
            remote_packets_lost=quality.remote_packets_lost,
            remote_jitter_ms=quality.remote_jitter_ms,
            round_trip_ms=quality.round_trip_ms,
        ))
