"""Wallboard alerts (longest wait, service level falling, low satisfaction) and optional SMS.

Alerts are derived from each wallboard snapshot. A *new* alert (one whose key was not active in
the previous snapshot) may also be sent by SMS through Twilio to ``settings.twilio.alert_sms_to``;
that is off unless the number and the Twilio account are configured, and each alert key is sent at
most once per ``min_interval_seconds``. SMS text holds queue names and numbers only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callcentre.settings import TwilioSettings

log = logging.getLogger(__name__)

SmsSender = Callable[[str], None]


@dataclass(frozen=True)
class Alert:
    key: str
    """Stable identity (``longest_wait:billing``) so one condition is one alert, not one per refresh."""
    kind: str
    queue: str
    severity: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def make_sms_sender(twilio: TwilioSettings, http_client: Any = None) -> SmsSender | None:
    """An SMS sender when Twilio and ``alert_sms_to`` are configured, else None (the default)."""
    if not (twilio.alert_sms_to and twilio.account_sid and twilio.auth_token and twilio.from_number):
        return None
    from twilio.rest import Client

    client = Client(twilio.account_sid, twilio.auth_token, http_client=http_client)

    def send(body: str) -> None:
        client.messages.create(to=twilio.alert_sms_to, from_=twilio.from_number, body=body)

    return send


def evaluate(snapshot: dict[str, Any], *, longest_wait_seconds: float, min_csat: float) -> list[Alert]:
    """The alerts a wallboard snapshot calls for."""
    alerts: list[Alert] = []
    for q in snapshot.get("queues", []):
        name = q["name"]
        wait = q.get("longest_wait_seconds") or 0
        if wait >= longest_wait_seconds:
            alerts.append(
                Alert(
                    f"longest_wait:{name}",
                    "longest_wait",
                    name,
                    "high",
                    f"{name}: a caller has waited {int(wait)} s",
                )
            )
        m = q.get("metrics", {})
        target = q.get("sl_target_percent", 80) / 100.0
        recent, today = m.get("sl_30min"), m.get("sl_today")
        if recent is not None and recent < target and (today is None or recent < today):
            alerts.append(
                Alert(
                    f"sl_falling:{name}",
                    "sl_falling",
                    name,
                    "medium",
                    f"{name}: service level {recent:.0%} in the last 30 min (target {target:.0%})",
                )
            )
        cb = q.get("callbacks") or {}
        if cb.get("not_dialled"):
            alerts.append(
                Alert(
                    f"callback_not_dialled:{name}",
                    "callback_not_dialled",
                    name,
                    "high",
                    f"{name}: {cb['not_dialled']} callback(s) waiting that this telephony backend cannot dial",
                )
            )
        if cb.get("given_up"):
            alerts.append(
                Alert(
                    f"callback_given_up:{name}",
                    "callback_given_up",
                    name,
                    "medium",
                    f"{name}: {cb['given_up']} callback(s) given up today (the customer never answered)",
                )
            )
        csat = m.get("csat_mean")
        if csat is not None and csat < min_csat:
            alerts.append(
                Alert(
                    f"low_csat:{name}",
                    "low_satisfaction",
                    name,
                    "medium",
                    f"{name}: satisfaction {csat:.1f}/5 today",
                )
            )
    for row in snapshot.get("survey_alerts", []):
        alerts.append(
            Alert(
                f"survey:{row['id']}",
                "low_satisfaction",
                row.get("queue", ""),
                "medium",
                f"low survey score {row.get('score')} on call {row.get('call_id')}",
            )
        )
    return alerts


class AlertMonitor:
    def __init__(self, sms: SmsSender | None, min_interval_seconds: float = 900.0) -> None:
        self.sms = sms
        self.min_interval = min_interval_seconds
        self._active: set[str] = set()
        self._sent_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self.sms_sent = 0
        self.sms_failed = 0

    def update(self, alerts: list[Alert]) -> list[Alert]:
        """Record the current alerts; send SMS for new ones; return the new ones."""
        keys = {a.key for a in alerts}
        now = time.monotonic()
        with self._lock:
            new = [a for a in alerts if a.key not in self._active]
            self._active = keys
            to_send = [a for a in new if now - self._sent_at.get(a.key, -1e18) >= self.min_interval]
            for a in to_send:
                self._sent_at[a.key] = now
        if self.sms is not None and to_send:
            body = "callcentre alert: " + "; ".join(a.message for a in to_send)
            try:
                self.sms(body[:320])
                self.sms_sent += 1
            except Exception:
                self.sms_failed += 1
                log.exception("alert SMS could not be sent (%d alerts)", len(to_send))
        return new
