"""Customers and the phone numbers that identify them by caller ID."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from callcentre.db.base import Base, created_at, intpk, str32, str64, str255
from callcentre.db.models.fts import fts_index


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (fts_index("ix_customers_notes_fts", "notes"),)

    id: Mapped[intpk]
    name: Mapped[str255]
    account_number: Mapped[str | None] = mapped_column(String(32), unique=True)
    pin_hash: Mapped[str | None] = mapped_column(String(255))
    tier: Mapped[str32] = mapped_column(default="standard")
    """``standard``, ``gold`` or ``platinum``: IVR branches and router priority read it."""
    language: Mapped[str] = mapped_column(String(8), default="en")
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[created_at]

    phones: Mapped[list[CustomerPhone]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="CustomerPhone.id"
    )


class CustomerPhone(Base):
    __tablename__ = "customer_phones"

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    """E.164-style digits as the caller ID arrives (``+`` kept, no spaces)."""
    label: Mapped[str64] = mapped_column(default="mobile")
    added_at: Mapped[datetime | None] = mapped_column(default=None)

    customer: Mapped[Customer] = relationship(back_populates="phones")
