"""Agents, their skills with proficiency, and the skill catalogue."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from callcentre.db.base import Base, created_at, intpk, str32, str64, str255, utcnow


class Skill(Base):
    __tablename__ = "skills"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str255] = mapped_column(default="")


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[intpk]
    login: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str255]
    password_hash: Mapped[str255]
    role: Mapped[str32] = mapped_column(default="agent")
    """``agent``, ``supervisor`` or ``admin``."""
    state: Mapped[str32] = mapped_column(default="logged_out")
    """See :class:`callcentre.domain.agent_state.AgentState`."""
    state_reason: Mapped[str64] = mapped_column(default="")
    state_since: Mapped[datetime] = mapped_column(default=utcnow)
    languages: Mapped[str64] = mapped_column(default="en")
    """Comma-separated language codes the agent speaks."""
    sip_contact: Mapped[str255] = mapped_column(default="")
    """``sip:user@host:port`` the platform calls for this agent's audio leg; empty if registered/browser."""
    softphone: Mapped[str32] = mapped_column(default="sip")
    """``sip`` (a SIP softphone) or ``browser`` (WebRTC in the console)."""
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[created_at]

    skills: Mapped[list[AgentSkill]] = relationship(
        back_populates="agent", cascade="all, delete-orphan", order_by="AgentSkill.skill_id"
    )


class AgentSkill(Base):
    __tablename__ = "agent_skills"
    __table_args__ = (
        UniqueConstraint("agent_id", "skill_id"),
        CheckConstraint("proficiency BETWEEN 1 AND 5", name="proficiency_range"),
    )

    id: Mapped[intpk]
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    skill_id: Mapped[int] = mapped_column(ForeignKey("skills.id", ondelete="CASCADE"), index=True)
    proficiency: Mapped[int]

    agent: Mapped[Agent] = relationship(back_populates="skills")
    skill: Mapped[Skill] = relationship()
