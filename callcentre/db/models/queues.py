"""Queues (what a call needs and how fast it must be answered) and disposition codes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.db.base import Base, intpk, str255


class Queue(Base):
    __tablename__ = "queues"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str255] = mapped_column(default="")
    required_skills: Mapped[list[Any]] = mapped_column(default=list)
    """``[{"skill": "billing", "min_level": 3}, ...]``: hard requirements before relaxation."""
    priority: Mapped[int] = mapped_column(default=0)
    sl_target_seconds: Mapped[int] = mapped_column(default=20)
    sl_target_percent: Mapped[int] = mapped_column(default=80)
    relaxation: Mapped[list[Any]] = mapped_column(default=list)
    """``[{"after_seconds": 30, "min_level": 2}, {"after_seconds": 90, "any_skill": true}]``."""
    language: Mapped[str] = mapped_column(String(8), default="en")


class Disposition(Base):
    __tablename__ = "dispositions"

    id: Mapped[intpk]
    code: Mapped[str] = mapped_column(String(32), unique=True)
    label: Mapped[str255]
    resolved: Mapped[bool] = mapped_column(default=True)
    """Whether choosing this code normally means the caller's problem was solved."""
