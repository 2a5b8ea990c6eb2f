"""A window's buckets: what one bucket counts, totals over buckets, and a snapshot's buckets read
back and checked.

See `_window` for how the arrays of a bucket are filled without a lock and settled later.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import Any

from ._histogram import LATENCY_BOUNDS, Fold, fold
from ._options import check_keys, shown

__all__ = ["BUCKET_KEYS", "MAX_EXACT_COUNT", "Bucket", "Totals", "parse_window"]

_COUNTERS = ("timeouts", "fallbacks", "semaphore_rejections", "cancelled")
BUCKET_KEYS: tuple[str, ...] = (
    "age",
    "successes",
    "failures",
    "latencies",
    "latency_sum",
    "rejects",
    *_COUNTERS,
    # The older form, one latency per call: still read, no longer written.
    "succeeded",
    "failed",
)
# A snapshot's bin names: each bin's upper bound as Python prints it, then "+Inf".
_BIN_NAMES: tuple[str, ...] = (*(repr(bound) for bound in LATENCY_BOUNDS), "+Inf")
_BIN_OF_NAME = {name: index for index, name in enumerate(_BIN_NAMES)}

# The largest count a snapshot may hold: the largest integer that every JSON reader, doubles
# included, keeps exact.
MAX_EXACT_COUNT = 2**53
_LARGEST = sys.float_info.max


class Bucket:
    __slots__ = (
        "cancelled",
        "done",
        "done_failures",
        "done_rejects",
        "done_successes",
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
        self.succeeded = array("d")  # latency of each success not yet settled
        # Made on the first failure: most buckets see none.
        self.failed: array[float] | None = None  # latency of each failure, timeouts included
        # Made now, though most buckets see no rejection either: the rejection path appends to
        # it without a lock, and a test for None there would cost every rejection.
        self.rejected = array("B")  # one byte per rejected call not yet settled
        # What settle() took from those arrays (and what a snapshot gave): counts, and the
        # latencies' bins, made by the first settle.
        self.done: Fold | None = None
        self.done_successes = 0
        self.done_failures = 0
        self.done_rejects = 0
        self.timeouts = 0
        self.fallbacks = 0
        self.semaphore_rejections = 0
        self.cancelled = 0

    @property
    def successes(self) -> int:
        return self.done_successes + len(self.succeeded)

    @property
    def failures(self) -> int:
        failed = self.failed
        return self.done_failures + (0 if failed is None else len(failed))

    @property
    def rejects(self) -> int:
        return self.done_rejects + len(self.rejected)

    def fail(self, latency: float) -> None:
        """Count a failure. Under the core's lock: only the first one makes the array."""
        if self.failed is None:
            self.failed = array("d")
        self.failed.append(latency)

    def reject(self) -> None:
        """Count a rejection (the lock-free path appends to `rejected` itself)."""
        self.rejected.append(1)

    def settle(self) -> Fold | None:
        """Fold the pending latencies and rejections into counts. Under the core's lock.

        Each array is swapped for a fresh one in one step, then folded: a lock-free append
        loads the array and appends to it with no thread switch in between, so it lands
        either in the swapped-out array, before the fold reads it, or in the fresh one.
        """
        fresh = array("d")
        pending, self.succeeded = self.succeeded, fresh
        failed, self.failed = self.failed, None
        if self.rejected:
            fresh_rejected = array("B")
            rejected, self.rejected = self.rejected, fresh_rejected
            self.done_rejects += len(rejected)
        if not pending and not failed:
            return self.done
        done = self.done
        if done is None:
            done = self.done = Fold()
        if pending:
            self.done_successes += len(pending)
            fold(pending, done)
        if failed:
            self.done_failures += len(failed)
            fold(failed, done)
        return done

    def to_dict(self) -> dict[str, Any]:
        """Counts and latency bins. Under the core's lock (it settles the bucket)."""
        done = self.settle()
        counts = {} if done is None else done.sparse()
        return {
            "successes": self.done_successes,
            "failures": self.done_failures,
            "latencies": {_BIN_NAMES[index]: counts[index] for index in sorted(counts)},
            "latency_sum": 0.0 if done is None else done.total,
            "rejects": self.rejects,
            "timeouts": self.timeouts,
            "fallbacks": self.fallbacks,
            "semaphore_rejections": self.semaphore_rejections,
            "cancelled": self.cancelled,
        }


class Totals:
    """Counts added up over buckets: the window's retired ones, or the window since a start."""

    __slots__ = (
        "cancelled",
        "failures",
        "fallbacks",
        "latency",
        "rejects",
        "semaphore_rejections",
        "successes",
        "timeouts",
        "transitions",
    )

    def __init__(self) -> None:
        self.successes = self.failures = self.rejects = self.timeouts = 0
        self.fallbacks = self.semaphore_rejections = self.cancelled = 0
        self.latency = Fold()
        # (from state, to state) -> times: kept here, with the other counts that never reset.
        self.transitions: dict[tuple[str, str], int] = {}

    def add(self, bucket: Bucket, sign: int = 1) -> None:
        """Add a settled bucket's counts (`sign=-1` takes them away)."""
        self.successes += sign * bucket.done_successes
        self.failures += sign * bucket.done_failures
        self.rejects += sign * bucket.rejects
        self.timeouts += sign * bucket.timeouts
        self.fallbacks += sign * bucket.fallbacks
        self.semaphore_rejections += sign * bucket.semaphore_rejections
        self.cancelled += sign * bucket.cancelled
        if bucket.done is not None:
            if sign > 0:
                self.latency.add(bucket.done)
            else:
                self.latency.subtract(bucket.done)

    def add_totals(self, other: Totals) -> None:
        """Add everything `other` counted, transitions included."""
        self.successes += other.successes
        self.failures += other.failures
        self.rejects += other.rejects
        self.timeouts += other.timeouts
        self.fallbacks += other.fallbacks
        self.semaphore_rejections += other.semaphore_rejections
        self.cancelled += other.cancelled
        self.latency.add(other.latency)
        if other.transitions:
            transitions = self.transitions
            for key, times in other.transitions.items():
                transitions[key] = transitions.get(key, 0) + times

    def dense(self) -> Sequence[int]:
        """The latency bins, `BINS` counts."""
        return self.latency.dense()


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
        # The older form's latencies, one per call, go where calls put theirs.
        bucket.succeeded.extend(_latencies(f"{where}.succeeded", entry.get("succeeded", [])))
        for latency in _latencies(f"{where}.failed", entry.get("failed", [])):
            bucket.fail(latency)
        bucket.done_successes = _count(f"{where}.successes", entry.get("successes", 0))
        bucket.done_failures = _count(f"{where}.failures", entry.get("failures", 0))
        bucket.done = _bins(where, entry, bucket.done_successes + bucket.done_failures)
        bucket.done_rejects = _count(f"{where}.rejects", entry.get("rejects", 0))
        for counter in _COUNTERS:
            setattr(bucket, counter, _count(f"{where}.{counter}", entry.get(counter, 0)))
        if bucket.timeouts > bucket.failures:  # a timeout is also a failure
            raise ValueError(
                f"{where}.timeouts must be at most the bucket's failures ({bucket.failures}), "
                f"got {bucket.timeouts}"
            )
        bucket.settle()
        buckets.append(bucket)
    return buckets


def _bins(where: str, entry: dict[str, Any], calls: int) -> Fold | None:
    """The `latencies` bins and `latency_sum` of a bucket of `calls` counted calls."""
    bins = entry.get("latencies", {})
    if not isinstance(bins, dict):
        raise ValueError(f"{where}.latencies must be an object of counts by bin, got {shown(bins)}")
    done = Fold()
    binned = 0
    for name, count in bins.items():
        index = _BIN_OF_NAME.get(name) if isinstance(name, str) else None
        if index is None:
            raise ValueError(
                f"{where}.latencies has the unknown bin {shown(name)}; a bin is named by its "
                f'upper bound in seconds, "{_BIN_NAMES[0]}" to "{_BIN_NAMES[-2]}", or "+Inf"'
            )
        count = _count(f"{where}.latencies[{name!r}]", count)
        done.count(index, count)
        binned += count
    if binned != calls:
        raise ValueError(
            f"{where}.latencies must hold one latency per success and failure ({calls}), "
            f"got {binned}"
        )
    total = entry.get("latency_sum", 0.0)
    if isinstance(total, bool) or not isinstance(total, int | float) or not 0 <= total <= _LARGEST:
        raise ValueError(
            f"{where}.latency_sum must be a finite number of seconds >= 0, got {shown(total)}"
        )
    done.total = float(total)
    return done if calls else None


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
