"""The router's policy, rule by rule, and the invariants of batch matching (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcentre.domain.agent_state import AgentState
from routing.resolution import ResolutionModel
from routing.router import AgentView, Router, Task, Weights, skill_pressure
from routing.skills import QueuePolicy, RelaxationStep, parse_requirements

NOW = 10_000.0


def agent(agent_id: str, idle: float = 0.0, state: AgentState = AgentState.AVAILABLE,
          languages: tuple[str, ...] = ("en",), **skills: int) -> AgentView:
    return AgentView(agent_id, skills, frozenset(languages), state, NOW - idle)


def task(call_id: str = "c1", waited: float = 0.0, queue: str = "billing", language: str = "en",
         skills: tuple[tuple[str, int], ...] = (("billing", 3),), **kw: object) -> Task:
    return Task(call_id, queue, skills, language=language, arrived_at=NOW - waited, reason=queue, **kw)  # type: ignore[arg-type]


def test_hard_requirements_come_first() -> None:
    router = Router()
    agents = [
        agent("low", idle=900, billing=2),
        agent("busy", state=AgentState.ON_CALL, billing=5),
        agent("korean", languages=("ko",), billing=5),
        agent("ok", idle=1, billing=3),
    ]
    decision = router.best_agent_for(task(), agents, NOW)
    assert decision is not None and decision.agent_id == "ok"
    assert router.best_agent_for(task(skills=(("legal", 1),)), agents, NOW) is None


def test_resolution_dominates_then_proficiency_then_longest_idle() -> None:
    model = ResolutionModel.from_outcomes(
        [("fixer", "billing", True)] * 40 + [("talker", "billing", False)] * 30 + [("talker", "billing", True)] * 10
    )
    router = Router(resolution_model=model)
    agents = [agent("talker", idle=600, billing=5), agent("fixer", idle=5, billing=3)]
    decision = router.best_agent_for(task(), agents, NOW)
    assert decision is not None and decision.agent_id == "fixer"
    assert model.probability("fixer", "billing") > 0.85 > 0.5 > model.probability("talker", "billing")

    same = Router()  # no history: proficiency decides, then idle time
    assert same.best_agent_for(task(), [agent("l3", idle=600, billing=3), agent("l5", billing=5)], NOW).agent_id == "l5"  # type: ignore[union-attr]
    pick = same.best_agent_for(task(), [agent("new", idle=10, billing=4), agent("old", idle=300, billing=4)], NOW)
    assert pick is not None and pick.agent_id == "old"


def test_resolution_estimate_is_smoothed_for_thin_history() -> None:
    model = ResolutionModel(agent_strength=10, reason_strength=20, global_prior=0.7)
    assert model.probability("nobody", "billing") == pytest.approx(0.7)
    model.observe("lucky", "billing", True)
    one = model.probability("lucky", "billing")
    assert 0.7 < one < 0.8  # one good call does not make an expert
    for _ in range(200):
        model.observe("lucky", "billing", True)
    assert model.probability("lucky", "billing") > 0.95
    assert model.estimate("lucky", "billing").calls == 201
    with pytest.raises(ValueError):
        ResolutionModel(global_prior=1.0)


def test_relaxation_widens_over_waiting_time() -> None:
    policy = QueuePolicy("billing", (RelaxationStep(30, min_level=2), RelaxationStep(90, any_agent_with_language=True)))
    router = Router([policy])
    level2 = [agent("two", billing=2)]
    outsider = [agent("sales", sales=4)]
    assert router.best_agent_for(task(waited=10), level2, NOW) is None
    d = router.best_agent_for(task(waited=31), level2, NOW)
    assert d is not None and d.why.relaxation == "after 30s: level ≥ 2"
    assert router.best_agent_for(task(waited=60), outsider, NOW) is None
    d = router.best_agent_for(task(waited=95), outsider, NOW)
    assert d is not None and d.agent_id == "sales"
    assert router.best_agent_for(task(waited=95, language="ko"), outsider, NOW) is None


def test_bad_policies_and_requirements_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="sorted"):
        QueuePolicy("q", (RelaxationStep(90, min_level=1), RelaxationStep(30, min_level=2)))
    with pytest.raises(ValueError, match="relaxes nothing"):
        QueuePolicy("q", (RelaxationStep(30),))
    with pytest.raises(ValueError, match="aging"):
        QueuePolicy("q", aging_seconds=0)
    assert parse_requirements([["billing", 3]]) == (("billing", 3),)
    assert parse_requirements({"billing": 2}) == (("billing", 2),)
    for bad in ([["billing", 9]], [["billing"]], "billing", [[3, 3]]):
        with pytest.raises(ValueError):
            parse_requirements(bad)


def test_preferred_agent_waits_until_timeout() -> None:
    router = Router([QueuePolicy("billing", preferred_agent_timeout=20)])
    agents = [agent("stranger", idle=900, billing=5)]
    repeat = task(waited=5, preferred_agent_id="friend")
    assert router.best_agent_for(repeat, agents, NOW) is None
    assert router.best_task_for(agents[0], [repeat], NOW) is None
    d = router.best_agent_for(repeat, [*agents, agent("friend", billing=3)], NOW)
    assert d is not None and d.agent_id == "friend" and "preferred agent (repeat caller)" in d.why.rules
    late = task(waited=25, preferred_agent_id="friend")
    assert router.best_agent_for(late, agents, NOW).agent_id == "stranger"  # type: ignore[union-attr]


def test_excluded_agent_never_gets_the_call_back() -> None:
    router = Router()
    t = task(excluded_agents=frozenset({"first"}))
    assert router.best_agent_for(t, [agent("first", billing=5)], NOW) is None
    assert router.best_task_for(agent("first", billing=5), [t], NOW) is None


def test_freed_agent_takes_oldest_by_aged_priority_and_nothing_starves() -> None:
    router = Router([QueuePolicy("billing", aging_seconds=60), QueuePolicy("vip", priority=2)],
                    weights=Weights(pressure=0))
    me = agent("me", billing=3, vip=3)
    old = task("old", waited=100)
    new = task("new", waited=10)
    assert router.best_task_for(me, [new, old], NOW).call_id == "old"  # type: ignore[union-attr]
    vip = task("vip", waited=0, queue="vip", skills=(("vip", 1),))
    assert router.best_task_for(me, [old, vip], NOW).call_id == "vip"  # type: ignore[union-attr]
    ancient = task("ancient", waited=200)  # 200/60 > 2 priority points: aging beats the VIP bonus
    assert router.best_task_for(me, [ancient, vip], NOW).call_id == "ancient"  # type: ignore[union-attr]


def test_bounded_scan_gives_the_same_answer_as_a_full_scan() -> None:
    model = ResolutionModel.from_outcomes([(f"a{i}", f"r{i % 3}", i % 2 == 0) for i in range(60)])
    router = Router(resolution_model=model)
    me = agent("a4", r0=2, r1=5, r2=1)
    tasks = [task(f"c{i}", waited=(i * 37) % 300, queue=f"r{i % 3}", skills=((f"r{i % 3}", 1),)) for i in range(200)]
    fast = router.best_task_for(me, tasks, NOW)
    slow = max((router.best_task_for(me, [t], NOW) for t in tasks), key=lambda d: d.why.score)  # type: ignore[union-attr]
    assert fast is not None and slow is not None and fast.call_id == slow.call_id


def test_flexibility_keeps_the_agent_whose_other_skill_is_short() -> None:
    router = Router(resolution_model=None)
    demand = skill_pressure(waiting={"sales": 4, "billing": 0}, idle={"support": 6})
    a = agent("also_sales", idle=600, billing=3, sales=3)
    b = agent("also_support", idle=10, billing=3, support=3)
    d = router.best_agent_for(task(), [a, b], NOW, demand)
    assert d is not None and d.agent_id == "also_support"
    assert router.best_agent_for(task(), [a, b], NOW).agent_id == "also_sales"  # type: ignore[union-attr]


def test_why_is_readable_and_serialisable() -> None:
    router = Router(resolution_model=ResolutionModel())
    d = router.best_agent_for(task(), [agent("a1", idle=42, billing=4)], NOW)
    assert d is not None
    summary = d.why.summary()
    assert "billing≥3: 4" in summary and "language en" in summary and "p_resolve 0.70" in summary
    data = d.why.as_dict()
    assert data["candidates"] == 1 and data["terms"]["idle_s"] == pytest.approx(42)
    assert data["terms"]["proficiency"] == 8.0


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Task], list[AgentView]]:
    skills = ["s0", "s1", "s2", "s3"]
    n_agents = draw(st.integers(0, 12))
    agents = [
        AgentView(
            f"a{i}",
            {
                s: draw(st.integers(1, 5))
                for s in draw(st.lists(st.sampled_from(skills), min_size=1, max_size=3, unique=True))
            },
            frozenset(draw(st.sets(st.sampled_from(["en", "ko"]), min_size=1))),
            draw(st.sampled_from([AgentState.AVAILABLE, AgentState.AVAILABLE, AgentState.ON_CALL])),
            NOW - draw(st.floats(0, 900)),
        )
        for i in range(n_agents)
    ]
    tasks = [
        Task(f"c{i}", draw(st.sampled_from(["q0", "q1"])),
             ((draw(st.sampled_from(skills)), draw(st.integers(1, 5))),),
             draw(st.integers(0, 2)), draw(st.sampled_from(["", "en", "ko"])), NOW - draw(st.floats(0, 200)))
        for i in range(draw(st.integers(0, 12)))
    ]
    return tasks, agents


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_assign_is_a_valid_matching(world: tuple[list[Task], list[AgentView]]) -> None:
    tasks, agents = world
    router = Router([QueuePolicy("q1", (RelaxationStep(100, any_agent_with_language=True),))])
    decisions = router.assign(tasks, agents, NOW)
    assert len({d.agent_id for d in decisions}) == len(decisions)
    assert len({d.call_id for d in decisions}) == len(decisions)
    by_id = {a.agent_id: a for a in agents}
    by_call = {t.call_id: t for t in tasks}
    for d in decisions:
        assert by_id[d.agent_id].state is AgentState.AVAILABLE
        assert router.best_agent_for(by_call[d.call_id], [by_id[d.agent_id]], NOW) is not None  # eligible
    # Maximal: no unassigned call has an eligible unassigned available agent.
    used = {d.agent_id for d in decisions}
    left = [a for a in agents if a.agent_id not in used]
    for t in tasks:
        if t.call_id not in {d.call_id for d in decisions}:
            assert router.best_agent_for(t, left, NOW) is None
