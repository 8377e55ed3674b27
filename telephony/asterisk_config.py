"""The ``manager.conf`` and ``extensions.conf`` snippets an Asterisk administrator pastes.

They match what :mod:`telephony.asterisk` expects: an AMI user allowed the events and actions we
use, and five dialplan contexts (``<prefix>-in``, ``-hold``, ``-agent``, ``-transfer``, ``-callback``). Secrets
are never printed: the AMI secret is shown as a placeholder unless the caller asks for it.
"""

from __future__ import annotations

from callcentre.settings import AsteriskSettings

SECRET_PLACEHOLDER = "<the value of asterisk.ami_secret>"


def manager_conf(settings: AsteriskSettings, *, show_secret: bool = False, permit: str = "") -> str:
    user = settings.ami_username or "callcentre"
    secret = settings.ami_secret if (show_secret and settings.ami_secret) else SECRET_PLACEHOLDER
    network = permit or f"{settings.agi_host}/255.255.255.255"
    return f"""; manager.conf — AMI access for callcentre
[general]
enabled = yes
port = {settings.ami_port}
bindaddr = {settings.ami_host}

[{user}]
secret = {secret}
deny = 0.0.0.0/0.0.0.0
permit = {network}
; call: Newchannel/Newstate/Hangup/Dial*/Bridge*/OriginateResponse; dtmf: DTMFEnd; dialplan: VarSet
read = call,dtmf,dialplan,system
; originate: Originate; call: Redirect, Hangup, Bridge, MixMonitor, BlindTransfer, Atxfer
write = call,originate,system
writetimeout = 5000
"""


def extensions_conf(settings: AsteriskSettings, *, numbers: tuple[str, ...] = ("1000",)) -> str:
    prefix = settings.context_prefix
    trunk = settings.trunk
    agi = f"agi://{settings.agi_host}:{settings.agi_port}/ivr"
    lines = [
        f"; extensions.conf — callcentre contexts (route your inbound numbers to [{prefix}-in])",
        f"[{prefix}-in]",
    ]
    for number in numbers:
        lines.append(f"exten => {number},1,Set(CALLCENTRE_DIALLED=${{EXTEN}})")
        lines.append(" same => n,Goto(s,1)")
    lines += [
        "exten => s,1,Answer()",
        " same => n,Set(AGISIGHUP=yes)",
        f" same => n,AGI({agi},${{CALLCENTRE_DIALLED}})",
        " same => n(after_ivr),GotoIf($[\"${CALLCENTRE_NEXT}\" = \"queue\"]?" + f"{prefix}-hold,s,1)",
        " same => n,GotoIf($[\"${CALLCENTRE_NEXT}\" = \"transfer\"]?"
        + f"{prefix}-transfer," + "${CALLCENTRE_TRANSFER_TO},1)",
        " same => n,Hangup()",
        "; the platform sends a caller on hold back into the IVR with Redirect to exten 'resume'",
        f"exten => resume,1,AGI({agi})",
        f" same => n,Goto({prefix}-in,s,after_ivr)",
        "",
        f"[{prefix}-hold]",
        "; callers waiting for an agent: music until the platform bridges them (AMI Bridge)",
        "exten => s,1,MusicOnHold(default)",
        " same => n,Hangup()",
        "",
        f"[{prefix}-agent]",
        "; the agent's leg after it answers an Originate; the platform bridges it to the caller",
        "exten => s,1,Answer()",
        " same => n,Wait(3600)",
        " same => n,Hangup()",
        "",
        f"[{prefix}-transfer]",
        f"; blind transfers and IVR Transfer actions to outside numbers, over the trunk [asterisk] trunk={trunk}",
        f"exten => _X.,1,Dial(PJSIP/${{EXTEN}}@{trunk},60)",
        " same => n,Hangup()",
        "",
        f"[{prefix}-callback]",
        "; a callback: the platform Originates the agent's phone into this context; once the agent answers,",
        "; the customer is dialled (number and ring time come in channel variables set by the Originate;",
        "; the agent hears the ringback). 'g': the agent's leg stays up when the customer leaves the Dial",
        "; bridge, so hold (Redirect) and the platform's Bridge back work; the platform ends the agent's",
        "; leg when the customer hangs up. Unanswered: DIALSTATUS + the customer's hangup cause tell why.",
        f"exten => s,1,Dial(PJSIP/${{CALLCENTRE_CALLBACK_NUMBER}}@{trunk},${{CALLCENTRE_CALLBACK_RING}},g)",
        ' same => n,GotoIf($["${DIALSTATUS}" = "ANSWER"]?connected)',
        " same => n,Hangup()",
        " same => n(connected),Wait(3600)",
        " same => n,Hangup()",
        "",
    ]
    return "\n".join(lines)
