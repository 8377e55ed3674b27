"""The router: which agent takes which waiting call, and why. Pure: plain data in, decisions out.

Policy, in order (docs/routing.md has the full story and the measured effect of each term):

1. Hard requirements (``routing.skills``): agent available, speaks the language, has every required skill at
   the minimum level, relaxed per queue as the call waits. A repeat caller waits up to the queue's
   ``preferred_agent_timeout`` for the agent they spoke to last time.
2. Among eligible agents, a weighted score whose weights make it read almost lexicographically:
   ``resolution`` (learned P(first-contact resolution) for agent x reason) dominates, then proficiency, then a
   ``flexibility`` penalty (an agent whose *other* skills are in demand right now is kept for them), then
   longest idle.
3. When an agent frees up, the waiting call with the highest aged priority wins (priority + waited/aging, so
   nothing starves), nudged by the agent's resolution probability for it and by how hard its skill is pressed.

Every decision carries a :class:`Why`: the rules matched, the relaxation step in force, the score terms.
Times are seconds on one clock chosen by the caller (epoch seconds in production, simulated seconds in the
simulator); ``now - task.arrived_at`` is the wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from callcentre.domain.agent_state import AgentState
from routing.resolution import ResolutionModel
from routing.skills import QueuePolicy, RelaxationStep, Requirement, check_requirements

_AVAILABLE = AgentState.AVAILABLE


@dataclass(frozen=True, slots=True)
class Task:
    """A call waiting for an agent."""

    call_id: str
    queue: str
    required_skills: tuple[Requirement, ...] = ()
    priority: int = 0
    language: str = ""
    """Empty: any language."""
    arrived_at: float = 0.0
    """When the call joined the queue (seconds, same clock as ``now``); transfers keep the original time."""
    reason: str = ""
    """Why the customer calls; keys the resolution model. Defaults to the queue name when empty."""
    customer_id: str | None = None
    preferred_agent_id: str | None = None
    """The agent this repeat caller spoke to last time for the same reason (the dispatcher clears it if that
    agent is logged out)."""
    context: Mapping[str, str] = field(default_factory=dict)
    excluded_agents: frozenset[str] = frozenset()
    """Agents who must not get this call (the one who just transferred it, one who let it ring out)."""

    def waited(self, now: float) -> float:
        return max(0.0, now - self.arrived_at)

    @property
    def resolution_key(self) -> str:
        return self.reason or self.queue


@dataclass(frozen=True, slots=True)
class AgentView:
    """What the router needs to know about an agent."""

    agent_id: str
    skills: Mapping[str, int]
    """Skill name → proficiency 1-5."""
    languages: frozenset[str] = frozenset()
    """Empty: language not recorded, matches any call."""
    state: AgentState = AgentState.AVAILABLE
    idle_since: float = 0.0


@dataclass(frozen=True, slots=True)
class Weights:
    """Score weights. Defaults make resolution dominate (0.01 of probability = 1 point)."""

    resolution: float = 100.0
    """Per unit of P(first-contact resolution); 0 switches resolution scoring off ("skills-match-only")."""
    proficiency: float = 2.0
    """Per level of the lowest required skill."""
    flexibility: float = 20.0
    """Penalty per unit of demand pressure on the agent's other skills; 0 switches it off."""
    idle: float = 1.0
    """Longest idle: up to this many points for 10 minutes idle."""
    wait: float = 100.0
    """Task choice: per aged priority point (one point per ``aging_seconds`` of waiting)."""
    pressure: float = 50.0
    """Task choice: per unit of demand pressure on the task's skill."""


@dataclass(frozen=True, slots=True)
class Why:
    """Readable account of one decision, stored with it and shown in the console."""

    rules: tuple[str, ...]
    relaxation: str | None
    terms: tuple[tuple[str, float], ...]
    score: float
    candidates: int
    """How many eligible alternatives there were (including the winner)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rules": list(self.rules),
            "relaxation": self.relaxation,
            "terms": {name: round(value, 4) for name, value in self.terms},
            "score": round(self.score, 4),
            "candidates": self.candidates,
        }

    def summary(self) -> str:
        parts = list(self.rules)
        if self.relaxation:
            parts.append(f"relaxed ({self.relaxation})")
        parts.append(", ".join(f"{name} {value:.2f}" for name, value in self.terms))
        parts.append(f"best of {self.candidates}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Decision:
    call_id: str
    agent_id: str
    why: Why


Demand = Mapping[str, float]
"""Skill → pressure right now (see :func:`skill_pressure`); empty mapping when unknown."""


def skill_pressure(waiting: Mapping[str, int], idle: Mapping[str, int]) -> dict[str, float]:
    """Pressure of each skill: ``(waiting calls + 1) / (idle agents with it + 1)``.

    Above 1 the skill is short right now; below 1 it has spare agents. Both inputs are counts per skill.
    """
    skills = set(waiting) | set(idle)
    return {s: (waiting.get(s, 0) + 1.0) / (idle.get(s, 0) + 1.0) for s in skills}


_NO_DEMAND: Mapping[str, float] = {}


def _first(item: tuple[float, Task]) -> float:
    return item[0]


class Router:
    """Stateless apart from its configuration; share one instance between threads freely."""

    def __init__(
        self,
        policies: Mapping[str, QueuePolicy] | Iterable[QueuePolicy] = (),
        resolution_model: ResolutionModel | None = None,
        weights: Weights | None = None,
        explain: bool = True,
    ):
        """``explain=False`` skips building the readable :class:`Why` (the simulator, where it is never read):
        decisions then carry only the score."""
        items = policies.values() if isinstance(policies, Mapping) else policies
        self.policies: dict[str, QueuePolicy] = {p.name: p for p in items}
        self.resolution = resolution_model
        self.weights = weights or Weights()
        self.explain = explain

    def policy(self, queue: str) -> QueuePolicy:
        found = self.policies.get(queue)
        if found is None:
            found = self.policies[queue] = QueuePolicy(queue)
        return found

    # -- a new call (or a transfer) looks for an agent ---------------------------------------------------

    def best_agent_for(
        self, task: Task, agents: Iterable[AgentView], now: float, demand: Demand = _NO_DEMAND
    ) -> Decision | None:
        """The best available agent for ``task``, or None if it must wait."""
        policy = self.policy(task.queue)
        waited = task.waited(now)
        step_index = policy.step_at(waited) if policy.relaxation else -1
        step = policy.relaxation[step_index] if step_index >= 0 else None
        preferred = task.preferred_agent_id if waited < policy.preferred_agent_timeout else None
        required = task.required_skills
        language = task.language
        w = self.weights
        model = self.resolution if w.resolution else None
        reason = task.resolution_key
        flex = w.flexibility if demand else 0.0
        required_names = {s for s, _ in required} if flex else set()
        excluded = task.excluded_agents
        best: AgentView | None = None
        best_score = float("-inf")
        best_level = 0
        count = 0
        for agent in agents:
            if agent.state is not _AVAILABLE:
                continue
            if preferred is not None and agent.agent_id != preferred:
                continue
            if excluded and agent.agent_id in excluded:
                continue
            if language and agent.languages and language not in agent.languages:
                continue
            level = check_requirements(agent.skills, required, step)
            if not level:
                continue
            count += 1
            score = w.proficiency * level
            if model is not None:
                score += w.resolution * model.probability(agent.agent_id, reason)
            if flex:
                score -= flex * sum(
                    demand.get(s, 0.0) for s in agent.skills if s not in required_names
                )
            idle = now - agent.idle_since
            score += w.idle * (idle / 600.0 if idle < 600.0 else 1.0)
            if score > best_score:
                best, best_score, best_level = agent, score, level
        if best is None:
            return None
        if not self.explain:
            return Decision(task.call_id, best.agent_id, Why((), None, (), best_score, count))
        return Decision(
            task.call_id,
            best.agent_id,
            self._why(task, best, now, best_level, step, preferred is not None, demand, count, None),
        )

    # -- a freed agent looks for a call ------------------------------------------------------------------

    def best_task_for(
        self, agent: AgentView, tasks: Iterable[Task], now: float, demand: Demand = _NO_DEMAND
    ) -> Decision | None:
        """The waiting call ``agent`` should take next, or None if none fits.

        With many calls waiting they are visited in order of aged priority and the scan stops once no later
        call could outscore the best so far (the other terms are bounded), so a freed agent rarely looks at
        more than the first few eligible calls. ``Why.candidates`` then counts the eligible calls examined.
        """
        if agent.state is not _AVAILABLE:
            return None
        w = self.weights
        model = self.resolution if w.resolution else None
        best: Task | None = None
        best_score = float("-inf")
        best_level = 0
        best_step: RelaxationStep | None = None
        best_prio = 0.0
        count = 0
        items = tasks if isinstance(tasks, list | tuple) else list(tasks)
        ordered: Iterable[tuple[float, Task]]
        bound = float("inf")
        if w.wait > 0 and len(items) > 32:
            policies = self.policies
            keyed: list[tuple[float, Task]] = []
            for t in items:
                pol = policies.get(t.queue) or self.policy(t.queue)
                keyed.append((t.priority + pol.priority + (now - t.arrived_at) / pol.aging_seconds, t))
            keyed.sort(key=_first, reverse=True)
            ordered = keyed
            extra = w.proficiency * 5 + (w.resolution if model is not None else 0.0)
            if w.pressure and demand:
                extra += w.pressure * max(demand.values(), default=0.0)
            bound = extra
        else:
            ordered = [(0.0, t) for t in items]
        for aged_hint, task in ordered:
            if w.wait * aged_hint + bound <= best_score:
                break
            language = task.language
            if language and agent.languages and language not in agent.languages:
                continue
            if task.excluded_agents and agent.agent_id in task.excluded_agents:
                continue
            policy = self.policy(task.queue)
            waited = now - task.arrived_at
            pref = task.preferred_agent_id
            waits_for_other = pref is not None and pref != agent.agent_id
            if waits_for_other and waited < policy.preferred_agent_timeout:
                continue
            step_index = policy.step_at(waited) if policy.relaxation else -1
            step = policy.relaxation[step_index] if step_index >= 0 else None
            level = check_requirements(agent.skills, task.required_skills, step)
            if not level:
                continue
            count += 1
            prio = task.priority + policy.priority + waited / policy.aging_seconds
            score = w.wait * prio + w.proficiency * level
            if model is not None:
                score += w.resolution * model.probability(agent.agent_id, task.resolution_key)
            if w.pressure and demand:
                score += w.pressure * max((demand.get(s, 0.0) for s, _ in task.required_skills), default=0.0)
            if score > best_score:
                best, best_score, best_level, best_step, best_prio = task, score, level, step, prio
        if best is None:
            return None
        if not self.explain:
            return Decision(best.call_id, agent.agent_id, Why((), None, (), best_score, count))
        preferred = best.preferred_agent_id == agent.agent_id
        why = self._why(best, agent, now, best_level, best_step, preferred, demand, count, best_prio)
        return Decision(best.call_id, agent.agent_id, why)

    # -- batch matching ------------------------------------------------------------------------------------

    def assign(
        self, tasks: Sequence[Task], agents: Sequence[AgentView], now: float, demand: Demand = _NO_DEMAND
    ) -> list[Decision]:
        """Match waiting calls to available agents: each agent ≤ 1 call, each call ≤ 1 agent.

        Calls are served in order of aged priority (the same order a freed agent would use), each taking its
        best remaining agent. Agents are indexed by skill so a call only scans agents that could qualify.
        """
        free: dict[str, AgentView] = {a.agent_id: a for a in agents if a.state is _AVAILABLE}
        if not free or not tasks:
            return []
        by_skill: dict[str, list[AgentView]] = {}
        for a in free.values():
            for skill in a.skills:
                by_skill.setdefault(skill, []).append(a)

        def aged(task: Task) -> tuple[float, float]:
            policy = self.policy(task.queue)
            waited = task.waited(now)
            return (-(task.priority + policy.priority + waited / policy.aging_seconds), task.arrived_at)

        decisions: list[Decision] = []
        for task in sorted(tasks, key=aged):
            if not free:
                break
            policy = self.policy(task.queue)
            step_index = policy.step_at(task.waited(now))
            widened = step_index >= 0 and policy.relaxation[step_index].any_agent_with_language
            if task.required_skills and not widened:
                pools = [by_skill.get(s, []) for s, _ in task.required_skills]
                pool: Iterable[AgentView] = (a for a in min(pools, key=len) if a.agent_id in free)
            else:
                pool = list(free.values())
            decision = self.best_agent_for(task, pool, now, demand)
            if decision is not None:
                decisions.append(decision)
                del free[decision.agent_id]
        return decisions

    # -- explanation -------------------------------------------------------------------------------------

    def _why(
        self,
        task: Task,
        agent: AgentView,
        now: float,
        level: int,
        step: RelaxationStep | None,
        preferred: bool,
        demand: Demand,
        candidates: int,
        prio: float | None,
    ) -> Why:
        w = self.weights
        rules: list[str] = []
        if preferred:
            rules.append("preferred agent (repeat caller)")
        if task.required_skills:
            have = ", ".join(f"{s}≥{m}: {agent.skills.get(s, 0)}" for s, m in task.required_skills)
            rules.append(f"skills {have}")
        if task.language:
            rules.append(f"language {task.language}")
        terms: list[tuple[str, float]] = []
        if prio is not None:
            terms.append(("aged_priority", w.wait * prio))
        if self.resolution is not None and w.resolution:
            p = self.resolution.probability(agent.agent_id, task.resolution_key)
            terms.append(("p_resolve", p))
            terms.append(("resolution", w.resolution * p))
        terms.append(("proficiency", w.proficiency * level))
        if demand and w.flexibility and prio is None:
            names = {s for s, _ in task.required_skills}
            cost = sum(demand.get(s, 0.0) for s in agent.skills if s not in names)
            terms.append(("flexibility", -w.flexibility * cost))
        if demand and w.pressure and prio is not None:
            press = max((demand.get(s, 0.0) for s, _ in task.required_skills), default=0.0)
            terms.append(("pressure", w.pressure * press))
        idle = max(0.0, now - agent.idle_since)
        terms.append(("idle_s", idle))
        terms.append(("idle", w.idle * min(idle / 600.0, 1.0)))
        terms.append(("waited_s", task.waited(now)))
        score = sum(v for name, v in terms if name not in ("p_resolve", "idle_s", "waited_s"))
        return Why(tuple(rules), step.describe() if step else None, tuple(terms), score, candidates)
