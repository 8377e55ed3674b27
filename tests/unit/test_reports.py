"""Report definitions (docs/metrics.md) on hand-made calls whose answers are worked out by hand."""

from __future__ import annotations

import json

import pytest

from routing.reports import AgentTime, CallOutcome, build_report, compute_metrics


def calls() -> list[CallOutcome]:
    return [
        # answered at once, resolved by the first agent: FCR
        CallOutcome("c1", "billing", 0.0, answered_at=0.0, agents=("a1",), resolved_first=True,
                    survey_offered=True, csat=5),
        # answered after 20 s exactly (counts as within 20), resolved, but the customer called back: not FCR
        CallOutcome("c2", "billing", 10.0, answered_at=30.0, agents=("a1",), resolved_first=True,
                    repeat_within_7d=True, survey_offered=True, csat=3),
        # answered after 40 s and transferred to a second agent
        CallOutcome("c3", "billing", 0.0, answered_at=40.0, agents=("a2", "a1"), survey_offered=True),
        # abandoned after 3 s and after 60 s
        CallOutcome("c4", "billing", 0.0, abandoned_at=3.0),
        CallOutcome("c5", "tech", 0.0, abandoned_at=60.0),
        # tech call answered in 5 s, resolved
        CallOutcome("c6", "tech", 100.0, answered_at=105.0, agents=("a2",), resolved_first=True,
                    survey_offered=True, csat=4),
    ]


def test_overall_definitions() -> None:
    m = compute_metrics(calls())
    assert (m.offered, m.answered, m.abandoned) == (6, 4, 2)
    assert m.sl == pytest.approx(3 / 6)  # c1, c2 (20 s), c6; abandoned calls are misses
    assert m.asa == pytest.approx((0 + 20 + 40 + 5) / 4)  # zero waits included
    assert m.abandonment == pytest.approx(2 / 6)
    assert m.transfer_rate == pytest.approx(1 / 4)
    assert m.fcr == pytest.approx(2 / 4)  # c1 and c6
    assert m.csat_mean == pytest.approx(4.0)
    assert m.csat_top2 == pytest.approx(2 / 3)
    assert m.survey_response == pytest.approx(3 / 4)


def test_short_abandons_are_excluded_only_when_asked_and_the_report_says_so() -> None:
    report = build_report(calls(), short_abandon=5.0)
    assert report.overall.offered == 5 and report.overall.sl == pytest.approx(3 / 5)
    assert any("abandoned within 5 s" in note for note in report.notes)
    assert build_report(calls()).notes == ()


def test_per_queue_and_per_agent_with_occupancy() -> None:
    report = build_report(calls(), [AgentTime("a1", 300.0, 100.0), AgentTime("a2", 100.0, 300.0),
                                    AgentTime("a3", 0.0, 400.0)])
    assert report.queues["billing"].offered == 4 and report.queues["tech"].offered == 2
    assert report.queues["tech"].sl == pytest.approx(1 / 2)
    # calls are attributed to their first agent: a2 took c3 (transferred) and c6
    assert report.agents["a2"].answered == 2 and report.agents["a2"].transfer_rate == pytest.approx(1 / 2)
    assert report.agents["a1"].fcr == pytest.approx(1 / 2)
    assert report.agents["a1"].occupancy == pytest.approx(0.75)
    assert report.agents["a3"].answered == 0 and report.agents["a3"].fcr is None
    assert report.overall.occupancy == pytest.approx(400 / 1200)
    data = json.loads(report.to_json())
    assert data["queues"]["billing"]["offered"] == 4 and data["threshold_seconds"] == 20.0
    table = report.table()
    assert "SL20" in table and "billing" in table and "a2" in table and "ALL" in table


def test_empty_input_gives_empty_figures_not_errors() -> None:
    m = compute_metrics([])
    assert m.offered == 0 and m.sl is None and m.asa is None
    assert "ALL" in build_report([]).table()
