"""What the core hands out and takes back: tickets for admitted calls, trials, refusals.

No decisions here: these are the values that pass between `BreakerCore` and its users.
"""

from __future__ import annotations

from typing import Final

from ._options import BreakerOptions

__all__ = [
    "CANCELLED",
    "EXCUSED",
    "FAILURE",
    "PASS",
    "TIMEOUT",
    "Pass",
    "Period",
    "Refusal",
    "Ticket",
    "Trial",
]

# How a settled call ended. EXCUSED: an error that `error_filter` excused, counted a success.
FAILURE, TIMEOUT, EXCUSED, CANCELLED = range(4)


class Trial:
    """A half-open trial in flight. `expired` is set when the clock ran out its time limit;
    `answered` once the upstream answered within it, after which the limit no longer applies."""

    __slots__ = ("answered", "expired", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.expired = False
        self.answered = False


class Period:
    """The trials of one half-open period: admitted, and how those that ended went."""

    __slots__ = ("admitted", "failures", "successes", "trials")

    def __init__(self) -> None:
        self.trials: list[Trial] = []  # in flight, not expired
        self.admitted = self.successes = self.failures = 0

    def full(self, options: BreakerOptions) -> bool:
        return self.admitted >= options.half_open_max_calls


class Ticket:
    """An admitted call: its generation, its trial (or None) and whether it holds a slot."""

    __slots__ = ("generation", "holds_slot", "trial")

    def __init__(self, generation: int, trial: Trial | None, holds_slot: bool) -> None:
        self.generation = generation
        self.trial = trial
        self.holds_slot = holds_slot


class Refusal:
    """Why a call was not admitted: the circuit is `open` (else capacity is full)."""

    __slots__ = ("open", "retry_after")

    def __init__(self, open: bool, retry_after: float) -> None:
        self.open = open
        self.retry_after = retry_after


class Pass:
    """`admit()`'s answer while disabled: run the call, count nothing."""


PASS: Final = Pass()
