"""The clock a breaker reads every time it measures: windows, reset timeouts and latencies.

A clock is any zero-argument callable returning monotonic seconds. Wall-clock time
(`time.time()`) is never used: it jumps when the system clock is corrected, and a breaker
that decides its state from it opens or closes at random.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import cast

from ._options import shown

__all__ = ["Clock", "first_reading", "monotonic"]

Clock = Callable[[], float]

monotonic: Clock = time.monotonic

_LARGEST = sys.float_info.max


def first_reading(clock: Clock) -> float:
    """Read `clock` once and check that it gives a finite number of seconds.

    Only the first reading is checked: checking every one would cost the hot path, and a clock
    that starts out right (time.monotonic, a FakeClock) stays right.
    """
    now: object = clock()
    # Comparisons refuse NaN and the infinities, and never overflow on a huge int.
    finite = isinstance(now, int | float) and -_LARGEST <= now <= _LARGEST
    if isinstance(now, bool) or not finite:
        raise ValueError(
            "clock must be a callable returning monotonic seconds as a finite number; "
            f"clock() returned {shown(now)}"
        )
    return cast(float, now)
