"""setup.py lists every package explicitly (the product owner's rule) and nothing that does not exist."""

from __future__ import annotations

import ast
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("callcentre", "telephony", "ivr", "routing", "agent_console", "recordings")


def listed_packages() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PACKAGES" for t in node.targets):
            return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    raise AssertionError("setup.py has no PACKAGES list")


def test_every_package_is_listed_in_setup_py() -> None:
    found = {p for p in find_packages(str(ROOT), include=[f"{t}*" for t in TOP_LEVEL])}
    listed = listed_packages()
    assert found - listed == set(), f"add to setup.py PACKAGES: {sorted(found - listed)}"
    assert listed - found == set(), f"setup.py lists packages that do not exist: {sorted(listed - found)}"


def test_the_console_script_is_callcentre() -> None:
    assert "callcentre=callcentre.cli:main" in (ROOT / "setup.py").read_text(encoding="utf-8")
