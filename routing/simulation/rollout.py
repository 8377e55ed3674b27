"""One step of policy improvement (rollout) for the chain study: could ANY routing choice do much better?

The pooling study (docs/routing.md) found every work-conserving rule tried for the chain design within
±0.01 of the router. That could mean the rules share a blind spot. Rollout is the textbook test: at every
real choice (which idle group takes an arriving call; which queue a freed agent serves) try each option,
play the future forward many times under a fixed base rule from the state each option leaves, and take
the option whose futures go best. By the policy improvement theorem this is at least as good as the base
rule (up to the noise of the estimate); if it is *not* clearly better, the base rule is close to a fixed
point of policy iteration, i.e. close to the best non-preemptive routing for the design.

Why a count-level model is exact here: in the queueing designs every call needs one skill and handle
times are exponential with one mean whatever the reason or agent, so the future depends only on idle
agents per group (agents with the same skills) and callers waiting per reason, not on who serves what.
With patience exponential, abandonment is θ × ∫(callers waiting) dt, so the futures are scored by the area
under the queue over ``horizon`` seconds. Futures are uniformised at one fixed event rate and the options
of one decision replay the same random numbers event by event (common random numbers), so the estimate
of the *difference* between options is sharp even when each future is noisy.

The base rule inside the futures is a count-level stand-in for the router: an arriving call goes to the
eligible group whose other skills have the most idle cover minus waiting callers (more idle agents break
ties); a freed agent serves its longest queue. It scores like the router in the engine (docs/routing.md).

Simulation-only, like :mod:`routing.simulation.variants`; needs numpy. Run through the variants study:
``python -m routing.simulation.variants --variants router rollout --calls 20000 --seed 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from routing.router import AgentView, Task
from routing.simulation.model import Scenario
from routing.simulation.strategies import SimView


@dataclass(frozen=True)
class CountModel:
    """Groups of agents with the same skills, and the rates that drive them."""

    groups: tuple[frozenset[str], ...]
    sizes: np.ndarray
    """Agents per group, shape (G,)."""
    cover: np.ndarray
    """cover[g, t]: group g is trained in reason t, shape (G, T) of 0/1."""
    reasons: tuple[str, ...]
    """Call types (= queues), in scenario order."""
    arrival: np.ndarray
    """Calls per second per reason, shape (T,)."""
    service_rate: float
    patience_rate: float

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> CountModel:
        if scenario.handle_time != "exponential" or not scenario.patience:
            raise ValueError("the count model needs exponential handle times and exponential patience")
        if any(len(t.requirements) != 1 for t in scenario.types) or scenario.intraday or scenario.wrap_up:
            raise ValueError("the count model needs one skill per call type, flat arrivals and no wrap-up")
        reasons = tuple(t.name for t in scenario.types)
        skill_of = [t.requirements[0][0] for t in scenario.types]
        counts: dict[frozenset[str], int] = {}
        for spec in scenario.agents:
            skills = frozenset(spec.skills)
            counts[skills] = counts.get(skills, 0) + 1
        groups = tuple(sorted(counts, key=sorted))
        cover = np.array([[1 if s in g else 0 for s in skill_of] for g in groups], dtype=np.int64)
        return cls(
            groups=groups,
            sizes=np.array([counts[g] for g in groups], dtype=np.int64),
            cover=cover,
            reasons=reasons,
            arrival=np.array([t.arrival_rate for t in scenario.types], dtype=float),
            service_rate=1.0 / scenario.aht,
            patience_rate=1.0 / scenario.patience,
        )


def future_queue_area(
    model: CountModel, idle: np.ndarray, waiting: np.ndarray, *, horizon: float, samples: int, seed: int,
    queue_cap: int = 80,
) -> float:
    """Mean of ∫ (callers waiting) dt over ``horizon`` s from this state, under the base rule.

    Uniformised at ``arrivals + μ·agents + θ·queue_cap`` events per second: an event is an arrival, the end
    of the call in one agent *slot* (nothing if the slot is idle) or the departure of one waiting *slot*
    (nothing if fewer wait), so two starting states replay the same events. A total queue above
    ``queue_cap`` would under-count abandonment; at the study's loads it stays far below (~10)."""
    rng = np.random.default_rng(seed)
    cover, sizes = model.cover, model.sizes
    groups, types = cover.shape
    agents = int(sizes.sum())
    lam = float(model.arrival.sum())
    rate = lam + model.service_rate * agents + model.patience_rate * queue_cap
    expected = rate * horizon
    steps = int(expected + 8.0 * math.sqrt(expected)) + 8
    times = np.cumsum(rng.exponential(1.0 / rate, size=(samples, steps)), axis=1)
    draws = rng.random((samples, steps))
    p_arrival = lam / rate
    p_end = (lam + model.service_rate * agents) / rate
    type_edges = np.cumsum(model.arrival) / lam
    slot_group = np.repeat(np.arange(groups), sizes)
    slot_offset = np.arange(agents) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    idle_now = np.tile(idle.astype(np.int64), (samples, 1))
    queue = np.tile(waiting.astype(np.int64), (samples, 1))
    rows = np.arange(samples)
    area = np.zeros(samples)
    previous = np.zeros(samples)
    cover_t = cover.T.astype(bool)
    for step in range(steps):
        at = np.minimum(times[:, step], horizon)
        area += queue.sum(axis=1) * (at - previous)
        previous = at
        live = times[:, step] < horizon
        if not live.any():
            break
        u = draws[:, step]
        arrivals = rows[live & (u < p_arrival)]
        if arrivals.size:
            reason = np.minimum(np.searchsorted(type_edges, u[arrivals] / p_arrival, side="right"), types - 1)
            idle_k = idle_now[arrivals]
            slack = idle_k @ cover - queue[arrivals]  # (n, T): idle cover minus waiting, per reason
            own = slack[np.arange(arrivals.size), reason]
            score = slack @ cover.T - own[:, None] * cover_t[reason]  # other skills' slack, per group
            eligible = cover_t[reason] & (idle_k > 0)
            key = np.where(eligible, score * 1000.0 + idle_k, -np.inf)
            chosen = key.argmax(axis=1)
            served = eligible.any(axis=1)
            idle_now[arrivals[served], chosen[served]] -= 1
            queue[arrivals[~served], reason[~served]] += 1
        ends = rows[live & (u >= p_arrival) & (u < p_end)]
        if ends.size:
            slot = np.minimum(((u[ends] - p_arrival) / (p_end - p_arrival) * agents).astype(np.int64), agents - 1)
            group = slot_group[slot]
            busy = slot_offset[slot] < sizes[group] - idle_now[ends, group]
            ends, group = ends[busy], group[busy]
            mine = queue[ends] * cover[group]
            longest = mine.argmax(axis=1)
            takes = mine.max(axis=1) > 0
            queue[ends[takes], longest[takes]] -= 1
            idle_now[ends[~takes], group[~takes]] += 1
        leaves = rows[live & (u >= p_end)]
        if leaves.size:
            slot = ((u[leaves] - p_end) / (1.0 - p_end) * queue_cap).astype(np.int64)
            real = slot < queue[leaves].sum(axis=1)
            leaves, slot = leaves[real], slot[real]
            which = (np.cumsum(queue[leaves], axis=1) > slot[:, None]).argmax(axis=1)
            queue[leaves, which] -= 1
    return float(area.mean())


class RolloutStrategy:
    """Rollout over the count-level base rule, for the engine (``variants`` name ``rollout``)."""

    def __init__(self, samples: int = 256, horizon: float = 200.0, seed: int = 7):
        self.name = "rollout"
        self.samples, self.horizon, self.seed = samples, horizon, seed
        self.decisions = 0
        self._model: CountModel | None = None

    def learn(self, agent_id: str, reason: str, resolved: bool) -> None:
        return None

    def _state(self, sim: SimView) -> tuple[CountModel, np.ndarray, np.ndarray]:
        if self._model is None:
            scenario = getattr(sim, "scenario", None)
            if not isinstance(scenario, Scenario):
                raise TypeError("rollout needs the engine's Simulation (it reads the scenario)")
            self._model = CountModel.from_scenario(scenario)
        model = self._model
        index = {g: i for i, g in enumerate(model.groups)}
        idle = np.zeros(len(model.groups), dtype=np.int64)
        seen: set[str] = set()
        for agents in sim.idle_by_skill.values():
            for view in agents.values():
                if view.agent_id not in seen:
                    seen.add(view.agent_id)
                    idle[index[frozenset(view.skills)]] += 1
        waiting = np.array([len(sim.waiting[r]) + len(sim.transfers[r]) for r in model.reasons], dtype=np.int64)
        return model, idle, waiting

    def _cost(self, model: CountModel, idle: np.ndarray, waiting: np.ndarray) -> float:
        # The same seed for every option of one decision: common random numbers.
        return future_queue_area(model, idle, waiting, horizon=self.horizon, samples=self.samples,
                                 seed=self.seed * 1_000_003 + self.decisions)

    def agent_for(self, sim: SimView, task: Task, now: float) -> str | None:
        skill = task.required_skills[0][0]
        first_by_group: dict[frozenset[str], str] = {}
        for view in sim.idle_by_skill.get(skill, {}).values():  # oldest idle first
            if view.agent_id not in task.excluded_agents:
                first_by_group.setdefault(frozenset(view.skills), view.agent_id)
        if len(first_by_group) <= 1:
            return next(iter(first_by_group.values()), None)
        model, idle, waiting = self._state(sim)
        self.decisions += 1
        best: tuple[float, str] | None = None
        for group, agent_id in first_by_group.items():
            after = idle.copy()
            after[model.groups.index(group)] -= 1
            cost = self._cost(model, after, waiting)
            if best is None or cost < best[0]:
                best = (cost, agent_id)
        assert best is not None
        return best[1]

    def task_for(self, sim: SimView, agent: AgentView, now: float) -> Task | None:
        heads: list[Task] = []
        for skill in agent.skills:
            for queue in sim.queues_for_skill.get(skill, ()):
                for pool in (sim.transfers[queue], sim.waiting[queue]):
                    head = next((t for t in pool.values() if agent.agent_id not in t.excluded_agents), None)
                    if head is not None:
                        heads.append(head)
                        break
        if len(heads) <= 1:
            return heads[0] if heads else None
        model, idle, waiting = self._state(sim)
        self.decisions += 1
        best: tuple[float, Task] | None = None
        for head in heads:
            after = waiting.copy()
            after[model.reasons.index(head.queue)] -= 1
            cost = self._cost(model, idle, after)
            if best is None or cost < best[0]:
                best = (cost, head)
        assert best is not None
        return best[1]
