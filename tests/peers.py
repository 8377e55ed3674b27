"""Real-peer requirements: skip on a developer laptop that lacks the program, fail under CI.

CI installs every peer (see ``.ci/run``), so a skipped real-peer test there would be a hidden
failure; ``CI`` in the environment turns the skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def missing(what: str) -> None:
    message = f"{what} is not installed"
    if in_ci():
        pytest.fail(message + " (CI must install it: see .ci/run)", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, path: str | None = None) -> str:
    """Return the program's path, or skip (laptop) / fail (CI)."""
    found = path if path and os.path.exists(path) else shutil.which(name)
    if not found:
        missing(f"program {name}")
    assert found is not None
    return found


def require_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        missing(f"Python package {name}")
