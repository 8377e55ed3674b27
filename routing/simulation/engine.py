"""Discrete-event simulation in simulated time, driving a :mod:`strategies` strategy (the real router or a
baseline) with Poisson arrivals, exponential/lognormal handle times, exponential patience, wrap-up and
per-agent resolution (an unresolved first contact is transferred to a second agent or calls back later).

Hand-written around ``heapq`` rather than simpy: events here are plain tuples and the loop has no generator
or process objects, which keeps it at tens of thousands of calls per wall second (benchmarks/router_speed.py).
The first ``warmup`` calls start the system from empty and are not reported; the run then keeps going, without
new arrivals, until every reported call is finished.

A strategy may also define ``on_queued(sim, queue, now) -> (task, agent_id) | None``, asked each time an
arrival joins a queue: strategies that deliberately leave agents idle (``variants.ReservationStrategy``) use
it to pull an idle agent in once a queue grows past their threshold. Work-conserving strategies omit it.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from callcentre.domain.agent_state import AgentState
from routing.reports import AgentTime, CallOutcome, Report, build_report
from routing.router import AgentView, Task
from routing.simulation.model import Scenario
from routing.simulation.strategies import Strategy

_ARRIVAL, _END, _FREE, _ABANDON = 0, 1, 2, 3
_NO_CONTEXT: Mapping[str, str] = MappingProxyType({})


class _LiveDemand(Mapping[str, float]):
    """Skill pressure ``(waiting + 1) / (idle + 1)`` computed on demand from the engine's counters."""

    def __init__(self, waiting: dict[str, int], idle: dict[str, dict[str, AgentView]]):
        self._waiting = waiting
        self._idle = idle

    def __getitem__(self, skill: str) -> float:
        if skill not in self._waiting:
            raise KeyError(skill)
        return (self._waiting[skill] + 1.0) / (len(self._idle[skill]) + 1.0)

    def get(self, skill: str, default: float | None = None) -> float:  # type: ignore[override]
        waiting = self._waiting.get(skill)
        if waiting is None:
            return 0.0 if default is None else default
        return (waiting + 1.0) / (len(self._idle[skill]) + 1.0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._waiting)

    def __len__(self) -> int:
        return len(self._waiting)


class _Call:
    __slots__ = ("agents", "outcome", "reported", "talk", "task", "type_index")

    def __init__(self, outcome: CallOutcome, task: Task, type_index: int, reported: bool, talk: float):
        self.outcome = outcome
        self.talk = talk
        self.task = task
        self.type_index = type_index
        self.reported = reported
        self.agents: list[str] = []


@dataclass
class SimulationResult:
    scenario: str
    strategy: str
    calls: list[CallOutcome]
    agent_times: list[AgentTime]
    wall_seconds: float
    simulated_seconds: float
    events: int

    def report(self, threshold: float = 20.0) -> Report:
        return build_report(self.calls, self.agent_times, threshold)

    @property
    def calls_per_wall_minute(self) -> float:
        return 60.0 * len(self.calls) / self.wall_seconds if self.wall_seconds > 0 else float("inf")


class Simulation:
    def __init__(
        self, scenario: Scenario, strategy: Strategy, *, calls: int, seed: int = 1, warmup: int | None = None
    ):
        if calls < 1:
            raise ValueError("calls must be at least 1")
        self.scenario = scenario
        self.strategy = strategy
        self.calls = calls
        self.warmup = max(200, calls // 10) if warmup is None else warmup
        # Separate streams (arrivals with their own talk time and patience; outcomes; second legs) so that
        # strategies compared with one seed see the very same callers: common random numbers.
        self.rng = random.Random(seed)
        self.outcome_rng = random.Random(seed * 7919 + 1)
        self.leg_rng = random.Random(seed * 7919 + 2)
        names = [t.name for t in scenario.types]
        skills = {s for a in scenario.agents for s in a.skills} | {s for t in scenario.types for s, _ in t.requirements}
        # The state strategies see (SimView).
        self.idle_by_skill: dict[str, dict[str, AgentView]] = {s: {} for s in skills}
        self.waiting: dict[str, dict[str, Task]] = {n: {} for n in names}
        self.transfers: dict[str, dict[str, Task]] = {n: {} for n in names}
        queues_for: dict[str, list[str]] = {s: [] for s in skills}
        for t in scenario.types:
            for s, _ in t.requirements:
                queues_for[s].append(t.name)
        self.queues_for_skill = {s: tuple(q) for s, q in queues_for.items()}
        self.calls_taken: dict[str, int] = {a.agent_id: 0 for a in scenario.agents}
        self._waiting_count: dict[str, int] = dict.fromkeys(skills, 0)
        self.demand: Mapping[str, float] = _LiveDemand(self._waiting_count, self.idle_by_skill)

    # -- state changes -------------------------------------------------------------------------------------

    def _make_idle(self, agent_id: str, now: float, view: AgentView | None = None) -> None:
        if view is None:
            view = AgentView(agent_id, self._skills[agent_id], frozenset(), AgentState.AVAILABLE, now)
        self._idle[agent_id] = view
        for s in view.skills:
            self.idle_by_skill[s][agent_id] = view

    def _make_busy(self, agent_id: str) -> None:
        view = self._idle.pop(agent_id)
        for s in view.skills:
            del self.idle_by_skill[s][agent_id]

    def _enqueue(self, call: _Call) -> None:
        task = call.task
        (self.transfers if task.priority else self.waiting)[task.queue][task.call_id] = task
        for s, _ in task.required_skills:
            self._waiting_count[s] += 1

    def _dequeue(self, task: Task) -> None:
        del (self.transfers if task.priority else self.waiting)[task.queue][task.call_id]
        for s, _ in task.required_skills:
            self._waiting_count[s] -= 1

    # -- the loop ------------------------------------------------------------------------------------------

    def run(self) -> SimulationResult:
        sc = self.scenario
        rng = self.rng
        handle = sc.handle_sampler(rng)
        second_handle = sc.handle_sampler(self.leg_rng)
        orng = self.outcome_rng
        self._skills = {a.agent_id: dict(a.skills) for a in sc.agents}
        self._idle: dict[str, AgentView] = {}
        spec = {a.agent_id: a for a in sc.agents}
        true_p = {(a.agent_id, t.name): sc.true_resolution(a, t.name) for a in sc.agents for t in sc.types}
        handling = dict.fromkeys(spec, 0.0)
        for a in sc.agents:
            self._make_idle(a.agent_id, 0.0)

        rates = [t.arrival_rate for t in sc.types]
        requirements = [t.requirements for t in sc.types]
        total_rate = sum(rates)
        peak = max(sc.intraday) if sc.intraday else 1.0
        cumulative: list[float] = []
        acc = 0.0
        for r in rates:
            acc += r / total_rate
            cumulative.append(acc)
        patience_rate = 1.0 / sc.patience if sc.patience else 0.0

        heap: list[tuple[float, int, int, object]] = []
        seq = 0
        calls: dict[str, _Call] = {}
        reported: list[CallOutcome] = []
        wrap = sc.wrap_up
        strategy = self.strategy
        on_queued = getattr(strategy, "on_queued", None)
        target = self.warmup + self.calls
        arrived = 0
        window_start = 0.0
        window_end = 0.0
        busy_call: dict[str, _Call] = {}
        events = 0
        started = time.perf_counter()

        heapq.heappush(heap, (rng.expovariate(total_rate * peak), seq, _ARRIVAL, None))

        def start(call: _Call, agent_id: str, now: float, idle: bool = True) -> None:
            nonlocal seq
            if idle:
                self._make_busy(agent_id)
            call.agents.append(agent_id)
            if call.outcome.answered_at is None:
                call.outcome.answered_at = now
            self.calls_taken[agent_id] += 1
            busy_call[agent_id] = call
            talk = call.talk if len(call.agents) == 1 else second_handle()
            if call.reported:
                handling[agent_id] += talk + wrap
            seq += 1
            heapq.heappush(heap, (now + talk, seq, _END, agent_id))

        def free(agent_id: str, now: float) -> None:
            view = AgentView(agent_id, self._skills[agent_id], frozenset(), AgentState.AVAILABLE, now)
            task = strategy.task_for(self, view, now)
            if task is None:
                self._make_idle(agent_id, now, view)
                return
            self._dequeue(task)
            start(calls[task.call_id], agent_id, now, idle=False)

        now = 0.0
        while heap:
            now, _, kind, data = heapq.heappop(heap)
            events += 1
            if kind == _ARRIVAL:
                if sc.intraday:
                    hour = int(now // 3600.0) % len(sc.intraday)
                    if rng.random() * peak >= sc.intraday[hour]:
                        seq += 1
                        heapq.heappush(heap, (now + rng.expovariate(total_rate * peak), seq, _ARRIVAL, None))
                        continue
                arrived += 1
                u = rng.random()
                index = 0
                while cumulative[index] < u and index < len(cumulative) - 1:
                    index += 1
                ctype = sc.types[index]
                call_id = f"c{arrived}"
                is_reported = arrived > self.warmup
                if arrived == self.warmup + 1:
                    window_start = now
                outcome = CallOutcome(call_id, ctype.name, now)
                task = Task(call_id, ctype.name, requirements[index], 0, "", now, ctype.name, context=_NO_CONTEXT)
                call = _Call(outcome, task, index, is_reported, handle())
                patience = rng.expovariate(patience_rate) if patience_rate else 0.0
                calls[call_id] = call
                if is_reported:
                    reported.append(outcome)
                if arrived < target:
                    seq += 1
                    heapq.heappush(heap, (now + rng.expovariate(total_rate * peak), seq, _ARRIVAL, None))
                else:
                    window_end = now
                agent_id = strategy.agent_for(self, task, now)
                if agent_id is not None:
                    start(call, agent_id, now)
                else:
                    self._enqueue(call)
                    if patience_rate:
                        seq += 1
                        heapq.heappush(heap, (now + patience, seq, _ABANDON, call))
                    if on_queued is not None:
                        # A non-work-conserving strategy may pull an idle agent in once a queue grows.
                        pulled = on_queued(self, task.queue, now)
                        if pulled is not None:
                            self._dequeue(pulled[0])
                            start(calls[pulled[0].call_id], pulled[1], now)
            elif kind == _END:
                agent_id = str(data)
                call = busy_call.pop(agent_id)
                reason = call.task.reason
                resolved = orng.random() < true_p[(agent_id, reason)]
                first_leg = len(call.agents) == 1
                if first_leg:
                    call.outcome.resolved_first = resolved
                    if not resolved:
                        if orng.random() < sc.transfer_unresolved:
                            old = call.task
                            call.task = Task(
                                old.call_id, old.queue, old.required_skills, 1, old.language, now, old.reason,
                                excluded_agents=frozenset((agent_id,)),
                            )
                            self._enqueue(call)
                        else:
                            call.outcome.repeat_within_7d = True
                    strategy.learn(agent_id, reason, resolved)
                else:
                    call.outcome.agents = tuple(call.agents)
                    if not resolved:
                        call.outcome.repeat_within_7d = True
                if call.outcome.agents != tuple(call.agents):
                    call.outcome.agents = tuple(call.agents)
                if wrap > 0:
                    seq += 1
                    heapq.heappush(heap, (now + wrap, seq, _FREE, agent_id))
                else:
                    free(agent_id, now)
                # A transfer waiting with no agent free may now find an idle one elsewhere.
                if first_leg and not resolved and call.task.priority and call.task.call_id in self.transfers[
                    call.task.queue
                ]:
                    other = strategy.agent_for(self, call.task, now)
                    if other is not None:
                        self._dequeue(call.task)
                        start(call, other, now)
            elif kind == _FREE:
                free(str(data), now)
            else:  # _ABANDON
                call = data  # type: ignore[assignment]
                assert isinstance(call, _Call)
                if call.outcome.answered_at is None and call.task.call_id in self.waiting[call.task.queue]:
                    self._dequeue(call.task)
                    call.outcome.abandoned_at = now
        wall = time.perf_counter() - started
        span = max(window_end - window_start, 1e-9)
        agent_times = [AgentTime(a, min(h, span), max(0.0, span - h)) for a, h in handling.items()]
        return SimulationResult(sc.name, strategy.name, reported, agent_times, wall, now, events)


def simulate(scenario: Scenario, strategy: Strategy, *, calls: int, seed: int = 1,
             warmup: int | None = None) -> SimulationResult:
    return Simulation(scenario, strategy, calls=calls, seed=seed, warmup=warmup).run()
