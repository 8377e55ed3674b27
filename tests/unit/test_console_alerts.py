"""Wallboard alert rules and the optional Twilio SMS.

The SMS goes through the real ``twilio`` REST client with its documented pluggable HTTP client
(``Client(..., http_client=...)``); the capturing client answers like Twilio's Messages API does
(201 + message JSON), so no network is used.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from twilio.http import HttpClient
from twilio.http.response import Response

from agent_console.services.alerts import Alert, AlertMonitor, evaluate, make_sms_sender
from callcentre.settings import TwilioSettings


class CapturingTwilioHttp(HttpClient):
    def __init__(self) -> None:
        super().__init__(logging.getLogger("test.twilio"), is_async=False)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, uri: str, params: Any = None, data: Any = None, headers: Any = None,
                auth: Any = None, timeout: Any = None, allow_redirects: bool = False) -> Response:
        self.requests.append({"method": method, "uri": uri, "data": dict(data or {}), "auth": auth})
        body = {"sid": "SM" + "0" * 32, "status": "queued", "to": (data or {}).get("To"),
                "from": (data or {}).get("From"), "body": (data or {}).get("Body")}
        return Response(201, json.dumps(body))


def snapshot(**metrics: Any) -> dict[str, Any]:
    base = {"sl_today": 0.9, "sl_30min": 0.9, "csat_mean": 4.5}
    base.update(metrics)
    return {"queues": [{"name": "billing", "longest_wait_seconds": 5, "sl_target_percent": 80,
                        "metrics": base}]}


def test_quiet_snapshot_raises_no_alert() -> None:
    assert evaluate(snapshot(), longest_wait_seconds=60, min_csat=3) == []


def test_each_rule_fires_on_its_condition() -> None:
    snap = snapshot(sl_30min=0.5, csat_mean=2.0)
    snap["queues"][0]["longest_wait_seconds"] = 95
    snap["survey_alerts"] = [{"id": 7, "call_id": "call-1", "score": 1}]
    kinds = sorted(a.kind for a in evaluate(snap, longest_wait_seconds=60, min_csat=3))
    assert kinds == ["longest_wait", "low_satisfaction", "low_satisfaction", "sl_falling"]


def test_sl_falling_needs_recent_below_target_and_below_today() -> None:
    assert evaluate(snapshot(sl_today=0.5, sl_30min=0.6), longest_wait_seconds=60, min_csat=3) == []
    assert [a.kind for a in evaluate(snapshot(sl_today=0.85, sl_30min=0.6), longest_wait_seconds=60,
                                     min_csat=3)] == ["sl_falling"]


def test_sms_is_off_unless_configured() -> None:
    assert make_sms_sender(TwilioSettings()) is None
    half = TwilioSettings(account_sid="AC" + "1" * 32, auth_token="t", from_number="+15005550006")
    assert make_sms_sender(half) is None


def test_new_alert_sends_one_sms_through_twilio_and_repeats_are_suppressed() -> None:
    http = CapturingTwilioHttp()
    settings = TwilioSettings(account_sid="AC" + "1" * 32, auth_token="secret-token", from_number="+15005550006",
                              alert_sms_to="+821012345678")
    sender = make_sms_sender(settings, http)
    assert sender is not None
    monitor = AlertMonitor(sender, min_interval_seconds=900)
    alert = Alert("longest_wait:billing", "longest_wait", "billing", "high", "billing: a caller has waited 95 s")

    assert monitor.update([alert]) == [alert]
    assert monitor.update([alert]) == []  # still active: not new
    assert monitor.update([]) == []
    assert monitor.update([alert]) == [alert]  # new again, but within the interval: no second SMS

    assert len(http.requests) == 1 and monitor.sms_sent == 1
    sent = http.requests[0]
    assert sent["method"] == "POST"
    assert sent["uri"].endswith(f"/Accounts/{settings.account_sid}/Messages.json")
    assert sent["data"]["To"] == "+821012345678" and sent["data"]["From"] == "+15005550006"
    assert sent["data"]["Body"] == "callcentre alert: billing: a caller has waited 95 s"
    assert sent["auth"] == (settings.account_sid, "secret-token")


def test_sms_failure_is_counted_not_raised() -> None:
    def broken(_body: str) -> None:
        raise RuntimeError("twilio down")

    monitor = AlertMonitor(broken)
    monitor.update([Alert("k", "longest_wait", "q", "high", "m")])
    assert monitor.sms_failed == 1 and monitor.sms_sent == 0
