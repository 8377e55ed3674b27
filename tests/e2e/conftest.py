"""Browser-test fixtures: the real console app on a loopback port and Debian's chromium via Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from callcentre.settings import Settings
from tests.e2e.console_seed import Seeded, seed
from tests.peers import require_binary, require_module

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class ConsoleServer:
    url: str
    app: Any
    console: Any
    seeded: Seeded


@pytest.fixture
def console_server(settings: Settings, engine: Any, tmp_path: Path) -> Iterator[ConsoleServer]:
    from agent_console.app import create_app
    from agent_console.context import get_console
    from agent_console.serving import serve_in_thread

    app = create_app(settings)
    with app.app_context():
        console = get_console()
    seeded = seed(console.session_factory, tmp_path / "recordings")
    running = serve_in_thread(app)
    try:
        yield ConsoleServer(running.url, app, console, seeded)
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_binary("chromium", "/usr/bin/chromium")
    require_module("playwright")
    from playwright.sync_api import expect, sync_playwright

    # The machine is shared by parallel test runs: give assertions room instead of flaking.
    expect.set_options(timeout=15_000)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
