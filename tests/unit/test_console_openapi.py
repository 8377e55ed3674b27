"""static/openapi.json documents exactly the JSON API the app serves (no missing, no stale paths)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from callcentre.settings import Settings

SPEC = Path(__file__).resolve().parents[2] / "agent_console" / "static" / "openapi.json"


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def test_every_api_route_is_documented_with_its_methods(settings: Settings) -> None:
    from agent_console.app import create_app

    app = create_app(settings)
    spec = json.loads(SPEC.read_text())
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        # The console's own JSON API and push; the WebRTC signalling blueprint documents itself.
        if rule.endpoint.split(".")[0] in {"api", "events"}:
            methods = {m.lower() for m in (rule.methods or set())} - {"head", "options"}
            served.setdefault(_openapi_path(rule.rule), set()).update(methods)
    documented = {
        path: {m for m in ops if m in {"get", "post"}}
        for path, ops in spec["paths"].items()
        if not path.startswith("/api/webrtc/")
    }
    assert documented == served


def test_every_reference_resolves() -> None:
    text = SPEC.read_text()
    spec = json.loads(text)
    for ref in set(re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in spec["components"][ref[0]], ref
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method in {"get", "post"}:
                assert op["summary"] and "401" in op["responses"], (path, method)
