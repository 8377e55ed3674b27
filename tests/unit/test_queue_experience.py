"""Queue experience: the wait estimate agrees with queueing theory, its error is MEASURED on a
simulated queue fed through the live-rate window, and it is announced only when reliable; overflow
and after-hours rules; what the caller hears."""

from __future__ import annotations

import heapq
import math
import random
from datetime import UTC, datetime, time

import pytest

from routing import queue_experience as qx
from routing.erlang import erlang_c_figures


def test_wait_at_position_is_erlang_c_without_abandonment() -> None:
    for position in (1, 4, 10):
        mean, cv = qx.wait_at_position(position, agents=5, aht=200.0, patience=None)
        assert mean == pytest.approx(position * 200.0 / 5)
        assert cv == pytest.approx(1 / math.sqrt(position))
    # Callers ahead who give up shorten the wait.
    assert qx.wait_at_position(10, 5, 200.0, patience=120.0)[0] < qx.wait_at_position(10, 5, 200.0, None)[0]
    with pytest.raises(ValueError):
        qx.wait_at_position(0, 5, 200.0, None)


def test_mean_of_position_estimates_matches_erlang_c_asa() -> None:
    """Averaging the position formula over the Erlang C queue-length distribution gives Erlang C's ASA:
    the two views of the same queue agree."""
    n, lam, aht = 6, 0.025, 200.0
    a = lam * aht
    figures = erlang_c_figures(n, lam, aht)
    # P(arrival finds k waiting | must wait) is geometric with ratio a/n.
    rho = a / n
    mean_given_wait = math.fsum((1 - rho) * rho**k * qx.wait_at_position(k + 1, n, aht, None)[0] for k in range(2000))
    assert figures.p_wait * mean_given_wait == pytest.approx(figures.asa, rel=1e-9)


def _simulate(
    agents: int, lam: float, aht: float, patience: float | None, calls: int, seed: int, policy: qx.EstimatePolicy
) -> qx.EstimateErrors:
    """A small FCFS M/M/n(+M) simulation. Every queued caller gets an estimate computed from the LIVE
    rate window (not the true rates) when they join, and the real wait is recorded when answered."""
    rng = random.Random(seed)
    window = qx.RateWindow(window_seconds=4 * 3600)
    errors = qx.EstimateErrors()
    events: list[tuple[float, int, str, int]] = []  # (time, seq, kind, call)
    seq = 0

    def push(at: float, kind: str, call: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, call))

    t = 0.0
    for call in range(calls):
        t += rng.expovariate(lam)
        push(t, "arrive", call)
    busy = 0
    queue: list[int] = []
    joined: dict[int, float] = {}
    served_from: dict[int, float] = {}
    gone: set[int] = set()

    def start_service(call: int, now: float) -> None:
        nonlocal busy
        busy += 1
        served_from[call] = now
        handle = rng.expovariate(1 / aht)
        push(now + handle, "done", call)
        window.left_queue(now, now - joined[call], abandoned=False)
        errors.answered(str(call), now)

    while events:
        now, _s, kind, call = heapq.heappop(events)
        if kind == "arrive":
            window.arrival(now)
            joined[call] = now
            if busy < agents:
                start_service(call, now)
            else:
                queue.append(call)
                estimate = qx.estimate_wait(len(queue), agents, window.rates(now), policy)
                errors.predicted(str(call), now, estimate)
                if patience is not None:
                    push(now + rng.expovariate(1 / patience), "abandon", call)
        elif kind == "done":
            busy -= 1
            window.handled(now, now - served_from[call])
            while queue and busy < agents:
                nxt = queue.pop(0)
                if nxt not in gone:
                    start_service(nxt, now)
        elif kind == "abandon" and call in queue:
            queue.remove(call)
            gone.add(call)
            window.left_queue(now, now - joined[call], abandoned=True)
            errors.abandoned(str(call))
    return errors


def test_estimate_error_is_measured_and_small_when_reliable() -> None:
    """Erlang C queue at 90 % load: reliable announcements are unbiased within 15 % of the mean wait
    and clearly better than the ones we refused to announce."""
    errors = _simulate(
        agents=8,
        lam=0.9 * 8 / 180.0,
        aht=180.0,
        patience=None,
        calls=12_000,
        seed=7,
        policy=qx.EstimatePolicy(min_samples=30, max_cv=0.45),
    )
    reliable, refused = errors.summary(True), errors.summary(False)
    assert reliable["count"] > 500 and refused["count"] > 500
    assert abs(reliable["relative_bias"]) < 0.15, reliable
    rel_mae_reliable = reliable["mean_abs_error_s"] / (sum(errors.actuals[True]) / len(errors.actuals[True]))
    rel_mae_refused = refused["mean_abs_error_s"] / (sum(errors.actuals[False]) / len(errors.actuals[False]))
    assert rel_mae_reliable < rel_mae_refused


def test_estimate_with_abandonment_uses_live_patience() -> None:
    errors = _simulate(
        agents=6,
        lam=1.0 * 6 / 180.0,
        aht=180.0,
        patience=240.0,
        calls=12_000,
        seed=11,
        policy=qx.EstimatePolicy(min_samples=30, max_cv=0.45),
    )
    reliable = errors.summary(True)
    assert reliable["count"] > 300
    # Served callers are the more patient ones, so real waits run a little below the "if you hold"
    # expectation; the measured bias stays within a quarter of the mean wait.
    assert abs(reliable["relative_bias"]) < 0.25, reliable


def test_no_estimate_without_data_or_agents() -> None:
    empty = qx.RateWindow().rates(100.0)
    assert not qx.estimate_wait(3, 4, empty).reliable
    assert "handled calls" in qx.estimate_wait(3, 4, empty).why
    rates = qx.QueueRates(arrival_rate=0.015, aht=200.0, patience=None, handled_samples=400, window_seconds=3600)
    assert not qx.estimate_wait(1, 4, rates).reliable  # position 1: one exponential stage, cv 1
    assert qx.estimate_wait(9, 4, rates).reliable
    assert qx.estimate_wait(3, 0, rates).why == "no agents staffed"
    assert qx.expected_wait_on_arrival(4, rates) is not None
    assert qx.expected_wait_on_arrival(2, qx.QueueRates(0.05, 200.0, None, 100, 3600)) is None  # overloaded


def test_rate_window_forgets_old_events() -> None:
    w = qx.RateWindow(window_seconds=100)
    for t in range(0, 200, 10):
        w.arrival(float(t))
        w.handled(float(t), 50.0 if t < 100 else 150.0)
    rates = w.rates(200.0)
    assert rates.aht == pytest.approx(150.0)
    assert rates.arrival_rate == pytest.approx(0.1)


def test_announcement_says_wait_only_when_reliable_and_offers_callback() -> None:
    rules = qx.QueueRules("billing", callback_offer_after=120, callback_key="1")
    solid = qx.WaitEstimate(seconds=250, reliable=True, cv=0.3, why="")
    shaky = qx.WaitEstimate(seconds=250, reliable=False, cv=0.9, why="")
    said = qx.announcement(7, solid, rules)
    assert said.prompt_ids == (
        "queue_position_pre",
        "num_7",
        "queue_position_post",
        "queue_wait_pre",
        "num_5",
        "queue_wait_minutes",
        "queue_callback_offer",
        "key_1",
    )
    assert said.offers_callback and " ".join(said.texts[-2:]).endswith("press 1.")
    assert qx.announcement(7, shaky, rules).prompt_ids[:3] == ("queue_position_pre", "num_7", "queue_position_post")
    assert "queue_wait_pre" not in qx.announcement(7, shaky, rules).prompt_ids
    assert not qx.announcement(7, solid, rules, callback_allowed=False).offers_callback
    assert qx.announcement(1, solid, rules).prompt_ids[0] == "queue_next"
    assert qx.announcement(45, None, rules).prompt_ids[1] == "num_many"
    assert all(pid in qx.QUEUE_PROMPTS for pid in said.prompt_ids)


def test_overflow_and_after_hours_rules() -> None:
    hours = qx.OpeningHours(days=frozenset(range(5)), opens=time(8), closes=time(18), timezone="Europe/Berlin")
    rules = qx.QueueRules(
        "billing", hours=hours, overflow_queue="general", overflow_after_wait=300, overflow_when_waiting=20
    )
    monday_noon = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
    sunday = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
    late = datetime(2026, 11, 23, 17, 30, tzinfo=UTC)  # 18:30 in Berlin
    ok = dict(waiting=3, staffed_agents=4, expected_wait=60.0)
    assert qx.decide_entry(rules, now=monday_noon, **ok).kind == "accept"  # type: ignore[arg-type]
    assert qx.decide_entry(rules, now=sunday, **ok) == qx.EntryDecision(  # type: ignore[arg-type]
        "closed", "billing", "after hours", "callback"
    )
    assert qx.decide_entry(rules, now=late, **ok).kind == "closed"  # type: ignore[arg-type]
    assert qx.decide_entry(rules, now=monday_noon, waiting=20, staffed_agents=4, expected_wait=60).queue == "general"
    assert qx.decide_entry(rules, now=monday_noon, waiting=1, staffed_agents=4, expected_wait=400).why.startswith(
        "expected wait"
    )
    assert qx.decide_entry(rules, now=monday_noon, waiting=1, staffed_agents=0, expected_wait=None).why == (
        "no agents staffed"
    )
    night_overflow = qx.QueueRules("billing", hours=hours, after_hours="overflow", overflow_queue="night")
    assert qx.decide_entry(night_overflow, now=sunday, **ok).queue == "night"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overflow_queue"):
        qx.QueueRules("x", after_hours="overflow")
    with pytest.raises(ValueError, match="DTMF"):
        qx.QueueRules("x", callback_key="12")
