"""Assignment solver against brute force on small matrices."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from itsd.analytics.assignment import linear_sum_assignment, match_eligible


def _brute_force_min(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n > m:
        return _brute_force_min(cost.T)
    best = np.inf
    for cols in itertools.permutations(range(m), n):
        best = min(best, float(cost[np.arange(n), list(cols)].sum()))
    return best


def _check_valid(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> None:
    assert rows.shape == cols.shape
    assert len(set(rows.tolist())) == rows.size
    assert len(set(cols.tolist())) == cols.size
    assert (rows >= 0).all() and (rows < shape[0]).all()
    assert (cols >= 0).all() and (cols < shape[1]).all()
    assert (np.diff(rows) > 0).all()


_shapes = st.tuples(st.integers(0, 6), st.integers(0, 6))


@settings(max_examples=300, deadline=None)
@given(
    _shapes.flatmap(
        lambda s: hnp.arrays(np.float64, s, elements=st.floats(-100.0, 100.0, width=32))
    )
)
def test_lsa_is_optimal_on_real_costs(cost: np.ndarray) -> None:
    rows, cols = linear_sum_assignment(cost)
    _check_valid(rows, cols, cost.shape)
    assert rows.size == min(cost.shape)
    if rows.size:
        assert cost[rows, cols].sum() == pytest.approx(_brute_force_min(cost), abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(_shapes.flatmap(lambda s: hnp.arrays(np.float64, s, elements=st.integers(0, 3))))
def test_lsa_is_optimal_with_many_ties(cost: np.ndarray) -> None:
    rows, cols = linear_sum_assignment(cost)
    _check_valid(rows, cols, cost.shape)
    assert rows.size == min(cost.shape)
    if rows.size:
        assert cost[rows, cols].sum() == _brute_force_min(cost)


def test_lsa_known_example_and_transposed() -> None:
    cost = np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    rows, cols = linear_sum_assignment(cost)
    assert rows.tolist() == [0, 1, 2]
    assert cols.tolist() == [1, 0, 2]
    tall = np.array([[1.0, 9.0], [9.0, 1.0], [0.0, 0.0]])
    rows, cols = linear_sum_assignment(tall)
    _check_valid(rows, cols, tall.shape)
    assert tall[rows, cols].sum() == 1.0


def test_lsa_forbidden_pairs_and_errors() -> None:
    inf = np.inf
    cost = np.array([[inf, 1.0], [2.0, inf]])
    rows, cols = linear_sum_assignment(cost)
    assert cols.tolist() == [1, 0]
    with pytest.raises(ValueError, match="infeasible"):
        linear_sum_assignment(np.array([[inf, inf], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN"):
        linear_sum_assignment(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        linear_sum_assignment(np.zeros(3))
    rows, cols = linear_sum_assignment(np.zeros((0, 3)))
    assert rows.size == 0 and cols.size == 0


def _brute_force_partial(cost: np.ndarray, ok: np.ndarray) -> tuple[int, float]:
    """Largest number of eligible pairs, and the smallest cost among such matchings."""
    n, m = ok.shape
    best: tuple[int, float] = (0, 0.0)

    def walk(i: int, used: frozenset[int], count: int, total: float) -> None:
        nonlocal best
        if i == n:
            if count > best[0] or (count == best[0] and total < best[1]):
                best = (count, total)
            return
        walk(i + 1, used, count, total)
        for j in range(m):
            if ok[i, j] and j not in used:
                walk(i + 1, used | {j}, count + 1, total + float(cost[i, j]))

    walk(0, frozenset(), 0, 0.0)
    return best


@settings(max_examples=300, deadline=None)
@given(
    _shapes.flatmap(
        lambda s: st.tuples(
            hnp.arrays(np.float64, s, elements=st.floats(0.0, 1.0, width=32)),
            hnp.arrays(np.bool_, s),
        )
    )
)
def test_match_eligible_is_max_cardinality_then_min_cost(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    cost, ok = data
    rows, cols = match_eligible(cost, ok)
    _check_valid(rows, cols, cost.shape)
    assert ok[rows, cols].all()
    count, total = _brute_force_partial(cost, ok)
    assert rows.size == count
    assert cost[rows, cols].sum() == pytest.approx(total, abs=1e-6)


def test_match_eligible_ignores_costs_of_ineligible_pairs() -> None:
    cost = np.array([[np.inf, 0.5], [0.2, np.nan]])
    ok = np.array([[False, True], [True, False]])
    rows, cols = match_eligible(cost, ok)
    assert rows.tolist() == [0, 1]
    assert cols.tolist() == [1, 0]


def test_match_eligible_prefers_more_pairs_over_cheaper_pairs() -> None:
    # Row 0 could take column 0 cheaply, but then row 1 (only column 0) stays alone.
    cost = np.array([[0.0, 0.9], [0.9, 5.0]])
    ok = np.array([[True, True], [True, False]])
    rows, cols = match_eligible(cost, ok)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0)]
