"""Helpers for Twilio tests: signed webhook requests and a capturing REST HTTP client.

No Twilio cloud is reachable here. Webhooks are posted with the parameters Twilio documents for
each callback and signed exactly as Twilio signs them (``X-Twilio-Signature``: base64 HMAC-SHA1 of
the full URL followed by the POST parameters sorted by name, keyed with the auth token; computed
by the twilio library's own ``RequestValidator.compute_signature``). REST calls go through the twilio
library's pluggable ``HttpClient``: each request is recorded and answered with a minimal resource.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twilio.http import HttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC = "https://callcentre.example.test"


def call_params(call_sid: str, caller: str, to: str = "+15550001000", status: str = "ringing") -> dict[str, str]:
    """The parameters Twilio documents for every voice request (incoming call webhook)."""
    return {
        "AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": call_sid, "CallStatus": status,
        "Called": to, "Caller": caller, "Direction": "inbound", "From": caller, "To": to,
        "FromCountry": "US", "ToCountry": "US",
    }


def sign(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


def post_signed(client: Any, path: str, params: dict[str, str], *, token: str = AUTH_TOKEN,
                signature: str | None = None) -> Any:
    url = PUBLIC + path
    headers = {"X-Twilio-Signature": signature if signature is not None else sign(url, params, token)}
    return client.post(path, data=params, headers=headers)


def twiml(response: Any) -> ET.Element:
    assert response.status_code == 200, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.get_data(as_text=True))
    assert root.tag == "Response"
    return root


class CapturingHttpClient(HttpClient):
    """The twilio library's pluggable HTTP client: records each REST request, answers with JSON."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("twilio.test"), is_async=False)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, uri: str, params: dict[str, object] | None = None,
                data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> TwilioResponse:
        self.requests.append({"method": method, "uri": uri, "data": dict(data or {}), "auth": auth,
                              "path": urlsplit(uri).path})
        path = urlsplit(uri).path
        if path.endswith("/Recordings.json"):
            body = {"sid": "RE" + "1" * 32, "status": "in-progress"}
        else:
            body = {"sid": path.rsplit("/", 1)[-1].removesuffix(".json"), "status": "in-progress"}
        return TwilioResponse(200, json.dumps(body))

    def posted(self, suffix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"].endswith(suffix)]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
