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
import threading
from array import array
from typing import Any

from ._stats import Stats

__all__ = ["Bucket", "RollingWindow"]


class Bucket:
    __slots__ = (
        "cancelled",
        "epoch",
        "failed",
        "fallbacks",
        "rejected",
        "semaphore_rejections",
        "succeeded",
        "timeouts",
    )

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.succeeded = array("d")  # latency of each success
        self.failed = array("d")  # latency of each failure, timeouts included
        self.rejected = array("B")  # one byte per rejected call
        self.timeouts = 0
        self.fallbacks = 0
        self.semaphore_rejections = 0
        self.cancelled = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "succeeded": list(self.succeeded),
            "failed": list(self.failed),
            "rejects": len(self.rejected),
            "timeouts": self.timeouts,
            "fallbacks": self.fallbacks,
            "semaphore_rejections": self.semaphore_rejections,
            "cancelled": self.cancelled,
        }

    @classmethod
    def from_dict(cls, epoch: int, data: dict[str, Any]) -> Bucket:
        bucket = cls(epoch)
        bucket.succeeded.extend(float(x) for x in data.get("succeeded", ()))
        bucket.failed.extend(float(x) for x in data.get("failed", ()))
        bucket.rejected.extend(bytes(int(data.get("rejects", 0))))
        for counter in ("timeouts", "fallbacks", "semaphore_rejections", "cancelled"):
            setattr(bucket, counter, int(data.get(counter, 0)))
        return bucket


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
                rejects += len(bucket.rejected)
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

    def restore(self, now: float, buckets: list[dict[str, Any]]) -> None:
        with self._lock:
            self._buckets.clear()
            self._origin = now
            restored = sorted(
                (Bucket.from_dict(-int(b["age"]), b) for b in buckets if int(b["age"]) < self.size),
                key=lambda b: b.epoch,
            )
            if not restored or restored[-1].epoch != 0:
                restored.append(Bucket(0))
            self._buckets.extend(restored[-self.size :])
            self.current = restored[-1]
            self.current_end = now + self.width
