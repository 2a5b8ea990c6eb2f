"""`registry.on()`: one handler for an event of every breaker, present and future, and the log
line every state change writes by default."""

from __future__ import annotations

import logging
import re

import pytest

from fastapi_breaker import BreakerRegistry, CircuitOpenError, Event
from fastapi_breaker.testing import FakeClock

OPEN_FAST = {"volume_threshold": 0, "error_threshold_percentage": 0, "reset_timeout": 30.0}


def boom() -> None:
    raise RuntimeError("down")


def trip(registry: BreakerRegistry, name: str) -> None:
    with pytest.raises(RuntimeError):
        registry.get(name).call_sync(boom)


def test_a_handler_hears_breakers_made_before_and_after_it() -> None:
    registry = BreakerRegistry(OPEN_FAST, clock=FakeClock())
    heard: list[tuple[str, str]] = []
    registry.get("before")
    assert registry.on("open", lambda e: heard.append((e.name, e.breaker_name))) is registry
    trip(registry, "before")
    trip(registry, "made-lazily")
    assert heard == [("open", "before"), ("open", "made-lazily")]


def test_breakers_rebuilt_after_shutdown_or_remove_keep_the_handler() -> None:
    registry = BreakerRegistry(OPEN_FAST, breakers={"auth": {}}, clock=FakeClock())
    heard: list[str] = []
    registry.on("open", lambda e: heard.append(e.breaker_name))
    trip(registry, "auth")
    registry.shutdown()
    trip(registry, "auth")
    registry.remove("auth")
    trip(registry, "auth")
    assert heard == ["auth", "auth", "auth"]


def test_off_stops_the_handler_everywhere_and_on_twice_adds_it_once() -> None:
    registry = BreakerRegistry(OPEN_FAST, clock=FakeClock())
    heard: list[str] = []

    def handler(event: Event) -> None:
        heard.append(event.breaker_name)

    registry.on("open", handler).on("open", handler)
    trip(registry, "a")
    registry.off("open", handler)
    trip(registry, "b")
    registry.get("a").close()
    trip(registry, "a")
    assert heard == ["a"]


def test_a_registry_handler_sees_every_rejection_in_order() -> None:
    registry = BreakerRegistry(OPEN_FAST, clock=FakeClock())
    heard: list[tuple[str, str]] = []
    registry.on("reject", lambda e: heard.append((e.breaker_name, type(e.error).__name__)))
    for name in ("x", "y"):
        trip(registry, name)
        with pytest.raises(CircuitOpenError):
            registry.get(name).call_sync(lambda: None)
    assert heard == [("x", "CircuitOpenError"), ("y", "CircuitOpenError")]


def test_bad_arguments_are_refused_even_with_no_breaker_yet() -> None:
    registry = BreakerRegistry()
    with pytest.raises(ValueError, match=r"^unknown event 'opened'; the events are: "):
        registry.on("opened", print)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^an event handler must be callable, got 3$"):
        registry.on("open", 3)  # type: ignore[arg-type]


def test_registry_handlers_do_not_keep_an_idle_breaker_from_being_forgotten() -> None:
    registry = BreakerRegistry(clock=FakeClock(), max_breakers=2)
    registry.on("open", lambda e: None)
    registry.get("a")
    registry.get("b")
    registry.get("c")  # room made by forgetting "a", idle, whose only handler is the registry's
    assert sorted(registry.breakers()) == ["b", "c"]


def test_a_breakers_own_handler_still_keeps_it() -> None:
    registry = BreakerRegistry(clock=FakeClock(), max_breakers=1)
    registry.on("open", lambda e: None)
    registry.get("a").on("close", lambda e: None)
    with pytest.raises(LookupError, match="registry is full"):
        registry.get("b")


# ------------------------------------------------------------------ the log of state changes


def test_every_state_change_is_logged_with_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    registry = BreakerRegistry(OPEN_FAST, clock=clock)
    caplog.set_level(logging.INFO, logger="fastapi_breaker")
    trip(registry, "AuthService")
    clock.advance(30.0)
    registry.get("AuthService").call_sync(lambda: None)
    records = [r for r in caplog.records if r.name == "fastapi_breaker"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        (
            "WARNING",
            "circuit breaker 'AuthService' opened (closed -> open) at 100.0% errors; "
            "next trial in 30 s",
        ),
        (
            "WARNING",
            "circuit breaker 'AuthService' is half-open (open -> half_open); a trial call may pass",
        ),
        ("INFO", "circuit breaker 'AuthService' closed (half_open -> closed)"),
    ]
    fields = [
        (r.breaker, r.from_state, r.to_state, r.error_percentage, r.retry_after)  # type: ignore[attr-defined]
        for r in records
    ]
    assert fields == [
        ("AuthService", "closed", "open", 100.0, 30.0),
        # The window aged out while open; the trial holds the one permit for its 10 s limit.
        ("AuthService", "open", "half_open", 0.0, 10.0),
        ("AuthService", "half_open", "closed", 0.0, None),
    ]


@pytest.mark.parametrize(
    ("name", "logged"),
    [
        (
            "https://user:secret@api.example.com:8443/v1?token=abc#frag",
            "https://***@api.example.com:8443/v1?***#***",
        ),
        ("http://api.example.com/path?q=1", "http://api.example.com/path?***"),
        # Not URLs: logged as themselves, never as another breaker's name.
        ("payments?tenant=7", "payments?tenant=7"),
        ("tenant-evil@AuthService", "tenant-evil@AuthService"),
        ("AuthService#x", "AuthService#x"),
        ("AuthService", "AuthService"),
    ],
)
def test_a_url_names_credentials_and_query_never_reach_the_log(
    name: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = BreakerRegistry(OPEN_FAST, clock=FakeClock())
    caplog.set_level(logging.INFO, logger="fastapi_breaker")
    trip(registry, name)
    (record,) = [r for r in caplog.records if r.name == "fastapi_breaker"]
    assert record.breaker == logged  # type: ignore[attr-defined]
    assert "secret" not in record.getMessage()
    assert "token" not in record.getMessage()
    assert repr(logged) in record.getMessage()


def test_an_open_the_fleet_decided_says_so(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    breaker = BreakerRegistry(clock=clock).get("auth")
    caplog.set_level(logging.INFO, logger="fastapi_breaker")
    breaker.core.link_fleet()
    moves: list[str] = []
    breaker.core.follow("open", clock(), clock() + 20.0, moves)
    breaker.announce(moves)
    (record,) = [r for r in caplog.records if r.name == "fastapi_breaker"]
    assert record.getMessage() == (
        "circuit breaker 'auth' opened (closed -> open) as its fleet decided; next trial in 20 s"
    )
    assert record.error_percentage == 0.0  # type: ignore[attr-defined]


def test_registry_wide_handlers_are_bounded_by_on_itself() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    handlers = [lambda event: None for _ in range(1001)]
    for handler in handlers[:1000]:
        registry.on("open", handler)
    expected = (
        "event 'open' already has 1000 registry-wide handlers, the most one event keeps; "
        "remove one with off() first"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        registry.on("open", handlers[1000])
    # A new name still gets a breaker, with the thousand.
    assert len(registry.get("new").listeners("open")) == 1000
    registry.on("open", handlers[0])  # one it keeps: no-op
    registry.off("open", handlers[0])
    registry.on("open", handlers[1000])
    assert registry.get("new").listeners("open")[-1] is handlers[1000]


def test_a_breaker_already_full_refuses_a_registry_wide_handler_before_any_is_added() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    first, full = registry.get("first"), registry.get("full")
    for _ in range(1000):
        full.on("open", lambda event: None)
    handler = print
    expected = (
        "breaker 'full' already has 1000 handlers of event 'open', the most one event keeps; "
        "nothing was subscribed"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        registry.on("open", handler)
    assert first.listeners("open") == ()
    assert registry.get("later").listeners("open") == ()


@pytest.mark.parametrize("name", [["x"], {"x": 1}, 3, ""])
def test_a_name_that_is_no_string_is_refused_naming_it(name: object) -> None:
    registry = BreakerRegistry(clock=FakeClock())
    expected = f"^{re.escape(f'a breaker name must be a non-empty string, got {name!r}')}$"
    with pytest.raises(ValueError, match=expected):
        registry.get(name)  # type: ignore[arg-type]
    if name != "":
        with pytest.raises(ValueError, match=expected):
            registry.remove(name)  # type: ignore[arg-type]
    assert name not in registry
