"""Learned probability that an agent resolves a reason on first contact, smoothed for thin history.

"Resolved" means what FCR means (docs/metrics.md): the first agent resolved it, no transfer, no repeat call
from the same customer for the same reason within 7 days. Estimates shrink twice (empirical Bayes):

    p(reason)        = (S_r + m0 · p_global) / (N_r + m0)      every agent's calls for the reason
    p(agent, reason) = (s + m · p(reason)) / (n + m)           the agent's own calls for it

so a new agent starts at the reason's average and earns their own figure with ~``m`` calls. Pure: counts in,
numbers out; persistence is the caller's job (``from_outcomes`` rebuilds from the calls table).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Estimate:
    probability: float
    calls: int
    """How many of the agent's own calls for this reason the estimate rests on."""


class ResolutionModel:
    """Counts of first-contact outcomes per agent x reason, with smoothing toward the reason average."""

    def __init__(
        self, agent_strength: float = 10.0, reason_strength: float = 20.0, global_prior: float = 0.7
    ):
        if agent_strength <= 0 or reason_strength <= 0 or not 0.0 < global_prior < 1.0:
            raise ValueError("strengths must be positive and the global prior strictly between 0 and 1")
        self.agent_strength = agent_strength
        self.reason_strength = reason_strength
        self.global_prior = global_prior
        self._pair: dict[tuple[str, str], list[int]] = {}
        self._reason: dict[str, list[int]] = {}

    @classmethod
    def from_outcomes(cls, outcomes: Iterable[tuple[str, str, bool]], **kwargs: float) -> ResolutionModel:
        """Build from ``(agent_id, reason, resolved)`` triples, e.g. the last 90 days of answered calls."""
        model = cls(**kwargs)
        for agent_id, reason, resolved in outcomes:
            model.observe(agent_id, reason, resolved)
        return model

    def observe(self, agent_id: str, reason: str, resolved: bool) -> None:
        pair = self._pair.setdefault((agent_id, reason), [0, 0])
        pair[0] += resolved
        pair[1] += 1
        total = self._reason.setdefault(reason, [0, 0])
        total[0] += resolved
        total[1] += 1

    def reason_probability(self, reason: str) -> float:
        s, n = self._reason.get(reason, (0, 0))
        return (s + self.reason_strength * self.global_prior) / (n + self.reason_strength)

    def probability(self, agent_id: str, reason: str) -> float:
        s, n = self._pair.get((agent_id, reason), (0, 0))
        rs, rn = self._reason.get(reason, (0, 0))
        prior = (rs + self.reason_strength * self.global_prior) / (rn + self.reason_strength)
        return (s + self.agent_strength * prior) / (n + self.agent_strength)

    def estimate(self, agent_id: str, reason: str) -> Estimate:
        return Estimate(self.probability(agent_id, reason), self._pair.get((agent_id, reason), (0, 0))[1])
