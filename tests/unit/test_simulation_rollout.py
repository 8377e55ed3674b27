"""The rollout study (routing/simulation/rollout.py): the count-level model, its futures, and the strategy.

The study itself (minutes per run) is reported in docs/routing.md; these tests check the parts it rests on:
the model reads the design right, futures are reproducible and sensitive to the state in the expected
direction, common random numbers make the options of one decision comparable, and the strategy runs in the
engine without losing or double-serving a call.
"""

from __future__ import annotations

import numpy as np
import pytest

from routing.simulation.designs import build_scenario
from routing.simulation.engine import simulate
from routing.simulation.rollout import CountModel, RolloutStrategy, future_queue_area


def _chain() -> CountModel:
    scenario = build_scenario("chain", types=6, agents=90, load=84, aht=300, patience=300)
    return CountModel.from_scenario(scenario)


def test_count_model_reads_the_chain_design() -> None:
    model = _chain()
    assert model.sizes.tolist() == [15] * 6
    assert model.cover.sum(axis=1).tolist() == [2] * 6  # every group trained in two reasons
    assert model.cover.sum(axis=0).tolist() == [2] * 6  # every reason covered by two groups
    assert model.arrival.sum() == pytest.approx(84 / 300)
    assert model.service_rate == pytest.approx(1 / 300) and model.patience_rate == pytest.approx(1 / 300)


def test_count_model_refuses_what_it_cannot_represent() -> None:
    no_patience = build_scenario("chain", types=3, agents=9, load=6, aht=300, patience=None)
    with pytest.raises(ValueError, match="exponential patience"):
        CountModel.from_scenario(no_patience)
    lognormal = build_scenario("chain", types=3, agents=9, load=6, patience=300, handle_time="lognormal")
    with pytest.raises(ValueError, match="exponential"):
        CountModel.from_scenario(lognormal)


def _state(idle: list[int], waiting: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(idle, dtype=np.int64), np.array(waiting, dtype=np.int64)


def test_futures_are_reproducible_and_grow_with_the_queue() -> None:
    model = _chain()
    idle, waiting = _state([0] * 6, [2, 0, 0, 0, 0, 0])
    first = future_queue_area(model, idle, waiting, horizon=200, samples=256, seed=5)
    assert first == future_queue_area(model, idle, waiting, horizon=200, samples=256, seed=5)
    longer = future_queue_area(model, idle, _state([0] * 6, [6, 0, 0, 0, 0, 0])[1], horizon=200, samples=256, seed=5)
    assert longer > first > 0
    empty = future_queue_area(model, *_state([3] * 6, [0] * 6), horizon=200, samples=256, seed=5)
    assert empty < first


def test_common_random_numbers_separate_a_clear_choice() -> None:
    """A call of reason r2 may go to group {r1, r2} (5 idle) or to {r2, r3} (its last idle agent), while
    r4 has callers waiting and r3's other group {r3, r4} is full. Taking {r2, r3}'s last agent leaves r3
    uncovered: its futures must queue more, and with shared random numbers the difference is clear at a
    sample size where each future alone is noisy."""
    model = _chain()
    names = [sorted(g) for g in model.groups]
    g12, g23 = names.index(["r1", "r2"]), names.index(["r2", "r3"])
    idle = np.zeros(6, dtype=np.int64)
    idle[g12], idle[g23] = 5, 1
    waiting = np.array([0, 0, 0, 3, 0, 0], dtype=np.int64)

    def after(group: int) -> float:
        state = idle.copy()
        state[group] -= 1
        return future_queue_area(model, state, waiting, horizon=200, samples=512, seed=11)

    assert after(g12) < after(g23)


def test_rollout_strategy_serves_every_call_once_in_the_engine() -> None:
    scenario = build_scenario("chain", types=3, agents=12, load=10, aht=100, patience=100)
    strategy = RolloutStrategy(samples=32, horizon=50)
    result = simulate(scenario, strategy, calls=600, seed=2)
    m = result.report().overall
    assert m.offered == 600 and m.answered + m.abandoned == 600
    assert strategy.decisions > 0  # real choices were made by rollout, not only forced ones
    assert all(c.answered_at is None or c.answered_at >= c.offered_at for c in result.calls)
