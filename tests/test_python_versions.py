"""Every Python the package declares runs this suite, and the engine's version-specific code holds.

On 3.11 the engine finds the running task through asyncio's private `_current_tasks` dict (a
C-level lookup, cheaper than 3.11's `asyncio.current_task`); 3.12 made `current_task` itself
cheap. A private name can change meaning between releases, so each interpreter that runs the
suite (`make test-all`) checks it answers like `asyncio.current_task`.

A timed call recognises the loop it ran on last by the loop's private `_thread_id`, which
asyncio's loops set to the running thread's id while they run, and to None once they stop: on
3.11 that costs a third of `asyncio.get_running_loop()`. Checked here on each version too.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

from fastapi_breaker._deadlines import current_task_of

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def declared_versions() -> list[tuple[int, int]]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    prefix = "Programming Language :: Python :: 3."
    return sorted(
        (3, int(classifier.removeprefix(prefix)))
        for classifier in project["classifiers"]
        if classifier.startswith(prefix) and classifier.removeprefix(prefix).isdigit()
    )


def test_the_running_python_is_one_the_package_declares() -> None:
    assert sys.version_info[:2] in declared_versions()


def test_the_declared_versions_start_at_requires_python_and_leave_no_gap() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    versions = declared_versions()
    assert project["requires-python"] == f">={versions[0][0]}.{versions[0][1]}"
    assert versions == [(3, minor) for minor in range(versions[0][1], versions[-1][1] + 1)]


async def test_current_task_of_is_the_running_task_inside_a_task() -> None:
    loop = asyncio.get_running_loop()
    outer = asyncio.current_task()
    assert outer is not None
    assert current_task_of(loop) is outer

    async def inner() -> asyncio.Task[Any] | None:
        await asyncio.sleep(0)  # still the same task after a switch
        return current_task_of(loop)

    child = asyncio.create_task(inner())
    assert await child is child
    assert current_task_of(loop) is outer


async def test_current_task_of_is_none_in_a_loop_callback_outside_any_task() -> None:
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[asyncio.Task[Any] | None] = loop.create_future()
    loop.call_soon(lambda: seen.set_result(current_task_of(loop)))
    assert await seen is None


def test_current_task_of_is_none_for_a_loop_that_is_not_running() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert current_task_of(loop) is None
    finally:
        loop.close()


def test_current_task_of_is_none_for_another_loop_than_the_running_one() -> None:
    other = asyncio.new_event_loop()

    async def look() -> asyncio.Task[Any] | None:
        return current_task_of(other)

    try:
        assert asyncio.run(look()) is None
    finally:
        other.close()


async def test_a_running_loop_names_its_thread_in_thread_id() -> None:
    loop = asyncio.get_running_loop()
    assert loop._thread_id == threading.get_ident()  # type: ignore[attr-defined]


def test_a_stopped_loop_names_no_thread() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert loop._thread_id is None  # type: ignore[attr-defined]
        loop.run_until_complete(asyncio.sleep(0))
        assert loop._thread_id is None  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_a_breaker_remembers_the_loop_only_while_it_runs_on_this_thread() -> None:
    from fastapi_breaker import CircuitBreaker

    breaker = CircuitBreaker(timeout=5.0)

    async def ok() -> str:
        return "ok"

    first = asyncio.run(breaker.call(ok))
    remembered = breaker._queue
    assert first == "ok"
    assert remembered is not None
    # A new loop on the same thread: the remembered queue's loop has stopped, so the call finds
    # the new loop's queue instead of using the old one.
    assert asyncio.run(breaker.call(ok)) == "ok"
    assert breaker._queue is not remembered
    assert breaker._queue is not None
    assert breaker._queue.held == 0
