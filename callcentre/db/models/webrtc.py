"""Media quality of browser (WebRTC) agent legs, one row per agent per call."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.db.base import Base, intpk, str32, utcnow


class WebRtcLegQuality(Base):
    """Packet loss and jitter from the WebRTC statistics of one agent's part of a call."""

    __tablename__ = "webrtc_leg_quality"

    id: Mapped[intpk]
    call_id: Mapped[str] = mapped_column(String(40), index=True)
    agent_id: Mapped[int] = mapped_column(index=True)
    codec: Mapped[str32]
    """Codec on the browser leg: ``PCMU`` (no transcoding) or ``opus``."""
    packets_received: Mapped[int]
    """Browser → server packets during the call."""
    packets_lost: Mapped[int]
    jitter_ms: Mapped[float]
    remote_packets_lost: Mapped[int]
    """Server → browser packets the browser reported lost (RTCP receiver reports)."""
    remote_jitter_ms: Mapped[float]
    round_trip_ms: Mapped[float | None] = mapped_column(default=None)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
