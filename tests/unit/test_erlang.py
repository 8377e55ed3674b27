"""Erlang B/C/A against independent closed forms computed here (exact rationals, Poisson identities)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from routing.erlang import (
    agents_for_service_level,
    erlang_a_figures,
    erlang_b,
    erlang_c,
    erlang_c_figures,
)


def exact_b(n: int, a: int) -> Fraction:
    terms = [Fraction(a**k, math.factorial(k)) for k in range(n + 1)]
    return terms[-1] / sum(terms)


def exact_c(n: int, a: int) -> Fraction:
    top = Fraction(a**n, math.factorial(n)) * Fraction(n, n - a)
    return top / (sum(Fraction(a**k, math.factorial(k)) for k in range(n)) + top)


@pytest.mark.parametrize(("n", "a"), [(1, 0), (5, 3), (10, 5), (30, 25), (90, 84)])
def test_erlang_b_and_c_match_factorial_formulas(n: int, a: int) -> None:
    assert erlang_b(n, a) == pytest.approx(float(exact_b(n, a)), rel=1e-12, abs=1e-15)
    if a < n:
        assert erlang_c(n, a) == pytest.approx(float(exact_c(n, a)), rel=1e-12, abs=1e-15)


def test_erlang_b_is_stable_for_thousands_of_servers() -> None:
    value = erlang_b(5000, 4900.0)
    assert 0.0 < value < 0.05
    assert erlang_c(5000, 4900.0) < 1.0


def test_erlang_c_edge_cases_and_textbook_service_level() -> None:
    assert erlang_c(10, 10) == 1.0
    assert erlang_c(10, 0) == 0.0
    with pytest.raises(ValueError, match="unstable"):
        erlang_c_figures(10, 12 / 300, 300)
    # SL = 1 - C e^{-(n-a) t / aht}, ASA = C aht / (n - a): recomputed from the exact C.
    c = float(exact_c(15, 12))
    figures = erlang_c_figures(15, 12 / 180, 180, threshold=20)
    assert figures.service_level == pytest.approx(1 - c * math.exp(-3 * 20 / 180), rel=1e-12)
    assert figures.asa == pytest.approx(c * 180 / 3, rel=1e-12)
    assert figures.occupancy == pytest.approx(12 / 15)


def test_erlang_a_tends_to_erlang_c_as_patience_grows() -> None:
    c = erlang_c_figures(15, 14 / 300, 300)
    a = erlang_a_figures(15, 14 / 300, 300, patience=1e9)
    assert a.service_level == pytest.approx(c.service_level, abs=1e-5)
    assert a.asa == pytest.approx(c.asa, rel=1e-4)
    assert a.abandonment < 1e-6


def test_erlang_a_with_patience_equal_to_aht_is_poisson_in_system() -> None:
    # theta = mu makes every state's death rate k mu: number in system ~ Poisson(a), exactly.
    n, a = 12, 11.0
    figures = erlang_a_figures(n, a / 120, 120, patience=120)
    poisson = [math.exp(-a) * a**k / math.factorial(k) for k in range(n)]
    assert figures.p_wait == pytest.approx(1 - math.fsum(poisson), rel=1e-9)
    # Abandonment = E[queue] theta / lambda = E[(N - n)+] / a for Poisson N.
    tail = math.fsum((k - n) * math.exp(-a + k * math.log(a) - math.lgamma(k + 1)) for k in range(n + 1, 200))
    assert figures.abandonment == pytest.approx(tail / a, rel=1e-9)


def test_erlang_a_is_internally_consistent() -> None:
    f = erlang_a_figures(15, 14 / 300, 300, patience=300)
    assert 0 < f.abandonment < f.p_wait < 1
    assert f.service_level <= 1 - f.abandonment
    assert erlang_a_figures(15, 14 / 300, 300, 300, threshold=0).service_level == pytest.approx(1 - f.p_wait)
    # Even an overloaded queue is stable with abandonment.
    over = erlang_a_figures(10, 15 / 300, 300, patience=120)
    assert 0.2 < over.abandonment < 1


def test_staffing_for_80_20() -> None:
    n = agents_for_service_level(100 / 1800 * 10, 180, 0.8)
    assert erlang_c_figures(n, 100 / 1800 * 10, 180).service_level >= 0.8
    assert erlang_c_figures(n - 1, 100 / 1800 * 10, 180).service_level < 0.8 if n - 1 > 10 else True
    assert agents_for_service_level(14 / 300, 300, 0.8, patience=300) <= agents_for_service_level(14 / 300, 300, 0.8)
