"""A tolerant view of one SIP datagram, and RFC 3261 responses built from it.

pyVoIP's ``SIPMessage`` is used for what it parses well (the From/To/Contact fields of a request,
see ``telephony/sip.py``), but it raises on anything outside its four methods, on compact header
names, on unknown status codes and on some SDP; an error response still has to copy the request's
Via/From/To/Call-ID/CSeq exactly (RFC 3261 §8.2.6), so that part lives here and never raises
anything but :class:`SipSyntaxError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}
MAX_DATAGRAM = 65535


class SipSyntaxError(ValueError):
    """Not a SIP message we can answer; ``answerable`` says whether a 400 can be sent back."""

    def __init__(self, message: str, answerable: bool = False) -> None:
        super().__init__(message)
        self.answerable = answerable


@dataclass
class RawSip:
    start_line: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    _index: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str, default: str = "") -> str:
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), []))

    @property
    def call_id(self) -> str:
        return self.get("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        parts = self.get("cseq").split()
        if len(parts) != 2 or not parts[0].isdigit():
            return (0, "")
        return int(parts[0]), parts[1].upper()

    @property
    def from_tag(self) -> str:
        return tag_of(self.get("from"))

    @property
    def to_tag(self) -> str:
        return tag_of(self.get("to"))

    @property
    def top_via_branch(self) -> str:
        m = re.search(r";\s*branch=([^;,\s]+)", self.get("via"))
        return m.group(1) if m else ""


def tag_of(header: str) -> str:
    m = re.search(r";\s*tag=([^;>\s]+)", header)
    return m.group(1) if m else ""


def uri_of(header: str) -> str:
    """The URI inside a From/To/Contact value: ``"Bob" <sip:b@h>;tag=x`` → ``sip:b@h``."""
    m = re.search(r"<([^>]+)>", header)
    if m:
        return m.group(1).strip()
    return header.split(";")[0].strip()


def user_of(uri: str) -> str:
    """``sip:1000@host:5060;transport=udp`` → ``1000``."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    if "@" not in rest:
        return ""
    return rest.split("@", 1)[0].split(";")[0]


def host_port_of(uri: str, default_port: int = 5060) -> tuple[str, int]:
    rest = uri.split(":", 1)[1] if uri.lower().startswith(("sip:", "sips:")) else uri
    rest = rest.split("@", 1)[-1].split(";")[0].split("?")[0].strip("<>")
    host, _, port = rest.partition(":")
    return host, int(port) if port.isdigit() else default_port


def parse(data: bytes) -> RawSip:
    if len(data) > MAX_DATAGRAM:
        raise SipSyntaxError("datagram too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipSyntaxError("not UTF-8") from exc
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    parts = start.split(" ", 2)
    msg: RawSip
    if len(parts) == 3 and parts[0] == "SIP/2.0":
        if not parts[1].isdigit() or len(parts[1]) != 3:
            raise SipSyntaxError("bad status line")
        msg = RawSip(start, [], status=int(parts[1]), reason=parts[2])
    elif len(parts) == 3 and parts[2] == "SIP/2.0" and re.fullmatch(r"[A-Z]+", parts[0]):
        msg = RawSip(start, [], method=parts[0], uri=parts[1])
    else:
        raise SipSyntaxError("not a SIP start line")
    for line in lines[1:]:
        if not line.strip():
            continue
        if line[0] in " \t" and msg.headers:  # folded continuation line
            name, value = msg.headers[-1]
            msg.headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SipSyntaxError(f"malformed header line in {msg.method or msg.status}", answerable=False)
        msg.headers.append((name.strip(), value.strip()))
    for name, value in msg.headers:
        key = COMPACT.get(name.lower(), name.lower())
        # Via may be comma-folded: split so each hop is one entry.
        values = [v.strip() for v in value.split(",")] if key == "via" else [value]
        msg._index.setdefault(key, []).extend(values)
    msg.body = body
    length = msg.get("content-length")
    if length:
        if not length.isdigit():
            raise SipSyntaxError("bad Content-Length", answerable=_answerable(msg))
        msg.body = body[: int(length)]
    for required in ("via", "from", "to", "call-id", "cseq"):
        if not msg.get(required):
            raise SipSyntaxError(f"missing {required}", answerable=_answerable(msg))
    if msg.cseq == (0, ""):
        raise SipSyntaxError("bad CSeq", answerable=_answerable(msg))
    return msg


def _answerable(msg: RawSip) -> bool:
    return msg.is_request and all(msg.get(h) for h in ("via", "from", "to", "call-id", "cseq"))


def build_response(
    req: RawSip,
    code: int,
    reason: str,
    *,
    to_tag: str = "",
    extra: list[str] | None = None,
    body: str = "",
    content_type: str = "application/sdp",
) -> bytes:
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in req.get_all("via")]
    lines.append(f"From: {req.get('from')}")
    to = req.get("to")
    if to_tag and not tag_of(to):
        to = f"{to};tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {req.call_id}")
    lines.append(f"CSeq: {req.get('cseq')}")
    if 180 <= code < 300:
        lines += [f"Record-Route: {r}" for r in req.get_all("record-route")]
    lines += extra or []
    lines.append("Server: callcentre (pyVoIP 1.6.8)")
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def bad_request_for(data: bytes, why: str) -> bytes | None:
    """A best-effort 400 for a request too broken to parse fully; None when nothing can be answered."""
    try:
        text = data.decode("utf-8", errors="replace")
    except Exception:
        return None
    lines = text.replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2].strip() != "SIP/2.0":
        return None
    wanted = {"via", "from", "to", "call-id", "cseq", "v", "f", "t", "i"}
    kept = []
    for line in lines[1:]:
        if not line.strip():
            break
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() in wanted:
            kept.append(f"{name.strip()}: {value.strip()}")
    if not any(k.lower().startswith(("via:", "v:")) for k in kept):
        return None
    safe_reason = re.sub(r"[^A-Za-z0-9 .-]", "", why)[:60] or "Bad Request"
    return ("\r\n".join([f"SIP/2.0 400 {safe_reason}", *kept, "Content-Length: 0"]) + "\r\n\r\n").encode()
