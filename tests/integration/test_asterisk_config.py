"""``callcentre asterisk config``: the manager.conf and extensions.conf snippets match what the backend expects.

No Asterisk runs here; the snippets are checked against the Asterisk configuration syntax the
backend relies on (documented ``manager.conf`` user sections with ``read``/``write`` permission
classes; ``extensions.conf`` contexts with ``exten => …`` / ``same => n,…`` lines).
"""

from __future__ import annotations

import re

from click.testing import CliRunner

from callcentre.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_config_prints_manager_and_dialplan_matching_settings() -> None:
    """The AMI user gets the permission classes for the events (call, dtmf, dialplan) and actions
    (call, originate) the backend uses; the dialplan has the four contexts, runs the FastAGI at the
    configured address with the dialled number, branches on ``CALLCENTRE_NEXT``, and has ``resume``."""
    env = {"CALLCENTRE_ASTERISK_AMI_USERNAME": "ccuser", "CALLCENTRE_ASTERISK_AMI_SECRET": "top-secret-value",
           "CALLCENTRE_ASTERISK_AGI_HOST": "10.1.2.3", "CALLCENTRE_ASTERISK_AGI_PORT": "4600",
           "CALLCENTRE_SIP_NUMBERS": "1000,2000"}
    out = run("asterisk", "config", env=env)
    assert "[ccuser]" in out and "top-secret-value" not in out
    assert re.search(r"^read = .*call.*dtmf.*dialplan", out, re.M)
    assert re.search(r"^write = .*call.*originate", out, re.M)
    assert "permit = 10.1.2.3/255.255.255.255" in out
    for context in ("callcentre-in", "callcentre-hold", "callcentre-agent", "callcentre-transfer"):
        assert f"[{context}]" in out
    assert "exten => 1000,1,Set(CALLCENTRE_DIALLED=${EXTEN})" in out and "exten => 2000,1," in out
    assert " same => n,AGI(agi://10.1.2.3:4600/ivr,${CALLCENTRE_DIALLED})" in out
    assert "exten => resume,1,AGI(agi://10.1.2.3:4600/ivr)" in out
    assert '${CALLCENTRE_NEXT}" = "queue"' in out and "MusicOnHold(" in out


def test_secret_only_on_request() -> None:
    env = {"CALLCENTRE_ASTERISK_AMI_SECRET": "top-secret-value"}
    assert "secret = top-secret-value" in run("asterisk", "config", "--show-secret", env=env)


def test_callback_context_dials_the_customer_over_the_trunk() -> None:
    """The ``[callcentre-callback]`` context the backend Originates agents into: ``Dial`` of
    ``PJSIP/${CALLCENTRE_CALLBACK_NUMBER}@<asterisk.trunk>`` for ``${CALLCENTRE_CALLBACK_RING}`` seconds with
    option ``g`` (the agent's leg goes on when the customer leaves the bridge), a connected agent waits
    (hold, the platform's Bridge back), an unanswered one is hung up; transfers use the same trunk."""
    out = run("asterisk", "config", env={"CALLCENTRE_ASTERISK_TRUNK": "carrier1"})
    context = out.split("[callcentre-callback]", 1)[1]
    assert "exten => s,1,Dial(PJSIP/${CALLCENTRE_CALLBACK_NUMBER}@carrier1,${CALLCENTRE_CALLBACK_RING},g)" in context
    assert ' same => n,GotoIf($["${DIALSTATUS}" = "ANSWER"]?connected)\n same => n,Hangup()' in context
    assert " same => n(connected),Wait(3600)" in context
    assert "exten => _X.,1,Dial(PJSIP/${EXTEN}@carrier1,60)" in out
