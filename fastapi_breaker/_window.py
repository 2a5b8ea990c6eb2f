"""The rolling window: counts per time bucket, rotated by the breaker's clock.

Nothing ticks. A bucket is replaced when a call or a read finds the clock past its end, so an
idle breaker costs nothing, and a breaker that wakes after a long pause sees an empty window.

Successes and failures are recorded as latencies appended to an `array`: `append` is one C
call, atomic under the GIL, so the success path needs no lock even when worker threads use
the same breaker. Rejections, which come in floods while the circuit is open, are counted the
same way, one byte each in `rejected`, for the same reason: a lock costs more than the whole
rest of a rejection. Rarer counters are changed under the breaker's lock.

Those arrays are pending work, not the record: `Bucket.settle()` folds them into bin counts
(see `_histogram`) when the bucket stops being the current one, and when the window is read,
so a read costs the same whatever the traffic, and a bucket's memory stops growing with it.
A bucket that leaves the window is added to the window's `retired` totals, which is what
makes the counts since the breaker was made (`read()`) cheap: nothing is counted twice.
"""

from __future__ import annotations

import math
from typing import Any

from ._buckets import Bucket, Totals
from ._stats import Stats

__all__ = ["RollingWindow", "stats_of"]


class RollingWindow:
    """`size` buckets of `width` seconds each; the newest is `current`, open until `current_end`.

    Holds no lock of its own: the breaker's core calls `rotate`, `clear`, `restore` and the
    readers under its lock. An unused window holds no bucket: the first call starts it, so a
    breaker that is made and never called costs a few pointers here.
    """

    __slots__ = ("_buckets", "_origin", "_retired", "current", "current_end", "size", "width")

    def __init__(self, width: float, size: int, now: float) -> None:
        self.width = width
        self.size = size
        self._origin = now  # bucket edges fall at whole widths from here
        self._buckets: list[Bucket] | tuple[()] = ()  # a list from the first call on
        # Never appended to: `current_end` sends the first call to `rotate()` first.
        self.current = _UNUSED
        self.current_end = _NEVER
        # What buckets that left the window counted, and the transitions: made when needed.
        self._retired: Totals | None = None

    def _epoch(self, now: float) -> int:
        return math.floor((now - self._origin) / self.width)

    @property
    def retired(self) -> Totals:
        """The counts of the buckets that left the window, and the transitions made."""
        retired = self._retired
        if retired is None:
            retired = self._retired = Totals()
        return retired

    def rotate(self, now: float) -> bool:
        """Start the bucket that `now` falls in. True if a bucket was closed by this call."""
        if now < self.current_end:
            return False  # another thread rotated first
        closed = self.current
        unused = closed is _UNUSED
        epoch = self._epoch(now)
        bucket = Bucket(epoch)
        if self._buckets:
            buckets = self._buckets
            buckets.append(bucket)  # not empty: a list
            if len(buckets) > self.size:
                self._retire(buckets.pop(0))
        else:
            self._buckets = [bucket]
        # Publish the bucket before its end: a reader that sees the new end sees it too.
        self.current = bucket
        self.current_end = self._origin + (epoch + 1) * self.width
        if not unused:
            closed.settle()  # its arrays stop growing: fold them while they are warm
        return not unused

    def _retire(self, bucket: Bucket) -> None:
        bucket.settle()
        self.retired.add(bucket)

    def bucket(self, now: float) -> Bucket:
        """The bucket `now` falls in, rotated to if needed."""
        if now >= self.current_end:
            self.rotate(now)
        return self.current

    def clear(self, now: float) -> None:
        """Forget every count; the window starts again at `now`."""
        for bucket in self._buckets:
            self._retire(bucket)
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

    def quiet(self, now: float) -> bool:
        """Whether the window saw no call at all: none ended, none was refused or cancelled."""
        return not any(
            bucket.successes
            or bucket.failures
            or bucket.rejects
            or bucket.semaphore_rejections
            or bucket.cancelled
            for bucket in self.live(now)
        )

    def outcome_counts(self, now: float) -> tuple[int, int]:
        """(successes, failures) in the window: what the open decision needs, without folding."""
        successes = failures = 0
        for bucket in self.live(now):
            successes += bucket.successes
            failures += bucket.failures
        return successes, failures

    def stats(self, now: float) -> Stats:
        # One pass over at most `size` settled buckets: the cost does not grow with traffic.
        window = Totals()
        for bucket in self.live(now):
            bucket.settle()
            window.add(bucket)
        return stats_of(window)

    def read(self, now: float) -> tuple[Totals, Totals]:
        """(everything counted since the window was made, restored buckets excepted; the
        window's counts at `now`), in one pass: what an exporter reads on every scrape."""
        totals = Totals()
        totals.add_totals(self.retired)
        window = Totals()
        oldest = self._epoch(now) - self.size + 1
        for bucket in self._buckets:
            bucket.settle()
            totals.add(bucket)
            if bucket.epoch >= oldest:
                window.add(bucket)
        return totals, window

    def to_list(self, now: float) -> list[dict[str, Any]]:
        """The live buckets, newest first, each with its age in buckets (0 is the current one)."""
        epoch = self._epoch(now)
        return [{"age": epoch - b.epoch, **b.to_dict()} for b in reversed(self.live(now))]

    def restore(self, now: float, buckets: list[Bucket]) -> None:
        """Start over at `now` with settled `buckets` from `parse_window()`, ages kept.

        What they counted happened in another process, or before a restart: it is taken off
        the totals up front, so that `read()` never counts it and never goes down."""
        self.clear(now)
        if not buckets:
            return
        restored = sorted(buckets, key=lambda b: b.epoch)
        if restored[-1].epoch != 0:
            restored.append(Bucket(0))
        kept = restored[-self.size :]
        for bucket in kept:
            self.retired.add(bucket, -1)
        self._buckets = kept
        self.current = kept[-1]
        self.current_end = now + self.width


def stats_of(window: Totals) -> Stats:
    """The `Stats` of a window's counts."""
    return Stats.compute(
        successes=window.successes,
        failures=window.failures,
        rejects=window.rejects,
        timeouts=window.timeouts,
        fallbacks=window.fallbacks,
        semaphore_rejections=window.semaphore_rejections,
        cancelled=window.cancelled,
        latency_counts=window.dense(),
        latency_sum=window.latency.total,
    )


# The placeholder `current` of a window no call has used yet, and its end.
_UNUSED = Bucket(0)
_NEVER = -math.inf
