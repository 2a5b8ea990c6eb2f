"""The rolling window: counts per time bucket, rotated by the breaker's clock.

Nothing ticks. A bucket is replaced when a call or a read finds the clock past its end, so an
idle breaker costs nothing, and a breaker that wakes after a long pause sees an empty window.

Successes and failures are recorded as latencies appended to an `array`: `append` is one C
call, atomic under the GIL, so the success path needs no lock even when worker threads use
the same breaker. Rejections, which come in floods while the circuit is open, are counted the
same way, one byte each in `rejected`, for the same reason: a lock costs more than the whole
rest of a rejection. Rarer counters are changed under the breaker's lock.
"""

from __future__ import annotations

import math
import sys
import threading
from array import array
from typing import Any

from ._options import check_keys, shown
from ._stats import Stats

__all__ = ["BUCKET_KEYS", "MAX_EXACT_COUNT", "Bucket", "RollingWindow", "parse_window"]

_COUNTERS = ("timeouts", "fallbacks", "semaphore_rejections", "cancelled")
BUCKET_KEYS: tuple[str, ...] = ("age", "succeeded", "failed", "rejects", *_COUNTERS)

# The largest count a snapshot may hold: the largest integer that every JSON reader, doubles
# included, keeps exact.
MAX_EXACT_COUNT = 2**53
_LARGEST = sys.float_info.max


class Bucket:
    __slots__ = (
        "cancelled",
        "epoch",
        "failed",
        "fallbacks",
        "rejected",
        "restored_rejects",
        "semaphore_rejections",
        "succeeded",
        "timeouts",
    )

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.succeeded = array("d")  # latency of each success
        self.failed = array("d")  # latency of each failure, timeouts included
        self.rejected = array("B")  # one byte per rejected call
        # Rejections read from a snapshot: a number, since a snapshot's count may be huge.
        self.restored_rejects = 0
        self.timeouts = 0
        self.fallbacks = 0
        self.semaphore_rejections = 0
        self.cancelled = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "succeeded": list(self.succeeded),
            "failed": list(self.failed),
            "rejects": len(self.rejected) + self.restored_rejects,
            "timeouts": self.timeouts,
            "fallbacks": self.fallbacks,
            "semaphore_rejections": self.semaphore_rejections,
            "cancelled": self.cancelled,
        }


def parse_window(value: object, size: int) -> list[Bucket]:
    """The buckets of a snapshot's `window`, each checked, its path named in any error.

    A snapshot may come from another process: a NaN, a negative age or a count of billions
    must fail here, not hold a breaker open for ever or allocate memory by the count.
    """
    if not isinstance(value, list | tuple):
        raise ValueError(f"window must be a list of buckets, got {shown(value)}")
    buckets: list[Bucket] = []
    ages: set[int] = set()
    for index, entry in enumerate(value):
        where = f"window[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object of bucket counts, got {shown(entry)}")
        check_keys(where, entry, BUCKET_KEYS)
        if "age" not in entry:
            raise ValueError(f"{where} has no 'age'")
        age = entry["age"]
        if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age < size:
            raise ValueError(
                f"{where}.age must be an integer >= 0 and < {size} (rolling_count_buckets), "
                f"got {shown(age)}"
            )
        if age in ages:
            raise ValueError(f"{where}.age must differ from every other bucket's, got {age} again")
        ages.add(age)
        bucket = Bucket(-age)
        bucket.succeeded.extend(_latencies(f"{where}.succeeded", entry.get("succeeded", [])))
        bucket.failed.extend(_latencies(f"{where}.failed", entry.get("failed", [])))
        bucket.restored_rejects = _count(f"{where}.rejects", entry.get("rejects", 0))
        for counter in _COUNTERS:
            setattr(bucket, counter, _count(f"{where}.{counter}", entry.get(counter, 0)))
        if bucket.timeouts > len(bucket.failed):  # a timeout is also a failure
            raise ValueError(
                f"{where}.timeouts must be at most the bucket's failures ({len(bucket.failed)}), "
                f"got {bucket.timeouts}"
            )
        buckets.append(bucket)
    return buckets


def _latencies(where: str, value: object) -> list[float]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where} must be a list of latencies, got {shown(value)}")
    for index, latency in enumerate(value):
        # Comparisons refuse NaN and the infinities, and never overflow on a huge int.
        if (
            isinstance(latency, bool)
            or not isinstance(latency, int | float)
            or not 0 <= latency <= _LARGEST
        ):
            raise ValueError(
                f"{where}[{index}] must be a finite number of seconds >= 0, got {shown(latency)}"
            )
    return list(value)


def _count(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EXACT_COUNT:
        raise ValueError(
            f"{where} must be an integer >= 0 and <= {MAX_EXACT_COUNT}, got {shown(value)}"
        )
    return value


class RollingWindow:
    """`size` buckets of `width` seconds each; the newest is `current`, open until `current_end`."""

    __slots__ = ("_buckets", "_lock", "_origin", "current", "current_end", "size", "width")

    def __init__(self, seconds: float, size: int, now: float, lock: threading.RLock) -> None:
        self.width = seconds / size
        self.size = size
        self._lock = lock
        self._origin = now
        # A list, not a deque(maxlen): ten entries shift cheaply, and an empty deque costs
        # 760 bytes, a quarter of an idle breaker (bench/scale.py counts 10,000 of them).
        self._buckets: list[Bucket] = []
        self.current = Bucket(0)
        self.current_end = now + self.width
        self._buckets.append(self.current)

    def _epoch(self, now: float) -> int:
        return math.floor((now - self._origin) / self.width)

    def rotate(self, now: float) -> bool:
        """Start the bucket that `now` falls in. True if a bucket was closed by this call."""
        with self._lock:
            if now < self.current_end:
                return False  # another thread rotated first
            epoch = self._epoch(now)
            bucket = Bucket(epoch)
            self._buckets.append(bucket)
            if len(self._buckets) > self.size:
                del self._buckets[0]
            # Publish the bucket before its end: a reader that sees the new end sees it too.
            self.current = bucket
            self.current_end = self._origin + (epoch + 1) * self.width
            return True

    def clear(self, now: float) -> None:
        with self._lock:
            self._buckets.clear()
            self._origin = now
            self.current = Bucket(0)
            self.current_end = now + self.width
            self._buckets.append(self.current)

    def live(self, now: float) -> list[Bucket]:
        """The buckets still inside the window at `now`, oldest first."""
        oldest = self._epoch(now) - self.size + 1
        return [b for b in self._buckets if b.epoch >= oldest]

    def outcome_counts(self, now: float) -> tuple[int, int]:
        """(successes, failures) in the window: what the open decision needs, without sorting."""
        successes = failures = 0
        for bucket in self.live(now):
            successes += len(bucket.succeeded)
            failures += len(bucket.failed)
        return successes, failures

    def stats(self, now: float) -> Stats:
        # One pass over the live buckets: /health reads this for every breaker.
        successes = failures = rejects = timeouts = fallbacks = semaphore = cancelled = 0
        latencies: list[float] = []
        with self._lock:
            oldest = self._epoch(now) - self.size + 1
            for bucket in self._buckets:
                if bucket.epoch < oldest:
                    continue
                successes += len(bucket.succeeded)
                failures += len(bucket.failed)
                rejects += len(bucket.rejected) + bucket.restored_rejects
                timeouts += bucket.timeouts
                fallbacks += bucket.fallbacks
                semaphore += bucket.semaphore_rejections
                cancelled += bucket.cancelled
                latencies += bucket.succeeded
                latencies += bucket.failed
        return Stats.compute(
            successes=successes,
            failures=failures,
            rejects=rejects,
            timeouts=timeouts,
            fallbacks=fallbacks,
            semaphore_rejections=semaphore,
            cancelled=cancelled,
            latencies=latencies,
        )

    def to_list(self, now: float) -> list[dict[str, Any]]:
        """The live buckets, newest first, each with its age in buckets (0 is the current one)."""
        with self._lock:
            epoch = self._epoch(now)
            return [{"age": epoch - b.epoch, **b.to_dict()} for b in reversed(self.live(now))]

    def restore(self, now: float, buckets: list[Bucket]) -> None:
        """Start over at `now` with `buckets` from `parse_window()`, ages kept."""
        with self._lock:
            self._buckets.clear()
            self._origin = now
            restored = sorted(buckets, key=lambda b: b.epoch)
            if not restored or restored[-1].epoch != 0:
                restored.append(Bucket(0))
            self._buckets.extend(restored[-self.size :])
            self.current = restored[-1]
            self.current_end = now + self.width
