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
        # Made on the first failure: most buckets see none.
        self.failed: array[float] | None = None  # latency of each failure, timeouts included
        # Made now, though most buckets see no rejection either: the rejection path appends to
        # it without a lock, and a test for None there would cost every rejection.
        self.rejected = array("B")  # one byte per rejected call
        # Rejections read from a snapshot: a number, since a snapshot's count may be huge.
        self.restored_rejects = 0
        self.timeouts = 0
        self.fallbacks = 0
        self.semaphore_rejections = 0
        self.cancelled = 0

    @property
    def failures(self) -> int:
        return 0 if self.failed is None else len(self.failed)

    @property
    def rejects(self) -> int:
        return len(self.rejected) + self.restored_rejects

    def fail(self, latency: float) -> None:
        """Count a failure. Under the core's lock: only the first one makes the array."""
        if self.failed is None:
            self.failed = array("d")
        self.failed.append(latency)

    def reject(self) -> None:
        """Count a rejection (the lock-free path appends to `rejected` itself)."""
        self.rejected.append(1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "succeeded": list(self.succeeded),
            "failed": list(self.failed or ()),
            "rejects": self.rejects,
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
        for latency in _latencies(f"{where}.failed", entry.get("failed", [])):
            bucket.fail(latency)
        bucket.restored_rejects = _count(f"{where}.rejects", entry.get("rejects", 0))
        for counter in _COUNTERS:
            setattr(bucket, counter, _count(f"{where}.{counter}", entry.get(counter, 0)))
        if bucket.timeouts > bucket.failures:  # a timeout is also a failure
            raise ValueError(
                f"{where}.timeouts must be at most the bucket's failures ({bucket.failures}), "
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
    """`size` buckets of `width` seconds each; the newest is `current`, open until `current_end`.

    Holds no lock of its own: the breaker's core calls `rotate`, `clear`, `restore` and the
    readers under its lock. An unused window holds no bucket: the first call starts it, so a
    breaker that is made and never called costs a few pointers here.
    """

    __slots__ = ("_buckets", "_origin", "current", "current_end", "size", "width")

    def __init__(self, width: float, size: int, now: float) -> None:
        self.width = width
        self.size = size
        self._origin = now  # bucket edges fall at whole widths from here
        self._buckets: list[Bucket] | tuple[()] = ()  # a list from the first call on
        # Never appended to: `current_end` sends the first call to `rotate()` first.
        self.current = _UNUSED
        self.current_end = _NEVER

    def _epoch(self, now: float) -> int:
        return math.floor((now - self._origin) / self.width)

    def rotate(self, now: float) -> bool:
        """Start the bucket that `now` falls in. True if a bucket was closed by this call."""
        if now < self.current_end:
            return False  # another thread rotated first
        unused = self.current is _UNUSED
        epoch = self._epoch(now)
        bucket = Bucket(epoch)
        if self._buckets:
            buckets = self._buckets
            buckets.append(bucket)  # not empty: a list
            if len(buckets) > self.size:
                del buckets[0]
        else:
            self._buckets = [bucket]
        # Publish the bucket before its end: a reader that sees the new end sees it too.
        self.current = bucket
        self.current_end = self._origin + (epoch + 1) * self.width
        return not unused

    def bucket(self, now: float) -> Bucket:
        """The bucket `now` falls in, rotated to if needed."""
        if now >= self.current_end:
            self.rotate(now)
        return self.current

    def clear(self, now: float) -> None:
        """Forget every count; the window starts again at `now`."""
        self._origin = now
        self._buckets = ()
        self.current = _UNUSED
        self.current_end = _NEVER

    def live(self, now: float) -> list[Bucket]:
        """The buckets still inside the window at `now`, oldest first."""
        oldest = self._epoch(now) - self.size + 1
        return [b for b in self._buckets if b.epoch >= oldest]

    def failures(self, now: float) -> int:
        """The failures in the window."""
        return sum(bucket.failures for bucket in self.live(now))

    def outcome_counts(self, now: float) -> tuple[int, int]:
        """(successes, failures) in the window: what the open decision needs, without sorting."""
        successes = failures = 0
        for bucket in self.live(now):
            successes += len(bucket.succeeded)
            failures += bucket.failures
        return successes, failures

    def stats(self, now: float) -> Stats:
        # One pass over the live buckets: /health reads this for every breaker.
        successes = failures = rejects = timeouts = fallbacks = semaphore = cancelled = 0
        latencies: list[float] = []
        for bucket in self.live(now):
            successes += len(bucket.succeeded)
            failures += bucket.failures
            rejects += bucket.rejects
            timeouts += bucket.timeouts
            fallbacks += bucket.fallbacks
            semaphore += bucket.semaphore_rejections
            cancelled += bucket.cancelled
            latencies += bucket.succeeded
            if bucket.failed is not None:
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
        epoch = self._epoch(now)
        return [{"age": epoch - b.epoch, **b.to_dict()} for b in reversed(self.live(now))]

    def restore(self, now: float, buckets: list[Bucket]) -> None:
        """Start over at `now` with `buckets` from `parse_window()`, ages kept."""
        self.clear(now)
        if not buckets:
            return
        restored = sorted(buckets, key=lambda b: b.epoch)
        if restored[-1].epoch != 0:
            restored.append(Bucket(0))
        self._buckets = restored[-self.size :]
        self.current = restored[-1]
        self.current_end = now + self.width


# The placeholder `current` of a window no call has used yet, and its end.
_UNUSED = Bucket(0)
_NEVER = -math.inf
