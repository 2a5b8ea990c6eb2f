"""Find (or install) wrk, run it against 127.0.0.1, and read its figures back as numbers.

wrk is closed-loop: `-c` connections each send a request as soon as the last one is answered,
for `-d` seconds. So a run reports the requests per second the server sustains at that
concurrency, and the latency at that concurrency.

A Lua `done()` script prints wrk's own summary as one JSON line, so nothing is scraped from its
text report: latency percentiles come straight from wrk's histogram, in microseconds.
`count_statuses=True` adds a `response()` hook that counts the status codes. That hook makes
wrk parse every response into Lua, so use it for every variant of a comparison or for none.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["WrkResult", "find_or_install", "find_wrk", "run_wrk"]

_INSTALL_TIMEOUT = 600.0  # seconds, for each apt-get step

# Prints the summary as JSON on the last line of stdout. Latencies are in microseconds.
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,'
    .. '"p50":%d,"p90":%d,"p99":%d,"p999":%d},"statuses":%s}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), statuses_json()))
end
"""

_NO_STATUSES = """
statuses_json = function() return "{}" end
"""

# Paced load: each connection waits a random time (exponential, mean RATE_DELAY_MS) before its
# next request, so that the connections together offer about `rate` requests per second, spread
# out rather than in bursts. The server is then not saturated: latency is service time.
_PACED = """
local mean_delay = RATE_DELAY_MS
delay = function()
  return math.min(-math.log(1 - math.random()) * mean_delay, 10 * mean_delay)
end
"""

# One Lua state per wrk thread: each counts its own, and done() adds them up.
_STATUSES = """
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) counts = {} end
response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
statuses_json = function()
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end
"""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds."""

    connections: int
    seconds: float
    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    statuses: dict[int, int]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def p50(self) -> float:
        return self.latency_ms["p50"]

    @property
    def p99(self) -> float:
        return self.latency_ms["p99"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "seconds": self.seconds,
            "requests": self.requests,
            "duration_s": round(self.duration_s, 4),
            "rps": round(self.rps, 1),
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


def find_wrk() -> str:
    """The path of wrk: from PATH; else installed with apt-get when we are root; else exit."""
    return find_or_install("wrk", "wrk", needed_by="bench.http", hint="brew install wrk")


def find_or_install(program: str, package: str, *, needed_by: str, hint: str = "") -> str:
    """The path of `program`: from PATH; else Debian's `package` when we are root; else exit."""
    found = shutil.which(program)
    if found:
        return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", package]
        if subprocess.run(install, env=env, timeout=_INSTALL_TIMEOUT, check=False).returncode:
            # The package lists may be missing or stale on a fresh machine: update, retry once.
            subprocess.run(["apt-get", "update"], env=env, timeout=_INSTALL_TIMEOUT, check=False)
            subprocess.run(install, env=env, timeout=_INSTALL_TIMEOUT, check=False)
        found = shutil.which(program)
        if found:
            return found
    elsewhere = f"; {hint}" if hint else ""
    raise SystemExit(
        f"{needed_by} needs {program} on PATH (Debian/Ubuntu: apt-get install {package}"
        f"{elsewhere}). It is installed automatically only when running as root with apt-get."
    )


def run_wrk(
    wrk: str,
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    timeout_s: float = 10.0,
    count_statuses: bool = False,
    rate: float | None = None,
    cpus: Sequence[int] | None = None,
) -> WrkResult:
    """Run wrk once against `url` (127.0.0.1 only) and parse its JSON summary.

    `rate`: pace the connections to offer about that many requests per second in all
    (closed loop with random think times); None: as fast as the server answers.
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load goes to 127.0.0.1 only, not {url!r}")
    script = (_STATUSES if count_statuses else _NO_STATUSES) + _DONE
    if rate is not None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests per second, got {rate!r}")
        script += _PACED.replace("RATE_DELAY_MS", f"{connections / rate * 1000.0:.3f}")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        path = Path(tmp) / "report.lua"
        path.write_text(script)
        argv = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            f"--timeout={timeout_s:g}s",
            "-s",
            str(path),
            url,
        ]
        if cpus:
            argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv]
        # wrk stops itself after -d; the subprocess timeout is the backstop.
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + timeout_s + 30.0, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    line = next(
        (ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("WRK_JSON ")), None
    )
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    return WrkResult(
        connections=connections,
        seconds=seconds,
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        errors=data["errors"],
        latency_ms={k: v / 1000.0 for k, v in data["latency_us"].items()},
        statuses={int(k): v for k, v in data["statuses"].items()},
    )
