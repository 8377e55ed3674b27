"""The IVR flow engine: a pure state machine, identical on every telephony backend.

``start(call)`` and ``step(state, input)`` each return the next state and one backend-neutral
action. Steps that need no input (say, set, branch, skipped steps) run at once and fold their
prompts into the next action. The engine does no I/O of its own: customer look-ups go through the
:class:`CustomerDirectory` it is given.

Guarantees:
- nothing already in the CallContext is asked again (collect/identify/menu steps are skipped);
- wrong or missing input re-prompts with a specific message, and after ``attempts`` failures the
  step's ``on_failure`` (else the flow's ``fallback``) is taken;
- no call can loop forever: a step entered more than ``max_visits`` times goes to the fallback,
  and a fallback that itself loops ends the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from callcentre.domain.context import CallContext, ContextItem
from ivr.actions import Action, Enqueue, Gather, Hangup, Prompt, RequestCallback, Transfer
from ivr.conditions import in_business_hours
from ivr.flow import Flow, Step
from ivr.state import CallInfo, DigitsInput, IvrInput, IvrState, NoInput, SpeechInput
from ivr.validators import luhn_ok, regex_ok


@dataclass(frozen=True)
class CustomerRecord:
    id: int
    tier: str = "standard"
    language: str = ""


class CustomerDirectory(Protocol):
    """The engine's only window on stored data; the database adapter lives outside ``ivr/``."""

    def find_by_phone(self, number: str) -> CustomerRecord | None: ...

    def find_by_account(self, account_number: str) -> CustomerRecord | None: ...

    def check_pin(self, customer_id: int, pin: str) -> bool: ...

    def recent_call_count(self, customer_id: int, since: datetime, reason: str | None) -> int: ...


class NoCustomers:
    """A directory that knows nobody (``ivr try`` without a database, and tests)."""

    def find_by_phone(self, number: str) -> CustomerRecord | None:
        return None

    def find_by_account(self, account_number: str) -> CustomerRecord | None:
        return None

    def check_pin(self, customer_id: int, pin: str) -> bool:
        return False

    def recent_call_count(self, customer_id: int, since: datetime, reason: str | None) -> int:
        return 0


Result = tuple[IvrState, Action]


class IvrEngine:
    def __init__(self, flow: Flow, directory: CustomerDirectory) -> None:
        self.flow = flow
        self.directory = directory
        # Bound on silent steps in one turn; validation forbids silent cycles, this is the backstop.
        self._max_silent_steps = len(flow.steps) * flow.max_visits + 10

    # -- public API -------------------------------------------------------------------------------

    def start(self, call: CallInfo) -> Result:
        context = CallContext(call.call_id)
        if call.caller_id:
            context = context.with_item(ContextItem("caller_id", call.caller_id, "arrival", at=call.now))
        if call.dialled:
            context = context.with_item(ContextItem("dialled_number", call.dialled, "arrival", at=call.now))
        state = IvrState(call=call, step=self.flow.start, context=context, language=self.flow.language)
        return self._enter(state, self.flow.start, [])

    def step(self, state: IvrState, inp: IvrInput) -> Result:
        if state.finished:
            raise ValueError(f"call {state.call.call_id}: the IVR already finished at step {state.step!r}")
        step = self.flow.step(state.step)
        if step.kind == "menu":
            return self._menu_input(state, step, inp)
        if step.kind == "collect":
            return self._collect_input(state, step, inp)
        if step.kind == "identify":
            return self._identify_input(state, step, inp)
        raise ValueError(f"call {state.call.call_id}: step {step.name!r} ({step.kind}) takes no input")

    # -- moving between steps ----------------------------------------------------------------------

    def _enter(self, state: IvrState, target: str, prompts: list[Prompt]) -> Result:
        for _ in range(self._max_silent_steps):
            if state.visit_count(target) >= self.flow.max_visits:
                fallback = self.flow.fallback
                if fallback is None or target == fallback or state.visit_count(fallback) >= self.flow.max_visits:
                    return self._finish(state, Hangup(prompts=tuple(prompts), reason="loop_guard",
                                                      context=state.context))
                state = self._note(state, "ivr_fallback_from", target)
                target = fallback
            state = state.visiting(target)
            step = self.flow.step(target)
            outcome = self._run(state, step, prompts)
            if isinstance(outcome, tuple):
                return outcome
            state, target, prompts = outcome.state, outcome.target, outcome.prompts
        return self._finish(state, Hangup(prompts=tuple(prompts), reason="loop_guard", context=state.context))

    def _run(self, state: IvrState, step: Step, prompts: list[Prompt]) -> Result | _Goto:
        kind = step.kind
        if kind == "say":
            return _Goto(state, step.get("next"), [*prompts, *self._prompts(step, "prompt")])
        if kind == "set":
            return _Goto(self._apply_settings(state, step.spec, step.name), step.get("next"), prompts)
        if kind == "branch":
            return _Goto(state, self._branch_target(state, step), prompts)
        if kind == "menu":
            already = self._menu_already_answered(state, step)
            if already is not None:
                return _Goto(self._apply_settings(state, step.spec["options"][already], step.name, skip_reason=True),
                             step.spec["options"][already]["next"], prompts)
            return state, self._gather(step, prompts)
        if kind == "collect":
            if step.get("key") in state.context:
                return _Goto(state, step.get("next"), prompts)
            return state, self._gather(step, prompts)
        if kind == "identify":
            return self._identify_enter(state, step, prompts)
        return self._terminal(state, step, prompts)

    def _terminal(self, state: IvrState, step: Step, prompts: list[Prompt]) -> Result:
        all_prompts = tuple([*prompts, *self._prompts(step, "prompt")])
        ctx = state.context
        if step.kind == "enqueue":
            skills = state.skills or tuple((s["skill"], int(s.get("min_level", 1))) for s in step.get("skills", []))
            unidentified = bool(step.get("unidentified", False)) or "customer_id" not in ctx
            priority = max(state.priority, int(step.get("priority", 0)))
            return self._finish(state, Enqueue(prompts=all_prompts, queue=state.queue or step.get("queue"),
                                               required_skills=skills, priority=priority,
                                               language=state.language, context=ctx, unidentified=unidentified))
        if step.kind == "transfer":
            return self._finish(state, Transfer(prompts=all_prompts, number=step.get("number"), context=ctx))
        if step.kind == "callback":
            number = ctx.get("callback_number") or ctx.get("caller_id") or ""
            return self._finish(state, RequestCallback(prompts=all_prompts, number=number,
                                                       queue=state.queue or step.get("queue"), context=ctx))
        return self._finish(state, Hangup(prompts=all_prompts, reason=step.get("reason", "completed"), context=ctx))

    def _finish(self, state: IvrState, action: Action) -> Result:
        return replace(state, finished=True), action

    # -- input steps -------------------------------------------------------------------------------

    def _gather(self, step: Step, prompts: list[Prompt], *, lead: list[Prompt] | None = None,
                prompt_key: str = "prompt", digits: tuple[int, int] = (1, 1), terminator: str | None = None,
                sensitive: bool = False) -> Gather:
        if step.kind == "menu":
            phrases = tuple(p for opt in step.spec["options"].values() for p in opt.get("phrases", []))
            low, high, term = 1, 1, ""
        elif step.kind == "collect":
            phrases = ()
            low, high = step.get("min_digits", 1), step.get("max_digits", 1)
            term = step.get("terminator", "#")
            sensitive = bool(step.get("sensitive", False))
        else:
            phrases = ()
            low, high = digits
            term = "#" if terminator is None else terminator
        return Gather(prompts=tuple([*prompts, *(lead or []), *self._prompts(step, prompt_key)]),
                      max_digits=high, min_digits=low, terminator=term,
                      timeout_seconds=float(step.get("timeout_seconds", self.flow.timeout_seconds)),
                      speech_phrases=phrases, sensitive=sensitive)

    def _retry(self, state: IvrState, step: Step, inp: IvrInput, *, specific: str | None = None,
               regather: Any = None) -> Result:
        """Count a failed input; re-prompt with a specific message, or take the failure route."""
        attempts = state.attempts + 1
        limit = int(step.get("attempts", self.flow.max_attempts))
        if attempts >= limit:
            return self._fail_over(state, step)
        state = replace(state, attempts=attempts)
        if isinstance(inp, NoInput):
            message = step.get("no_input_prompt", "no_input")
        else:
            message = specific or step.get("invalid_prompt", "invalid")
        lead = [self.flow.prompt(message)]
        gather = regather(lead) if regather else self._gather(step, [], lead=lead)
        return state, gather

    def _fail_over(self, state: IvrState, step: Step) -> Result:
        target = step.get("on_failure") or self.flow.fallback
        if target is None:  # validation makes this unreachable; end safely rather than loop
            return self._finish(state, Hangup(reason="no_fallback", context=state.context))
        return self._enter(self._note(state, "ivr_fallback_from", step.name), target, [])

    def _menu_input(self, state: IvrState, step: Step, inp: IvrInput) -> Result:
        options: Mapping[str, Any] = step.spec["options"]
        choice: str | None = None
        if isinstance(inp, DigitsInput) and inp.digits[:1] in options:
            choice = inp.digits[:1]
        elif isinstance(inp, SpeechInput) and inp.confidence >= self.flow.speech_confidence:
            choice = _match_phrase(inp.text, options)
        if choice is None:
            return self._retry(state, step, inp)
        option = options[choice]
        state = self._apply_settings(state, option, step.name)
        state = self._note(state, f"menu_{step.name}", choice)
        return self._enter(state, option["next"], [])

    def _collect_input(self, state: IvrState, step: Step, inp: IvrInput) -> Result:
        if not isinstance(inp, DigitsInput):
            return self._retry(state, step, inp)
        digits = _strip_terminator(inp.digits, step.get("terminator", "#"))
        if not self._digits_ok(step, digits):
            return self._retry(state, step, inp)
        verified = step.get("validator") == "account"
        item = ContextItem(step.get("key"), digits, step.name, verified=verified,
                           sensitive=bool(step.get("sensitive", False)), at=state.call.now)
        state = replace(state, context=state.context.with_item(item))
        return self._enter(state, step.get("next"), [])

    def _digits_ok(self, step: Step, digits: str) -> bool:
        if not digits.isdigit() or not step.get("min_digits", 1) <= len(digits) <= step.get("max_digits", 1):
            return False
        validator = step.get("validator")
        if validator == "luhn":
            return luhn_ok(digits)
        if validator == "regex":
            return regex_ok(step.get("pattern"), digits)
        if validator == "account":
            return self.directory.find_by_account(digits) is not None
        return True

    # -- identify: caller ID, else account number + PIN --------------------------------------------

    def _identify_enter(self, state: IvrState, step: Step, prompts: list[Prompt]) -> Result:
        if "customer_id" in state.context:
            return self._enter(state, step.get("next"), prompts)
        caller = state.call.caller_id
        if step.get("by_caller_id", True) and caller:
            record = self.directory.find_by_phone(caller)
            if record is not None:
                return self._enter(self._identified(state, step, record, "caller_id"), step.get("next"), prompts)
        if "account_number" in state.context and state.context.item("account_number") is not None:
            # An account was typed earlier (e.g. a collect step): go straight to the PIN.
            state = replace(state, phase="pin", pending_account=state.context.get("account_number") or "")
            return state, self._pin_gather(step, prompts)
        return replace(state, phase="account"), self._account_gather(step, prompts)

    def _account_gather(self, step: Step, prompts: list[Prompt], lead: list[Prompt] | None = None) -> Gather:
        low, high = step.get("account_digits", [4, 12])
        return self._gather(step, prompts, lead=lead, prompt_key="account_prompt", digits=(low, high))

    def _pin_gather(self, step: Step, prompts: list[Prompt], lead: list[Prompt] | None = None) -> Gather:
        size = step.get("pin_digits", 4)
        return self._gather(step, prompts, lead=lead, prompt_key="pin_prompt", digits=(size, size),
                            sensitive=True)

    def _identify_input(self, state: IvrState, step: Step, inp: IvrInput) -> Result:
        if state.phase == "pin":
            return self._pin_input(state, step, inp)
        regather = lambda lead: self._account_gather(step, [], lead)  # noqa: E731
        if not isinstance(inp, DigitsInput):
            return self._retry(state, step, inp, regather=regather)
        account = _strip_terminator(inp.digits, "#")
        record = self.directory.find_by_account(account) if account.isdigit() else None
        if record is None:
            return self._retry(state, step, inp, specific=step.get("unknown_account_prompt"), regather=regather)
        # Saved now, unverified, so a caller who hangs up at the PIN still leaves the account they gave.
        claimed = ContextItem("account_number", account, step.name, verified=False, at=state.call.now)
        state = replace(state, phase="pin", attempts=0, pending_account=account,
                        context=state.context.replacing(claimed))
        return state, self._pin_gather(step, [])

    def _pin_input(self, state: IvrState, step: Step, inp: IvrInput) -> Result:
        regather = lambda lead: self._pin_gather(step, [], lead)  # noqa: E731
        pin = _strip_terminator(inp.digits, "#") if isinstance(inp, DigitsInput) else ""
        record = self.directory.find_by_account(state.pending_account) if pin else None
        if record is None or not pin.isdigit() or not self.directory.check_pin(record.id, pin):
            return self._retry(state, step, inp, specific=step.get("bad_pin_prompt"), regather=regather)
        # Same value the caller typed, now verified by the PIN.
        verified = ContextItem("account_number", state.pending_account, step.name, verified=True, at=state.call.now)
        state = replace(state, context=state.context.replacing(verified))
        return self._enter(self._identified(state, step, record, "account_pin"), step.get("next"), [])

    def _identified(self, state: IvrState, step: Step, record: CustomerRecord, how: str) -> IvrState:
        ctx = state.context.with_item(ContextItem("customer_id", str(record.id), step.name, verified=True,
                                                  at=state.call.now))
        ctx = ctx.with_item(ContextItem("identified_by", how, step.name, verified=True, at=state.call.now))
        language = record.language if step.get("language_from_customer") and record.language else state.language
        return replace(state, context=ctx, customer_id=record.id, customer_tier=record.tier, language=language,
                       phase="", pending_account="")

    # -- set / branch ------------------------------------------------------------------------------

    def _apply_settings(self, state: IvrState, spec: Mapping[str, Any], step_name: str,
                        *, skip_reason: bool = False) -> IvrState:
        changes: dict[str, Any] = {}
        if "skills" in spec:
            changes["skills"] = tuple((s["skill"], int(s.get("min_level", 1))) for s in spec["skills"])
        for key in ("language", "queue"):
            if key in spec:
                changes[key] = spec[key]
        if "priority" in spec:
            # Priority only rises within a call: a later step never undoes an earlier boost (VIP, repeat).
            changes["priority"] = max(state.priority, int(spec["priority"]))
        state = replace(state, **changes)
        if "reason" in spec and not skip_reason and "reason" not in state.context:
            item = ContextItem("reason", spec["reason"], step_name, at=state.call.now)
            state = replace(state, context=state.context.with_item(item))
        return state

    def _branch_target(self, state: IvrState, step: Step) -> str:
        for condition in step.spec["conditions"]:
            if all(self._holds(state, key, value) for key, value in condition["if"].items()):
                return str(condition["next"])
        return str(step.spec["else"])

    def _holds(self, state: IvrState, key: str, value: Any) -> bool:
        if key == "business_hours":
            return in_business_hours(state.call.now, self.flow.business_hours) is bool(value)
        if key == "identified":
            return (state.customer_id is not None) is bool(value)
        if key == "tier":
            return state.customer_tier in value
        if key == "context":
            return all(state.context.get(k) == v for k, v in value.items())
        if key == "earlier_calls":
            if state.customer_id is None:
                return False
            since = state.call.now - timedelta(days=int(value.get("within_days", 7)))
            reason = state.context.get("reason") if value.get("same_reason") else None
            count = self.directory.recent_call_count(state.customer_id, since, reason)
            return count >= int(value.get("at_least", 1))
        raise ValueError(f"unknown condition {key!r}")

    # -- helpers -----------------------------------------------------------------------------------

    def _menu_already_answered(self, state: IvrState, step: Step) -> str | None:
        """A menu whose reason is already known is not asked again: follow the option that set it."""
        reason = state.context.get("reason")
        if reason is None:
            return None
        for key, option in step.spec["options"].items():
            if option.get("reason") == reason:
                return str(key)
        return None

    def _prompts(self, step: Step, key: str) -> list[Prompt]:
        ids = [step.spec[key]] if key in step.spec else []
        if key == "prompt":
            ids += list(step.get("prompts", []))
        return [self.flow.prompt(pid) for pid in ids]

    def _note(self, state: IvrState, key: str, value: str) -> IvrState:
        """Record a derived fact (a menu choice, a fallback); these may change, unlike caller input."""
        item = ContextItem(key, value, state.step, at=state.call.now)
        return replace(state, context=state.context.replacing(item))


@dataclass(frozen=True)
class _Goto:
    state: IvrState
    target: str
    prompts: list[Prompt]


def _strip_terminator(digits: str, terminator: str) -> str:
    if terminator and digits.endswith(terminator):
        return digits[: -len(terminator)]
    return digits


def _match_phrase(text: str, options: Mapping[str, Any]) -> str | None:
    spoken = " ".join(text.lower().split())
    if not spoken:
        return None
    for key, option in options.items():
        for phrase in option.get("phrases", []):
            wanted = " ".join(str(phrase).lower().split())
            if spoken == wanted or f" {wanted} " in f" {spoken} ":
                return str(key)
    return None
