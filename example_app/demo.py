"""`make demo`: the design note's scenarios against two real services, with a timeline.

Times are scaled down tenfold so the demo takes seconds, not a minute: timeout 0.5 s and reset
timeout 2 s instead of the design note's 5 s and 20 s; the 50% threshold and the volume
threshold of 10 are as in the note. The engine's log line of each state change is printed
where it happens, with its structured fields (example_app/logs.py).
"""

from __future__ import annotations

import asyncio
import sys

from .logs import transition_logs
from .scenario import ScenarioError, run_scenario
from .user_service import AuthSettings

SCALE = 0.1


def main(*, over_grpc: bool = False) -> int:
    """Play the scenarios, the Auth Service over HTTP or gRPC; 0 if each step went right."""
    settings = AuthSettings().scaled(SCALE)
    over = " (Auth Service over gRPC)" if over_grpc else ""
    print(
        f"fastapi_breaker demo{over}: times scaled by {SCALE:g} (timeout {settings.timeout:g} s, "
        f"reset timeout {settings.reset_timeout:g} s); threshold "
        f"{settings.error_threshold_percentage:g}%, volume threshold {settings.volume_threshold}"
    )
    try:
        with transition_logs():
            asyncio.run(run_scenario(settings=settings, wait=asyncio.sleep, over_grpc=over_grpc))
    except ScenarioError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print("demo finished: both scenarios behaved as the design note describes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
