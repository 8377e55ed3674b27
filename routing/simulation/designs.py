"""Standard staffing designs: pooled, split, chain, balanced, and a scenario where agents differ in skill."""

from __future__ import annotations

import itertools
import random

from routing.simulation.model import AgentSpec, CallType, Scenario

DESIGNS = ("pooled", "split", "chain", "balanced", "scenario")


def _types(n: int, load: float, aht: float) -> tuple[CallType, ...]:
    rate = load / aht / n
    return tuple(CallType(f"r{i + 1}", rate) for i in range(n))


def _groups(agents: int, groups: int) -> list[int]:
    """Sizes of ``groups`` groups as even as possible, summing to ``agents``."""
    base, extra = divmod(agents, groups)
    return [base + (1 if i < extra else 0) for i in range(groups)]


def build_scenario(
    design: str,
    *,
    types: int,
    agents: int,
    load: float,
    aht: float = 300.0,
    patience: float | None = None,
    skills_per_agent: int = 2,
    seed: int = 1,
    wrap_up: float = 0.0,
    handle_time: str = "exponential",
) -> Scenario:
    """A scenario by design name; ``ValueError`` names the allowed designs and impossible combinations."""
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}")
    if types < 1 or agents < 1 or load <= 0:
        raise ValueError("types and agents must be at least 1 and load positive")
    call_types = _types(types, load, aht)
    names = [t.name for t in call_types]
    specs: list[AgentSpec] = []
    if design == "pooled":
        specs = [AgentSpec(f"a{i + 1:03d}", dict.fromkeys(names, 1)) for i in range(agents)]
    elif design == "split":
        k = 0
        for g, size in enumerate(_groups(agents, types)):
            for _ in range(size):
                k += 1
                specs.append(AgentSpec(f"a{k:03d}", {names[g]: 1}))
    elif design == "chain":
        if not 1 <= skills_per_agent <= types:
            raise ValueError(f"skills-per-agent must be 1..{types} for a chain")
        k = 0
        for g, size in enumerate(_groups(agents, types)):
            skills = {names[(g + j) % types]: 1 for j in range(skills_per_agent)}
            for _ in range(size):
                k += 1
                specs.append(AgentSpec(f"a{k:03d}", skills))
    elif design == "balanced":
        if not 1 <= skills_per_agent <= types:
            raise ValueError(f"skills-per-agent must be 1..{types} for a balanced design")
        combos = list(itertools.combinations(names, skills_per_agent))
        for k, size in enumerate(_groups(agents, len(combos))):
            for _ in range(size):
                specs.append(AgentSpec(f"a{len(specs) + 1:03d}", dict.fromkeys(combos[k], 1)))
    else:
        specs = _skilled_agents(names, agents, skills_per_agent, seed)
    if design != "scenario":
        # Pure queueing designs: every contact is resolved, so no transfers add load (the Erlang comparisons).
        specs = [AgentSpec(a.agent_id, a.skills, dict.fromkeys(a.skills, 1.0)) for a in specs]
    return Scenario(
        name=design,
        types=call_types,
        agents=tuple(specs),
        aht=aht,
        patience=patience,
        wrap_up=wrap_up,
        handle_time=handle_time,
    )


def _skilled_agents(names: list[str], agents: int, skills_per_agent: int, seed: int) -> list[AgentSpec]:
    """Agents trained in ``skills_per_agent`` reasons each, at uneven levels, whose real resolution differs.

    Each agent is strong (level 4-5) in one reason and weaker (level 1-3) in the others; the real resolution
    probability is the level's table value plus a personal deviation (sd 0.12), because recorded proficiency
    is only a rough guide to who actually fixes what. Every reason gets strong agents in turn.
    """
    rng = random.Random(seed)
    k = min(max(skills_per_agent, 1), len(names))
    table = {1: 0.55, 2: 0.62, 3: 0.7, 4: 0.85, 5: 0.93}
    specs = []
    for i in range(agents):
        strong = names[i % len(names)]
        others = [n for n in names if n != strong]
        rng.shuffle(others)
        skills = {strong: rng.choice((4, 5))}
        for name in others[: k - 1]:
            skills[name] = rng.choice((1, 2, 3))
        resolution = {
            name: min(0.99, max(0.05, table[level] + rng.gauss(0.0, 0.12))) for name, level in skills.items()
        }
        specs.append(AgentSpec(f"a{i + 1:03d}", skills, resolution))
    return specs
