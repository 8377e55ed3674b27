"""``callcentre demo`` as a newcomer runs it: a real subprocess, the printed URL and logins, and
the wallboard showing calls offered and answered and agents on calls within a minute."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "callcentre.cli", "demo", "--http", "127.0.0.1:0", "--duration", "90"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    try:
        banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            banner.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(banner)
        match = re.search(r"console on (http://127\.0\.0\.1:\d+)/", text)
        assert match, text
        yield proc, match.group(1), text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def session_for(url: str, login: str, password: str) -> requests.Session:
    s = requests.Session()
    token = re.search(r'name="csrf-token" content="([^"]+)"', s.get(url + "/login", timeout=5).text)
    assert token
    r = s.post(url + "/login", data={"login": login, "password": password, "csrf_token": token.group(1)},
               allow_redirects=False, timeout=10)
    assert r.status_code == 302, (login, r.status_code)
    return s


def test_demo_prints_logins_and_queues_move_within_a_minute(demo: tuple[subprocess.Popen[str], str, str]) -> None:
    proc, url, banner = demo
    logins = dict(re.findall(r"^\s+\w+\s+(\S+)\s+password (\S+)", banner, re.M))
    assert {"agent01", "supervisor", "admin"} <= set(logins), banner
    agent = session_for(url, "agent01", logins["agent01"])
    assert agent.get(url + "/agent", timeout=5).status_code == 200
    boss = session_for(url, "supervisor", logins["supervisor"])

    started = time.monotonic()
    seen_on_call = answered = 0
    while time.monotonic() - started < 60:
        board = boss.get(url + "/api/wallboard", timeout=10).json()
        answered = sum(q["metrics"]["answered"] for q in board["queues"])
        seen_on_call = max(seen_on_call, board["agent_states"].get("on_call", 0))
        if answered >= 2 and seen_on_call >= 1:
            break
        time.sleep(1)
    assert answered >= 2 and seen_on_call >= 1, board
    assert proc.poll() is None, "the demo keeps running"
