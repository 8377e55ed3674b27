"""The simulator, driving the real router, against exact queueing formulas computed here.

Single-skill designs only (every agent serves every call type it is offered), where theory is exact:
fully pooled M/M/n and split (independent M/M/n per type), without abandonment (Erlang C) and with
exponential patience (Erlang A). Tolerances from the issue, not loosened: 0.01 in SL20, 5 % in ASA (and 0.01
in abandonment).

How many calls each case needs was measured, not guessed: the spread of (simulated − exact) over seeds 1-8
at the sizes below (docs/routing.md, "Simulator vs exact formulas") stayed within ±0.007 SL20 and ±4 % ASA
for every seed, so the fixed seed is not a lucky one. Erlang C cases need the most calls (no abandonment to
damp the queue, so waits are long-correlated); the Erlang A cases use small, heavily loaded groups
(ρ = 0.9, patience half the handle time), whose short memory makes 80-120k calls as precise as 200k were
for the 12-30-agent groups used before. "Pooled" uses one call type: with several types the router's
queue-pressure term (deliberately) departs from FCFS between types, and only FCFS is M/M/n.
"""

from __future__ import annotations

import pytest

from routing.erlang import erlang_a_figures, erlang_c_figures
from routing.simulation.designs import build_scenario
from routing.simulation.engine import simulate
from routing.simulation.strategies import make_strategy

AHT = 120.0

CASES = [
    # design, types, agents, offered Erlangs, patience, calls
    pytest.param("pooled", 1, 2, 1.0, None, 200_000, id="pooled-MMn-erlangC"),
    pytest.param("split", 2, 4, 2.0, None, 200_000, id="split-MMn-erlangC"),
    pytest.param("pooled", 1, 3, 2.7, 60.0, 80_000, id="pooled-MMnM-erlangA"),
    pytest.param("split", 3, 9, 8.1, 60.0, 120_000, id="split-MMnM-erlangA"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("design", "types", "agents", "load", "patience", "calls"), CASES)
def test_single_skill_design_matches_exact_erlang(
    design: str, types: int, agents: int, load: float, patience: float | None, calls: int
) -> None:
    scenario = build_scenario(design, types=types, agents=agents, load=load, aht=AHT, patience=patience)
    result = simulate(scenario, make_strategy("router"), calls=calls, seed=1)
    measured = result.report().overall

    servers = agents // types if design == "split" else agents
    erlangs = load / types if design == "split" else load
    rate = erlangs / AHT
    exact = erlang_a_figures(servers, rate, AHT, patience) if patience else erlang_c_figures(servers, rate, AHT)

    assert measured.offered == calls
    assert measured.sl == pytest.approx(exact.service_level, abs=0.01)
    assert measured.asa == pytest.approx(exact.asa, rel=0.05)
    assert measured.abandonment == pytest.approx(exact.abandonment, abs=0.01)
