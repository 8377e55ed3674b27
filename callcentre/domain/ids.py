"""Identifier helpers: platform call ids are opaque, unique and safe to log."""

from __future__ import annotations

import uuid


def new_call_id() -> str:
    return "call-" + uuid.uuid4().hex
