"""Unit tests of the PyTorch backend's logic that needs no torch: CUDA-graph buckets."""

from __future__ import annotations

import pytest

from itsd.engines.torch_backend import bucket_for, graph_buckets


def test_graph_buckets_are_powers_of_two_up_to_the_max() -> None:
    assert graph_buckets(1) == [1]
    assert graph_buckets(32) == [1, 2, 4, 8, 16, 32]
    assert graph_buckets(24) == [1, 2, 4, 8, 16, 24]


def test_a_batch_runs_in_the_smallest_bucket_that_holds_it() -> None:
    buckets = graph_buckets(24)
    assert [bucket_for(n, buckets) for n in (1, 2, 3, 5, 16, 17, 24)] == [1, 2, 4, 8, 16, 24, 24]
    with pytest.raises(ValueError, match="exceed"):
        bucket_for(25, buckets)
