"""Skill requirements, per-queue relaxation over waiting time, and the eligibility test.

Hard requirements come first in the router: an agent is a candidate only if this module says so. Relaxation
widens the circle as a call waits (e.g. after 30 s accept level ≥ 2, after 90 s any agent speaking the
language) so a rare skill never strands a caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Requirement = tuple[str, int]
"""``(skill, minimum proficiency 1-5)``."""


@dataclass(frozen=True, slots=True)
class RelaxationStep:
    """One widening of the eligible set, in force once a call has waited ``after_seconds``."""

    after_seconds: float
    min_level: int | None = None
    """Lower every required minimum to at most this level (the skill itself is still required)."""
    any_agent_with_language: bool = False
    """Drop skill requirements altogether; only the language must match."""

    def describe(self) -> str:
        if self.any_agent_with_language:
            return f"after {self.after_seconds:g}s: any agent with the language"
        return f"after {self.after_seconds:g}s: level ≥ {self.min_level}"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """Routing rules of one queue."""

    name: str
    relaxation: tuple[RelaxationStep, ...] = ()
    """Steps sorted by ``after_seconds``; the last one reached is in force."""
    priority: int = 0
    """Added to every task's own priority (e.g. VIP queue = 2)."""
    aging_seconds: float = 60.0
    """One priority point is gained per this many seconds of waiting, so nothing starves."""
    preferred_agent_timeout: float = 20.0
    """A repeat caller waits at most this long for the agent they spoke to last time."""

    def __post_init__(self) -> None:
        if self.aging_seconds <= 0:
            raise ValueError(f"queue {self.name!r}: aging_seconds must be positive")
        if any(b.after_seconds < a.after_seconds for a, b in zip(self.relaxation, self.relaxation[1:])):
            raise ValueError(f"queue {self.name!r}: relaxation steps must be sorted by after_seconds")
        for step in self.relaxation:
            if step.min_level is None and not step.any_agent_with_language:
                raise ValueError(f"queue {self.name!r}: step at {step.after_seconds}s relaxes nothing")
            if step.min_level is not None and not 1 <= step.min_level <= 5:
                raise ValueError(f"queue {self.name!r}: min_level must be 1-5, got {step.min_level}")

    def step_at(self, waited: float) -> int:
        """Index of the relaxation step in force after ``waited`` seconds; -1 for none."""
        index = -1
        for i, step in enumerate(self.relaxation):
            if waited >= step.after_seconds:
                index = i
            else:
                break
        return index


def check_requirements(
    skills: Mapping[str, int], required: tuple[Requirement, ...], step: RelaxationStep | None
) -> int:
    """Lowest matched level over ``required`` if the agent qualifies, else 0 (1-5 means eligible).

    Without requirements an agent qualifies with nominal level 5 (nothing to be bad at).
    """
    if step is not None and step.any_agent_with_language:
        if not required:
            return 5
        levels = [skills.get(skill, 0) for skill, _ in required]
        return max(1, min(levels))
    cap = step.min_level if step is not None else None
    lowest = 5
    for skill, minimum in required:
        level = skills.get(skill, 0)
        need = minimum if cap is None else min(minimum, cap)
        if level < max(need, 1):
            return 0
        if level < lowest:
            lowest = level
    return lowest


def parse_requirements(raw: object) -> tuple[Requirement, ...]:
    """Requirements from stored JSON (``[["billing", 3]]`` or ``{"billing": 3}``); clear error otherwise."""
    items: list[tuple[object, object]]
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list | tuple):
        items = []
        for entry in raw:
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                raise ValueError(f"skill requirement must be [skill, level], got {entry!r}")
            items.append((entry[0], entry[1]))
    else:
        raise ValueError(f"skill requirements must be a list or mapping, got {type(raw).__name__}")
    out: list[Requirement] = []
    for skill, level in items:
        if not isinstance(skill, str) or not skill or not isinstance(level, int) or not 1 <= level <= 5:
            raise ValueError(f"skill requirement needs a name and a level 1-5, got {skill!r}: {level!r}")
        out.append((skill, level))
    return tuple(out)
