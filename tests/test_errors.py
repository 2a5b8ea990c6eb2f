"""The error tree: relations, fields, messages, and that errors survive pickling."""

import pickle

import pytest

from fastapi_breaker import (
    BreakerError,
    BreakerShutdownError,
    CallTimeoutError,
    CapacityExceededError,
    CircuitOpenError,
)

ALL_ERRORS = [
    CircuitOpenError("payments", 12.5),
    CallTimeoutError("payments", 0.25),
    CapacityExceededError("payments", 8),
    BreakerShutdownError("payments"),
]


@pytest.mark.parametrize(
    "cls", [CircuitOpenError, CallTimeoutError, CapacityExceededError, BreakerShutdownError]
)
def test_every_error_is_a_breaker_error(cls: type[BreakerError]) -> None:
    assert issubclass(cls, BreakerError)
    assert issubclass(cls, Exception)


def test_breaker_error_is_a_plain_exception() -> None:
    assert BreakerError.__bases__ == (Exception,)


def test_call_timeout_is_also_the_builtin_timeout_error() -> None:
    # So that `except TimeoutError` around a guarded call catches it.
    assert issubclass(CallTimeoutError, TimeoutError)
    with pytest.raises(TimeoutError):
        raise CallTimeoutError("svc", 1.0)


@pytest.mark.parametrize("cls", [CircuitOpenError, CapacityExceededError, BreakerShutdownError])
def test_refusals_are_not_timeouts(cls: type[BreakerError]) -> None:
    assert not issubclass(cls, TimeoutError)


def test_the_errors_are_siblings() -> None:
    errors = [CircuitOpenError, CallTimeoutError, CapacityExceededError, BreakerShutdownError]
    for a in errors:
        for b in errors:
            assert issubclass(a, b) == (a is b), (a, b)


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_carries_the_breaker_name(error: BreakerError) -> None:
    assert error.name == "payments"


def test_fields() -> None:
    assert CircuitOpenError("a", 12.5).retry_after == 12.5
    assert CircuitOpenError("a", 3).retry_after == 3.0
    assert isinstance(CircuitOpenError("a", 3).retry_after, float)
    assert CallTimeoutError("a", 0.25).timeout == 0.25
    assert CapacityExceededError("a", 8).capacity == 8


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (CircuitOpenError, {"name": "a", "retry_after": 1.5}),
        (CallTimeoutError, {"name": "a", "timeout": 0.5}),
        (CapacityExceededError, {"name": "a", "capacity": 2}),
        (BreakerShutdownError, {"name": "a"}),
    ],
    ids=["CircuitOpenError", "CallTimeoutError", "CapacityExceededError", "BreakerShutdownError"],
)
def test_errors_accept_their_documented_keywords(
    cls: type[BreakerError], kwargs: dict[str, object]
) -> None:
    # The signatures in _errors.py are what type checkers accept; they must work at run time too.
    error = cls(**kwargs)
    assert error.args == tuple(kwargs.values())
    assert error.name == "a"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (CircuitOpenError("payments", 12.5), "circuit 'payments' is open; retry after 12.500s"),
        (CircuitOpenError("payments", 0.0004), "circuit 'payments' is open; retry after 0.000s"),
        (
            CallTimeoutError("payments", 0.25),
            "call through circuit 'payments' timed out after 0.25s",
        ),
        (
            CapacityExceededError("payments", 8),
            "circuit 'payments' is at capacity (8 concurrent calls)",
        ),
        (BreakerShutdownError("payments"), "circuit 'payments' has been shut down"),
    ],
)
def test_messages(error: BreakerError, message: str) -> None:
    assert str(error) == message


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda e: type(e).__name__)
def test_pickle_round_trip(error: BreakerError) -> None:
    # Errors cross process boundaries (multiprocessing, task queues) and must come back whole.
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is type(error)
    assert restored.args == error.args
    assert restored.name == error.name
    assert str(restored) == str(error)


def test_pickle_keeps_the_specific_fields() -> None:
    assert pickle.loads(pickle.dumps(CircuitOpenError("a", 7.5))).retry_after == 7.5
    assert pickle.loads(pickle.dumps(CallTimeoutError("a", 0.5))).timeout == 0.5
    assert pickle.loads(pickle.dumps(CapacityExceededError("a", 4))).capacity == 4
