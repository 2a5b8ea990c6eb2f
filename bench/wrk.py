"""The load generator: wrk against 127.0.0.1, its figures read back as numbers.

wrk is closed-loop: `-c` connections each send a request as soon as the last one is answered,
for `-d` seconds. So a run reports the requests per second the server sustains at that
concurrency, and the latency at that concurrency. `rate` paces it instead (random pauses
between requests), so that latency is service time rather than queueing.

A Lua `done()` prints wrk's own summary as one JSON line, so nothing is scraped from its text
report: latency percentiles come straight from wrk's histogram. wrk corrects that histogram for
coordinated omission (a response slower than twice a connection's mean interval adds samples in
between), so where slow responses mix with fast ones the upper percentiles read high.
`counted=True` adds a `response()` hook that counts responses by `classify(status, headers,
body)` (the status, unless `lua` defines another). That hook makes wrk hand every response to
Lua, so use it for every variant of a comparison or for none.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["WrkResult", "find_or_install", "find_wrk", "run_wrk", "sampled"]

T = TypeVar("T")
_INSTALL_TIMEOUT = 600.0  # seconds, for each apt-get step

# Prints the summary as JSON on the last line of stdout. Latencies are in microseconds.
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK_JSON {"requests":%d,"duration_us":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d},"counts":%s}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), counts_json()))
end
counts_json = function() return "{}" end
"""

# Paced load: each connection waits a random time (exponential, mean DELAY_MS) before its next
# request, so that the connections together offer about `rate` requests per second.
_PACED = """
delay = function()
  return math.min(-math.log(1 - math.random()) * DELAY_MS, 10 * DELAY_MS)
end
"""

# One Lua state per wrk thread: each counts its own, and done() adds them up.
_COUNTED = """
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) counts = {} end
classify = function(status, headers, body) return tostring(status) end
response = function(status, headers, body)
  local key = classify(status, headers, body)
  counts[key] = (counts[key] or 0) + 1
end
counts_json = function()
  local total, parts = {}, {}
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("counts")) do total[key] = (total[key] or 0) + n end
  end
  for key, n in pairs(total) do table.insert(parts, string.format('"%s":%d', key, n)) end
  return "{" .. table.concat(parts, ",") .. "}"
end
"""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds; `counts` by classification (see `counted`)."""

    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    counts: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rps": round(self.rps, 1)}


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
    timeout_s: float = 10.0,
    rate: float | None = None,
    counted: bool = False,
    lua: str = "",
) -> WrkResult:
    """Run wrk once, one thread, against `url` (127.0.0.1 only) and parse its summary.

    `rate`: pace the connections to offer about that many requests per second in all; None:
    as fast as the server answers. `lua`: more script, run last (a `classify` or `request`).
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load goes to 127.0.0.1 only, not {url!r}")
    script = _DONE + (_COUNTED if counted else "")
    if rate is not None:
        script += _PACED.replace("DELAY_MS", f"{connections / rate * 1000.0:.3f}")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        path = Path(tmp) / "report.lua"
        path.write_text(script + lua)
        # wrk reads whole seconds only.
        argv = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
        argv.append(f"--timeout={max(1, round(timeout_s))}s")
        # wrk stops itself after -d; the subprocess timeout is the backstop.
        done = subprocess.run(
            [*argv, "-s", str(path), url],
            capture_output=True,
            text=True,
            timeout=seconds + timeout_s + 30.0,
            check=False,
        )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(lines[-1].removeprefix("WRK_JSON "))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        errors=data["errors"],
        latency_ms={k: v / 1000.0 for k, v in data["latency_us"].items()},
        counts=data["counts"],
    )


def sampled(
    load: Callable[[], WrkResult], sample: Callable[[], T], seconds: float, every: float
) -> tuple[WrkResult, list[T]]:
    """Run `load` (about `seconds` long) on a thread and call `sample()` every `every` s."""
    samples: list[T] = []
    deadline = time.monotonic() + seconds + 60.0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(load)
        time.sleep(min(every, seconds / 4))  # let the load reach its level first
        for _ in range(int((seconds + 60.0) / every)):
            if future.done() or time.monotonic() > deadline:
                break
            samples.append(sample())
            with contextlib.suppress(TimeoutError):
                future.result(timeout=every)
        return future.result(timeout=max(1.0, deadline - time.monotonic())), samples
