"""The pooling study (routing/simulation/variants.py) and the exact references of the efficiency report.

The study's finding, kept as a test on the issue's chain design with fixed seed and common random numbers:
deliberately idle agents (trunk reservation) lose to the work-conserving router on both SL20 and
abandonment, and no strategy gets abandonment efficiency past what the router reaches by more than noise.
"""

from __future__ import annotations

import pytest

from routing.erlang import erlang_a_figures
from routing.simulation.designs import build_scenario
from routing.simulation.engine import simulate
from routing.simulation.pooling import exact_references, pooling_efficiency
from routing.simulation.strategies import make_strategy
from routing.simulation.variants import (
    VARIANTS,
    ReservationStrategy,
    main,
    preemptive_abandonment_bound,
    study,
)


def test_reservation_idles_on_purpose_but_strands_no_call() -> None:
    scenario = build_scenario("chain", types=3, agents=12, load=10, aht=100, patience=100)
    result = simulate(scenario, ReservationStrategy(2, 2), calls=4000, seed=3)
    m = result.report().overall
    assert m.offered == 4000 and m.answered + m.abandoned == 4000
    assert all(c.answered_at is None or c.answered_at >= c.offered_at for c in result.calls)
    # It really holds agents back: more calls wait than under the work-conserving router on the same callers.
    router = simulate(scenario, make_strategy("router"), calls=4000, seed=3).report().overall
    assert m.asa is not None and router.asa is not None and m.asa > router.asa
    again = simulate(scenario, ReservationStrategy(2, 2), calls=4000, seed=3)
    assert [c.answered_at for c in again.calls] == [c.answered_at for c in result.calls]


@pytest.mark.slow
def test_idling_agents_loses_to_the_router_in_the_chain() -> None:
    """Issue 7 chain (6 reasons, 90 agents, 84 Erlangs, AHT 300 s, patience 300 s), 30,000 calls, seed 1."""
    refs, rows = study(["router", "reserve-r1-k1", "reserve-r2-k1"], calls=30_000, seed=1)
    by_name = {r.variant: r for r in rows}
    router = by_name["router"]
    for name in ("reserve-r1-k1", "reserve-r2-k1"):
        assert by_name[name].efficiency_sl < router.efficiency_sl - 0.03
        assert by_name[name].efficiency_abandonment < router.efficiency_abandonment
    assert refs["pooled"].sl is not None and refs["split"].sl is not None
    assert refs["pooled"].sl > router.metrics.sl > refs["split"].sl  # type: ignore[operator]


def test_sl_aware_is_also_scored_against_references_under_its_own_rule() -> None:
    _, rows = study(["sl-aware"], calls=3000, seed=2, types=3, agents=15, load=13, aht=100, patience=100)
    fcfs, own = rows
    assert (fcfs.references, own.references) == ("fcfs", "same-policy")
    assert fcfs.metrics == own.metrics and fcfs.efficiency_sl != own.efficiency_sl


def test_study_command_prints_a_table_and_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--calls", "1500", "--variants", "qir", "slack-b0.6"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pooled") and any(line.startswith("qir") for line in out)
    assert out[-1].startswith("{") and '"variant": "slack-b0.6"' in out[-1]
    assert set(VARIANTS) >= {"router", "greedy", "qir", "sl-aware"}


def test_exact_references_are_erlang_a_of_the_pooled_and_split_systems() -> None:
    refs = exact_references(types=6, agents=90, load=84, aht=300, patience=300)
    assert refs is not None
    pooled, split = refs
    assert pooled == erlang_a_figures(90, 84 / 300, 300, 300)
    assert split == erlang_a_figures(15, 14 / 300, 300, 300)
    assert exact_references(types=4, agents=90, load=84, aht=300, patience=300) is None  # uneven split
    assert exact_references(types=2, agents=4, load=5, aht=300, patience=None) is None  # unstable Erlang C
    _, rows = pooling_efficiency(types=2, agents=8, load=6, aht=100, patience=100, calls=3000,
                                 designs=("chain",), strategies=("greedy",))
    (row,) = rows
    x = exact_references(types=2, agents=8, load=6, aht=100, patience=100)
    assert x is not None and row.metrics.sl is not None and row.sl_exact_refs is not None
    assert row.sl_exact_refs == pytest.approx(
        (row.metrics.sl - x[1].service_level) / (x[0].service_level - x[1].service_level))
    assert row.as_dict()["efficiency_abandonment_exact_refs"] == row.abandonment_exact_refs


@pytest.mark.slow
def test_balanced_design_router_reaches_090_abandonment_efficiency() -> None:
    """Issue 7, balanced design (each reason's second skills spread over the other five), router, 100,000 calls,
    seed 1. Measured 0.916 (seed 1), 0.910 (2), 0.908 (3, 500k calls), 0.907 (4, 1M calls), so 0.9 holds over
    seeds; the chain design does not reach it (0.86-0.87; docs/routing.md explains why)."""
    _, rows = pooling_efficiency(calls=100_000, seed=1, designs=("balanced",), strategies=("router",))
    (row,) = rows
    assert row.abandonment >= 0.9
    assert row.abandonment_exact_refs is not None and row.abandonment_exact_refs >= 0.9


def test_preemptive_abandonment_bound_is_exact_at_the_ends_and_near_one_for_the_chain() -> None:
    """Pooled and split meet their own matching bound by definition (1 and 0); the chain's is ~0.9996: its
    capacity structure leaves almost the whole abandonment gain available, so the measured 0.86-0.87 is lost to
    calls staying with the agent who took them, not to the reference computation."""
    assert preemptive_abandonment_bound("pooled", samples=500) == 1.0
    assert preemptive_abandonment_bound("split", samples=500) == 0.0
    chain = preemptive_abandonment_bound("chain", samples=20_000, seed=2)
    assert 0.995 < chain <= 1.0
    one_skill_chain = preemptive_abandonment_bound("chain", skills_per_agent=1, samples=500)
    assert one_skill_chain == 0.0  # a chain with one skill per agent is the split design
    with pytest.raises(ValueError, match="at most 16"):
        preemptive_abandonment_bound("chain", types=17, agents=34, load=30, samples=1)
