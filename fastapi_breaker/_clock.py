"""The clock a breaker reads every time it measures: windows, reset timeouts and latencies.

A clock is any zero-argument callable returning monotonic seconds. Wall-clock time
(`time.time()`) is never used: it jumps when the system clock is corrected, and a breaker
that decides its state from it opens or closes at random.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "monotonic"]

Clock = Callable[[], float]

monotonic: Clock = time.monotonic
