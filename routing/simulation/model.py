"""What a simulation run is made of: call types, agents, time distributions. Plain frozen data."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from routing.skills import Requirement

DEFAULT_RESOLUTION_BY_LEVEL: Mapping[int, float] = {0: 0.3, 1: 0.6, 2: 0.7, 3: 0.8, 4: 0.88, 5: 0.95}
"""True P(first agent resolves) by proficiency when an agent has no individual figure (level 0 = untrained)."""


@dataclass(frozen=True)
class CallType:
    """One reason for calling; its queue and its skill carry the same name."""

    name: str
    arrival_rate: float
    """Calls per second (Poisson), before the intraday profile."""
    required_skills: tuple[Requirement, ...] = ()
    """Defaults to ``((name, 1),)``."""

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        return self.required_skills or ((self.name, 1),)


@dataclass(frozen=True)
class AgentSpec:
    agent_id: str
    skills: Mapping[str, int]
    resolution: Mapping[str, float] = field(default_factory=dict)
    """True P(resolve on first contact) per reason; missing reasons use the proficiency table."""


@dataclass(frozen=True)
class Scenario:
    name: str
    types: tuple[CallType, ...]
    agents: tuple[AgentSpec, ...]
    aht: float = 300.0
    """Mean handle time (talk), seconds."""
    handle_time: str = "exponential"
    """``exponential`` or ``lognormal``."""
    handle_cv: float = 1.0
    """Coefficient of variation for lognormal handle times."""
    patience: float | None = None
    """Mean of exponential patience, seconds; None: callers never abandon."""
    wrap_up: float = 0.0
    intraday: tuple[float, ...] = ()
    """Arrival-rate multipliers, one per hour of simulated time, repeating; empty: flat."""
    transfer_unresolved: float = 1.0
    """Share of unresolved first contacts transferred to a second agent; the rest call back later."""
    resolution_by_level: Mapping[int, float] = field(default_factory=lambda: dict(DEFAULT_RESOLUTION_BY_LEVEL))

    def __post_init__(self) -> None:
        if self.handle_time not in ("exponential", "lognormal"):
            raise ValueError(f"handle_time must be 'exponential' or 'lognormal', got {self.handle_time!r}")
        if self.aht <= 0 or (self.patience is not None and self.patience <= 0) or self.wrap_up < 0:
            raise ValueError("aht and patience must be positive, wrap_up non-negative")
        if not self.types or not self.agents:
            raise ValueError("a scenario needs at least one call type and one agent")
        if any(m < 0 for m in self.intraday) or (self.intraday and max(self.intraday) == 0):
            raise ValueError("intraday multipliers must be non-negative and not all zero")

    @property
    def offered_load(self) -> float:
        """Erlangs offered by first contacts (transfers add more)."""
        return sum(t.arrival_rate for t in self.types) * self.aht

    def true_resolution(self, agent: AgentSpec, reason: str) -> float:
        found = agent.resolution.get(reason)
        if found is not None:
            return found
        return self.resolution_by_level.get(agent.skills.get(reason, 0), 0.3)

    def handle_sampler(self, rng: random.Random) -> Callable[[], float]:
        if self.handle_time == "exponential":
            rate = 1.0 / self.aht
            return lambda: rng.expovariate(rate)
        sigma = math.sqrt(math.log(1.0 + self.handle_cv**2))
        mu = math.log(self.aht) - sigma**2 / 2.0
        return lambda: rng.lognormvariate(mu, sigma)
