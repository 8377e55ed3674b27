"""Who takes which call in the simulator: the real router, and the baselines it is measured against.

Every strategy answers two questions the engine asks: a call arrived (or was transferred), which idle agent
takes it, if any? An agent became free, which waiting call does it take, if any? ``router`` and
``skills-match`` answer through :class:`routing.router.Router` itself: the same code that runs in production.

Asterisk-style baselines model ``app_queue`` with one queue per reason whose members are the agents holding
that skill at any level (Asterisk knows membership, not proficiency or results). The member strategies differ
only when several members are idle: ``ringall`` rings them all and the first to pick up wins (modelled as a
uniform choice, ringing time ignored), ``random``, ``leastrecent`` (longest since their last call),
``fewestcalls``, ``rrmemory`` (round robin remembering the last member), ``linear`` (always in member order).
A freed member takes the longest-waiting call among its queues (transfers first), which is kind to the baselines.
``greedy`` is the textbook policy of the issue: longest-idle eligible agent; a freed agent takes the
longest-waiting call among its skills.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Protocol

from routing.resolution import ResolutionModel
from routing.router import AgentView, Router, Task, Weights


class SimView(Protocol):
    """What the engine lets a strategy see (all ordered oldest first)."""

    idle_by_skill: dict[str, dict[str, AgentView]]
    waiting: dict[str, dict[str, Task]]
    transfers: dict[str, dict[str, Task]]
    queues_for_skill: dict[str, tuple[str, ...]]
    demand: Mapping[str, float]
    calls_taken: dict[str, int]


class Strategy(Protocol):
    name: str

    def agent_for(self, sim: SimView, task: Task, now: float) -> str | None: ...

    def task_for(self, sim: SimView, agent: AgentView, now: float) -> Task | None: ...

    def learn(self, agent_id: str, reason: str, resolved: bool) -> None: ...


ASTERISK_STRATEGIES = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear")
STRATEGIES = ("router", "skills-match", "greedy", *ASTERISK_STRATEGIES)


def _candidates(sim: SimView, task: Task) -> Iterable[AgentView]:
    """Idle agents holding every required skill's name (levels are checked by whoever decides)."""
    required = task.required_skills
    if len(required) == 1:
        return sim.idle_by_skill.get(required[0][0], {}).values()
    pools = [sim.idle_by_skill.get(s, {}) for s, _ in required]
    smallest = min(pools, key=len)
    return [a for a in smallest.values() if all(s in a.skills for s, _ in required)]


def _waiting_for(sim: SimView, agent: AgentView) -> list[Task]:
    """Heads of the agent's queues. Within one simulated queue every call has the same requirements, reason
    and priority class, so the router's score only grows with waiting time and the head dominates the rest:
    passing heads is exact, and keeps a decision O(queues) even when thousands wait."""
    heads: list[Task] = []
    for q in {q for s in agent.skills for q in sim.queues_for_skill.get(s, ())}:
        for task in sim.transfers[q].values():
            if agent.agent_id not in task.excluded_agents:
                heads.append(task)
                break
        for task in sim.waiting[q].values():
            heads.append(task)
            break
    return heads


def _oldest_head(sim: SimView, agent: AgentView) -> Task | None:
    """Longest-waiting call among the agent's queues; transferred calls first."""
    queues = {q for s in agent.skills for q in sim.queues_for_skill.get(s, ())}
    for source in (sim.transfers, sim.waiting):
        best: Task | None = None
        for q in queues:
            for task in source[q].values():
                if agent.agent_id in task.excluded_agents:
                    continue
                if all(s in agent.skills for s, _ in task.required_skills) and (
                    best is None or task.arrived_at < best.arrived_at
                ):
                    best = task
                break  # dicts are in arrival order; heads only (skipping an excluded head is rare)
        if best is not None:
            return best
    return None


class RouterStrategy:
    """The production router, fed from the simulator's live state."""

    def __init__(self, name: str = "router", weights: Weights | None = None, learn: bool = True):
        self.name = name
        self.model = ResolutionModel()
        self.weights = weights or Weights()
        self.router = Router((), self.model if self.weights.resolution else None, self.weights, explain=False)
        self._learn = learn

    def agent_for(self, sim: SimView, task: Task, now: float) -> str | None:
        decision = self.router.best_agent_for(task, _candidates(sim, task), now, sim.demand)
        return decision.agent_id if decision else None

    def task_for(self, sim: SimView, agent: AgentView, now: float) -> Task | None:
        decision = self.router.best_task_for(agent, _waiting_for(sim, agent), now, sim.demand)
        if decision is None:
            return None
        for q in sim.queues_for_skill.get(next(iter(agent.skills)), ()):  # fast path, then full search
            found = sim.transfers[q].get(decision.call_id) or sim.waiting[q].get(decision.call_id)
            if found is not None:
                return found
        for q in sim.waiting:
            found = sim.transfers[q].get(decision.call_id) or sim.waiting[q].get(decision.call_id)
            if found is not None:
                return found
        raise LookupError(decision.call_id)

    def learn(self, agent_id: str, reason: str, resolved: bool) -> None:
        if self._learn:
            self.model.observe(agent_id, reason, resolved)


class GreedyStrategy:
    name = "greedy"

    def agent_for(self, sim: SimView, task: Task, now: float) -> str | None:
        for agent in _candidates(sim, task):
            if agent.agent_id not in task.excluded_agents:
                return agent.agent_id  # insertion order: the first is the longest idle
        return None

    def task_for(self, sim: SimView, agent: AgentView, now: float) -> Task | None:
        return _oldest_head(sim, agent)

    def learn(self, agent_id: str, reason: str, resolved: bool) -> None:
        return None


class AsteriskStrategy:
    """``app_queue`` member selection over skills-blind queues (see module docstring)."""

    def __init__(self, name: str, seed: int):
        if name not in ASTERISK_STRATEGIES:
            raise ValueError(f"unknown Asterisk strategy {name!r}; choose one of {', '.join(ASTERISK_STRATEGIES)}")
        self.name = name
        self.rng = random.Random(seed ^ 0x5EED)
        self.last: dict[str, str] = {}

    def agent_for(self, sim: SimView, task: Task, now: float) -> str | None:
        members = [a for a in _candidates(sim, task) if a.agent_id not in task.excluded_agents]
        if not members:
            return None
        if self.name in ("ringall", "random"):
            return self.rng.choice(members).agent_id
        if self.name == "leastrecent":
            return members[0].agent_id
        if self.name == "fewestcalls":
            return min(members, key=lambda a: (sim.calls_taken[a.agent_id], a.agent_id)).agent_id
        ordered = sorted(a.agent_id for a in members)
        if self.name == "linear":
            return ordered[0]
        last = self.last.get(task.queue, "")
        chosen = next((a for a in ordered if a > last), ordered[0])
        self.last[task.queue] = chosen
        return chosen

    def task_for(self, sim: SimView, agent: AgentView, now: float) -> Task | None:
        task = _oldest_head(sim, agent)
        if task is not None and self.name == "rrmemory":
            self.last[task.queue] = agent.agent_id
        return task

    def learn(self, agent_id: str, reason: str, resolved: bool) -> None:
        return None


def make_strategy(name: str, seed: int = 1, weights: Weights | None = None) -> Strategy:
    """A strategy by name; ``ValueError`` lists the choices."""
    if name == "router":
        return RouterStrategy("router", weights)
    if name == "skills-match":
        return RouterStrategy("skills-match", Weights(resolution=0.0), learn=False)
    if name == "greedy":
        return GreedyStrategy()
    if name in ASTERISK_STRATEGIES:
        return AsteriskStrategy(name, seed)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
