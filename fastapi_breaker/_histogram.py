"""Latencies kept as counts in fixed log-scale bins, so that reading them costs the same at any
traffic.

The bins follow the bits of a double: four per power of two, split where the two leading
mantissa bits change, from 2**-20 s (about 1 us) to 2**10 s (1,024 s, past 10 minutes), plus
one bin below and one above. `LATENCY_BOUNDS` are their upper bounds, inclusive as Prometheus's
`le` is: bin `i` holds the latencies in `(LATENCY_BOUNDS[i-1], LATENCY_BOUNDS[i]]`.

A call does not pay for its bin. The hot path appends the latency to an `array` (one C call,
atomic under the GIL), and `fold()` turns a whole array into bin counts later: when its bucket
stops being the current one, or when someone reads the window. Above a few dozen latencies,
`fold()` works on the array's bytes with C-level operations (slices, `translate`, big-integer
arithmetic), so no Python code runs per latency.

A percentile read from bins is the middle of the bin that holds the exact value. A bin spans
at most a quarter of its lower bound, so the estimate is off by at most 1/9 (11.1%) of the
exact value between 1 us and 1,024 s. The lowest bin (1 us and under) reads as 0, and the
highest (over 1,024 s) as 1,024 s.
"""

from __future__ import annotations

import itertools
import math
import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["BINS", "LATENCY_BOUNDS", "Fold", "bin_of", "estimates", "fold"]

_LOWEST_EXPONENT = -20  # 2**-20 s, just under 1 us
_OCTAVES = 30  # up to 2**10 s = 1,024 s
_PER_OCTAVE = 4

LATENCY_BOUNDS: tuple[float, ...] = (
    2.0**_LOWEST_EXPONENT,
    *(
        math.ldexp(1 + (j + 1) / _PER_OCTAVE, k)
        for k in range(_LOWEST_EXPONENT, _LOWEST_EXPONENT + _OCTAVES)
        for j in range(_PER_OCTAVE)
    ),
)
BINS = len(LATENCY_BOUNDS) + 1  # the last bin is above every bound
_ABOVE = BINS - 1

# Arrays shorter than this are binned one latency at a time: the byte tricks below have a fixed
# cost of a few microseconds.
_BULK = 48


class Fold:
    """What `fold()` makes of arrays of latencies: counts by bin, and their sum.

    The counts are packed in one integer, 64 bits per bin (`counts >> 64 * i` holds bin `i`),
    so that adding the bins of two buckets is one big-integer addition, not a loop: the window
    adds up to a thousand buckets on every read. Taking a fold away (`subtract`) may leave a
    bin negative for a while, which plain integer arithmetic keeps exact.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = 0
        self.total = 0.0

    def add(self, other: Fold) -> None:
        self.counts += other.counts
        self.total += other.total

    def subtract(self, other: Fold) -> None:
        """Take `other`'s counts and sum away (a restored bucket that this process never saw)."""
        self.counts -= other.counts
        self.total -= other.total

    def count(self, index: int, count: int) -> None:
        """Add `count` latencies to bin `index`."""
        self.counts += count << (_WIDTH * index)

    def dense(self) -> array[int]:
        """The counts of every bin, `BINS` of them. Every bin must be >= 0."""
        return array("Q", self.counts.to_bytes(_BYTES_PER_FOLD, "little"))

    def sparse(self) -> dict[int, int]:
        """The bins that hold latencies: bin -> count."""
        return {index: count for index, count in enumerate(self.dense()) if count}


_WIDTH = 64
_BYTES_PER_FOLD = BINS * _WIDTH // 8


def bin_of(latency: float) -> int:
    """The bin that `latency` falls in."""
    return bisect_left(LATENCY_BOUNDS, latency)


def fold(latencies: array[float], into: Fold) -> None:
    """Add every latency of `latencies` to `into`."""
    n = len(latencies)
    if not n:
        return
    into.total += sum(latencies)
    packed = 0
    if n < _BULK:
        for latency in latencies:
            packed += 1 << (_WIDTH * bisect_left(LATENCY_BOUNDS, latency))
    else:
        for index, count in _bulk_counts(latencies).items():
            packed += count << (_WIDTH * index)
    into.counts += packed


def _bulk_counts(latencies: array[float]) -> dict[int, int]:
    """Bin counts of many latencies, with no Python code per latency.

    A double's bin is in its two leading bytes: its exponent and two leading mantissa bits.
    Each step is a C loop over the whole array: the two bytes of every double are sliced out,
    mapped by tables to one byte (the bin's code) and merged with a big-integer `or`; the codes
    are then counted by removing one code at a time (a bucket's latencies have few distinct
    codes). The bits put a latency equal to a bound in the bin the bound opens, not the one it
    closes: such latencies, rare outside tests, are counted exactly and moved down one bin.
    """
    raw = latencies.tobytes() if _LITTLE else _swapped(latencies)
    n = len(latencies)
    high = raw[7::8]
    codes = (
        int.from_bytes(high.translate(_HIGH_CODE), "little")
        | int.from_bytes(raw[6::8].translate(_LOW_CODE), "little")
    ).to_bytes(n, "little")
    found: dict[int, int] = {}
    outside = 0
    while codes:
        code = codes[0]
        rest = codes.replace(_BYTES[code], b"")
        count = len(codes) - len(rest)
        codes = rest
        if code >= _OUTSIDE:
            outside += count
        else:
            index = _BIN_OF_CODE[code]
            found[index] = found.get(index, 0) + count
    if outside:
        # Outside the three exponent groups the tables know: below 2**-31 (zero included) or
        # above 2**17, told apart by the leading byte alone.
        small = n - len(high.translate(None, _SMALL_LEADING))
        if small:
            found[0] = found.get(0, 0) + small
        if outside - small:
            found[_ABOVE] = found.get(_ABOVE, 0) + outside - small
    if _SIX_ZEROS in raw:
        # A bound's lower six bytes are zero, which real clocks' latencies (and zero, whose
        # lowest bin is right) almost never have. An 8-byte bound cannot match across two
        # latencies: it would need a latency under 1e-18 s beside it.
        for index in [index for index in found if index]:
            on_bound = raw.count(_PACKED_BOUNDS[index - 1])
            if on_bound:
                found[index] -= on_bound
                found[index - 1] = found.get(index - 1, 0) + on_bound
                if not found[index]:
                    del found[index]
    return found


def _swapped(latencies: array[float]) -> bytes:  # pragma: no cover - big-endian machines
    copy = array("d", latencies)
    copy.byteswap()
    return copy.tobytes()


_LITTLE = sys.byteorder == "little"
_SIX_ZEROS = bytes(6)
_PACKED_BOUNDS = [struct.pack("<d", bound) for bound in LATENCY_BOUNDS]
_BYTES = [bytes((code,)) for code in range(256)]
# The leading byte of a double in [2**-31, 2**17) is 62, 63 or 64 (sign 0, exponent >> 4).
_FIRST_GROUP = 62
_OUTSIDE = 3 << 6
_HIGH_CODE = bytes(
    ((byte - _FIRST_GROUP) << 6) if _FIRST_GROUP <= byte < _FIRST_GROUP + 3 else _OUTSIDE
    for byte in range(256)
)
_LOW_CODE = bytes(byte >> 2 for byte in range(256))  # 4 exponent bits, 2 mantissa bits
# Leading bytes of doubles below 2**-31 (zero, and negative ones): they go to the lowest bin.
_SMALL_LEADING = bytes(range(_FIRST_GROUP)) + bytes(range(0x80, 0x100))


def _bin_of_code(code: int) -> int:
    biased = (_FIRST_GROUP + (code >> 6)) * 16 + ((code >> 2) & 15)
    exponent = biased - 1023
    if exponent < _LOWEST_EXPONENT:
        return 0
    if exponent >= _LOWEST_EXPONENT + _OCTAVES:
        return _ABOVE
    return 1 + (exponent - _LOWEST_EXPONENT) * _PER_OCTAVE + (code & 3)


_BIN_OF_CODE = [_bin_of_code(code) for code in range(_OUTSIDE)]


def estimates(counts: Sequence[int], ranks: Sequence[float]) -> list[float]:
    """The latency at each percentile of `ranks` (ascending), from dense bin `counts`: the
    middle of the bin holding the sample that Opossum's rule picks (the smallest for p=0, else
    the one of rank `ceil(p * n)`); 0 with no latency. The lowest bin reads as 0, the highest
    as its lower bound, 1,024 s."""
    running = list(itertools.accumulate(counts))
    n = running[-1]
    if not n:
        return [0.0] * len(ranks)
    lowest = bisect_left(running, 1)
    if running[lowest] == n:  # every latency in one bin, as often in a quiet window
        return [_MIDDLES[lowest]] * len(ranks)
    ceil = math.ceil
    return [_MIDDLES[bisect_left(running, ceil(p * n) or 1)] for p in ranks]


_MIDDLES: tuple[float, ...] = (
    0.0,
    *((low + high) / 2 for low, high in itertools.pairwise(LATENCY_BOUNDS)),
    LATENCY_BOUNDS[-1],
)
