"""The live dashboard in a real headless Chromium (Debian's, through its chromedriver).

A real uvicorn server on 127.0.0.1 serves `dashboard_router()` over a registry of four
breakers, two of them with steady traffic. The page must load with no console error, show every
breaker, and turn a breaker's badge to "open" within 2 seconds of the breaker opening in the
server. The screenshot goes to the test's temporary directory; with UPDATE_SCREENSHOT=1 it
also replaces docs/img/dashboard.png.

Selenium's calls block, so they run in a worker thread while this test's event loop serves
the page and the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from example_app.servers import LoopbackServer
from fastapi_breaker import BreakerRegistry
from fastapi_breaker.dashboard import dashboard_router
from integration.conftest import DOCS

# A name that is markup: it must show as text, never as an element.
NAMES = ["auth", "billing", "search", "<b>inventory</b>"]
# The machine's network is closed, and the browser must not try it.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,540",
]
SCREENSHOT = DOCS / "img" / "dashboard.png"


def make_app(registry: BreakerRegistry) -> FastAPI:
    app = FastAPI()
    app.include_router(dashboard_router(registry))

    async def downstream_fails() -> None:
        raise ConnectionError("downstream refused the connection")

    @app.get("/call/{name}")
    async def call(name: str) -> dict[str, str]:
        # A route whose downstream is down: each call is a failure the breaker counts.
        try:
            await registry.get(name).call(downstream_fails)
        except Exception as exc:
            return {"error": type(exc).__name__}
        return {}

    return app


async def traffic(registry: BreakerRegistry) -> None:
    """Steady calls, so the page has rates and latencies to show: billing fails one in five."""

    async def work(fail: bool) -> None:
        await asyncio.sleep(random.uniform(0.002, 0.012))
        if fail:
            raise ConnectionError("downstream error")

    for n in itertools.count():
        for name, fail in (("auth", False), ("billing", n % 5 == 4)):
            with contextlib.suppress(ConnectionError):
                await registry.get(name).call(work, fail)
        await asyncio.sleep(0.02)


@contextlib.contextmanager
def chromium(binary: str, driver_binary: str, profile: Path) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")  # new and empty
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_binary))
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    server = LoopbackServer(app)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


def badges(driver: WebDriver) -> dict[str, str]:
    """Each row's breaker name (as the page shows it) -> its badge's text."""
    return {
        row.find_element(By.TAG_NAME, "th").text: row.find_element(By.CLASS_NAME, "badge").text
        for row in driver.find_elements(By.CSS_SELECTOR, "#breakers tr")
    }


def cell(driver: WebDriver, name: str, column: int) -> str:
    for row in driver.find_elements(By.CSS_SELECTOR, "#breakers tr"):
        if row.find_element(By.TAG_NAME, "th").text == name:
            text: str = row.find_elements(By.TAG_NAME, "td")[column].text
            return text
    raise AssertionError(f"no row for {name!r}")


async def test_the_dashboard_shows_every_breaker_and_an_open_one_within_2_seconds(
    chromium_binary: str,
    chromedriver_binary: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Selenium Manager must not look for a driver on the network: it is given one.
    monkeypatch.setenv("SE_OFFLINE", "true")
    # "search" opens at its first failure; the others need ten calls and half of them failing.
    registry = BreakerRegistry({"reset_timeout": 600.0}, {"search": {"volume_threshold": 0}})
    for name in NAMES:
        registry.get(name)
    load = asyncio.create_task(traffic(registry))
    shot = tmp_path / "dashboard.png"
    try:
        async with (
            serving(make_app(registry)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):

            def browse() -> list[dict[str, Any]]:
                with chromium(chromium_binary, chromedriver_binary, tmp_path / "profile") as d:
                    d.get(url + "/breakers/dashboard")
                    WebDriverWait(d, 10).until(lambda d: len(badges(d)) == len(NAMES))
                    assert badges(d) == dict.fromkeys(NAMES, "closed")
                    # The markup name is text: no <b> element was made from it.
                    assert d.find_elements(By.CSS_SELECTOR, "#breakers b") == []
                    assert d.find_element(By.ID, "connection").text == "Live"

                    # Open "search" in the server: one failed call (volume_threshold=0).
                    body = asyncio.run_coroutine_threadsafe(client.get("/call/search"), loop)
                    assert body.result(timeout=10).json() == {"error": "ConnectionError"}
                    WebDriverWait(d, 2).until(lambda d: badges(d)["search"] == "open")
                    assert badges(d) == {**dict.fromkeys(NAMES, "closed"), "search": "open"}

                    # The next snapshots fill in the rates and the time to the next trial.
                    blank = ("\u2013", "0.0")  # what the rate shows before a snapshot has it
                    WebDriverWait(d, 10).until(lambda d: cell(d, "auth", 2) not in blank)
                    WebDriverWait(d, 10).until(lambda d: cell(d, "search", 6).endswith(" s"))
                    assert cell(d, "search", 1) == "100.0 %"
                    d.save_screenshot(str(shot))
                    logs: list[dict[str, Any]] = d.get_log("browser")
                    return logs

            loop = asyncio.get_running_loop()
            logs = await asyncio.to_thread(browse)
    finally:
        load.cancel()
    assert [entry for entry in logs if entry["level"] == "SEVERE"] == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
