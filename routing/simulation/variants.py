"""Simulation-only routing variants, kept to reproduce the chain-design pooling study in docs/routing.md.

These are **not** production policies: they read the simulator's state directly (queue lengths, idle agents
per skill) and assume every call needs exactly one skill. They exist to answer one question with
measurements: can any rule other than the router's reach pooling efficiency ≥ 0.9 in the issue's chain
design? The production policy stays :class:`routing.router.Router` (``strategies.RouterStrategy``).

Variants (all compared on the same callers, against the same FCFS pooled/split references):

* ``reserve-rR-kK``: trunk reservation, non-work-conserving. An agent holding skills A and B takes a B call
  only if at least ``R`` other idle agents would still cover A, unless B already has more than ``K`` calls
  waiting; a freed agent whose other queue is empty likewise stays idle for it. When a queue passes ``K``
  waiting, an idle agent is pulled in at once (engine hook ``on_queued``), so no call is stranded.
* ``qir``: queue-and-idleness-ratio rules with equal ratios (Gurvich & Whitt): an arriving call goes to the
  agent group (same skill set) with the most idle agents; a freed agent serves its longest queue.
* ``slack-bB``: an arriving call goes to the agent whose other skill has the most idle-minus-waiting slack;
  a freed agent serves the queue maximising ``waiting + B x waiting of the queues competing for that queue's
  other agents`` (one step of look-ahead along the chain).
* ``sl-aware``: a freed agent takes the oldest call that can still be answered within 20 s, else the head
  of its longest queue. It games SL20 by reordering rather than pooling, so the study also reports it against
  pooled/split references run under the same rule.
* ``rollout``: one step of policy improvement over a router-like rule (:mod:`routing.simulation.rollout`);
  minutes per 10,000 calls, so only run when named (``--variants router rollout``).

:func:`preemptive_abandonment_bound` computes what no routing could beat in abandonment efficiency even if calls
could move between agents mid-call (valid when patience and handle time have the same mean, as in the issue).

Run: ``python -m routing.simulation.variants --calls 100000 --seed 1`` (table, bound, then one JSON line).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from routing.reports import Metrics
from routing.router import AgentView, Task
from routing.simulation.designs import build_scenario
from routing.simulation.engine import Simulation
from routing.simulation.strategies import GreedyStrategy, SimView, Strategy, make_strategy


def _queued(sim: SimView, queue: str) -> int:
    return len(sim.waiting[queue]) + len(sim.transfers[queue])


def _idle(sim: SimView, skill: str) -> int:
    return len(sim.idle_by_skill[skill])


def _head(sim: SimView, queue: str) -> Task | None:
    for task in sim.transfers[queue].values():
        return task
    for task in sim.waiting[queue].values():
        return task
    return None


def _other(agent: AgentView, skill: str) -> str:
    """The agent's other skill (two-skill agents); the skill itself for single-skill agents."""
    for s in agent.skills:
        if s != skill:
            return s
    return skill


def _skill(task: Task) -> str:
    return task.required_skills[0][0]


class _Variant:
    name = "variant"

    def learn(self, agent_id: str, reason: str, resolved: bool) -> None:
        return None

    def _longest(self, sim: SimView, agent: AgentView) -> str | None:
        best: tuple[int, float] | None = None
        chosen = None
        for q in agent.skills:
            head = _head(sim, q)
            if head is None:
                continue
            key = (_queued(sim, q), -head.arrived_at)
            if best is None or key > best:
                best, chosen = key, q
        return chosen


class ReservationStrategy(_Variant):
    def __init__(self, reserve: int, threshold: int):
        self.reserve, self.threshold = reserve, threshold
        self.name = f"reserve-r{reserve}-k{threshold}"

    def agent_for(self, sim: SimView, task: Task, now: float) -> str | None:
        skill = _skill(task)
        best: tuple[float, int] | None = None
        chosen = None
        for i, a in enumerate(sim.idle_by_skill[skill].values()):
            if a.agent_id in task.excluded_agents:
                continue
            other = _other(a, skill)
            if _idle(sim, other) - 1 < self.reserve and _queued(sim, skill) + 1 <= self.threshold:
                continue  # keep this agent for its other skill
            key = (-(_queued(sim, other) + 1.0) / (_idle(sim, other) + 1.0), -i)
            if best is None or key > best:
                best, chosen = key, a.agent_id
        return chosen

    def task_for(self, sim: SimView, agent: AgentView, now: float) -> Task | None:
        q = self._longest(sim, agent)
        if q is None:
            return None
        other = _other(agent, q)
        if _queued(sim, other) == 0 and _idle(sim, other) < self.reserve and _queued(sim, q) <= self.threshold:
            return None
        return _head(sim, q)

    def on_queued(self, sim: SimView, queue: str, now: float) -> tuple[Task, str] | None:
        if _queued(sim, queue) <= self.threshold:
            return None
        head = _head(sim, queue)
        for a in sim.idle_by_skill[queue].values():
            if head is not None and a.agent_id not in head.excluded_agents:
                return head, a.agent_id
        return None


class IdlenessRatioStrategy(_Variant):
    name = "qir"

    def agent_for(self, sim: SimView, task: Task, now: float) -> str | None:
        skill = _skill(task)
        best: tuple[int, int] | None = None
        chosen = None
        for i, a in enumerate(sim.idle_by_skill[skill].values()):
            if a.agent_id in task.excluded_agents:
                continue
            group = sum(1 for b in sim.idle_by_skill[_other(a, skill)].values() if skill in b.skills)
            key = (group, -i)
            if best is None or key > best:
                best, chosen = key, a.agent_id
        return chosen

    def task_for(self, sim: SimView, agent: AgentView, now: float) -> Task | None:
        q = self._longest(sim, agent)
        return None if q is None else _head(sim, q)


class SlackStrategy(_Variant):
    def __init__(self, beta: float):
        self.beta = beta
        self.name = f"slack-b{beta:g}"
        self._partners: dict[str, set[str]] | None = None

    def _competing(self, sim: SimView, queue: str, agent: AgentView) -> set[str]:
        """Skills that share agents with ``queue`` other than the freed agent's own."""
        if self._partners is None:
            partners: dict[str, set[str]] = {}
            assert isinstance(sim, Simulation)
            for spec in sim.scenario.agents:
                for s in spec.skills:
                    partners.setdefault(s, set()).update(x for x in spec.skills if x != s)
            self._partners = partners
        return self._partners.get(queue, set()) - set(agent.skills)

    def agent_for(self, sim: SimView, task: Task, now: float) -> str | None:
        skill = _skill(task)
        best: tuple[int, int] | None = None
        chosen = None
        for i, a in enumerate(sim.idle_by_skill[skill].values()):
            if a.agent_id in task.excluded_agents:
                continue
            other = _other(a, skill)
            key = (_idle(sim, other) - _queued(sim, other), -i)
            if best is None or key > best:
                best, chosen = key, a.agent_id
        return chosen

    def task_for(self, sim: SimView, agent: AgentView, now: float) -> Task | None:
        best: tuple[float, float] | None = None
        chosen = None
        for q in agent.skills:
            head = _head(sim, q)
            if head is None:
                continue
            competing = sum(_queued(sim, s) for s in self._competing(sim, q, agent))
            key = (_queued(sim, q) + self.beta * competing, -head.arrived_at)
            if best is None or key > best:
                best, chosen = key, head
        return chosen


class ServiceLevelAwareStrategy(_Variant):
    name = "sl-aware"

    def __init__(self, threshold: float = 20.0):
        self.threshold = threshold

    def agent_for(self, sim: SimView, task: Task, now: float) -> str | None:
        skill = _skill(task)
        best: tuple[float, int] | None = None
        chosen = None
        for i, a in enumerate(sim.idle_by_skill[skill].values()):
            if a.agent_id in task.excluded_agents:
                continue
            other = _other(a, skill)
            key = (-(_queued(sim, other) + 1.0) / (_idle(sim, other) + 1.0), -i)
            if best is None or key > best:
                best, chosen = key, a.agent_id
        return chosen

    def task_for(self, sim: SimView, agent: AgentView, now: float) -> Task | None:
        best: Task | None = None
        for q in agent.skills:
            for task in sim.waiting[q].values():  # arrival order: the first still in time is the oldest one
                if now - task.arrived_at < self.threshold:
                    if best is None or task.arrived_at < best.arrived_at:
                        best = task
                    break
        if best is not None:
            return best
        longest = self._longest(sim, agent)
        return None if longest is None else _head(sim, longest)


VARIANTS: dict[str, Callable[[], Strategy]] = {
    "greedy": GreedyStrategy,
    "router": lambda: make_strategy("router"),
    "qir": IdlenessRatioStrategy,
    "slack-b0": lambda: SlackStrategy(0.0),
    "slack-b0.6": lambda: SlackStrategy(0.6),
    "reserve-r1-k1": lambda: ReservationStrategy(1, 1),
    "reserve-r1-k2": lambda: ReservationStrategy(1, 2),
    "reserve-r2-k1": lambda: ReservationStrategy(2, 1),
    "reserve-r2-k4": lambda: ReservationStrategy(2, 4),
    "sl-aware": ServiceLevelAwareStrategy,
    "rollout": lambda: _rollout(),
}
SLOW_VARIANTS = ("rollout",)
"""Left out of the default run: rollout plays 2 × 256 futures at every choice (minutes for 10,000 calls)."""


def _rollout() -> Strategy:
    from routing.simulation.rollout import RolloutStrategy  # numpy, only when asked for

    return RolloutStrategy()


def _group_masks(design: str, types: int, agents: int, load: float, skills_per_agent: int) -> list[tuple[int, int]]:
    """(skill bit mask, number of agents) per group of agents with the same skills."""
    scenario = build_scenario(design, types=types, agents=agents, load=load, skills_per_agent=skills_per_agent)
    index = {t.name: i for i, t in enumerate(scenario.types)}
    counts: dict[int, int] = {}
    for spec in scenario.agents:
        mask = sum(1 << index[s] for s in spec.skills)
        counts[mask] = counts.get(mask, 0) + 1
    return sorted(counts.items())


def _poisson(rng: random.Random, mean: float) -> int:
    """Poisson by inversion (fine for the means of tens used here)."""
    k, p = 0, math.exp(-mean)
    cumulative, u = p, rng.random()
    while u > cumulative:
        k += 1
        p *= mean / k
        cumulative += p
        if p == 0.0:
            break
    return k


def preemptive_abandonment_bound(
    design: str = "chain", *, types: int = 6, agents: int = 90, load: float = 84.0, skills_per_agent: int = 2,
    samples: int = 100_000, seed: int = 1,
) -> float:
    """Abandonment pooling efficiency that no routing could beat even moving calls between agents mid-call,
    when mean patience equals mean handle time (θ = μ) and handle times do not depend on reason or agent.

    Then every caller leaves at rate μ whether waiting or served, so the callers of each reason present form
    an M/M/∞ process, Poisson(load / types) in steady state, whatever the routing; abandonment is
    ``1 - E[busy agents] / load``, and busy agents can never exceed the maximum matching of the callers
    present to the agents (max-flow = min cut: min over sets S of reasons of the callers outside S plus the
    agents trained in any reason of S). Pooled and split reach their matching with FCFS, so the bound is
    ``(E[match design] - E[match split]) / (E[match pooled] - E[match split])`` over the same samples.
    """
    if types > 16:
        raise ValueError("the cut enumeration is exponential in the number of reasons; at most 16")
    rng = random.Random(seed)
    mean = load / types
    full = (1 << types) - 1
    designs = {name: _group_masks(name, types, agents, load, skills_per_agent)
               for name in ("pooled", "split", design)}
    capacity = {name: [sum(c for m, c in groups if m & subset) for subset in range(full + 1)]
                for name, groups in designs.items()}
    totals = dict.fromkeys(designs, 0)
    for _ in range(samples):
        present = [_poisson(rng, mean) for _ in range(types)]
        inside = [0] * (full + 1)  # callers of the reasons in each subset
        for subset in range(1, full + 1):
            low = subset & -subset
            inside[subset] = inside[subset ^ low] + present[low.bit_length() - 1]
        everyone = inside[full]
        for name, cap in capacity.items():
            totals[name] += min(everyone - inside[subset] + cap[subset] for subset in range(full + 1))
    pooled, split, chosen = totals["pooled"], totals["split"], totals[design]
    return (chosen - split) / (pooled - split) if pooled != split else float("nan")


@dataclass(frozen=True)
class StudyRow:
    variant: str
    references: str
    """``fcfs`` (the issue's pooled/split references) or ``same-policy`` (references run under the variant)."""
    metrics: Metrics
    efficiency_sl: float
    efficiency_abandonment: float


def _efficiency(m: Metrics, pooled: Metrics, split: Metrics) -> tuple[float, float]:
    assert m.sl is not None and pooled.sl is not None and split.sl is not None
    assert m.abandonment is not None and pooled.abandonment is not None and split.abandonment is not None
    return ((m.sl - split.sl) / (pooled.sl - split.sl),
            (split.abandonment - m.abandonment) / (split.abandonment - pooled.abandonment))


def study(
    names: Sequence[str], *, calls: int = 100_000, seed: int = 1, design: str = "chain",
    types: int = 6, agents: int = 90, load: float = 84.0, aht: float = 300.0, patience: float | None = 300.0,
) -> tuple[dict[str, Metrics], list[StudyRow]]:
    """Efficiency of each variant in ``design``; sl-aware also against references run under its own rule."""

    def run(design_name: str, make: Callable[[], Strategy]) -> Metrics:
        scenario = build_scenario(design_name, types=types, agents=agents, load=load, aht=aht, patience=patience)
        return Simulation(scenario, make(), calls=calls, seed=seed).run().report().overall

    refs = {"pooled": run("pooled", GreedyStrategy), "split": run("split", GreedyStrategy)}
    rows = []
    for name in names:
        make = VARIANTS[name]
        m = run(design, make)
        rows.append(StudyRow(name, "fcfs", m, *_efficiency(m, refs["pooled"], refs["split"])))
        if name == "sl-aware":
            own_pooled, own_split = run("pooled", make), run("split", make)
            rows.append(StudyRow(name, "same-policy", m, *_efficiency(m, own_pooled, own_split)))
    return refs, rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--design", choices=("chain", "balanced"), default="chain")
    parser.add_argument("--variants", nargs="*", choices=sorted(VARIANTS),
                        default=[v for v in VARIANTS if v not in SLOW_VARIANTS])
    parser.add_argument("--bound-samples", type=int, default=100_000,
                        help="samples for the preemptive abandonment bound (0: skip it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    bound = (preemptive_abandonment_bound(args.design, samples=args.bound_samples, seed=args.seed)
             if args.bound_samples > 0 else None)
    refs, rows = study(args.variants, calls=args.calls, seed=args.seed, design=args.design)
    for name, m in refs.items():
        print(f"{name:<10} SL20 {m.sl:.4f}  abandonment {m.abandonment:.4f}")
    print(f"{'variant':<16}{'references':<13}{'SL20':>8}{'aband':>8}{'eff SL':>8}{'eff ab':>8}")
    for r in rows:
        print(f"{r.variant:<16}{r.references:<13}{r.metrics.sl or 0:>8.4f}{r.metrics.abandonment or 0:>8.4f}"
              f"{r.efficiency_sl:>8.3f}{r.efficiency_abandonment:>8.3f}")
    if bound is not None:
        print(f"abandonment efficiency bound with calls moved between agents mid-call (θ = μ): {bound:.4f}")
    print(json.dumps({"design": args.design, "calls": args.calls, "seed": args.seed,
                      "preemptive_abandonment_bound": bound,
                      "wall_seconds": round(time.perf_counter() - started, 1),
                      "references": {k: {"sl20": v.sl, "abandonment": v.abandonment} for k, v in refs.items()},
                      "rows": [{"variant": r.variant, "references": r.references, "sl20": r.metrics.sl,
                                "abandonment": r.metrics.abandonment, "efficiency_sl": r.efficiency_sl,
                                "efficiency_abandonment": r.efficiency_abandonment} for r in rows]},
                     sort_keys=True))


if __name__ == "__main__":
    main()
