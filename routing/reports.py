"""Contact-centre metrics per queue and per agent, as a table and as JSON: one module for simulator, console
and CLI, so a number means the same thing everywhere. Definitions (docs/metrics.md owns them):

- SL20: calls answered within ``threshold`` (20 s) ÷ calls offered; abandoned calls are misses. With
  ``short_abandon`` > 0, calls abandoned within that many seconds are left out of the offered count and the
  report says so.
- ASA: mean wait of answered calls, zero waits included. Abandonment: abandoned ÷ offered.
- Transfer rate: answered calls that reached a second agent ÷ answered calls.
- FCR: answered calls resolved by the first agent with no transfer and no repeat call from the same customer
  for the same reason within 7 days ÷ answered calls.
- Occupancy: time handling calls (talk + wrap-up) ÷ (that time + time available and idle).
- CSAT: mean post-call score 1-5, share of 4-5, response rate = surveys completed ÷ surveys offered.

Per-agent rows attribute a call to its *first* agent (the one whose resolution it measures).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class CallOutcome:
    """One offered call as the reports see it (the simulator and the database both produce these)."""

    call_id: str
    queue: str
    offered_at: float
    """Seconds on any clock; only differences matter."""
    answered_at: float | None = None
    abandoned_at: float | None = None
    agents: tuple[str, ...] = ()
    """Agents who talked to the caller, in order; two or more means transferred."""
    resolved_first: bool = False
    """The first agent resolved it (disposition marked resolved, no transfer)."""
    repeat_within_7d: bool = False
    """The same customer called again for the same reason within 7 days."""
    survey_offered: bool = False
    csat: int | None = None
    """Post-call score 1-5 if the survey was completed."""

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def abandoned(self) -> bool:
        return self.answered_at is None and self.abandoned_at is not None

    @property
    def wait(self) -> float:
        end = self.answered_at if self.answered_at is not None else self.abandoned_at
        return 0.0 if end is None else max(0.0, end - self.offered_at)

    @property
    def transferred(self) -> bool:
        return len(self.agents) >= 2

    @property
    def fcr(self) -> bool:
        return self.answered and self.resolved_first and not self.transferred and not self.repeat_within_7d


@dataclass(frozen=True, slots=True)
class AgentTime:
    """How an agent spent the reporting window (seconds)."""

    agent_id: str
    handling: float
    """Talk + hold + wrap-up."""
    available: float
    """Logged in, ready and idle."""


@dataclass(frozen=True, slots=True)
class Metrics:
    offered: int
    answered: int
    abandoned: int
    sl: float | None
    asa: float | None
    abandonment: float | None
    transfer_rate: float | None
    fcr: float | None
    occupancy: float | None = None
    csat_mean: float | None = None
    csat_top2: float | None = None
    survey_response: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def compute_metrics(
    calls: Iterable[CallOutcome],
    threshold: float = 20.0,
    short_abandon: float = 0.0,
    occupancy: float | None = None,
) -> Metrics:
    offered = answered = abandoned = within = transferred = fcr = 0
    wait_sum = 0.0
    scores: list[int] = []
    surveys_offered = 0
    for call in calls:
        if call.abandoned and short_abandon > 0 and call.wait < short_abandon:
            continue
        offered += 1
        if call.answered:
            answered += 1
            wait = call.wait
            wait_sum += wait
            within += wait <= threshold
            transferred += call.transferred
            fcr += call.fcr
        elif call.abandoned:
            abandoned += 1
        if call.survey_offered:
            surveys_offered += 1
            if call.csat is not None:
                scores.append(call.csat)
    return Metrics(
        offered=offered,
        answered=answered,
        abandoned=abandoned,
        sl=_ratio(within, offered),
        asa=_ratio(wait_sum, answered),
        abandonment=_ratio(abandoned, offered),
        transfer_rate=_ratio(transferred, answered),
        fcr=_ratio(fcr, answered),
        occupancy=occupancy,
        csat_mean=_ratio(sum(scores), len(scores)),
        csat_top2=_ratio(sum(1 for s in scores if s >= 4), len(scores)),
        survey_response=_ratio(len(scores), surveys_offered),
    )


@dataclass(frozen=True)
class Report:
    threshold: float
    short_abandon: float
    overall: Metrics
    queues: dict[str, Metrics]
    agents: dict[str, Metrics]
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold_seconds": self.threshold,
            "short_abandon_excluded_seconds": self.short_abandon,
            "notes": list(self.notes),
            "overall": self.overall.as_dict(),
            "queues": {name: m.as_dict() for name, m in self.queues.items()},
            "agents": {name: m.as_dict() for name, m in self.agents.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    def table(self, agents: bool = True) -> str:
        sl_name = f"SL{self.threshold:g}"
        queue_cols = ["offered", "answered", "abandoned", sl_name, "ASA s", "aband", "transfer", "FCR", "CSAT"]
        lines = [_row(["queue", *queue_cols])]
        for name, m in [*sorted(self.queues.items()), ("ALL", self.overall)]:
            lines.append(_row([name, *_queue_cells(m)]))
        if agents and self.agents:
            lines.append("")
            lines.append(_row(["agent", "answered", "transfer", "FCR", "occupancy", "CSAT"]))
            for name, m in sorted(self.agents.items()):
                lines.append(
                    _row([name, str(m.answered), _pct(m.transfer_rate), _pct(m.fcr), _pct(m.occupancy),
                          _num(m.csat_mean)])
                )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def build_report(
    calls: Iterable[CallOutcome],
    agent_times: Iterable[AgentTime] = (),
    threshold: float = 20.0,
    short_abandon: float = 0.0,
) -> Report:
    """Overall, per-queue and per-agent metrics from call outcomes (and agent time for occupancy)."""
    all_calls = list(calls)
    times: Mapping[str, AgentTime] = {t.agent_id: t for t in agent_times}
    by_queue: dict[str, list[CallOutcome]] = {}
    by_agent: dict[str, list[CallOutcome]] = {}
    for call in all_calls:
        by_queue.setdefault(call.queue, []).append(call)
        if call.agents:
            by_agent.setdefault(call.agents[0], []).append(call)
    for agent_id in times:
        by_agent.setdefault(agent_id, [])

    def occ(agent_id: str) -> float | None:
        t = times.get(agent_id)
        return _ratio(t.handling, t.handling + t.available) if t else None

    total_handling = sum(t.handling for t in times.values())
    total_available = sum(t.available for t in times.values())
    notes: list[str] = []
    if short_abandon > 0:
        notes.append(f"calls abandoned within {short_abandon:g} s are excluded from offered")
    return Report(
        threshold=threshold,
        short_abandon=short_abandon,
        overall=compute_metrics(
            all_calls, threshold, short_abandon, _ratio(total_handling, total_handling + total_available)
        ),
        queues={q: compute_metrics(c, threshold, short_abandon) for q, c in by_queue.items()},
        agents={a: compute_metrics(c, threshold, short_abandon, occ(a)) for a, c in by_agent.items()},
        notes=tuple(notes),
    )


def _row(cells: list[str]) -> str:
    return f"{cells[0]:<16}" + "".join(f"{c:>10}" for c in cells[1:])


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _queue_cells(m: Metrics) -> list[str]:
    return [
        str(m.offered), str(m.answered), str(m.abandoned), _pct(m.sl), _num(m.asa), _pct(m.abandonment),
        _pct(m.transfer_rate), _pct(m.fcr), _num(m.csat_mean),
    ]
