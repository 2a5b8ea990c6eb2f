"""The design note's two scenarios, Service Down and Service Recovery, played by the engine alone.

A User Service logs users in through an Auth Service. Here both are in-process stand-ins: the
Auth Service is an async method whose availability the script switches, and the User Service is
a function that turns the outcome into the HTTP status it would answer.

Time is simulated. The breaker reads a `FakeClock`, so the 20 s reset timeout passes at once and
every run prints the same timeline. Run it with `python -m example_app.engine_demo`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

from fastapi_breaker import CircuitBreaker, CircuitOpenError, Event, EventName
from fastapi_breaker.testing import FakeClock

from .logs import transition_logs

__all__ = ["AuthService", "DemoResult", "Transition", "main"]

# The design note's settings; the rolling window keeps its defaults (10 s in 10 buckets).
TIMEOUT = 5.0
ERROR_THRESHOLD_PERCENTAGE = 50.0
RESET_TIMEOUT = 20.0
VOLUME_THRESHOLD = 10

# Simulated seconds. Both are exact binary fractions, so the printed times are exact too.
AUTH_LATENCY = 0.125  # how long the Auth Service takes to answer when it is up
REQUEST_GAP = 0.5  # time between two logins

USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


class AuthService:
    """A stand-in for the Auth Service. When down it refuses connections at once."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.up = True
        self.calls = 0  # the requests that reached it: the breaker keeps the rest away

    async def verify(self, user: str) -> str:
        self.calls += 1
        if not self.up:
            raise ConnectionRefusedError("Auth Service refused the connection")
        self._clock.advance(AUTH_LATENCY)  # answering takes time, which the breaker measures
        return f"token-for-{user}"


@dataclasses.dataclass(frozen=True)
class Transition:
    """The breaker entered `state` at `at` simulated seconds after the demo started."""

    at: float
    state: str


@dataclasses.dataclass
class DemoResult:
    """What the demo saw: state transitions (the starting state first), statuses, Auth calls."""

    transitions: list[Transition] = dataclasses.field(default_factory=list)
    statuses: list[int] = dataclasses.field(default_factory=list)
    auth_calls: int = 0


# The state each transition event leads to.
_ENTERED: dict[EventName, str] = {"open": "open", "half_open": "half_open", "close": "closed"}


class Demo:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.start = clock()
        self.auth = AuthService(clock)
        self.breaker = CircuitBreaker(
            self.auth.verify,
            name="AuthService",
            timeout=TIMEOUT,
            error_threshold_percentage=ERROR_THRESHOLD_PERCENTAGE,
            reset_timeout=RESET_TIMEOUT,
            volume_threshold=VOLUME_THRESHOLD,
            clock=clock,
        )
        self.result = DemoResult(transitions=[Transition(0.0, self.breaker.state.value)])
        self._printed = 1  # transitions already shown
        self._logins = 0
        for name in _ENTERED:
            self.breaker.on(name, self._record)

    def _record(self, event: Event) -> None:
        # Handlers run inside the call; the line is printed after the request's own line.
        self.result.transitions.append(Transition(self.elapsed, _ENTERED[event.name]))

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def wait_until(self, at: float) -> None:
        self.clock.advance(self.start + at - self.clock())

    def say(self, text: str) -> None:
        print(f"{'':11}{text}")

    async def login(self) -> None:
        """One request to the User Service, which needs the Auth Service to log the user in."""
        user = USERS[self._logins % len(USERS)]
        self._logins += 1
        at = self.elapsed
        try:
            await self.breaker.fire(user)
        except CircuitOpenError as exc:
            # The planned FastAPI middleware answers this error with the same 503.
            status = 503
            outcome = f"503, Retry-After: {max(1, math.ceil(exc.retry_after))}"
        except ConnectionError:
            status = 502
            outcome = "502, Auth Service down"
        else:
            status = 200
            outcome = "200 OK"
        self.result.statuses.append(status)
        stats = self.breaker.stats
        window = f"{stats.successes} ok, {stats.failures} failed"
        if stats.successes + stats.failures:
            window += f" = {stats.error_percentage:.1f}% of {stats.successes + stats.failures}"
        if stats.rejects:
            window += f", {stats.rejects} rejected"
        print(f"t={at:6.2f}s  login {user:<6} -> {outcome:<24} window: {window}")
        moved = self.result.transitions[self._printed - 1 :]
        if len(moved) > 1:
            print(f"{'':11}breaker: {' -> '.join(t.state.upper() for t in moved)}")
        self._printed = len(self.result.transitions)

    async def logins(self, count: int) -> None:
        for _ in range(count):
            await self.login()
            self.wait_until(self.elapsed - self.elapsed % REQUEST_GAP + REQUEST_GAP)


async def play(clock: FakeClock) -> DemoResult:
    demo = Demo(clock)
    breaker = demo.breaker
    print("fastapi_breaker engine demo: a User Service calls an Auth Service through a breaker.")
    print("Time is simulated with a FakeClock: the waits pass at once and every run is the same.")
    print(
        f"Breaker AuthService: timeout {TIMEOUT:g} s, error threshold "
        f"{ERROR_THRESHOLD_PERCENTAGE:g}%, reset timeout {RESET_TIMEOUT:g} s, "
        f"volume threshold {VOLUME_THRESHOLD}."
    )
    print(
        f"It opens when more than {ERROR_THRESHOLD_PERCENTAGE:g}% of at least {VOLUME_THRESHOLD} "
        "calls in its 10 s rolling window failed.\n"
    )

    print("== Scenario 1: Service Down ==")
    demo.say("The Auth Service is up; logins pass through the closed breaker.")
    await demo.logins(6)
    demo.auth.up = False
    demo.say("The Auth Service goes down and refuses every connection.")
    # 6 of 12 failed is 50%, not above it; the 7th failure makes 7 of 13 and opens the breaker.
    await demo.logins(7)
    demo.say("Open: logins fail fast with 503, and the Auth Service is not called at all.")
    await demo.logins(4)
    wait = breaker.retry_after or 0.0
    demo.say(f"At t={demo.elapsed:g}s retry_after is {wait:g} s; skipping ahead. No timer moves")
    demo.say("the state: the breaker notices the reset timeout when the next login comes.")
    demo.wait_until(demo.elapsed + wait)
    await demo.logins(2)  # the first is the half-open trial; the Auth Service is still down
    demo.say("The trial failed, so the breaker opened again for another 20 s.\n")

    print("== Scenario 2: Service Recovery ==")
    demo.wait_until(30.0)
    demo.auth.up = True
    demo.say("At t=30s the Auth Service is back; the breaker cannot know it before its next trial.")
    await demo.logins(1)
    wait = breaker.retry_after or 0.0
    demo.say(f"Skipping ahead {wait:g} s to the end of the reset timeout.")
    demo.wait_until(demo.elapsed + wait)
    await demo.logins(4)  # the first is the trial; its success closes the breaker
    demo.say("The trial succeeded: closed, and normal operation resumes. Closing cleared the")
    demo.say("window, the trial's success with it: old failures cannot re-trip the breaker.\n")

    stats = breaker.stats
    demo.result.auth_calls = demo.auth.calls
    refused = len(demo.result.statuses) - demo.auth.calls
    print(f"{len(demo.result.statuses)} logins; the Auth Service saw {demo.auth.calls} of them.")
    print(f"The breaker answered the other {refused} itself, without waiting on the Auth Service.")
    print(
        f"Window since the breaker closed: {stats.fires} fires, {stats.successes} successes, "
        f"{stats.failures} failures, mean latency {stats.latency_mean:g} s."
    )
    states = " -> ".join(t.state for t in demo.result.transitions)
    print(f"States: {states}")
    breaker.shutdown()
    return demo.result


def main(clock: FakeClock | None = None) -> DemoResult:
    """Play both scenarios and return what happened. Pass a `FakeClock` to start it elsewhere."""
    return asyncio.run(play(clock if clock is not None else FakeClock()))


if __name__ == "__main__":
    with transition_logs():  # the engine's log line of each state change, with its fields
        main()
