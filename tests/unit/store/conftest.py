"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from store_events import summary_event  # type: ignore[import-not-found]


@pytest.fixture
def make_summary() -> Callable[..., dict[str, Any]]:
    return summary_event
