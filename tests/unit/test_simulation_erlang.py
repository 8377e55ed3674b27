"""The simulator, driving the real router, against exact queueing formulas computed here.

Single-skill designs only (every agent serves every call type it is offered), where theory is exact:
fully pooled M/M/n and split (independent M/M/n per type), without abandonment (Erlang C) and with
exponential patience (Erlang A). Tolerances from the issue: 0.01 in SL20, 5 % in ASA. Loads are chosen so
that 200,000 calls give a standard error inside those bounds (measured over seeds 1-4: SL within ±0.006,
ASA within ±3 %, Erlang C's ASA being the noisiest); the seed is fixed so the test is deterministic.
"Pooled" uses one call type: with several types the router's queue-pressure term (deliberately) departs
from FCFS between types, and only FCFS is M/M/n.
"""

from __future__ import annotations

import pytest

from routing.erlang import erlang_a_figures, erlang_c_figures
from routing.simulation.designs import build_scenario
from routing.simulation.engine import simulate
from routing.simulation.strategies import make_strategy

AHT = 120.0
CALLS = 200_000

CASES = [
    # design, types, agents, offered Erlangs, patience
    pytest.param("pooled", 1, 2, 1.0, None, id="pooled-MMn-erlangC"),
    pytest.param("split", 2, 4, 2.0, None, id="split-MMn-erlangC"),
    pytest.param("pooled", 1, 12, 11.0, 120.0, id="pooled-MMnM-erlangA"),
    pytest.param("split", 3, 30, 27.0, 200.0, id="split-MMnM-erlangA"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("design", "types", "agents", "load", "patience"), CASES)
def test_single_skill_design_matches_exact_erlang(
    design: str, types: int, agents: int, load: float, patience: float | None
) -> None:
    scenario = build_scenario(design, types=types, agents=agents, load=load, aht=AHT, patience=patience)
    result = simulate(scenario, make_strategy("router"), calls=CALLS, seed=1)
    measured = result.report().overall

    servers = agents // types if design == "split" else agents
    erlangs = load / types if design == "split" else load
    rate = erlangs / AHT
    exact = erlang_a_figures(servers, rate, AHT, patience) if patience else erlang_c_figures(servers, rate, AHT)

    assert measured.offered == CALLS
    assert measured.sl == pytest.approx(exact.service_level, abs=0.01)
    assert measured.asa == pytest.approx(exact.asa, rel=0.05)
    assert measured.abandonment == pytest.approx(exact.abandonment, abs=0.01)
