"""IVR flow files: YAML → a validated, immutable :class:`Flow`.

Structure is checked with a JSON schema; meaning is checked afterwards, and every error names the
step at fault: unknown targets, unreachable steps, prompts used but not declared, and loops with no
way out (steps that can never reach an ending, or a cycle that never waits for the caller).
``docs/ivr.md`` is the reference for the format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ivr.actions import Prompt

STEP_KINDS = (
    "say", "menu", "collect", "identify", "set", "branch", "enqueue", "transfer", "callback", "hangup",
)
INPUT_KINDS = frozenset({"menu", "collect", "identify"})
TERMINAL_KINDS = frozenset({"enqueue", "transfer", "callback", "hangup"})
VALIDATORS = ("luhn", "regex", "account")

_TARGET = {"type": "string", "minLength": 1}
_SKILLS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["skill"],
        "properties": {"skill": {"type": "string"}, "min_level": {"type": "integer", "minimum": 1, "maximum": 5}},
        "additionalProperties": False,
    },
}
_SET_FIELDS = {
    "skills": _SKILLS,
    "priority": {"type": "integer"},
    "language": {"type": "string"},
    "queue": {"type": "string"},
    "reason": {"type": "string"},
}
_CONDITION = {
    "type": "object",
    "properties": {
        "business_hours": {"type": "boolean"},
        "tier": {"type": "array", "items": {"type": "string"}},
        "identified": {"type": "boolean"},
        "earlier_calls": {
            "type": "object",
            "properties": {
                "within_days": {"type": "integer", "minimum": 1},
                "at_least": {"type": "integer", "minimum": 1},
                "same_reason": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "context": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
    "minProperties": 1,
}
FLOW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "start", "prompts", "steps"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "start": _TARGET,
        "fallback": _TARGET,
        "language": {"type": "string"},
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10},
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
        "max_visits": {"type": "integer", "minimum": 1, "maximum": 50},
        "speech_confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "business_hours": {
            "type": "object",
            "properties": {
                "days": {"type": "array", "items": {"enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}},
                "open": {"type": "string", "pattern": r"^\d\d:\d\d$"},
                "close": {"type": "string", "pattern": r"^\d\d:\d\d$"},
                "utc_offset_minutes": {"type": "integer"},
            },
            "additionalProperties": False,
        },
        "survey": {"type": "boolean"},
        "prompts": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
        "steps": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["kind"],
                "properties": {
                    "kind": {"enum": list(STEP_KINDS)},
                    "prompt": {"type": "string"},
                    "prompts": {"type": "array", "items": {"type": "string"}},
                    "next": _TARGET,
                    "on_failure": _TARGET,
                    "attempts": {"type": "integer", "minimum": 1, "maximum": 10},
                    "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
                    "invalid_prompt": {"type": "string"},
                    "no_input_prompt": {"type": "string"},
                    "options": {
                        "type": "object",
                        "minProperties": 1,
                        "propertyNames": {"pattern": r"^[0-9*#]$"},
                        "additionalProperties": {
                            "type": "object",
                            "required": ["next"],
                            "properties": {
                                "next": _TARGET,
                                "phrases": {"type": "array", "items": {"type": "string"}},
                                **_SET_FIELDS,
                            },
                            "additionalProperties": False,
                        },
                    },
                    "key": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$"},
                    "min_digits": {"type": "integer", "minimum": 1},
                    "max_digits": {"type": "integer", "minimum": 1, "maximum": 32},
                    "terminator": {"enum": ["#", "*", ""]},
                    "validator": {"enum": list(VALIDATORS)},
                    "pattern": {"type": "string"},
                    "sensitive": {"type": "boolean"},
                    "by_caller_id": {"type": "boolean"},
                    "account_prompt": {"type": "string"},
                    "pin_prompt": {"type": "string"},
                    "unknown_account_prompt": {"type": "string"},
                    "bad_pin_prompt": {"type": "string"},
                    "account_digits": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                    "pin_digits": {"type": "integer", "minimum": 3, "maximum": 12},
                    "language_from_customer": {"type": "boolean"},
                    "conditions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["if", "next"],
                            "properties": {"if": _CONDITION, "next": _TARGET},
                            "additionalProperties": False,
                        },
                    },
                    "else": _TARGET,
                    "number": {"type": "string"},
                    "queue": {"type": "string"},
                    "reason": {"type": "string"},
                    "unidentified": {"type": "boolean"},
                    **{k: v for k, v in _SET_FIELDS.items() if k not in ("queue", "reason")},
                },
                "additionalProperties": False,
            },
        },
    },
}

# Which keys each kind needs beyond ``kind``; checked after the schema so the message names the step.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "say": ("prompt", "next"),
    "menu": ("prompt", "options"),
    "collect": ("prompt", "key", "next"),
    "identify": ("account_prompt", "pin_prompt", "next"),
    "set": ("next",),
    "branch": ("conditions", "else"),
    "enqueue": ("queue",),
    "transfer": ("number",),
    "callback": ("queue",),
    "hangup": (),
}


class FlowError(ValueError):
    """A flow file that cannot run; ``step`` names the step at fault when there is one."""

    def __init__(self, message: str, step: str | None = None, source: str = "") -> None:
        where = f"{source}: " if source else ""
        at = f"step {step!r}: " if step else ""
        super().__init__(f"{where}{at}{message}")
        self.step = step
        self.source = source


@dataclass(frozen=True)
class Step:
    name: str
    kind: str
    spec: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.spec.get(key, default)

    def targets(self) -> list[str]:
        """Every step this one can go to."""
        found = [self.spec[k] for k in ("next", "on_failure", "else") if k in self.spec]
        found += [opt["next"] for opt in self.spec.get("options", {}).values()]
        found += [cond["next"] for cond in self.spec.get("conditions", [])]
        return found

    def prompt_ids(self) -> list[str]:
        keys = ("prompt", "invalid_prompt", "no_input_prompt", "account_prompt", "pin_prompt",
                "unknown_account_prompt", "bad_pin_prompt")
        ids = [self.spec[k] for k in keys if k in self.spec]
        return ids + list(self.spec.get("prompts", []))


@dataclass(frozen=True)
class Flow:
    name: str
    start: str
    fallback: str | None
    steps: Mapping[str, Step]
    prompts: Mapping[str, str]
    language: str = "en"
    max_attempts: int = 3
    timeout_seconds: float = 5.0
    max_visits: int = 5
    speech_confidence: float = 0.5
    business_hours: Mapping[str, Any] = field(default_factory=dict)
    survey: bool = False
    source: str = ""

    def prompt(self, prompt_id: str) -> Prompt:
        return Prompt(prompt_id, self.prompts[prompt_id])

    def step(self, name: str) -> Step:
        return self.steps[name]


# Prompts the engine itself speaks; a flow must declare them (so they have audio).
ENGINE_PROMPTS = ("invalid", "no_input")


def parse_flow(data: Any, source: str = "") -> Flow:
    """Validate parsed YAML and build a Flow, or raise :class:`FlowError`."""
    if not isinstance(data, dict):
        raise FlowError("a flow file must be a mapping with name, start, prompts and steps", source=source)
    try:
        jsonschema.validate(data, FLOW_SCHEMA)
    except jsonschema.ValidationError as exc:
        path = list(exc.absolute_path)
        step = str(path[1]) if len(path) > 1 and path[0] == "steps" else None
        where = "/".join(str(p) for p in path[2:] if step) if step else "/".join(str(p) for p in path)
        raise FlowError(f"{where + ': ' if where else ''}{exc.message}", step=step, source=source) from None
    steps = {name: Step(name, spec["kind"], spec) for name, spec in data["steps"].items()}
    flow = Flow(
        name=data["name"],
        start=data["start"],
        fallback=data.get("fallback"),
        steps=steps,
        prompts=dict(data["prompts"]),
        language=data.get("language", "en"),
        max_attempts=data.get("max_attempts", 3),
        timeout_seconds=float(data.get("timeout_seconds", 5.0)),
        max_visits=data.get("max_visits", 5),
        speech_confidence=float(data.get("speech_confidence", 0.5)),
        business_hours=data.get("business_hours", {}),
        survey=bool(data.get("survey", False)),
        source=source,
    )
    check_flow(flow)
    return flow


def load_flow(path: str | Path) -> Flow:
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FlowError(f"not valid YAML: {exc}", source=str(path)) from None
    return parse_flow(data, source=str(path))


def default_flow_path() -> Path:
    return Path(__file__).parent / "flows" / "default.yaml"


def check_flow(flow: Flow) -> None:
    """Semantic checks; each failure names the step."""
    src = flow.source
    for name in (flow.start, flow.fallback):
        if name is not None and name not in flow.steps:
            raise FlowError(f"flow refers to unknown step {name!r}", source=src)
    for pid in ENGINE_PROMPTS:
        if pid not in flow.prompts:
            raise FlowError(f"the engine's prompt {pid!r} is not declared under prompts", source=src)
    for step in flow.steps.values():
        for key in REQUIRED_KEYS[step.kind]:
            if key not in step.spec:
                raise FlowError(f"a {step.kind} step needs {key!r}", step=step.name, source=src)
        for target in step.targets():
            if target not in flow.steps:
                raise FlowError(f"unknown target step {target!r}", step=step.name, source=src)
        for pid in step.prompt_ids():
            if pid not in flow.prompts:
                raise FlowError(f"prompt {pid!r} is not declared under prompts", step=step.name, source=src)
        if step.kind == "collect":
            _check_collect(step, src)
    _check_reachable(flow)
    _check_exits(flow)
    _check_silent_cycles(flow)


def _check_collect(step: Step, src: str) -> None:
    low, high = step.get("min_digits", 1), step.get("max_digits", 1)
    if low > high:
        raise FlowError(f"min_digits {low} is more than max_digits {high}", step=step.name, source=src)
    if step.get("validator") == "regex" and not step.get("pattern"):
        raise FlowError("validator regex needs a pattern", step=step.name, source=src)


def _walk(flow: Flow, roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(flow.steps[name].targets())
    return seen


def _check_reachable(flow: Flow) -> None:
    roots = [flow.start] + ([flow.fallback] if flow.fallback else [])
    reachable = _walk(flow, roots)
    for name in flow.steps:
        if name not in reachable:
            raise FlowError("unreachable: no step leads here", step=name, source=flow.source)


def _check_exits(flow: Flow) -> None:
    """Every step must be able to reach an ending; otherwise callers would circle forever."""
    can_end = {n for n, s in flow.steps.items() if s.kind in TERMINAL_KINDS}
    changed = True
    while changed:
        changed = False
        for name, step in flow.steps.items():
            if name in can_end:
                continue
            exits = step.targets()
            # Input steps can always fail over to the flow's fallback.
            if step.kind in INPUT_KINDS and flow.fallback and "on_failure" not in step.spec:
                exits = [*exits, flow.fallback]
            if any(t in can_end for t in exits):
                can_end.add(name)
                changed = True
    for name in flow.steps:
        if name not in can_end:
            raise FlowError("a loop with no exit: no path from here reaches enqueue, transfer, callback or hangup",
                            step=name, source=flow.source)
    for step in flow.steps.values():
        if step.kind in INPUT_KINDS and "on_failure" not in step.spec and not flow.fallback:
            raise FlowError("needs on_failure (or a flow-level fallback) for when the caller's input keeps failing",
                            step=step.name, source=flow.source)


def _check_silent_cycles(flow: Flow) -> None:
    """A cycle through say/set/branch steps only would spin without ever waiting for the caller."""
    silent = {n for n, s in flow.steps.items() if s.kind in ("say", "set", "branch")}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in flow.steps[name].targets():
            if target not in silent:
                continue
            if state.get(target) == 1:
                raise FlowError(f"a loop with no exit: {' -> '.join([*path, target])} never waits for the caller",
                                step=target, source=flow.source)
            if target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(silent):
        if name not in state:
            visit(name, [name])
