"""Pooling efficiency of a flexible design: how much of the full-pooling gain a routing policy realises.

    efficiency_SL   = (SL_design − SL_split)     / (SL_pooled − SL_split)
    efficiency_aband = (ab_split − ab_design)    / (ab_split − ab_pooled)

The pooled and split references are simulated in the same run with the same callers (same seed, common
random numbers) under the same policy; in single-skill designs with one queue per agent group every policy
here reduces to FCFS, so the references are the M/M/n+M values (checked against Erlang A in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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

    def as_dict(self) -> dict[str, Any]:
        return {"design": self.design, "strategy": self.strategy, "efficiency_sl": self.sl,
                "efficiency_abandonment": self.abandonment, "sl20": self.metrics.sl,
                "abandonment": self.metrics.abandonment, "asa": self.metrics.asa}


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
    out = []
    for design in designs:
        for strategy in strategies:
            m = run(design, strategy)
            assert m.sl is not None and m.abandonment is not None
            e_sl = (m.sl - split.sl) / (pooled.sl - split.sl) if pooled.sl != split.sl else float("nan")
            gap = split.abandonment - pooled.abandonment
            e_ab = (split.abandonment - m.abandonment) / gap if gap else float("nan")
            out.append(Efficiency(design, strategy, m, e_sl, e_ab))
    return refs, out
