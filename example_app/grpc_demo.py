"""`make demo-grpc`: `make demo` with the Auth Service over gRPC.

The same scenarios, steps and scaled-down times as example_app/demo.py; the User Service's
`/login` calls `auth.AuthService/Verify` on a `grpc.aio` server through
`fastapi_breaker.grpc.BreakerInterceptor`. Exits 0, or 1 naming the step that went wrong.
"""

from __future__ import annotations

import os
import sys

from .demo import main as play

__all__ = ["main"]


def main() -> int:
    # gRPC's C core logs an INFO line when the Auth Service goes down under a connected
    # channel ("Got goaway"); the demo says so itself. Set before grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    return play(over_grpc=True)


if __name__ == "__main__":
    sys.exit(main())
