"""Fixtures for the checks against real outside programs (`make test-integration`).

Each program is found on PATH; a missing one skips the tests that need it, naming the program
and the Debian package that ships it (`integration/run` installs them when it can).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from example_app.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# program -> the Debian package that ships it
PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}
READY_WITHIN = 30.0  # seconds for Prometheus to answer /-/ready on a busy machine
STOP_WITHIN = 10.0


def program(name: str) -> str:
    """The path of `name`, or a skip naming it and its Debian package."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed (Debian package {PACKAGES[name]}); integration/run "
            "installs it with apt-get as root, which failed or was not run"
        )
    return path


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return program("prometheus")


@pytest.fixture(scope="session")
def promtool_binary() -> str:
    return program("promtool")


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    return program("chromium")


@pytest.fixture(scope="session")
def chromedriver_binary() -> str:
    return program("chromedriver")


class PrometheusServer:
    """A real Prometheus on 127.0.0.1 scraping `targets` every second, with its HTTP API."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self.client = client

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` gives now (an error from Prometheus fails the test)."""
        response = await self.client.get("/api/v1/query", params={"query": expr})
        body = response.json()
        assert (response.status_code, body["status"]) == (200, "success"), (expr, body)
        assert body["data"]["resultType"] == "vector", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def get(self, path: str) -> Any:
        response = await self.client.get(path)
        assert response.status_code == 200, (path, response.text)
        return response.json()["data"]


LOG = "prometheus.log"


def _launch(
    binary: str, directory: Path, port: int, targets: list[str], rule_files: tuple[Path, ...]
) -> subprocess.Popen[bytes]:
    # JSON is YAML: no YAML library needed to write the configuration.
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": "user-service", "static_configs": [{"targets": targets}]}],
    }
    config_file = directory / "prometheus.yml"
    config_file.write_text(json.dumps(config))
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with (directory / LOG).open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


StartPrometheus = Callable[..., Awaitable[PrometheusServer]]


@pytest.fixture
async def start_prometheus(
    prometheus_binary: str, tmp_path: Path
) -> AsyncIterator[StartPrometheus]:
    """Start Prometheus with `start_prometheus(targets, rule_files=())`; stopped at teardown.

    Async all through: the app it scrapes runs in this test's event loop, which must keep
    serving while the test waits on Prometheus.
    """
    processes: list[subprocess.Popen[bytes]] = []
    clients: list[httpx.AsyncClient] = []
    log = tmp_path / LOG

    async def start(targets: list[str], rule_files: tuple[Path, ...] = ()) -> PrometheusServer:
        port = free_port()
        processes.append(_launch(prometheus_binary, tmp_path, port, targets, rule_files))
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0)
        clients.append(client)
        deadline = time.monotonic() + READY_WITHIN
        while True:
            if processes[-1].poll() is not None:
                raise AssertionError(f"prometheus exited at start:\n{log.read_text()}")
            try:
                if (await client.get("/-/ready")).status_code == 200:
                    return PrometheusServer(str(client.base_url), client)
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready within {READY_WITHIN:g} s")
            await asyncio.sleep(0.1)

    try:
        yield start
    finally:
        for client in clients:
            await client.aclose()
        for process in processes:
            process.terminate()
            try:
                process.wait(STOP_WITHIN)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
