"""Building SIP responses and in-dialog requests correctly (defects 2 and 8).

Stock 1.6.8 sends every response to the registrar's address (``(phone.server, phone.port)``), so
a caller that reaches the phone directly, or through a second proxy, never hears back; it rebuilds
Via lines from parsed pieces (dropping unknown parameters) and gives every ``200 OK`` a fresh
random To-tag. Its BYE copies the caller's Via headers (so the BYE looks like a response to the
caller's transaction), carries no Route set and uses the caller's CSeq + 1.

Here: responses copy Via/From/To/Call-ID/CSeq verbatim (RFC 3261 8.2.6), add ``received`` and
fill ``rport`` on the top Via (RFC 3581) and go to the datagram's source — the port too when the
client asked with ``rport``; in-dialog requests carry our own Via with a fresh branch, the
dialog's Route set and the dialog's own increasing CSeq.
"""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from telephony.pyvoip_patches.message import HardenedSIPMessage, parse_via, uri_host_port
from telephony.pyvoip_patches.version import import_pyvoip

_voip, _sip, _rtp = import_pyvoip()
SIPStatus = _sip.SIPStatus

USER_AGENT = "callcentre (pyVoIP 1.6.8 hardened)"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"


def new_branch() -> str:
    return "z9hG4bK" + uuid.uuid4().hex[:24]


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def reason_phrase(code: int) -> str:
    try:
        return str(SIPStatus(code).phrase)
    except ValueError:
        return "Unknown"


def first_header(message: HardenedSIPMessage, name: str) -> str | None:
    for header, value in message.header_lines:
        if header == name:
            return value
    return None


def response_destination(request: HardenedSIPMessage) -> tuple[str, int]:
    """Where a response goes (RFC 3261 18.2.2 with RFC 3581): the request's source."""
    top = request.headers["Via"][0]
    host, port = top["address"][0], int(top["address"][1])
    if request.source is None:
        return host, port
    source_ip, source_port = request.source
    return source_ip, source_port if "rport" in top else port


def _top_via_with_received(request: HardenedSIPMessage) -> str:
    top = request.via_values[0]
    if request.source is None:
        return top
    source_ip, source_port = request.source
    parts = [p.strip() for p in top.split(";")]
    out = [parts[0]]
    for part in parts[1:]:
        key = part.partition("=")[0].strip().lower()
        if key == "rport":
            out.append(f"rport={source_port}")
        elif key == "received":
            continue
        elif part:
            out.append(part)
    out.append(f"received={source_ip}")
    return ";".join(out)


def build_response(
    request: HardenedSIPMessage,
    code: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: list[str] | None = None,
    body: str = "",
    content_type: str | None = None,
    copy_record_route: bool = False,
) -> bytes:
    """A response to ``request`` as RFC 3261 8.2.6 describes it."""
    lines = [f"SIP/2.0 {code} {reason or reason_phrase(code)}"]
    vias = list(request.via_values)
    if vias:
        vias[0] = _top_via_with_received(request)
    lines += [f"Via: {via}" for via in vias]
    if copy_record_route:
        lines += [f"Record-Route: {rr}" for rr in request.record_route]
    from_value = first_header(request, "From") or ""
    to_value = first_header(request, "To") or ""
    if to_tag and code > 100 and not request.headers.get("To", {}).get("tag"):
        to_value += f";tag={to_tag}"
    lines += [
        f"From: {from_value}",
        f"To: {to_value}",
        f"Call-ID: {first_header(request, 'Call-ID')}",
        f"CSeq: {first_header(request, 'CSeq')}",
        f"Server: {USER_AGENT}",
    ]
    lines += headers or []
    if body:
        lines.append(f"Content-Type: {content_type or 'application/sdp'}")
    lines.append(f"Content-Length: {len(body.encode('utf-8'))}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


@dataclass
class Dialog:
    """One SIP dialog as seen by our side (RFC 3261 12)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    """Our name-addr without tag (the To of an incoming INVITE, the From of ours)."""
    remote_uri: str
    remote_target: str
    """The peer's Contact URI: the Request-URI of our in-dialog requests."""
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = field(default_factory=lambda: random.randint(1, 10000))
    fallback: tuple[str, int] | None = None
    """Where the dialog's first request came from; used if the Contact cannot be resolved."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_incoming(cls, invite: HardenedSIPMessage, local_tag: str) -> Dialog:
        contact = str(invite.headers.get("Contact", "")).strip()
        target = _contact_uri(contact) or invite.headers["From"]["address"]
        return cls(
            call_id=invite.headers["Call-ID"],
            local_tag=local_tag,
            remote_tag=invite.headers["From"]["tag"],
            local_uri=invite.headers["To"]["raw"],
            remote_uri=invite.headers["From"]["raw"],
            remote_target=target,
            route_set=list(invite.record_route),
            fallback=invite.source,
        )

    def next_cseq(self) -> int:
        with self._lock:
            self.local_cseq += 1
            return self.local_cseq

    def destination(self) -> tuple[str, int]:
        """Next hop for in-dialog requests: the first Route (loose routing), else the Contact."""
        try:
            if self.route_set:
                return uri_host_port(_contact_uri(self.route_set[0]) or self.route_set[0])
            return uri_host_port(self.remote_target)
        except Exception:
            if self.fallback is None:
                raise
            return self.fallback

    def request(
        self,
        method: str,
        my_ip: str,
        my_port: int,
        *,
        cseq: int | None = None,
        headers: list[str] | None = None,
        body: str = "",
        content_type: str = "application/sdp",
        branch: str | None = None,
    ) -> bytes:
        """An in-dialog request: own Via with a fresh branch, Route set, own increasing CSeq."""
        number = cseq if cseq is not None else self.next_cseq()
        lines = [
            f"{method} {self.remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP {my_ip}:{my_port};branch={branch or new_branch()};rport",
            "Max-Forwards: 70",
        ]
        lines += [f"Route: {route}" for route in self.route_set]
        lines += [
            f"From: {self.local_uri};tag={self.local_tag}",
            f"To: {self.remote_uri}" + (f";tag={self.remote_tag}" if self.remote_tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {number} {method}",
            f"User-Agent: {USER_AGENT}",
        ]
        lines += headers or []
        if body:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode('utf-8'))}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def _contact_uri(value: str) -> str:
    """The URI inside a Contact/Route value (``<sip:…>;params`` or a bare URI)."""
    value = value.strip()
    if "<" in value and ">" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";")[0].strip() if value and value != "*" else ""


def contact_uri(value: str) -> str:
    return _contact_uri(value)


def salvage_bad_request(raw: bytes, source: tuple[str, int], reason: str) -> tuple[bytes, tuple[str, int]] | None:
    """A ``400 Bad Request`` for a request we could not parse, if enough of it is readable.

    Returns None when no response is possible (not a request, an ACK, or no Via/Call-ID/CSeq to
    echo): such datagrams are dropped.
    """
    try:
        text = raw.decode("utf-8", errors="replace")
    except Exception:
        return None
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0].split(" ") if lines else []
    if len(start) < 3 or start[0].upper().startswith("SIP/") or start[0].upper() == "ACK":
        return None
    wanted: dict[str, list[str]] = {"via": [], "from": [], "to": [], "call-id": [], "cseq": []}
    compact = {"v": "via", "f": "from", "t": "to", "i": "call-id"}
    for line in itertools.islice(lines[1:], 200):
        if not line.strip():
            break
        name, colon, value = line.partition(":")
        key = compact.get(name.strip().lower(), name.strip().lower())
        if colon and key in wanted:
            wanted[key].append(value.strip())
    if not wanted["via"] or not wanted["call-id"] or not wanted["cseq"]:
        return None
    destination = source
    try:
        top: dict[str, Any] = parse_via(wanted["via"][0].split(",")[0])
        if "rport" not in top:
            destination = (source[0], int(top["address"][1]))
    except Exception:
        pass
    clean = reason.replace('"', "'")[:80]
    out = ["SIP/2.0 400 Bad Request"]
    out += [f"Via: {via}" for via in wanted["via"]]
    out += [f"From: {v}" for v in wanted["from"][:1]]
    out += [f"To: {v}" for v in wanted["to"][:1]]
    out += [f"Call-ID: {wanted['call-id'][0]}", f"CSeq: {wanted['cseq'][0]}"]
    out += [f'Warning: 399 callcentre "{clean}"', f"Server: {USER_AGENT}", "Content-Length: 0"]
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8"), destination
