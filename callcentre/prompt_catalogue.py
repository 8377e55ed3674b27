"""Every prompt the platform can play from recordings: all flows in a flows folder plus the queue's.

One prompts folder serves them all, so ``callcentre prompts build`` and the staleness test read the
same catalogue. Queue announcements are texts in ``routing.queue_experience``; the callback offer is a
fixed part plus one recording per DTMF key (``key_0`` … ``key_hash``), so every configurable
``callback_key`` is said correctly from recordings.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ivr.flow import load_flow
from routing.queue_experience import QUEUE_PROMPTS


class PromptConflict(ValueError):
    """Two sources give one prompt id different texts."""


def prompt_texts(flow_files: Iterable[Path], *, include_queue: bool = True) -> dict[str, str]:
    texts: dict[str, str] = {}
    sources: list[tuple[str, dict[str, str]]] = [(str(p), dict(load_flow(p).prompts)) for p in flow_files]
    if include_queue:
        sources.append(("routing.queue_experience", dict(QUEUE_PROMPTS)))
    for source, prompts in sources:
        for pid, text in prompts.items():
            if texts.setdefault(pid, text) != text:
                raise PromptConflict(f"prompt {pid!r} has different texts in different sources ({source})")
    return texts


def flows_beside(flow_file: Path) -> list[Path]:
    return sorted(flow_file.parent.glob("*.yaml"))
