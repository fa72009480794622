"""Optimal assignment for the tracker: a rectangular linear-sum-assignment solver in numpy.

``linear_sum_assignment`` is the shortest-augmenting-path algorithm of Jonker and
Volgenant in the rectangular form described by Crouse ("On implementing 2D rectangular
assignment algorithms", IEEE TAES 2016), the same algorithm SciPy uses; SciPy is not a
dependency, so it lives here, with the inner loop over columns vectorised.

``match_eligible`` is what the tracker calls: a maximum-cardinality, minimum-cost matching
restricted to the eligible pairs (those above the IoU gate). It splits the bipartite graph
of eligible pairs into connected components first; in traffic scenes almost every
component is a single track and a single detection, matched without running the solver,
so a frame with a hundred detections costs a handful of array operations.

This module must never import anything else from itsd; it knows nothing about boxes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.intp]


def linear_sum_assignment(cost: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    """Minimum-cost assignment of the rows of ``cost`` (N, M) to its columns.

    Every row is assigned when N <= M, every column when N > M; the sum of the chosen
    entries is minimal. ``+inf`` marks a forbidden pair. Returns ``(rows, cols)``, sorted by
    row, like ``scipy.optimize.linear_sum_assignment``.

    Raises ``ValueError`` when ``cost`` is not 2-D, holds NaN or ``-inf``, or when the
    forbidden pairs leave no complete assignment.
    """
    c = np.array(cost, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"cost must be a 2-D array, got shape {c.shape}")
    if np.isnan(c).any() or np.isneginf(c).any():
        raise ValueError("cost must not contain NaN or -inf")
    n_rows, n_cols = c.shape
    if n_rows == 0 or n_cols == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty.copy()
    transposed = n_rows > n_cols
    if transposed:
        c = np.ascontiguousarray(c.T)
        n_rows, n_cols = n_cols, n_rows

    u = np.zeros(n_rows)
    v = np.zeros(n_cols)
    col4row = np.full(n_rows, -1, dtype=np.intp)
    row4col = np.full(n_cols, -1, dtype=np.intp)
    for cur_row in range(n_rows):
        shortest = np.full(n_cols, np.inf)
        path = np.full(n_cols, -1, dtype=np.intp)
        visited_rows = np.zeros(n_rows, dtype=bool)
        visited_cols = np.zeros(n_cols, dtype=bool)
        min_val = 0.0
        i = cur_row
        sink = -1
        while sink < 0:
            visited_rows[i] = True
            reduced = min_val + c[i] - u[i] - v
            better = ~visited_cols & (reduced < shortest)
            path[better] = i
            shortest[better] = reduced[better]
            masked = np.where(visited_cols, np.inf, shortest)
            lowest = float(masked.min())
            if lowest == np.inf:
                raise ValueError(
                    "cost matrix is infeasible: forbidden pairs block every assignment"
                )
            ties = np.flatnonzero(masked == lowest)
            free = ties[row4col[ties] < 0]
            j = int(free[0]) if free.size else int(ties[0])
            min_val = lowest
            visited_cols[j] = True
            if row4col[j] < 0:
                sink = j
            else:
                i = int(row4col[j])
        # Update the dual variables, then flip the augmenting path.
        u[cur_row] += min_val
        others = visited_rows.copy()
        others[cur_row] = False
        u[others] += min_val - shortest[col4row[others]]
        v[visited_cols] -= min_val - shortest[visited_cols]
        j = sink
        while True:
            i = int(path[j])
            row4col[j] = i
            col4row[i], j = j, int(col4row[i])
            if i == cur_row:
                break

    if transposed:
        order = np.argsort(col4row)
        return col4row[order].astype(np.intp), order.astype(np.intp)
    return np.arange(n_rows, dtype=np.intp), col4row


def match_eligible(cost: npt.ArrayLike, eligible: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    """Match rows to columns using only pairs where ``eligible`` is true.

    The matching has the largest possible number of pairs and, among those, the smallest
    total ``cost``. ``cost`` and ``eligible`` are (N, M); costs of ineligible pairs are
    ignored (they may be anything, including inf). Returns ``(rows, cols)`` sorted by row.
    """
    c = np.asarray(cost, dtype=np.float64)
    ok = np.asarray(eligible, dtype=bool)
    if c.ndim != 2 or c.shape != ok.shape:
        raise ValueError(f"cost {c.shape} and eligible {ok.shape} must be 2-D of one shape")
    n_rows, n_cols = ok.shape
    empty = np.zeros(0, dtype=np.intp)
    if n_rows == 0 or n_cols == 0 or not ok.any():
        return empty, empty.copy()
    if not np.isfinite(c[ok]).all():
        raise ValueError("costs of eligible pairs must be finite")

    row_deg = ok.sum(axis=1)
    col_deg = ok.sum(axis=0)
    # Components made of one row and one column: matched directly.
    single_rows = np.flatnonzero(row_deg == 1)
    single_cols = ok[single_rows].argmax(axis=1)
    trivial = col_deg[single_cols] == 1
    rows_out = [single_rows[trivial]]
    cols_out = [single_cols[trivial].astype(np.intp)]

    busy = ok.copy()
    busy[single_rows[trivial]] = False
    if busy.any():
        # Label the connected components of the bipartite graph by propagating the smallest
        # row index through eligible pairs until nothing changes (a few rounds in practice).
        sentinel = n_rows
        row_lab = np.where(busy.any(axis=1), np.arange(n_rows), sentinel)
        while True:
            col_lab = np.where(busy, row_lab[:, None], sentinel).min(axis=0)
            new_lab = np.minimum(row_lab, np.where(busy, col_lab[None, :], sentinel).min(axis=1))
            if np.array_equal(new_lab, row_lab):
                break
            row_lab = new_lab
        for label in np.unique(row_lab[row_lab < sentinel]):
            rows = np.flatnonzero(row_lab == label)
            cols = np.flatnonzero(col_lab == label)
            sub_ok = busy[np.ix_(rows, cols)]
            sub = c[np.ix_(rows, cols)]
            # A forbidden pair costs more than any difference between two sets of eligible
            # pairs, so the solver first maximises the number of eligible pairs.
            spread = float(np.abs(sub[sub_ok]).max())
            big = 2.0 * min(rows.size, cols.size) * spread + 1.0
            r, k = linear_sum_assignment(np.where(sub_ok, sub, big))
            keep = sub_ok[r, k]
            rows_out.append(rows[r[keep]])
            cols_out.append(cols[k[keep]])

    rows_all = np.concatenate(rows_out).astype(np.intp)
    cols_all = np.concatenate(cols_out).astype(np.intp)
    order = np.argsort(rows_all, kind="stable")
    return rows_all[order], cols_all[order]
