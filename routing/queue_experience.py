"""What a waiting caller hears: position, estimated wait (only when reliable), a callback offer that
keeps their place, and the overflow / after-hours rules applied when a call joins a queue. Pure.

Estimated wait for a caller at position ``j`` (1 = next) when every staffed agent is busy: the queue
moves one place each time an agent finishes (rate ``n/AHT``) or someone ahead gives up (rate ``θ``
each, ``θ = 1/mean patience``), so the expected time until this caller reaches an agent, if they
hold, is ``Σ_{i=1..j} 1 / (n/AHT + (i-1)θ)`` — the Erlang A tagged-customer chain of
:mod:`routing.erlang` (with ``θ = 0`` it is Erlang C's ``j·AHT/n``). For someone who has not joined
yet, the queue-level ASA from :func:`routing.erlang.erlang_a_figures` is used.

Live rates come from a sliding window (:class:`RateWindow`). An estimate is *reliable*, and is
announced, only when the window holds enough handled calls for the AHT to be known within
``max_rate_error`` (relative standard error ``1/√samples`` for exponential handle times) and the
spread of the wait itself (its coefficient of variation, ``√Σ 1/r_i² / Σ 1/r_i``) is below
``max_cv``; otherwise the caller hears their position only. :class:`EstimateErrors` measures how far
the announcements were from the waits that followed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

from routing.erlang import erlang_a_figures

# --- live rates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueRates:
    arrival_rate: float
    """Calls per second joining the queue, over the window."""
    aht: float | None
    """Mean handle time in seconds; None until a call has been handled."""
    patience: float | None
    """Mean patience in seconds (time in queue ÷ abandonments); None when nobody gave up (θ = 0)."""
    handled_samples: int
    window_seconds: float


class RateWindow:
    """Arrivals, handle times and abandonments of one queue over the last ``window_seconds``.

    Times are seconds on the caller's clock (epoch seconds live, simulated seconds in tests).
    """

    def __init__(self, window_seconds: float = 3600.0, max_events: int = 100_000) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self._arrivals: deque[float] = deque(maxlen=max_events)
        self._handled: deque[tuple[float, float]] = deque(maxlen=max_events)
        self._waits: deque[tuple[float, float, bool]] = deque(maxlen=max_events)
        """(time, seconds waited, abandoned?) of every call that left the queue."""
        self._started: float | None = None

    def arrival(self, at: float) -> None:
        self._started = at if self._started is None else min(self._started, at)
        self._arrivals.append(at)

    def handled(self, at: float, seconds: float) -> None:
        if seconds >= 0:
            self._handled.append((at, seconds))

    def left_queue(self, at: float, waited: float, abandoned: bool) -> None:
        self._waits.append((at, max(0.0, waited), abandoned))

    def _trim(self, now: float) -> None:
        edge = now - self.window_seconds
        while self._arrivals and self._arrivals[0] < edge:
            self._arrivals.popleft()
        while self._handled and self._handled[0][0] < edge:
            self._handled.popleft()
        while self._waits and self._waits[0][0] < edge:
            self._waits.popleft()

    def rates(self, now: float) -> QueueRates:
        self._trim(now)
        span = min(self.window_seconds, now - self._started) if self._started is not None else 0.0
        arrival_rate = len(self._arrivals) / span if span > 0 else 0.0
        aht = (math.fsum(s for _t, s in self._handled) / len(self._handled)) if self._handled else None
        abandoned = sum(1 for _t, _w, gone in self._waits if gone)
        patience = math.fsum(w for _t, w, _g in self._waits) / abandoned if abandoned else None
        return QueueRates(arrival_rate, aht, patience, len(self._handled), span)


# --- estimates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimatePolicy:
    min_samples: int = 20
    """Handled calls needed in the window before any wait is announced."""
    max_rate_error: float = 0.25
    """Largest tolerated relative standard error of the AHT estimate (1/√samples)."""
    max_cv: float = 0.6
    """Largest tolerated coefficient of variation of the wait itself."""
    round_to_seconds: int = 60
    """Announce whole minutes, rounded up: callers forgive an early answer more than a late one."""


@dataclass(frozen=True)
class WaitEstimate:
    seconds: float
    """Expected wait until an agent answers (if the caller holds)."""
    reliable: bool
    cv: float
    why: str
    """Readable reason, e.g. ``position 4, 6 agents, AHT 280s`` or ``only 3 handled calls``."""

    @property
    def announced_minutes(self) -> int:
        return max(1, math.ceil(self.seconds / 60.0))


def wait_at_position(position: int, agents: int, aht: float, patience: float | None) -> tuple[float, float]:
    """(expected seconds, coefficient of variation) for the caller at ``position`` (1 = next) with
    ``agents`` busy agents: a sum of exponential stages, see the module docstring."""
    if position < 1 or agents < 1 or aht <= 0:
        raise ValueError("position and agents must be ≥ 1 and aht positive")
    theta = 0.0 if patience is None or patience <= 0 or math.isinf(patience) else 1.0 / patience
    base = agents / aht
    rates = [base + i * theta for i in range(position)]
    mean = math.fsum(1.0 / r for r in rates)
    var = math.fsum(1.0 / (r * r) for r in rates)
    return mean, math.sqrt(var) / mean


def estimate_wait(position: int, agents: int, rates: QueueRates, policy: EstimatePolicy | None = None) -> WaitEstimate:
    """Estimated wait for the caller at ``position`` in a queue served by ``agents`` agents."""
    policy = policy or EstimatePolicy()
    if agents < 1:
        return WaitEstimate(math.inf, False, math.inf, "no agents staffed")
    if rates.aht is None or rates.handled_samples < policy.min_samples:
        return WaitEstimate(math.nan, False, math.inf, f"only {rates.handled_samples} handled calls")
    seconds, cv = wait_at_position(position, agents, rates.aht, rates.patience)
    rate_error = 1.0 / math.sqrt(rates.handled_samples)
    why = f"position {position}, {agents} agents, AHT {rates.aht:.0f}s"
    if rate_error > policy.max_rate_error:
        return WaitEstimate(seconds, False, cv, why + f"; AHT uncertain (±{rate_error:.0%})")
    if cv > policy.max_cv:
        return WaitEstimate(seconds, False, cv, why + f"; too uncertain (cv {cv:.2f})")
    return WaitEstimate(seconds, True, cv, why)


def expected_wait_on_arrival(agents: int, rates: QueueRates, threshold: float = 20.0) -> float | None:
    """Queue-level ASA (Erlang A, or C without abandonments) for a caller about to join; None when
    the rates are unknown or the queue is overloaded without abandonment (no steady state)."""
    if agents < 1 or rates.aht is None or rates.arrival_rate <= 0:
        return None
    patience = rates.patience if rates.patience is not None else math.inf
    if math.isinf(patience) and rates.arrival_rate * rates.aht >= agents:
        return None
    return erlang_a_figures(agents, rates.arrival_rate, rates.aht, patience, threshold).asa


# --- measuring the estimates ----------------------------------------------------------------------


@dataclass
class EstimateErrors:
    """Predicted vs actual waits, so the announcements can be checked against what happened."""

    pending: dict[str, tuple[float, float, bool]] = field(default_factory=dict)
    """call id → (time of the estimate, predicted seconds, reliable?)."""
    errors: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    """reliable? → list of (actual − predicted) in seconds."""
    actuals: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})

    def predicted(self, call_id: str, at: float, estimate: WaitEstimate) -> None:
        if math.isfinite(estimate.seconds) and call_id not in self.pending:
            self.pending[call_id] = (at, estimate.seconds, estimate.reliable)

    def answered(self, call_id: str, at: float) -> None:
        found = self.pending.pop(call_id, None)
        if found is not None:
            when, predicted, reliable = found
            self.errors[reliable].append((at - when) - predicted)
            self.actuals[reliable].append(at - when)

    def abandoned(self, call_id: str) -> None:
        self.pending.pop(call_id, None)

    def summary(self, reliable: bool = True) -> dict[str, float]:
        errs, acts = self.errors[reliable], self.actuals[reliable]
        if not errs:
            return {"count": 0}
        mean_actual = math.fsum(acts) / len(acts)
        return {
            "count": len(errs),
            "mean_error_s": math.fsum(errs) / len(errs),
            "mean_abs_error_s": math.fsum(abs(e) for e in errs) / len(errs),
            "relative_bias": (math.fsum(errs) / len(errs)) / mean_actual if mean_actual > 0 else 0.0,
        }


# --- rules applied when a call joins a queue ---------------------------------------------------


@dataclass(frozen=True)
class OpeningHours:
    """Weekly hours in the centre's timezone: ``days`` 0 = Monday … 6 = Sunday."""

    days: frozenset[int] = frozenset(range(7))
    opens: time = time(0, 0)
    closes: time = time(23, 59, 59)
    timezone: str = "UTC"

    def is_open(self, at: datetime) -> bool:
        zone: tzinfo = ZoneInfo(self.timezone)
        local = at.astimezone(zone)
        return local.weekday() in self.days and self.opens <= local.time() <= self.closes


@dataclass(frozen=True)
class QueueRules:
    queue: str
    hours: OpeningHours | None = None
    """None: always open."""
    after_hours: Literal["callback", "hangup", "overflow"] = "callback"
    """Outside hours: take a callback request (place kept for the morning), say closed, or overflow."""
    overflow_queue: str | None = None
    overflow_after_wait: float | None = None
    """Estimated wait (s) above which new calls go to ``overflow_queue``."""
    overflow_when_waiting: int | None = None
    """Calls already waiting at which new calls go to ``overflow_queue``."""
    overflow_when_no_agents: bool = True
    """Nobody staffed (logged in) for this queue: overflow (if a queue is named)."""
    callback_offer_after: float | None = 60.0
    """Offer a callback once the expected wait exceeds this (s); None: never offer."""
    callback_key: str = "1"
    announce_every: float = 60.0
    """Seconds between position/wait announcements to a waiting caller."""

    def __post_init__(self) -> None:
        if self.announce_every <= 0:
            raise ValueError(f"queue {self.queue!r}: announce_every must be positive")
        if self.after_hours == "overflow" and not self.overflow_queue:
            raise ValueError(f"queue {self.queue!r}: after_hours 'overflow' needs overflow_queue")
        if len(self.callback_key) != 1 or self.callback_key not in "0123456789*#":
            raise ValueError(f"queue {self.queue!r}: callback_key must be one DTMF key")


@dataclass(frozen=True)
class EntryDecision:
    kind: Literal["accept", "overflow", "closed"]
    queue: str
    """Where the call goes (the original queue, or the overflow queue)."""
    why: str
    after_hours: Literal["callback", "hangup", "overflow"] | None = None


def decide_entry(
    rules: QueueRules, *, now: datetime, waiting: int, staffed_agents: int, expected_wait: float | None
) -> EntryDecision:
    """Where a call that asked for ``rules.queue`` goes; overflow never chains (one hop)."""
    if rules.hours is not None and not rules.hours.is_open(now):
        if rules.after_hours == "overflow" and rules.overflow_queue:
            return EntryDecision("overflow", rules.overflow_queue, "after hours", "overflow")
        return EntryDecision("closed", rules.queue, "after hours", rules.after_hours)
    target = rules.overflow_queue
    if target:
        if rules.overflow_when_no_agents and staffed_agents == 0:
            return EntryDecision("overflow", target, "no agents staffed")
        if rules.overflow_when_waiting is not None and waiting >= rules.overflow_when_waiting:
            return EntryDecision("overflow", target, f"{waiting} calls waiting")
        if (
            rules.overflow_after_wait is not None
            and expected_wait is not None
            and expected_wait > rules.overflow_after_wait
        ):
            return EntryDecision("overflow", target, f"expected wait {expected_wait:.0f}s")
    return EntryDecision("accept", rules.queue, "open")


# --- what to say ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Announcement:
    prompt_ids: tuple[str, ...]
    texts: tuple[str, ...]
    offers_callback: bool


QUEUE_PROMPTS: dict[str, str] = {
    "queue_position_pre": "You are number",
    "queue_position_post": "in the queue.",
    "queue_next": "You are next in the queue.",
    "queue_wait_pre": "Your expected wait is about",
    "queue_wait_minute": "minute.",
    "queue_wait_minutes": "minutes.",
    "queue_callback_offer": "To keep your place and be called back instead, press",
    "queue_callback_ok": "Thank you. You keep your place, and we will call you back when an agent is free. Goodbye.",
    "queue_closed": "We are closed now. Please call again during opening hours. Goodbye.",
    **{f"num_{n}": str(n) for n in range(1, 31)},
    "num_many": "more than thirty",
    **{f"key_{k}": f"{k}." for k in "0123456789"},
    "key_star": "star.",
    "key_hash": "hash.",
}
"""Prompt id → text. Numbers and keys are separate recordings so any position, and whichever
callback key a queue is configured with, can be said from WAV files: the callback offer is
``queue_callback_offer`` ("… press") followed by :func:`key_prompt` of the queue's key."""


def key_prompt(key: str) -> str:
    """The prompt id that says one DTMF key (``key_0`` … ``key_9``, ``key_star``, ``key_hash``)."""
    names = {"*": "star", "#": "hash"}
    if len(key) != 1 or key not in "0123456789*#":
        raise ValueError(f"not one DTMF key: {key!r}")
    return f"key_{names.get(key, key)}"


def _number(n: int) -> str:
    return f"num_{n}" if 1 <= n <= 30 else "num_many"


def announcement(
    position: int, estimate: WaitEstimate | None, rules: QueueRules, *, callback_allowed: bool = True
) -> Announcement:
    """The prompts for one announcement: position, the wait only if reliable, then the callback offer
    when the wait is long enough and a callback is possible (the caller has a number)."""
    ids: list[str] = []
    if position == 1:
        ids.append("queue_next")
    elif position > 1:
        ids += ["queue_position_pre", _number(position), "queue_position_post"]
    if estimate is not None and estimate.reliable:
        minutes = estimate.announced_minutes
        ids += ["queue_wait_pre", _number(minutes), "queue_wait_minute" if minutes == 1 else "queue_wait_minutes"]
    offer = bool(
        callback_allowed
        and rules.callback_offer_after is not None
        and position > 1
        and estimate is not None
        and math.isfinite(estimate.seconds)
        and estimate.seconds > rules.callback_offer_after
    )
    if offer:
        ids += ["queue_callback_offer", key_prompt(rules.callback_key)]
    texts = tuple(QUEUE_PROMPTS[i] for i in ids)
    return Announcement(tuple(ids), texts, offer)


def due(last: datetime | None, now: datetime, every: float) -> bool:
    return last is None or now - last >= timedelta(seconds=every)
