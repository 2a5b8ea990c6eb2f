"""One breaker per name for a whole fleet of processes, through Redis, off the call path.

    from fastapi_breaker import BreakerRegistry
    from fastapi_breaker.redis import RedisCoordinator

    registry = BreakerRegistry(
        breakers={"AuthService": {"volume_threshold": 10}},
        coordinator=RedisCoordinator("redis://127.0.0.1:6379/0", namespace="user-service"),
    )

A call never waits on Redis. Each process counts locally as always; every `flush_interval` a
background task sends what the breakers that had traffic counted since last time, in one
pipeline: one fixed server-side script per breaker adds the counts into the fleet's rolling
window, decides by the Redis server's clock, and answers the fleet's state, which the process
turns into local monotonic deadlines. Transitions are also published, so that a process with no
traffic learns of them at once, and a periodic read repairs a lost message.

When Redis is unreachable, stalled or answers nonsense, the breakers fall back to their own
evidence (a known fleet open still holds until its deadline), every breaker emits
`coordinator_degraded` once, the coordinator retries with jittered backoff, and on success
emits `coordinator_recovered` and decides with the fleet again. A Redis that lost its data
(restarted empty, or flushed) is such an outage too, however briefly it was gone: each process
keeps a key of its own alive in Redis and, finding it gone, emits one `coordinator_degraded`
(with `RedisLostData`) and `coordinator_recovered` pair. Nothing it does raises into a call.

Needs the `redis` extra: `pip install "fastapi_breaker[redis]"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

try:
    import redis.asyncio as aioredis
    from redis.asyncio.client import PubSub
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError, RedisError
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without redis
    raise ImportError(
        "fastapi_breaker.redis needs redis-py: pip install 'fastapi_breaker[redis]'"
    ) from exc

from ._breaker import CircuitBreaker
from ._events import Event
from ._fleet import Deltas
from ._options import check_seconds
from ._redis_script import (
    SCRIPT,
    FleetReply,
    channel_for,
    keys_for,
    parse_message,
    parse_reply,
    process_key_for,
    script_args,
    sequence_key_for,
)
from ._redis_url import check_redis_url

__all__ = ["RedisCoordinator", "RedisLostData"]

logger = logging.getLogger("fastapi_breaker")

# A lease on the fleet's trial outlives the trial's own limit by this much before another
# process may take it: a trial that ends right at its limit is still reported in time.
LEASE_MARGIN = 1.0
_BACKOFF_FIRST, _BACKOFF_MOST = 0.1, 5.0
# A breaker whose calls all succeeded (or were refused) reports them every this many flushes:
# a process's unreported successes are missing from the fleet's error rate, so they must not
# wait long; every second flush halves the commands of a healthy breaker.
_QUIET_FLUSHES = 2
# The process key is checked at least every this many repair intervals; more often only when
# something suggests Redis went away. Rare enough to add next to nothing to the commands a call
# costs (bench.fleet measures them).
_CHECK_INTERVALS = 10


class RedisLostData(Exception):
    """The `error` of a `coordinator_degraded` event when Redis answers again but has lost its
    data since this process last checked: it restarted empty, or someone flushed it. The fleet's
    state went with it; a fleet open known here still holds until its deadline."""

    def __init__(self) -> None:
        super().__init__("Redis lost its data (restarted empty or flushed)")


class _Flush:
    """What one flush tells the fleet of one breaker; sent again, with the same number, until
    Redis answers: the fleet takes each number once."""

    __slots__ = ("at", "deltas", "outcome", "sequence")

    def __init__(self, sequence: int, deltas: Deltas, outcome: str, at: float) -> None:
        self.sequence = sequence
        self.deltas = deltas
        self.outcome = outcome
        self.at = at  # when it was drained, by the breaker's clock


class _Followed:
    """A breaker the coordinator follows, and what it still has to tell the fleet."""

    __slots__ = (
        "active",
        "breaker",
        "dirty",
        "generation",
        "keys",
        "pending",
        "quiet",
        "sent",
        "sequence",
    )

    def __init__(self, breaker: CircuitBreaker, keys: tuple[str, str, str]) -> None:
        self.breaker = breaker
        self.keys = keys
        self.pending: list[_Flush] = []  # drained here, not yet taken by the fleet
        self.sequence = 0
        self.dirty = True  # read the fleet's state at the next flush
        self.active = -math.inf  # when it last had something to send (the breaker's clock)
        self.sent = -math.inf  # when the fleet last heard from it (the breaker's clock)
        # Successes and rejections drained but not yet sent: they wait one flush for a failure
        # to go with, at most (see _QUIET_FLUSHES).
        self.quiet = Deltas(0, 0, 0)
        self.generation = 0  # the fleet's, as last answered: it only grows, unless Redis lost it


# One call of the script: a breaker, the flush it carries (None: a read), whether it asks for
# the trial.
_Call = tuple[_Followed, "_Flush | None", bool]


class RedisCoordinator:
    """Shares the state of a registry's breakers through Redis; see the module docstring.

    - `url`: a `redis://` or `rediss://` URL; a username and password in it log in with
      Redis ACLs.
    - `namespace`: this app's name in Redis. Apps that share a Redis and a breaker name must
      not share a namespace unless they mean to share the breaker.
    - `flush_interval`: seconds between two flushes (0.1). A fleet open reaches every process
      with traffic within it.
    - `timeout`: seconds a Redis command may take before the coordinator gives up on it (0.25).
    - `repair_interval`: seconds between two reads of the fleet's state of a breaker that has not
      heard from the fleet meanwhile and is open, half-open or recently used, in case a published
      transition was lost (1.0).

    A breaker whose calls all succeeded (or were refused) reports them every second flush; a
    failure, a trial's outcome or a wish for the trial goes at the next one, with everything.
    - `client`: a `redis.asyncio.Redis` to use instead of one made from `url`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str,
        flush_interval: float = 0.1,
        timeout: float = 0.25,
        repair_interval: float = 1.0,
        client: aioredis.Redis | None = None,
    ) -> None:
        if (url is None) == (client is None):
            raise TypeError("RedisCoordinator needs a url or a client, and not both")
        if url is not None and (
            not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://"))
        ):
            # Not the URL itself: it may hold a password.
            scheme = url.split(":", 1)[0] if isinstance(url, str) else type(url).__name__
            raise ValueError(f"url must be a redis://, rediss:// or unix:// URL, got {scheme!r}")
        if url is not None:
            check_redis_url(url)
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty string, got {namespace!r}")
        for field, value in (
            ("flush_interval", flush_interval),
            ("timeout", timeout),
            ("repair_interval", repair_interval),
        ):
            check_seconds(field, value)
        self.namespace = namespace
        self.flush_interval = float(flush_interval)
        self.timeout = float(timeout)
        self.repair_interval = float(repair_interval)
        self._url = url
        self._client = client
        self._own_client = client is None
        self._channel = channel_for(namespace)
        # Names this process in the fleet's trial leases: unique even across forked workers.
        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._followed: dict[str, _Followed] = {}
        self._sha: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        # Set while Redis answers; the subscription waits on it through an outage.
        self._answered: asyncio.Event | None = None
        self._process_key = process_key_for(namespace, self.process_id)
        self._remembered = False  # whether Redis was given the process key yet
        self._memory_due = -math.inf
        self.degraded = False
        self._outage_reported = False
        self._backoff = _BACKOFF_FIRST

    def __repr__(self) -> str:
        state = "degraded" if self.degraded else "connected" if self._tasks else "stopped"
        return f"<RedisCoordinator namespace={self.namespace!r} {state}>"

    # ------------------------------------------------------------------ the seam

    def attach(self, breaker: CircuitBreaker) -> None:
        # Not healthy until the fleet's first answer about it: read at the next flush.
        breaker.core.link_fleet()
        window, state = keys_for(self.namespace, breaker.name)
        sequence = sequence_key_for(self.namespace, breaker.name, self.process_id)
        self._followed[breaker.name] = _Followed(breaker, (window, state, sequence))

    def detach(self, breaker: CircuitBreaker) -> None:
        followed = self._followed.get(breaker.name)
        if followed is not None and followed.breaker is breaker:
            del self._followed[breaker.name]
        breaker.core.unlink_fleet()

    async def start(self) -> None:
        if self._tasks:
            return
        if self._client is None:
            assert self._url is not None  # __init__ takes a url when it takes no client
            # The classmethod, not redis.asyncio.from_url(): that one is unannotated before
            # redis-py 8, and mypy --strict must pass on every version the extra allows.
            self._client = aioredis.Redis.from_url(
                self._url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                health_check_interval=0,
                # No retries inside redis-py: they would stretch `timeout` to seconds. The
                # next flush is the retry, and a flush that failed goes again as it was.
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
            )
        self._wake = asyncio.Event()
        self._answered = asyncio.Event()
        self._answered.set()
        self._tasks = [
            asyncio.create_task(self._flushing(), name="fastapi_breaker.redis flush"),
            asyncio.create_task(self._listening(), name="fastapi_breaker.redis subscribe"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a shutdown must not hang on a background task. asyncio.wait() neither
            # raises a task's cancellation nor swallows the caller's own.
            await asyncio.wait(tasks, timeout=4 * self.timeout)
        # What was counted since the last flush, if Redis answers promptly.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await self.flush(everything=True)
        if self._own_client and self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------ flushing

    async def _flushing(self) -> None:
        assert self._wake is not None
        while True:
            # asyncio.timeout(), not wait_for(): on 3.11, wait_for() can lose the cancellation
            # that stop() sends when the wait ends at the same moment, and never return.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._pause()):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    def _pause(self) -> float:
        if not self.degraded:
            return self.flush_interval
        # Jittered backoff while Redis is unreachable: a fleet of processes must not retry in
        # step and knock it over as it comes back.
        pause = self._backoff * random.uniform(0.5, 1.5)
        self._backoff = min(self._backoff * 2, _BACKOFF_MOST)
        return pause

    async def flush(self, *, everything: bool = False) -> None:
        """Send what the breakers counted and read what the fleet decided; never raises.

        Successes may wait one flush for a failure to go with, unless `everything` is sent.
        """
        try:
            await self._exchange(everything)
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            self._lost(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a garbled reply, a bug: never a request's problem
            logger.exception("fleet coordinator %r: unexpected error", self.namespace)
            self._lost(exc)

    async def _exchange(self, everything: bool) -> None:
        client = self._client
        if client is None:
            return
        # First: a restart found after the outage was reported over is a second outage.
        await self._check_memory(client)
        calls = self._collect(everything)
        if not calls:
            if self.degraded:
                await client.ping()  # find out whether Redis is back
                self._recovered()
            return
        if self._sha is None:
            self._sha = await client.script_load(SCRIPT)
        replies = await self._run(client, calls)
        failed = next((raw for raw in replies if isinstance(raw, Exception)), None)
        if failed is None and self.degraded:
            # Recovered only when every call was answered: a Redis that answers errors (a
            # read-only replica, a user without a permission) is still an outage.
            self._recovered()
        for (followed, flush, _), raw in zip(calls, replies, strict=True):
            if isinstance(raw, Exception):
                continue  # that flush stays pending, and goes again
            if flush is not None:
                with contextlib.suppress(ValueError):  # a concurrent flush() took it first
                    followed.pending.remove(flush)
            reply = parse_reply(raw)
            if reply is None:
                logger.warning(
                    "fleet coordinator %r: malformed fleet state for %r, ignored",
                    self.namespace,
                    followed.breaker.name,
                )
                continue
            self._apply(followed, reply)
        if failed is not None:
            raise failed

    async def _run(self, client: aioredis.Redis, calls: list[_Call]) -> list[Any]:
        for attempt in (1, 2):
            sha = self._sha
            assert sha is not None  # loaded by _exchange() first
            pipe = client.pipeline(transaction=False)
            for followed, flush, wants in calls:
                pipe.evalsha(sha, 3, *followed.keys, *self._args(followed, flush, wants))
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(raw, NoScriptError) for raw in replies):
                # Redis restarted, or its scripts were flushed: load it and send the same calls
                # again (none of them ran). Whether Redis lost its data too, the process key
                # tells, now rather than at its next check.
                self._sha = await client.script_load(SCRIPT)
                await self._check_memory(client, due=True)
                continue
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    def _collect(self, everything: bool) -> list[_Call]:
        calls: list[_Call] = []
        for followed in list(self._followed.values()):
            breaker = followed.breaker
            now = breaker.clock()
            deltas, wants, outcome = breaker.core.drain(now)
            if deltas or wants or outcome:
                followed.active = now
            if deltas or followed.quiet:
                quiet = followed.quiet
                deltas = Deltas(
                    deltas.successes + quiet.successes,
                    deltas.failures,
                    deltas.rejections + quiet.rejections,
                )
                urgent = everything or deltas.failures or outcome or wants or followed.dirty
                if not urgent and now - followed.sent < _QUIET_FLUSHES * self.flush_interval:
                    followed.quiet, deltas = deltas, Deltas(0, 0, 0)
                else:
                    followed.quiet = Deltas(0, 0, 0)
            if deltas or outcome:
                followed.sequence += 1
                followed.pending.append(_Flush(followed.sequence, deltas, outcome, now))
            # Counts older than the window would land in the fleet's current bucket: a flush
            # that could not go for that long is dropped (its trial outcome is long moot too).
            window = breaker.options.rolling_count_timeout
            followed.pending = [flush for flush in followed.pending if now - flush.at < window]
            if followed.pending:
                last = followed.pending[-1]
                calls += [(followed, flush, wants and flush is last) for flush in followed.pending]
            elif wants or followed.dirty:
                calls.append((followed, None, wants))
            else:
                continue
            followed.dirty = False
            followed.sent = now
        return calls

    def _args(self, followed: _Followed, flush: _Flush | None, wants: bool) -> list[Any]:
        options = followed.breaker.options
        deltas = flush.deltas if flush is not None else Deltas(0, 0, 0)
        return script_args(
            process_id=self.process_id,
            successes=deltas.successes,
            failures=deltas.failures,
            rejections=deltas.rejections,
            want_trial=wants,
            trial_outcome=flush.outcome if flush is not None else "",
            window_ms=round(options.rolling_count_timeout * 1000),
            buckets=options.rolling_count_buckets,
            threshold_pct=options.error_threshold_percentage,
            volume_threshold=options.volume_threshold,
            reset_ms=round(options.reset_timeout * 1000),
            lease_ms=round((options.trial_timeout + LEASE_MARGIN) * 1000),
            max_trials=options.half_open_max_calls,
            channel=self._channel,
            name=followed.breaker.name,
            sequence=flush.sequence if flush is not None else 0,
        )

    def _apply(self, followed: _Followed, reply: FleetReply) -> None:
        breaker = followed.breaker
        if reply.repaired:
            logger.warning(
                "fleet coordinator %r: malformed values in the fleet keys of %r were deleted",
                self.namespace,
                breaker.name,
            )
        if not self.degraded:
            breaker.core.fleet_health(True)  # the fleet has answered about this breaker
        now = breaker.clock()
        # Believed no further than this breaker's options allow: the fleet's script opens for
        # reset_timeout (an upstream's Retry-After holds only the process that read it) and
        # leases a trial for its limit plus the margin. A deadline past that comes from a Redis
        # clock that stepped back, or from garbage, and would refuse for as long as it says.
        options = breaker.options
        longest = (
            options.reset_timeout if reply.state == "open" else options.trial_timeout + LEASE_MARGIN
        )
        until = now + min(reply.remaining_ms / 1000, longest)
        moves: list[str] = []
        if reply.state == "closed":
            verdict = "close"
        elif reply.state == "open":
            verdict = "open"
        elif reply.trials > 0:
            verdict = "trial"
        elif reply.holder:
            return  # our trial runs: its outcome is what the fleet waits for
        else:
            verdict = "wait"
        core = breaker.core
        if reply.repaired or reply.generation < followed.generation:
            # The fleet forgot its state: Redis restarted empty, lost the key, or held garbage
            # there. A fleet open known here becomes this process's own: it holds until its
            # deadline, then one trial by this process's clock, as during an outage. Closing on
            # the word of a fleet that forgot would let every call through.
            core.keep_fleet_open()
        followed.generation = reply.generation
        core.follow(verdict, now, until, moves)
        breaker.announce(moves)

    async def _check_memory(self, client: aioredis.Redis, *, due: bool = False) -> None:
        """Find out whether Redis lost its data since the last check: restarted empty, or
        flushed. When the subscription's connection broke (a restart breaks every connection),
        after the script was found gone, at every attempt of an outage, and every
        `_CHECK_INTERVALS` repair intervals in any case (a `FLUSHALL` breaks nothing).

        The script cache cannot tell every process of a restart: the first one to find the
        script gone loads it again for all. So each process keeps a key of its own alive
        (`GETEX ... PX`, one command; `SET` when it is missing): found gone after this process
        set it, Redis forgot it. Reported as an outage
        (`coordinator_degraded` with `RedisLostData`, then `coordinator_recovered` when this
        flush is answered), once, even when the restart was so quick that no flush failed.
        """
        now = asyncio.get_running_loop().time()
        if not (due or self.degraded or now >= self._memory_due):
            return
        self._memory_due = now + _CHECK_INTERVALS * self.repair_interval
        # It expires only after a process stopped checking for several of its periods: an
        # outage that long is reported already.
        ttl_ms = max(1, round(3 * _CHECK_INTERVALS * self.repair_interval * 1000))
        # GETEX, which the script never runs: INFO commandstats tells these checks apart.
        if await client.getex(self._process_key, px=ttl_ms) is None:
            if self._remembered:
                self._lost(RedisLostData(), why="lost its data (restarted empty or flushed)")
            await client.set(self._process_key, b"1", px=ttl_ms)
        self._remembered = True

    # ------------------------------------------------------------------ health of the link

    def _lost(self, error: BaseException, *, why: str = "unreachable") -> None:
        if self._outage_reported:
            return
        self.degraded = self._outage_reported = True
        self._backoff = _BACKOFF_FIRST
        if self._answered is not None:
            self._answered.clear()
        logger.warning(
            "fleet coordinator %r: Redis %s (%s); breakers follow local evidence",
            self.namespace,
            why,
            type(error).__name__,
        )
        for followed in list(self._followed.values()):
            breaker = followed.breaker
            breaker.core.fleet_health(False)
            if "coordinator_degraded" in breaker.listening:
                breaker.emit(Event("coordinator_degraded", breaker, error=error))

    def _recovered(self) -> None:
        self.degraded = self._outage_reported = False
        self._backoff = _BACKOFF_FIRST
        if self._answered is not None:
            self._answered.set()
        logger.warning("fleet coordinator %r: Redis reachable again", self.namespace)
        for followed in list(self._followed.values()):
            breaker = followed.breaker
            breaker.core.fleet_health(True)
            followed.dirty = True
            if "coordinator_recovered" in breaker.listening:
                breaker.emit(Event("coordinator_recovered", breaker))

    # ------------------------------------------------------------------ listening

    async def _listening(self) -> None:
        """Follow published transitions; mark open breakers for a periodic repairing read."""
        loop = asyncio.get_running_loop()
        next_repair = loop.time() + self.repair_interval
        pubsub = None
        pause = self.flush_interval
        while True:
            try:
                if pubsub is None:
                    assert self._client is not None
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(self._channel)
                    pause = self.flush_interval
                    self._repair(everything=True)  # what was published meanwhile is lost
                message = await pubsub.get_message(timeout=self.repair_interval)
                if message is not None:
                    self._heard(message.get("data"))
            except asyncio.CancelledError:
                if pubsub is not None:
                    await _close_quietly(pubsub)
                raise
            except Exception:
                if pubsub is not None:
                    await _close_quietly(pubsub)
                pubsub = None
                # Redis may have restarted: ask at the next flush whether it lost its data.
                self._memory_due = -math.inf
                await self._resubscribe_after(pause)
                # Retried no less often than the repairing read would find what it misses.
                pause = min(pause * 2, self.repair_interval)
            if loop.time() >= next_repair:
                next_repair = loop.time() + self.repair_interval
                self._repair(everything=False)

    async def _resubscribe_after(self, pause: float) -> None:
        """Wait before subscribing again: `pause` while Redis answers the flushes. During an
        outage the flushes probe Redis, with their backoff, and the subscription waits for the
        one that is answered: subscribed a backoff later, it would miss what another process
        publishes meanwhile, and the repairing reads wait with it."""
        assert self._answered is not None
        if not self.degraded:
            await asyncio.sleep(pause)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_BACKOFF_MOST):  # a bound, should a probe never end
                await self._answered.wait()

    def _repair(self, *, everything: bool) -> None:
        """Mark for a read the breakers a lost message would leave wrong: those open or
        half-open here or in the fleet, and those with traffic within their rolling window
        (all of them, with `everything`). An idle closed breaker reads nothing."""
        for followed in list(self._followed.values()):
            breaker = followed.breaker
            link = breaker.core.fleet
            now = breaker.clock()
            if now - followed.sent < self.repair_interval and not everything:
                continue  # it heard from the fleet lately: its flushes' answers are news enough
            recent = now - followed.active < breaker.options.rolling_count_timeout
            if link is not None and (
                everything or recent or link.held or link.state not in (None, "closed")
            ):
                followed.dirty = True

    def _heard(self, data: object) -> None:
        """A published transition: read that breaker's fleet state at once."""
        message = parse_message(data)
        if message is None:
            return
        followed = self._followed.get(message.name)
        if followed is not None and self._wake is not None:
            followed.dirty = True
            self._wake.set()


async def _close_quietly(pubsub: PubSub) -> None:
    """Close a subscription whose connection may be broken already; never raises."""
    # redis-py annotates PubSub.aclose() from 8.2 on, not before: called through a typed name,
    # it passes mypy --strict with either (a `type: ignore` would be unused with one of them).
    aclose: Callable[[], Awaitable[None]] = pubsub.aclose
    with contextlib.suppress(Exception):
        await aclose()
