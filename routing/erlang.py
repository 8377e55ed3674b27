"""Erlang B, C and A (M/M/n+M) formulas, exact and numerically stable.

Used three ways: the simulator's tests check themselves against these, queue experience estimates waits
from live rates, and staffing questions ("how many agents for 80/20?") are answered without simulating.

Stability: Erlang B uses the recursion ``B(k) = a B(k-1) / (k + a B(k-1))`` (no factorials, no overflow for
thousands of servers); Erlang C is derived from B. Erlang A is computed from the birth-death stationary
distribution of M/M/n+M, built by ratios from the mode outwards and truncated once the tail is below 1e-16 of
the mass, then a tagged-customer phase-type chain gives the waiting-time quantities exactly (up to that
truncation). All times are in the caller's unit (seconds throughout this project).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def erlang_b(servers: int, load: float) -> float:
    """Blocking probability of M/M/n/n with ``load`` Erlangs offered to ``servers`` servers."""
    if servers < 0 or load < 0:
        raise ValueError("servers and load must be non-negative")
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arriving call waits (M/M/n, no abandonment). 1.0 when the system is unstable."""
    if servers <= 0 or load >= servers:
        return 1.0
    if load == 0:
        return 0.0
    b = erlang_b(servers, load)
    return servers * b / (servers - load * (1.0 - b))


@dataclass(frozen=True)
class QueueFigures:
    """What a queueing formula predicts for one queue."""

    p_wait: float
    """Probability an arriving call waits at all (finds every agent busy)."""
    service_level: float
    """Calls answered within the threshold ÷ calls offered (abandoned calls count as misses)."""
    asa: float
    """Mean wait of answered calls, zero waits included."""
    abandonment: float
    """Abandoned ÷ offered (0 for Erlang C)."""
    occupancy: float
    """Carried load ÷ servers."""


def erlang_c_figures(servers: int, arrival_rate: float, aht: float, threshold: float = 20.0) -> QueueFigures:
    """M/M/n with FCFS: service level within ``threshold``, ASA, occupancy."""
    load = arrival_rate * aht
    if load >= servers:
        raise ValueError(f"unstable: {load:.2f} Erlangs offered to {servers} agents without abandonment")
    c = erlang_c(servers, load)
    sl = 1.0 - c * math.exp(-(servers - load) * threshold / aht)
    asa = c * aht / (servers - load)
    return QueueFigures(c, sl, asa, 0.0, load / servers)


def _stationary_mmnm(servers: int, lam: float, mu: float, theta: float) -> list[float]:
    """Stationary distribution of the number in system for M/M/n+M, normalised, truncated at 1e-16."""
    # log-weights avoid overflow: w_k / w_{k-1} = lam / death_rate(k).
    logs = [0.0]
    k = 0
    while True:
        k += 1
        death = min(k, servers) * mu + max(k - servers, 0) * theta
        logs.append(logs[-1] + math.log(lam / death))
        # Past the servers the ratio falls (theta > 0): stop once the weight is tiny relative to the peak.
        if k > servers and logs[-1] < max(logs) - 40.0 and lam < death:
            break
        if k > servers + 1_000_000:
            raise ValueError("Erlang A tail does not converge")
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    total = math.fsum(weights)
    return [w / total for w in weights]


def erlang_a_figures(
    servers: int, arrival_rate: float, aht: float, patience: float, threshold: float = 20.0
) -> QueueFigures:
    """M/M/n+M (Erlang A), FCFS, exponential patience with mean ``patience``.

    A call that finds ``k >= n`` in the system is at queue position ``j = k - n + 1``. From position ``i`` it
    moves forward at rate ``n mu + (i - 1) theta`` (a service ends or one of the ``i - 1`` ahead gives up)
    and abandons at rate ``theta``; service level and ASA come from that chain (uniformised for the
    threshold probability, a closed recursion for the means).
    """
    if patience <= 0 or math.isinf(patience):
        return erlang_c_figures(servers, arrival_rate, aht, threshold)
    mu, theta, lam = 1.0 / aht, 1.0 / patience, arrival_rate
    pi = _stationary_mmnm(servers, lam, mu, theta)
    positions = len(pi) - servers  # j = 1 .. positions
    p_wait = math.fsum(pi[servers:])
    mean_queue = math.fsum((k - servers) * pi[k] for k in range(servers + 1, len(pi)))
    abandonment = theta * mean_queue / lam
    carried = (lam * (1.0 - abandonment)) / mu

    # Probability of being served, and E[wait; served], starting at position j (recursions in j).
    served = [1.0] * (positions + 1)
    wait_served = [0.0] * (positions + 1)
    for i in range(1, positions + 1):
        rate = servers * mu + (i - 1) * theta
        q = rate / (rate + theta)
        served[i] = q * served[i - 1]
        wait_served[i] = q * (served[i - 1] / (rate + theta) + wait_served[i - 1])
    p_no_wait = 1.0 - p_wait
    answered = p_no_wait + math.fsum(pi[servers + j - 1] * served[j] for j in range(1, positions + 1))
    total_wait = math.fsum(pi[servers + j - 1] * wait_served[j] for j in range(1, positions + 1))
    asa = total_wait / answered if answered > 0 else 0.0

    # P(served within threshold | start at j) by uniformisation of the tagged-customer chain.
    if threshold <= 0:
        return QueueFigures(p_wait, p_no_wait, asa, abandonment, carried / servers)
    big = servers * mu + positions * theta
    steps_mean = big * threshold
    max_steps = int(steps_mean + 12.0 * math.sqrt(steps_mean) + 30)
    vec = [pi[servers + j - 1] if j >= 1 else 0.0 for j in range(positions + 1)]  # index 0 = served
    within = 0.0
    log_poisson = -steps_mean
    for m in range(max_steps + 1):
        if m > 0:
            log_poisson += math.log(steps_mean / m)
            new = [0.0] * (positions + 1)
            new[0] = vec[0]
            for i in range(1, positions + 1):
                mass = vec[i]
                if mass == 0.0:
                    continue
                fwd = (servers * mu + (i - 1) * theta) / big
                ab = theta / big
                new[i - 1] += mass * fwd
                new[i] += mass * (1.0 - fwd - ab)
            vec = new
        within += math.exp(log_poisson) * vec[0]
    sl = p_no_wait + within
    return QueueFigures(p_wait, sl, asa, abandonment, carried / servers)


def agents_for_service_level(
    arrival_rate: float, aht: float, target: float, threshold: float = 20.0, patience: float | None = None
) -> int:
    """Smallest number of agents reaching ``target`` service level (Erlang A if ``patience`` is given)."""
    n = max(1, math.floor(arrival_rate * aht))
    while True:
        if patience is None:
            stable = n > arrival_rate * aht
            if stable and erlang_c_figures(n, arrival_rate, aht, threshold).service_level >= target:
                return n
        elif erlang_a_figures(n, arrival_rate, aht, patience, threshold).service_level >= target:
            return n
        n += 1
