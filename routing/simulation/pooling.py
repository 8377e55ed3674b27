"""Pooling efficiency of a flexible design: how much of the full-pooling gain a routing policy realises.

    efficiency_SL   = (SL_design − SL_split)     / (SL_pooled − SL_split)
    efficiency_aband = (ab_split − ab_design)    / (ab_split − ab_pooled)

The pooled and split references are simulated in the same run with the same callers (same seed, common
random numbers) under the same policy; in single-skill designs with one queue per agent group every policy
here reduces to FCFS, so the references are the M/M/n+M values (checked against Erlang A in the tests).
Because the references carry simulation noise too, each row also gives the efficiency against the *exact*
Erlang A (or C) references: M/M/agents+M for pooled, M/M/(agents/types)+M per reason for split. The
simulated references share the design's callers (common random numbers, less noise in the difference); the
exact ones have no noise of their own. Both are reported; neither is the "good" one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from routing.erlang import QueueFigures, erlang_a_figures, erlang_c_figures
from routing.reports import Metrics
from routing.simulation.designs import build_scenario
from routing.simulation.engine import simulate
from routing.simulation.strategies import make_strategy


@dataclass(frozen=True)
class Efficiency:
    design: str
    strategy: str
    metrics: Metrics
    sl: float
    abandonment: float
    sl_exact_refs: float | None = None
    """Efficiency against the exact Erlang references (None when they do not exist, e.g. uneven split)."""
    abandonment_exact_refs: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"design": self.design, "strategy": self.strategy, "efficiency_sl": self.sl,
                "efficiency_abandonment": self.abandonment, "sl20": self.metrics.sl,
                "abandonment": self.metrics.abandonment, "asa": self.metrics.asa,
                "efficiency_sl_exact_refs": self.sl_exact_refs,
                "efficiency_abandonment_exact_refs": self.abandonment_exact_refs}


def exact_references(
    *, types: int, agents: int, load: float, aht: float, patience: float | None, threshold: float = 20.0
) -> tuple[QueueFigures, QueueFigures] | None:
    """(pooled, split) from Erlang A (Erlang C without patience); None if split groups are uneven or a
    reference queue is unstable without abandonment."""
    if agents % types or (patience is None and load >= agents):
        return None
    rate = load / aht

    def figures(servers: int, lam: float) -> QueueFigures:
        if patience is None:
            return erlang_c_figures(servers, lam, aht, threshold)
        return erlang_a_figures(servers, lam, aht, patience, threshold)

    return figures(agents, rate), figures(agents // types, rate / types)


def _efficiency(sl: float, ab: float, pooled: tuple[float, float], split: tuple[float, float]) -> tuple[float, float]:
    gap_sl = pooled[0] - split[0]
    gap_ab = split[1] - pooled[1]
    return ((sl - split[0]) / gap_sl if gap_sl else float("nan"),
            (split[1] - ab) / gap_ab if gap_ab else float("nan"))


def pooling_efficiency(
    *,
    types: int = 6,
    agents: int = 90,
    load: float = 84.0,
    aht: float = 300.0,
    patience: float | None = 300.0,
    calls: int = 100_000,
    seed: int = 1,
    designs: Sequence[str] = ("chain", "balanced"),
    strategies: Sequence[str] = ("router", "greedy"),
    skills_per_agent: int = 2,
) -> tuple[dict[str, Metrics], list[Efficiency]]:
    """References (pooled, split) and the efficiency of each design x strategy."""

    def run(design: str, strategy: str) -> Metrics:
        scenario = build_scenario(design, types=types, agents=agents, load=load, aht=aht, patience=patience,
                                  skills_per_agent=skills_per_agent)
        return simulate(scenario, make_strategy(strategy, seed), calls=calls, seed=seed).report().overall

    refs = {"pooled": run("pooled", "greedy"), "split": run("split", "greedy")}
    pooled, split = refs["pooled"], refs["split"]
    assert pooled.sl is not None and split.sl is not None
    assert pooled.abandonment is not None and split.abandonment is not None
    exact = exact_references(types=types, agents=agents, load=load, aht=aht, patience=patience)
    out = []
    for design in designs:
        for strategy in strategies:
            m = run(design, strategy)
            assert m.sl is not None and m.abandonment is not None
            e_sl, e_ab = _efficiency(m.sl, m.abandonment, (pooled.sl, pooled.abandonment),
                                     (split.sl, split.abandonment))
            x_sl = x_ab = None
            if exact is not None:
                x_pooled, x_split = exact
                x_sl, x_ab = _efficiency(m.sl, m.abandonment, (x_pooled.service_level, x_pooled.abandonment),
                                         (x_split.service_level, x_split.abandonment))
            out.append(Efficiency(design, strategy, m, e_sl, e_ab, x_sl, x_ab))
    return refs, out
