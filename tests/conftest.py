"""Fixtures shared by more than one test module."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    # Switching threads every microsecond makes a race show up, without any sleep.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)
